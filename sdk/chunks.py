"""One chunk of a bundle file on its way to the devices (``splitedge rollout``, docs/WIRE.md "Bundle chunks").

A chunk is a fixed little-endian header followed by the chunk's bytes::

    offset  size  field
         0     4  magic b"SPCK"
         4     2  version (1)
         6     2  header length (60): newer, longer headers are skipped past
         8     4  bundle id (u32, the frame header's: first 8 hex digits of the manifest's bundle_id)
        12     2  file index (into AnnounceMessage.files)
        14     2  reserved (0)
        16     4  chunk index within the file
        20     4  chunk count of the file
        24     4  data length
        28    32  sha256 of the data

As with :class:`sdk.wire.FrameHeader`: ``to_bytes``/``from_bytes`` are pure, ``from_bytes`` fails only on
truncation, :meth:`ChunkHeader.validate` checks magic and version; :func:`decode_chunk` also checks the
length and the sha256 (``ChecksumError``). A chunk's sha256 catches a chunk damaged or mixed up in
transit; what is *trusted* is the signed manifest's hash of the whole file, checked once it is complete.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import ClassVar

from sdk.errors import (
    BadMagicError,
    ChecksumError,
    ShapeMismatchError,
    TruncatedError,
    UnsupportedVersionError,
)

__all__ = ["MAX_CHUNK_BYTES", "Chunk", "ChunkHeader", "decode_chunk", "encode_chunk"]

#: the largest chunk accepted (a chunk is one MQTT message; Mosquitto's default limit is far above).
MAX_CHUNK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    MAGIC: ClassVar[bytes] = b"SPCK"
    VERSION: ClassVar[int] = 1
    LENGTH: ClassVar[int] = 60
    FORMAT: ClassVar[str] = "<4sHHIHHIII32s"

    bundle_id: int
    file_index: int
    index: int
    count: int
    length: int
    sha256: bytes
    magic: bytes = b"SPCK"
    version: int = 1
    header_len: int = 60

    def to_bytes(self) -> bytes:
        return struct.pack(self.FORMAT, self.magic, self.version, self.LENGTH, self.bundle_id, self.file_index, 0,
                           self.index, self.count, self.length, self.sha256)  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ChunkHeader:
        """Parse the first :attr:`LENGTH` bytes; raises only TruncatedError. Call validate() next."""
        if len(data) < cls.LENGTH:
            raise TruncatedError(f"bundle chunk header needs {cls.LENGTH} bytes; got {len(data)} (cut short in transit)")
        magic, version, header_len, bundle, file_index, _reserved, index, count, length, digest = struct.unpack_from(
            cls.FORMAT, data, 0
        )
        return cls(bundle, file_index, index, count, length, bytes(digest), bytes(magic), version, header_len)

    def validate(self) -> None:
        if self.magic != self.MAGIC:
            raise BadMagicError(f"bundle chunk starts with {self.magic!r}; expected {self.MAGIC!r} (wrong topic or sender?)")
        if self.version != self.VERSION:
            raise UnsupportedVersionError(f"bundle chunk format version {self.version}; this reader supports "
                                          f"{self.VERSION}: upgrade splitedge on the older side")
        if self.header_len < self.LENGTH:
            raise UnsupportedVersionError(f"bundle chunk header length {self.header_len} is shorter than the "
                                          f"{self.LENGTH} bytes of version {self.VERSION}")
        if self.index >= self.count:
            raise ShapeMismatchError(f"bundle chunk {self.index} of a file of {self.count} chunks; expected an index "
                                     f"below the count")


@dataclass(frozen=True, slots=True)
class Chunk:
    header: ChunkHeader
    data: bytes


def encode_chunk(bundle_id: int, file_index: int, index: int, count: int, data: bytes) -> bytes:
    """Header + data. Misuse (an index past the count, a chunk over MAX_CHUNK_BYTES) -> ValueError."""
    if not 0 <= index < count or not 0 <= file_index < 1 << 16 or len(data) > MAX_CHUNK_BYTES:
        raise ValueError(f"chunk {index}/{count} of file {file_index} with {len(data)} bytes: expected "
                         f"0 <= index < count, file index < 65536, at most {MAX_CHUNK_BYTES} bytes")
    header = ChunkHeader(bundle_id, file_index, index, count, len(data), hashlib.sha256(data).digest())
    return header.to_bytes() + bytes(data)


def decode_chunk(payload: bytes | bytearray | memoryview) -> Chunk:
    """The chunk in ``payload``; raises only WireError subclasses (truncated, bad magic/version, sha256)."""
    header = ChunkHeader.from_bytes(payload)
    header.validate()
    data = bytes(payload[header.header_len:])
    if len(data) != header.length:
        raise TruncatedError(f"bundle chunk {header.index} of file {header.file_index} carries {len(data)} bytes; "
                             f"its header says {header.length} (cut short or padded in transit)")
    if hashlib.sha256(data).digest() != header.sha256:
        raise ChecksumError(f"bundle chunk {header.index} of file {header.file_index}: sha256 "
                            f"{hashlib.sha256(data).hexdigest()[:16]}..., its header says {header.sha256.hex()[:16]}...; "
                            "it was damaged in transit (it is fetched again on the next announce)")
    return Chunk(header, data)
