"""Codec 2, the raw frame as JPEG (docs/WIRE.md §6; sdk/jpeg.py).

The frame header and descriptor bytes around the JPEG are written by hand, one commented field per line
(not by the encoder); only the JPEG payload itself comes from Pillow via sdk.jpeg.encode_jpeg.
"""

from __future__ import annotations

import io
import re
import struct
import sys
import zlib

import numpy as np
import pytest

from sdk import jpeg
from sdk.errors import CorruptPayloadError, MissingDependencyError, ShapeMismatchError, WireError
from sdk.packing import Quantized
from sdk.wire import Codec, DType, TensorRecord, decode_frame, encode_activation, encode_frame, encode_raw

Image = pytest.importorskip("PIL.Image")

KW = dict(device_id="cam-01", seq=42, bundle_id=0x1A2B3C4D, capture_ts=1.7e9, send_ts=1_700_000_000.0025)


def smooth(h: int = 48, w: int = 64, channels: int = 3) -> np.ndarray:
    """A camera-like image: gradients and a slow wave (JPEG's good case)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [
        100 + 80 * np.sin(x / 9.0) * np.cos(y / 7.0),
        30 + 3 * x + y,
        200 - 2 * y + 20 * np.sin((x + y) / 11.0),
    ]
    return np.dstack(planes[:channels]).clip(0, 255).astype(np.uint8)


def header(tensor_count: int = 1, flags: int = 1, cut_id: int = 0) -> bytes:
    """The 60-byte version-1 frame header of KW, field by field."""
    return b"".join([
        b"SPLT",  # 0x00 magic
        struct.pack("<H", 1),  # 0x04 format version 1
        struct.pack("<H", 60),  # 0x06 header length 60
        struct.pack("<H", flags),  # 0x08 flags: bit 0 = raw frame
        struct.pack("<H", tensor_count),  # 0x0a tensor count
        b"cam-01" + b"\0" * 10,  # 0x0c device id, 16 bytes NUL padded
        struct.pack("<Q", 42),  # 0x1c seq
        struct.pack("<H", cut_id),  # 0x24 cut id (0: the raw frame)
        struct.pack("<H", 0),  # 0x26 reserved
        struct.pack("<I", 0x1A2B3C4D),  # 0x28 bundle id
        struct.pack("<Q", 1_700_000_000_000_000),  # 0x2c capture time, µs
        struct.pack("<Q", 1_700_000_000_002_500),  # 0x34 send time, µs
    ])  # fmt: skip


def tensor(payload: bytes, shape: tuple[int, ...], *, dtype: int = 0, bits: int = 8, codec: int = 2,
           scale: float = 1.0, zp: int = 0, name: bytes = b"input") -> bytes:  # fmt: skip
    """One descriptor (field by field) and its payload; CRC and length are those of ``payload``."""
    return b"".join([
        struct.pack("<H", 28 + 4 * len(shape) + len(name)),  # +0x00 descriptor length
        struct.pack("<B", dtype),  # +0x02 dtype (0 = uint8 raw pixels)
        struct.pack("<B", bits),  # +0x03 bits
        struct.pack("<B", codec),  # +0x04 codec (2 = jpeg)
        struct.pack("<B", len(shape)),  # +0x05 ndim
        struct.pack("<B", len(name)),  # +0x06 name length
        struct.pack("<B", 0),  # +0x07 reserved
        struct.pack("<d", scale),  # +0x08 scale
        struct.pack("<i", zp),  # +0x10 zero point
        struct.pack("<I", len(payload)),  # +0x14 payload length (the JPEG bytes as sent)
        struct.pack("<I", zlib.crc32(payload)),  # +0x18 CRC32 of the JPEG bytes
        *(struct.pack("<I", d) for d in shape),  # +0x1c shape, outermost first
        name,  # tensor name
        payload,
    ])  # fmt: skip


# ---- (a) golden bytes --------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [85, 30])
def test_golden_bytes_of_a_jpeg_raw_frame(quality):
    image = smooth(8, 16)[None]  # (1, 8, 16, 3)
    payload = jpeg.encode_jpeg(image, quality)
    assert payload[:2] == b"\xff\xd8" and payload[-2:] == b"\xff\xd9"  # SOI ... EOI: a JPEG
    golden = header() + tensor(payload, (1, 8, 16, 3))
    assert golden[60:66].hex() == "310000080204"  # desc_len 49, dtype 0, bits 8, codec 2, ndim 4
    assert encode_raw(**KW, image=image, codec=Codec.JPEG, jpeg_quality=quality) == golden
    assert encode_raw(**KW, image=image, codec="jpeg", jpeg_quality=quality) == golden
    (record,) = decode_frame(golden).tensors
    assert (record.name, record.dtype, record.bits, record.scale, record.zero_point, record.codec) == (
        "input", DType.UINT8, 8, 1.0, 0, Codec.JPEG,
    )  # fmt: skip
    assert record.shape == record.data.shape == (1, 8, 16, 3) and record.data.dtype == np.uint8


def test_default_quality_is_85():
    image = smooth()
    assert encode_raw(**KW, image=image, codec=Codec.JPEG) == header() + tensor(jpeg.encode_jpeg(image, 85),
                                                                                (48, 64, 3))  # fmt: skip


def test_jpeg_codec_id_is_2():
    from sdk.wire import _CODEC_IDS, _CODECS_BY_ID

    assert Codec.JPEG == "jpeg" and _CODEC_IDS[Codec.JPEG] == 2 and _CODECS_BY_ID[2] is Codec.JPEG


# ---- (b) round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "mode"),
    [((48, 64, 3), "RGB"), ((1, 48, 64, 3), "RGB"), ((48, 64), "L"), ((48, 64, 1), "L"),
     ((1, 48, 64, 1), "L")],
)
def test_round_trip_of_a_smooth_image(shape, mode):
    image = smooth(channels=3 if mode == "RGB" else 1).reshape(shape)
    data = encode_raw(**KW, image=image, codec=Codec.JPEG, jpeg_quality=90)
    frame = decode_frame(data)
    assert frame.header.is_raw and frame.header.cut_id == 0
    (record,) = frame.tensors
    assert record.codec is Codec.JPEG and record.shape == shape
    out = frame.dequantized()["input"]
    assert out.shape == shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - image.astype(np.int16)).mean() < 6
    # much smaller than the pixels, ~600 bytes of JPEG tables included (RGB: ~1/8, gray: ~1/4)
    assert len(data) - 60 < image.nbytes / (6 if mode == "RGB" else 3)
    assert Image.open(io.BytesIO(jpeg.encode_jpeg(image, 90))).mode == mode


def test_lower_quality_is_smaller():
    image = smooth()
    sizes = [len(jpeg.encode_jpeg(image, q)) for q in (95, 85, 50, 10)]
    assert sizes == sorted(sizes, reverse=True)


def test_jpeg_via_encode_frame_keeps_the_descriptor():
    image = smooth()
    data = encode_frame(**KW, cut_id=0, tensors=[TensorRecord.raw("cam", image)], flags=1, codec=Codec.JPEG,
                        jpeg_quality=70)  # fmt: skip
    assert data == header() + tensor(jpeg.encode_jpeg(image, 70), (48, 64, 3), name=b"cam")


# ---- (c) refusals, encode side -----------------------------------------------------------------


def test_encode_activation_refuses_jpeg():
    acts = {"a": np.zeros((1, 4, 4, 3), np.int8)}
    with pytest.raises(ValueError, match="codec jpeg is for raw uint8 frames"):
        encode_activation(**KW, cut_id=2, activations=acts, quant={"a": (0.1, 0)}, bits=8, codec=Codec.JPEG)
    with pytest.raises(ValueError, match="codec jpeg is for raw uint8 frames"):
        encode_activation(**KW, cut_id=2, activations=acts, quant={"a": (0.1, 0)}, bits=4, codec="jpeg")


@pytest.mark.parametrize(
    "record",
    [
        TensorRecord.int8("act", np.zeros((1, 4, 4, 3), np.int8), 0.1, 0),
        TensorRecord.packed("act", Quantized(np.zeros((1, 4, 4, 3), np.uint8), 0.1, 0, 4)),
    ],
    ids=["int8", "packed"],
)
def test_encode_frame_refuses_jpeg_for_an_activation(record):
    msg = r"codec jpeg got a (int8|packed) tensor of shape \(1, 4, 4, 3\); JPEG is for raw uint8"
    with pytest.raises(ValueError, match=msg):
        encode_frame(**KW, cut_id=2, tensors=[record], codec=Codec.JPEG)


@pytest.mark.parametrize("shape", [(48, 64, 4), (2, 48, 64, 3), (1, 1, 48, 64, 3), (64,), (0, 64, 3),
                                   (1, 48, 64)])  # fmt: skip
def test_encode_raw_refuses_jpeg_for_other_shapes(shape):
    with pytest.raises(ValueError, match=re.escape(f"shape {shape}; JPEG is for raw uint8 frames")):
        encode_raw(**KW, image=np.zeros(shape, np.uint8), codec=Codec.JPEG)


@pytest.mark.parametrize("quality", [0, 101, 96, -1, True, 85.0, "85"])
def test_quality_outside_1_to_95_is_refused(quality):
    msg = rf"jpeg_quality={quality!r} is not supported; expected an integer in 1\.\.95"
    with pytest.raises(ValueError, match=msg):
        encode_raw(**KW, image=smooth(), codec=Codec.JPEG, jpeg_quality=quality)
    with pytest.raises(ValueError, match=r"expected an integer in 1\.\.95"):
        jpeg.encode_jpeg(smooth(), quality)


def test_quality_is_not_checked_without_jpeg():
    assert decode_frame(encode_raw(**KW, image=smooth(), jpeg_quality=0)).tensors[0].codec is Codec.NONE


def test_encode_jpeg_refuses_non_uint8():
    with pytest.raises(ValueError, match=r"JPEG is for raw uint8 frames .* got float32\(48, 64, 3\)"):
        jpeg.encode_jpeg(smooth().astype(np.float32), 85)


# ---- (c) refusals, decode side -----------------------------------------------------------------


def test_size_mismatch_is_refused_before_any_pixel_is_decoded(monkeypatch):
    payload = jpeg.encode_jpeg(smooth(32, 32), 85)
    frame = header() + tensor(payload, (1, 48, 64, 3))

    def no_load(self):
        raise AssertionError("pixels decoded before the size check")

    monkeypatch.setattr(Image.Image, "load", no_load)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    msg = r"JPEG payload is 32x32 RGB; the descriptor's shape \(1, 48, 64, 3\) needs 64x48 RGB"
    with pytest.raises(ShapeMismatchError, match=msg):
        decode_frame(frame)


def test_mode_mismatch_is_refused():
    gray = jpeg.encode_jpeg(smooth(channels=1), 85)
    msg = r"JPEG payload is 64x48 L; the descriptor's shape \(48, 64, 3\) needs 64x48 RGB"
    with pytest.raises(ShapeMismatchError, match=msg):
        decode_frame(header() + tensor(gray, (48, 64, 3)))
    rgb = jpeg.encode_jpeg(smooth(), 85)
    with pytest.raises(ShapeMismatchError, match=r"JPEG payload is 64x48 RGB; .* needs 64x48 L"):
        decode_frame(header() + tensor(rgb, (48, 64)))


def test_garbage_with_a_correct_crc_is_corrupt():
    garbage = bytes(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8))
    msg = r"tensor #0 'input': JPEG payload is corrupt \(.*\); expected a JPEG of 64x48 RGB"
    with pytest.raises(CorruptPayloadError, match=msg):
        decode_frame(header() + tensor(garbage, (48, 64, 3)))
    with pytest.raises(CorruptPayloadError, match="JPEG payload is corrupt"):
        decode_frame(header() + tensor(b"", (48, 64, 3)))


def test_a_truncated_jpeg_is_corrupt():
    payload = jpeg.encode_jpeg(smooth(), 85)
    with pytest.raises(CorruptPayloadError, match="JPEG payload is corrupt"):
        decode_frame(header() + tensor(payload[: len(payload) // 2], (48, 64, 3)))


def test_another_image_format_is_corrupt():
    buf = io.BytesIO()
    Image.fromarray(smooth()).save(buf, "PNG")
    with pytest.raises(CorruptPayloadError, match="JPEG payload is corrupt"):
        decode_frame(header() + tensor(buf.getvalue(), (48, 64, 3)))


@pytest.mark.parametrize(("dtype", "bits", "name"), [(1, 8, "int8"), (2, 8, "packed"), (2, 4, "packed")])
def test_codec_jpeg_with_another_dtype_is_refused(dtype, bits, name):
    payload = jpeg.encode_jpeg(smooth(), 85)
    msg = rf"codec jpeg with dtype {name}, bits {bits}; JPEG carries only raw uint8"
    with pytest.raises(ShapeMismatchError, match=msg):
        decode_frame(header() + tensor(payload, (48, 64, 3), dtype=dtype, bits=bits, scale=0.1))


@pytest.mark.parametrize("shape", [(48, 64, 4), (2, 48, 64, 3), (3072,), ()])
def test_codec_jpeg_with_a_shape_no_jpeg_has_is_refused(shape):
    payload = jpeg.encode_jpeg(smooth(), 85)
    with pytest.raises(ShapeMismatchError, match=r"codec jpeg with shape .*; a JPEG frame has shape"):
        decode_frame(header() + tensor(payload, shape))


def test_mutated_jpeg_frames_raise_only_wire_errors():
    payload = bytearray(jpeg.encode_jpeg(smooth(), 85))
    rng = np.random.default_rng(5)
    for _ in range(300):
        mutated = bytearray(payload)
        for at in rng.integers(0, len(mutated), rng.integers(1, 6)):
            mutated[at] = rng.integers(0, 256)
        if rng.random() < 0.3:
            mutated = mutated[: rng.integers(0, len(mutated))]
        try:
            record = decode_frame(header() + tensor(bytes(mutated), (48, 64, 3))).tensors[0]
        except WireError:
            continue
        assert record.data.shape == (48, 64, 3) and record.data.dtype == np.uint8


def test_without_pillow_both_sides_say_which_extra(monkeypatch):
    frame = encode_raw(**KW, image=smooth(), codec=Codec.JPEG)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingDependencyError, match=r"pillow is not installed.*splitedge\[device\]"):
        encode_raw(**KW, image=smooth(), codec=Codec.JPEG)
    with pytest.raises(MissingDependencyError, match="pillow is not installed"):
        decode_frame(frame)
