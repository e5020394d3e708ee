"""Bundle chunks (sdk/chunks.py): the header layout is a contract, spelled out byte by byte below."""

from __future__ import annotations

import hashlib
import struct

import pytest

from sdk import chunks
from sdk.chunks import ChunkHeader, decode_chunk, encode_chunk
from sdk.errors import (
    BadMagicError,
    ChecksumError,
    ShapeMismatchError,
    TruncatedError,
    UnsupportedVersionError,
)

DATA = b"hello"
DIGEST = hashlib.sha256(DATA).digest()

# The layout is a contract (docs/WIRE.md "Bundle chunks"): devices in the field read it. Do not change
# these bytes; add fields at the end and raise the header length instead.
GOLDEN = (
    b"SPCK"                      # magic
    + b"\x01\x00"                # version 1
    + b"\x3c\x00"                # header length 60
    + b"\x4d\x3c\x2b\x1a"        # bundle id 0x1a2b3c4d
    + b"\x02\x00"                # file index 2
    + b"\x00\x00"                # reserved
    + b"\x03\x00\x00\x00"        # chunk index 3
    + b"\x05\x00\x00\x00"        # chunk count 5
    + b"\x05\x00\x00\x00"        # data length 5
    + DIGEST                     # sha256 of the data
    + DATA
)  # fmt: skip


def test_public_api_is_pinned():
    assert sorted(chunks.__all__) == sorted(["MAX_CHUNK_BYTES", "Chunk", "ChunkHeader", "decode_chunk", "encode_chunk"])


def test_golden_bytes():
    assert encode_chunk(0x1A2B3C4D, 2, 3, 5, DATA) == GOLDEN
    got = decode_chunk(GOLDEN)
    assert got.data == DATA
    assert (got.header.bundle_id, got.header.file_index, got.header.index, got.header.count) == (0x1A2B3C4D, 2, 3, 5)


def test_a_longer_newer_header_is_skipped_past():
    longer = GOLDEN[:6] + struct.pack("<H", 64) + GOLDEN[8:60] + b"\xee" * 4 + DATA
    assert decode_chunk(longer).data == DATA


@pytest.mark.parametrize(
    ("payload", "error", "match"),
    [
        (GOLDEN[:59], TruncatedError, "needs 60 bytes"),
        (b"XXXX" + GOLDEN[4:], BadMagicError, "SPCK"),
        (GOLDEN[:4] + b"\x02\x00" + GOLDEN[6:], UnsupportedVersionError, "version 2"),
        (GOLDEN[:6] + b"\x30\x00" + GOLDEN[8:], UnsupportedVersionError, "shorter"),
        (GOLDEN[:-1], TruncatedError, "carries 4 bytes"),
        (GOLDEN[:-1] + b"H", ChecksumError, "damaged in transit"),
        (GOLDEN[:16] + b"\x05\x00\x00\x00" + GOLDEN[20:], ShapeMismatchError, "below the count"),
    ],
)
def test_bad_chunks_are_refused_with_what_was_wrong(payload, error, match):
    with pytest.raises(error, match=match):
        decode_chunk(payload)


def test_from_bytes_fails_only_on_truncation():
    h = ChunkHeader.from_bytes(b"XXXX" + GOLDEN[4:60])
    assert h.magic == b"XXXX"  # validity is validate()'s


def test_misuse_is_a_value_error():
    with pytest.raises(ValueError, match="index < count"):
        encode_chunk(1, 0, 5, 5, DATA)
