"""The activation frame: one versioned binary message from a camera to a cloud tail (docs/WIRE.md).

Pure encode/decode, little-endian, fixed-width fields via ``struct``. A frame is a fixed header
followed by N tensors, each a descriptor then its payload::

    encode_frame(...) -> bytes          decode_frame(bytes) -> Frame      Frame.dequantized() -> dict

:class:`FrameHeader` follows the executorch ``_serialize`` habit: ``to_bytes``/``from_bytes`` are
pure, ``from_bytes`` fails only on truncation, and validity (magic, version, header length) is a
separate :meth:`FrameHeader.validate`, called by :func:`decode_frame`. The header stores its own
length, so compatible fields go at the end and older readers skip them.

Codecs: none, zstd (lossless, kept only where it pays) and jpeg (lossy, the raw uint8 frame only;
encode/decode in :mod:`sdk.jpeg`, quality 1..95).

Decoding raises only :class:`sdk.errors.WireError` subclasses (plus ``MissingDependencyError`` if a
zstd / jpeg frame arrives and ``zstandard`` / Pillow is not installed). Forged sizes are capped before
anything is allocated: ndim <= 8, elements <= 64 Mi per tensor, zstd output bounded by the size the
shape implies, a JPEG's size and mode checked against the shape before its pixels are decoded.

Speed (the device pays this per frame): :func:`encode_activation` packs the header and descriptors
with precompiled ``struct`` formats, no intermediate records, and packs via :func:`sdk.packing.wire_codes`
(requantize + pack without re-checks): the bytes of :func:`encode_frame` for the same tensors (a test
checks both on random activations; the golden bytes pin the layout).
"""

from __future__ import annotations

import enum
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sdk.errors import (
    BadMagicError,
    ChecksumError,
    CorruptPayloadError,
    MissingDependencyError,
    ShapeMismatchError,
    TruncatedError,
    UnknownCodecError,
    UnsupportedVersionError,
)
from sdk.jpeg import check_quality, decode_jpeg, encode_jpeg, image_dims
from sdk.packing import SUPPORTED_BITS, Quantized, dequantize, pack_bits, packed_size, unpack_bits, wire_codes

__all__ = [
    "FLAG_RAW",
    "MAX_ELEMENTS",
    "MAX_NDIM",
    "MAX_TENSORS",
    "Codec",
    "DType",
    "Frame",
    "FrameHeader",
    "TensorRecord",
    "decode_frame",
    "encode_activation",
    "encode_frame",
    "encode_raw",
    "stamp_send_ts",
]

#: flags bit 0: the frame carries the raw camera input (cut s = 0), not an activation.
FLAG_RAW = 0x0001
MAX_NDIM = 8
MAX_ELEMENTS = 64 * 1024 * 1024
MAX_TENSORS = 256
DEVICE_ID_BYTES = 16


class Codec(enum.StrEnum):
    """How one tensor's payload travels (wire ids: none 0, zstd 1, jpeg 2).

    zstd is lossless; jpeg is lossy and only for a raw uint8 frame (:mod:`sdk.jpeg`).
    """

    NONE = "none"
    ZSTD = "zstd"
    JPEG = "jpeg"


class DType(enum.StrEnum):
    """What a payload's codes are (wire ids: uint8 0, int8 1, packed 2)."""

    UINT8 = "uint8"  # raw camera pixels, bits 8, scale 1.0, zero point 0
    INT8 = "int8"  # the head's int8 output as is, bits 8
    PACKED = "packed"  # unsigned n-bit codes (bits 2, 4, 6 or 8) packed LSB-first


_HEADER = struct.Struct("<4sHHHH16sQHHIQQ")  # FrameHeader.FORMAT, compiled once
_SEND_US = struct.Struct("<Q")  # the send time at offset 52
_CODEC_IDS: dict[Codec, int] = {Codec.NONE: 0, Codec.ZSTD: 1, Codec.JPEG: 2}
_CODECS_BY_ID = {v: k for k, v in _CODEC_IDS.items()}
_DTYPE_IDS: dict[DType, int] = {DType.UINT8: 0, DType.INT8: 1, DType.PACKED: 2}
_DTYPES_BY_ID = {v: k for k, v in _DTYPE_IDS.items()}
_NUMPY_DTYPES = {DType.UINT8: np.uint8, DType.INT8: np.int8, DType.PACKED: np.uint8}
_ALLOWED_BITS = {DType.UINT8: (8,), DType.INT8: (8,), DType.PACKED: SUPPORTED_BITS}


# ---- header ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The fixed header of a frame (60 bytes in version 1; see docs/WIRE.md for offsets).

    Timestamps are integer microseconds since the Unix epoch (``send_us == 0``: not stamped);
    :attr:`capture_ts` / :attr:`send_ts` give them as float seconds.
    """

    MAGIC: ClassVar[bytes] = b"SPLT"
    VERSION: ClassVar[int] = 1
    LENGTH: ClassVar[int] = 60  # bytes of the version-1 header; longer headers are skipped past
    FORMAT: ClassVar[str] = "<4sHHHH16sQHHIQQ"
    PREFIX_LENGTH: ClassVar[int] = 8  # magic + version + header length

    device_id: str
    seq: int
    cut_id: int
    bundle_id: int
    capture_us: int
    send_us: int = 0
    flags: int = 0
    tensor_count: int = 0
    magic: bytes = b"SPLT"
    version: int = 1
    header_len: int = 60

    @property
    def capture_ts(self) -> float:
        return self.capture_us / 1e6

    @property
    def send_ts(self) -> float | None:
        return self.send_us / 1e6 if self.send_us else None

    @property
    def is_raw(self) -> bool:
        return bool(self.flags & FLAG_RAW)

    def to_bytes(self) -> bytes:
        """The header as written (always the version-1 layout of :attr:`LENGTH` bytes)."""
        device = _device_id_bytes(self.device_id)
        return struct.pack(self.FORMAT, self.magic, self.version, self.LENGTH, self.flags, self.tensor_count,
                           device, self.seq, self.cut_id, 0, self.bundle_id, self.capture_us, self.send_us)  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> FrameHeader:
        """Parse the first :attr:`LENGTH` bytes; raises only TruncatedError. Call validate() next."""
        if len(data) < cls.LENGTH:
            raise TruncatedError(
                f"frame header needs {cls.LENGTH} bytes; got {len(data)}. The frame was cut short in transit"
            )
        (magic, version, header_len, flags, count, device, seq, cut_id, _reserved, bundle_id, cap, snd) = (
            struct.unpack_from(cls.FORMAT, data, 0)
        )
        return cls(device_id=device.rstrip(b"\0").decode("utf-8", errors="replace"), seq=seq, cut_id=cut_id,
                   bundle_id=bundle_id, capture_us=cap, send_us=snd, flags=flags, tensor_count=count,
                   magic=bytes(magic), version=version, header_len=header_len)  # fmt: skip

    def validate(self) -> None:
        """Raise BadMagicError / UnsupportedVersionError / ShapeMismatchError if this header is unusable."""
        _check_prefix(self.magic, self.version, self.header_len)
        if self.tensor_count > MAX_TENSORS:
            raise ShapeMismatchError(
                f"frame announces {self.tensor_count} tensors; at most {MAX_TENSORS} are accepted"
            )


def _check_prefix(magic: bytes, version: int, header_len: int) -> None:
    if magic != FrameHeader.MAGIC:
        raise BadMagicError(
            f"frame starts with {bytes(magic)!r}; expected magic {FrameHeader.MAGIC!r}. "
            "This is not a splitedge activation frame (wrong topic or sender?)"
        )
    if version != FrameHeader.VERSION:
        raise UnsupportedVersionError(
            f"frame format version {version}; this reader supports version {FrameHeader.VERSION}. "
            "Upgrade splitedge on the older side"
        )
    if header_len < FrameHeader.LENGTH:
        raise UnsupportedVersionError(
            f"header length {header_len} is shorter than the {FrameHeader.LENGTH} bytes version "
            f"{FrameHeader.VERSION} requires (a pre-release writer?); re-encode with this splitedge"
        )


def _device_id_bytes(device_id: str) -> bytes:
    raw = _DEVICE_IDS.get(device_id)
    if raw is not None:
        return raw
    raw = device_id.encode("utf-8")
    if len(raw) > DEVICE_ID_BYTES or b"\0" in raw:
        raise ValueError(
            f"device_id {device_id!r} is {len(raw)} UTF-8 bytes; expected at most {DEVICE_ID_BYTES}, no NUL"
        )
    if len(_DEVICE_IDS) < 4096:
        _DEVICE_IDS[device_id] = raw
    return raw


_DEVICE_IDS: dict[str, bytes] = {}  # checked device ids (a camera encodes its own id on every frame)


# ---- tensors -----------------------------------------------------------------------------------

_DESC = struct.Struct("<HBBBBBBdiII")  # desc_len dtype bits codec ndim name_len reserved scale zp len crc
_DESC_FIXED = _DESC.size  # 28
_SHAPE_STRUCTS = [struct.Struct(f"<{n}I") for n in range(MAX_NDIM + 1)]  # by ndim
_NAMES: dict[str, bytes] = {}  # tensor name -> UTF-8 bytes (checked), for the per-frame path


@dataclass(frozen=True, slots=True)
class TensorRecord:
    """One tensor of a frame: the *decoded* codes (``data``, shaped) and how to read them as reals.

    ``data`` is uint8 for DType.UINT8 and DType.PACKED (n-bit codes, unpacked), int8 for DType.INT8.
    ``codec`` is what the payload travelled with; the encoder picks it (see :func:`encode_frame`).
    """

    name: str
    shape: tuple[int, ...]
    dtype: DType
    bits: int
    scale: float
    zero_point: int
    data: np.ndarray = field(repr=False, compare=False)
    codec: Codec = Codec.NONE

    @classmethod
    def raw(cls, name: str, pixels: np.ndarray) -> TensorRecord:
        """A raw camera image (uint8, any shape, e.g. 96x96x3)."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            raise TypeError(f"raw pixels must be uint8; got {pixels.dtype}")
        return cls(name, tuple(pixels.shape), DType.UINT8, 8, 1.0, 0, pixels)

    @classmethod
    def int8(cls, name: str, q: np.ndarray, scale: float, zero_point: int) -> TensorRecord:
        """An int8 activation sent as is (lossless, no repacking)."""
        q = np.asarray(q)
        if q.dtype != np.int8:
            raise TypeError(f"int8 activation {name!r} must be int8; got {q.dtype}")
        return cls(name, tuple(q.shape), DType.INT8, 8, float(scale), int(zero_point), q)

    @classmethod
    def packed(cls, name: str, quantized: Quantized) -> TensorRecord:
        """Requantized n-bit codes (from :func:`sdk.packing.requantize`)."""
        codes = quantized.codes
        return cls(name, tuple(codes.shape), DType.PACKED, quantized.bits, quantized.scale, quantized.zero_point,
                   codes)  # fmt: skip

    def dequantized(self) -> np.ndarray:
        """float32 reals for activations; raw uint8 pixels stay uint8."""
        if self.dtype is DType.UINT8:
            return self.data
        return dequantize(self.data, self.scale, self.zero_point)


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: its header and its tensors in wire order."""

    header: FrameHeader
    tensors: tuple[TensorRecord, ...]

    def tensor(self, name: str) -> TensorRecord:
        for record in self.tensors:
            if record.name == name:
                return record
        raise KeyError(f"no tensor {name!r} in frame; it has {[t.name for t in self.tensors]}")

    def dequantized(self) -> dict[str, np.ndarray]:
        """{name: float32 array} (raw frames: {name: uint8 pixels})."""
        return {t.name: t.dequantized() for t in self.tensors}


# ---- encode ------------------------------------------------------------------------------------


def _to_us(ts: float | None, what: str) -> int:
    if ts is None:
        return 0
    if not math.isfinite(ts) or ts < 0:
        raise ValueError(f"{what}={ts!r} must be a finite, non-negative number of seconds since the epoch")
    return round(ts * 1e6)


def _extent(shape: Sequence[int]) -> int:
    """Product of the dimensions with 0 counted as 1: what MAX_ELEMENTS caps (numpy checks it too)."""
    return math.prod(max(d, 1) for d in shape)


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise MissingDependencyError.for_extra("zstandard", "device") from exc
    return zstandard


def _encode_tensor(record: TensorRecord, codec: Codec, zstd_level: int, jpeg_quality: int) -> list[bytes]:
    dtype = DType(record.dtype)
    if record.bits not in _ALLOWED_BITS[dtype]:
        raise ValueError(f"tensor {record.name!r}: dtype {dtype} cannot have bits={record.bits}")
    data = np.asarray(record.data)
    if data.dtype != _NUMPY_DTYPES[dtype] or tuple(data.shape) != tuple(record.shape):
        raise ValueError(
            f"tensor {record.name!r}: data is {data.dtype}{data.shape}; "
            f"expected {np.dtype(_NUMPY_DTYPES[dtype])}{tuple(record.shape)}"
        )
    if len(record.shape) > MAX_NDIM or _extent(record.shape) > MAX_ELEMENTS:
        raise ValueError(
            f"tensor {record.name!r}: shape {record.shape} exceeds {MAX_NDIM} dims or {MAX_ELEMENTS} elements"
        )
    name = _name_bytes(record.name)
    if codec is Codec.JPEG:
        if dtype is not DType.UINT8 or image_dims(record.shape) is None:
            raise ValueError(
                f"tensor {record.name!r}: codec jpeg got a {dtype} tensor of shape {tuple(record.shape)}; "
                "JPEG is for raw uint8 frames (DType.UINT8, shape (1, H, W, 3|1), (H, W, 3|1) or (H, W))"
            )
        payload = encode_jpeg(data, jpeg_quality)
    elif dtype is DType.PACKED:
        payload = pack_bits(data, record.bits)
    else:
        payload = np.ascontiguousarray(data).tobytes()
    return _tensor_parts(name, dtype, record.bits, record.shape, record.scale, record.zero_point, payload, codec,
                         zstd_level)  # fmt: skip


def _name_bytes(name: str) -> bytes:
    raw = _NAMES.get(name)
    if raw is None:
        raw = name.encode("utf-8")
        if not 0 < len(raw) < 256:
            raise ValueError(f"tensor name {name!r} must be 1..255 UTF-8 bytes")
        if len(_NAMES) < 4096:
            _NAMES[name] = raw
    return raw


def _tensor_parts(
    name: bytes,
    dtype: DType,
    bits: int,
    shape: Sequence[int],
    scale: float,
    zero_point: int,
    payload: bytes,
    codec: Codec,
    zstd_level: int,
) -> list[bytes]:
    """Descriptor, shape, name and payload of one (already checked) tensor (codec jpeg: the JPEG bytes)."""
    wire_codec = Codec.JPEG if codec is Codec.JPEG else Codec.NONE
    if codec is Codec.ZSTD and payload:
        compressed = _zstd().ZstdCompressor(level=zstd_level).compress(payload)
        if len(compressed) < len(payload):  # zstd only where it pays
            payload, wire_codec = compressed, Codec.ZSTD
    ndim = len(shape)
    desc = _DESC.pack(_DESC_FIXED + 4 * ndim + len(name), _DTYPE_IDS[dtype], bits, _CODEC_IDS[wire_codec],
                      ndim, len(name), 0, float(scale), int(zero_point), len(payload), zlib.crc32(payload))  # fmt: skip
    return [desc, _SHAPE_STRUCTS[ndim].pack(*shape), name, payload]


def _header_bytes(
    *,
    device_id: str,
    seq: int,
    cut_id: int,
    bundle_id: int,
    capture_us: int,
    send_us: int,
    flags: int,
    tensor_count: int,
) -> bytes:
    """``FrameHeader(...).to_bytes()`` without building the dataclass (same bytes, same errors)."""
    device = _device_id_bytes(device_id)
    try:
        return _HEADER.pack(FrameHeader.MAGIC, FrameHeader.VERSION, FrameHeader.LENGTH, flags, tensor_count, device,
                            seq, cut_id, 0, bundle_id, capture_us, send_us)  # fmt: skip
    except struct.error as exc:
        header = FrameHeader(device_id=device_id, seq=seq, cut_id=cut_id, bundle_id=bundle_id,
                             capture_us=capture_us, send_us=send_us, flags=flags, tensor_count=tensor_count)  # fmt: skip
        raise ValueError(f"a header field is out of range for its width ({exc}): {header}") from exc


def encode_frame(
    *,
    device_id: str,
    seq: int,
    cut_id: int,
    bundle_id: int,
    tensors: Sequence[TensorRecord],
    capture_ts: float,
    send_ts: float | None = None,
    flags: int = 0,
    codec: Codec = Codec.NONE,
    zstd_level: int = 1,
    jpeg_quality: int = 85,
) -> bytes:
    """Encode one frame. Timestamps are float seconds since the epoch (stored as µs; send_ts None -> 0).

    ``codec`` applies to every tensor, but zstd is kept only for payloads it makes smaller (each
    tensor's descriptor says which codec it travelled with). ``codec=Codec.JPEG`` (lossy, at
    ``jpeg_quality`` 1..95) takes only raw uint8 frames (:mod:`sdk.jpeg`). ``bundle_id``: first 4 bytes of
    the bundle's content hash as a big-endian u32 (``int(sha256_hex[:8], 16)``). Misuse -> ValueError.
    """
    codec = Codec(codec)
    if codec is Codec.JPEG:
        check_quality(jpeg_quality)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError(f"tensor names must be unique; got {names}")
    if len(tensors) > MAX_TENSORS:
        raise ValueError(f"{len(tensors)} tensors; at most {MAX_TENSORS} per frame")
    parts = [_header_bytes(
        device_id=device_id, seq=seq, cut_id=cut_id, bundle_id=bundle_id,
        capture_us=_to_us(capture_ts, "capture_ts"), send_us=_to_us(send_ts, "send_ts"), flags=flags,
        tensor_count=len(tensors),
    )]  # fmt: skip
    for record in tensors:
        parts.extend(_encode_tensor(record, codec, zstd_level, jpeg_quality))
    return b"".join(parts)


def encode_activation(
    *,
    device_id: str,
    seq: int,
    cut_id: int,
    bundle_id: int,
    activations: Mapping[str, np.ndarray],
    quant: Mapping[str, tuple[float, int]],
    bits: int,
    capture_ts: float,
    send_ts: float | None = None,
    flags: int = 0,
    codec: Codec = Codec.NONE,
    zstd_level: int = 1,
) -> bytes:
    """Encode a head's int8 outputs ({name: int8 array}, {name: (scale, zero_point)}) at ``bits`` bits.

    bits=8 sends the int8 codes as they are (DType.INT8); 6/4/2 requantize per frame and pack.
    The bytes are those of :func:`encode_frame` with ``TensorRecord.int8`` / ``TensorRecord.packed``
    records (module docstring: this is the per-frame fast path).
    """
    codec = codec if codec.__class__ is Codec else Codec(codec)
    if codec is Codec.JPEG:
        raise ValueError("codec jpeg is for raw uint8 frames (encode_raw), not activations; use none or zstd")
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits!r} is not supported; expected one of {SUPPORTED_BITS}")
    if len(activations) > MAX_TENSORS:
        raise ValueError(f"{len(activations)} tensors; at most {MAX_TENSORS} per frame")
    parts: list[bytes] = []
    for name, q in activations.items():
        if name not in quant:
            raise ValueError(f"no (scale, zero_point) for activation {name!r}; got {sorted(quant)}")
        scale, zero_point = quant[name]
        q = np.asarray(q)
        if q.dtype != np.int8:
            raise TypeError(f"int8 activation {name!r} must be int8; got {q.dtype}")
        shape = q.shape
        if len(shape) > MAX_NDIM or (q.size if q.size else _extent(shape)) > MAX_ELEMENTS:  # size = extent if > 0
            raise ValueError(f"tensor {name!r}: shape {shape} exceeds {MAX_NDIM} dims or {MAX_ELEMENTS} elements")
        scale, zero_point = float(scale), int(zero_point)
        if bits == 8:
            dtype, payload = DType.INT8, q.tobytes()
        elif -128 <= zero_point <= 127:  # requantize() then pack_bits(), less the checks done here
            dtype, (payload, scale, zero_point) = DType.PACKED, wire_codes(q, scale, zero_point, bits)
        else:
            raise ValueError(f"zero_point={zero_point} is not an int8 zero point (expected -128..127)")
        parts += _tensor_parts(_name_bytes(name), dtype, bits, shape, scale, zero_point, payload, codec, zstd_level)
    header = _header_bytes(
        device_id=device_id, seq=seq, cut_id=cut_id, bundle_id=bundle_id,
        capture_us=_to_us(capture_ts, "capture_ts"), send_us=_to_us(send_ts, "send_ts"), flags=flags,
        tensor_count=len(activations),
    )  # fmt: skip
    return b"".join([header, *parts])


def encode_raw(
    *,
    device_id: str,
    seq: int,
    bundle_id: int,
    image: np.ndarray,
    capture_ts: float,
    name: str = "input",
    cut_id: int = 0,
    send_ts: float | None = None,
    codec: Codec = Codec.NONE,
    zstd_level: int = 1,
    jpeg_quality: int = 85,
) -> bytes:
    """Encode a raw uint8 camera frame (cut s = 0): flag FLAG_RAW, one DType.UINT8 tensor (jpeg: lossy)."""
    return encode_frame(
        device_id=device_id, seq=seq, cut_id=cut_id, bundle_id=bundle_id,
        tensors=[TensorRecord.raw(name, image)], capture_ts=capture_ts, send_ts=send_ts,
        flags=FLAG_RAW, codec=codec, zstd_level=zstd_level, jpeg_quality=jpeg_quality,
    )  # fmt: skip


def stamp_send_ts(frame: bytes, send_ts: float) -> bytes:
    """A copy of an encoded frame with its send timestamp (offset 52) set just before publishing."""
    if len(frame) < FrameHeader.LENGTH or frame[:4] != FrameHeader.MAGIC:
        raise ValueError("stamp_send_ts expects a frame produced by encode_frame")
    return b"".join((frame[:52], _SEND_US.pack(_to_us(send_ts, "send_ts")), memoryview(frame)[60:]))


# ---- decode ------------------------------------------------------------------------------------


def _decode_tensor(view: memoryview, offset: int, index: int) -> tuple[TensorRecord, int]:
    where = f"tensor #{index} (at byte {offset})"
    if len(view) - offset < _DESC_FIXED:
        raise TruncatedError(f"{where}: descriptor needs {_DESC_FIXED} bytes; {len(view) - offset} remain")
    desc_len, dtype_id, bits, codec_id, ndim, name_len, _r, scale, zp, length, crc = _DESC.unpack_from(
        view, offset
    )
    if ndim > MAX_NDIM:
        raise ShapeMismatchError(f"{where}: ndim {ndim}; at most {MAX_NDIM} dimensions are accepted")
    known = _DESC_FIXED + 4 * ndim + name_len
    if desc_len < known:
        raise ShapeMismatchError(
            f"{where}: descriptor length {desc_len} is shorter than the {known} bytes its ndim and name need"
        )
    if len(view) - offset < desc_len:
        raise TruncatedError(f"{where}: descriptor announces {desc_len} bytes; {len(view) - offset} remain")
    shape = struct.unpack_from(f"<{ndim}I", view, offset + _DESC_FIXED)
    name_at = offset + _DESC_FIXED + 4 * ndim
    try:
        name = bytes(view[name_at : name_at + name_len]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptPayloadError(f"{where}: tensor name is not valid UTF-8 ({exc})") from None
    where = f"tensor #{index} {name!r}"
    if dtype_id not in _DTYPES_BY_ID:
        raise UnknownCodecError(f"{where}: dtype id {dtype_id}; this reader knows {sorted(_DTYPES_BY_ID)}")
    if codec_id not in _CODECS_BY_ID:
        raise UnknownCodecError(
            f"{where}: codec id {codec_id}; this reader knows {dict(sorted(_CODECS_BY_ID.items()))}. "
            "Upgrade the reader or send with codec none"
        )
    dtype, codec = _DTYPES_BY_ID[dtype_id], _CODECS_BY_ID[codec_id]
    if bits not in _ALLOWED_BITS[dtype]:
        raise ShapeMismatchError(f"{where}: dtype {dtype} with bits {bits}; expected one of {_ALLOWED_BITS[dtype]}")  # fmt: skip
    if codec is Codec.JPEG and (dtype is not DType.UINT8 or bits != 8):
        raise ShapeMismatchError(
            f"{where}: codec jpeg with dtype {dtype}, bits {bits}; JPEG carries only raw uint8 frames (bits 8)"
        )
    if _extent(shape) > MAX_ELEMENTS:
        raise ShapeMismatchError(
            f"{where}: shape {shape} has {_extent(shape)} elements (0 counted as 1); at most {MAX_ELEMENTS} accepted"
        )
    count = math.prod(shape)
    if not math.isfinite(scale):
        raise ShapeMismatchError(f"{where}: scale {scale} is not finite")
    start = offset + desc_len
    if len(view) - start < length:
        raise TruncatedError(f"{where}: payload announces {length} bytes; {len(view) - start} remain")
    payload = view[start : start + length]
    actual_crc = zlib.crc32(payload)
    if actual_crc != crc:
        raise ChecksumError(
            f"{where}: CRC32 of the payload is {actual_crc:#010x}; descriptor says {crc:#010x}"
        )
    if codec is Codec.JPEG:
        data = decode_jpeg(payload, shape, where)
        return TensorRecord(name, tuple(shape), dtype, bits, scale, zp, data, codec), start + length
    expected = packed_size(count, bits)
    if codec is Codec.ZSTD:
        payload = memoryview(_zstd_decompress(payload, expected, where))
    if len(payload) != expected:
        raise ShapeMismatchError(
            f"{where}: {codec} payload is {len(payload)} bytes; shape {shape} at {bits} bits needs {expected}"
        )
    if dtype is DType.PACKED:
        data = unpack_bits(payload, bits, count).reshape(shape)
    else:
        data = np.frombuffer(payload, dtype=_NUMPY_DTYPES[dtype]).reshape(shape)
    record = TensorRecord(name, tuple(shape), dtype, bits, scale, zp, data, codec)
    return record, start + length


def _zstd_decompress(payload: memoryview, expected: int, where: str) -> bytes:
    zstandard = _zstd()
    try:
        # Bounded read: never more than expected + 1 bytes, whatever the zstd frame header claims.
        reader = zstandard.ZstdDecompressor().stream_reader(bytes(payload), read_across_frames=False)
        chunks, total = [], 0
        while total <= expected:
            chunk = reader.read(expected + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        out = b"".join(chunks)
    except (zstandard.ZstdError, ValueError) as exc:
        raise CorruptPayloadError(
            f"{where}: zstd payload is corrupt ({exc}); expected {expected} bytes once decompressed"
        ) from None
    if len(out) != expected:
        got = f"more than {expected}" if len(out) > expected else str(len(out))
        raise ShapeMismatchError(
            f"{where}: zstd payload decompresses to {got} bytes; shape and bits need {expected}"
        )
    return out


def decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Decode and check a frame; raises only WireError subclasses (see module docstring)."""
    if not isinstance(data, bytes):
        data = bytes(data)  # decoded arrays may view the frame: keep it immutable
    view = memoryview(data)
    if len(view) >= FrameHeader.PREFIX_LENGTH:  # say "not a frame" / "too new" before "too short"
        magic, version, header_len = struct.unpack_from("<4sHH", view, 0)
        _check_prefix(magic, version, header_len)
    elif bytes(view[:4]) != FrameHeader.MAGIC[: len(view)]:
        _check_prefix(bytes(view[:4]), FrameHeader.VERSION, FrameHeader.LENGTH)
    header = FrameHeader.from_bytes(view)
    header.validate()
    if len(view) < header.header_len:
        raise TruncatedError(f"header announces {header.header_len} bytes; the frame has {len(view)}")
    try:
        bytes(view[12:28]).rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptPayloadError(f"device id is not valid UTF-8 ({exc}); expected a NUL-padded UTF-8 string") from None
    offset = header.header_len
    tensors = []
    for index in range(header.tensor_count):
        record, offset = _decode_tensor(view, offset, index)
        tensors.append(record)
    if offset != len(view):
        raise ShapeMismatchError(
            f"frame is {len(view)} bytes but its header and {header.tensor_count} tensors account for {offset}; "
            "trailing bytes are not allowed"
        )
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise CorruptPayloadError(f"duplicate tensor names in frame: {names}")
    return Frame(header, tuple(tensors))
