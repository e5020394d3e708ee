"""Encode -> decode round trips of whole frames (sdk/wire.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sdk import wire
from sdk.packing import requantize
from sdk.wire import (
    FLAG_RAW,
    Codec,
    DType,
    TensorRecord,
    decode_frame,
    encode_activation,
    encode_frame,
    encode_raw,
    stamp_send_ts,
)

ACTS = {
    "block_3": np.random.default_rng(1).integers(-128, 128, (1, 12, 12, 32), dtype=np.int8),
    "skip": np.random.default_rng(2).integers(-20, 60, (1, 24, 24, 7), dtype=np.int8),
    "pooled": np.random.default_rng(3).integers(-128, 128, (1, 5), dtype=np.int8),
}
QUANT = {"block_3": (0.0421, -7), "skip": (0.013, 12), "pooled": (0.2, 0)}
COMMON = dict(
    device_id="cam-01", seq=123456789012, cut_id=4, bundle_id=0xCAFEBABE, capture_ts=1_712_345_678.25
)


def test_public_api_is_pinned():
    assert sorted(wire.__all__) == sorted(
        [
            "FLAG_RAW", "MAX_ELEMENTS", "MAX_NDIM", "MAX_TENSORS", "Codec", "DType", "Frame", "FrameHeader",
            "TensorRecord", "decode_frame", "encode_activation", "encode_frame", "encode_raw", "stamp_send_ts",
        ]
    )  # fmt: skip


@pytest.mark.parametrize("codec", [Codec.NONE, Codec.ZSTD])  # JPEG: raw frames only (test_wire_jpeg.py)
@pytest.mark.parametrize("bits", [8, 6, 4, 2])
def test_multi_tensor_activation_round_trip(codec, bits):
    data = encode_activation(**COMMON, activations=ACTS, quant=QUANT, bits=bits, codec=codec, send_ts=1.5e9)
    frame = decode_frame(data)
    h = frame.header
    assert (h.device_id, h.seq, h.cut_id, h.bundle_id, h.tensor_count) == (
        "cam-01",
        123456789012,
        4,
        0xCAFEBABE,
        3,
    )
    assert h.capture_us == 1_712_345_678_250_000 and h.send_ts == 1.5e9 and not h.is_raw
    assert [t.name for t in frame.tensors] == list(ACTS)
    out = frame.dequantized()
    for name, q in ACTS.items():
        record = frame.tensor(name)
        assert record.shape == q.shape and record.bits == bits
        scale, zp = QUANT[name]
        real = (q.astype(np.float64) - zp) * scale
        if bits == 8:
            assert record.dtype is DType.INT8
            np.testing.assert_array_equal(record.data, q)
            np.testing.assert_allclose(out[name], real, rtol=1e-6, atol=1e-6)
        else:
            expected = requantize(q, scale, zp, bits)
            assert record.dtype is DType.PACKED
            assert (record.scale, record.zero_point) == (expected.scale, expected.zero_point)
            np.testing.assert_array_equal(record.data, expected.codes)
            assert np.abs(out[name] - real).max() <= record.scale / 2 + 1e-6
        assert out[name].dtype == np.float32


def test_zstd_shrinks_compressible_payloads_and_keeps_none_where_it_does_not_pay():
    acts = {
        "relu": np.maximum(ACTS["block_3"], 0).astype(np.int8),  # half zeros: compresses
        "noise": ACTS["pooled"],  # 5 bytes of noise: zstd would grow it
    }
    quant = {"relu": (0.1, -128), "noise": (0.2, 0)}
    plain = encode_activation(**COMMON, activations=acts, quant=quant, bits=8)
    packed = encode_activation(**COMMON, activations=acts, quant=quant, bits=8, codec=Codec.ZSTD)
    assert len(packed) < len(plain)
    frame = decode_frame(packed)
    assert frame.tensor("relu").codec is Codec.ZSTD and frame.tensor("noise").codec is Codec.NONE
    np.testing.assert_array_equal(frame.tensor("relu").data, acts["relu"])


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_raw_uint8_frame(codec):
    image = np.random.default_rng(7).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    image[:40] = 17  # something zstd can compress
    frame = decode_frame(encode_raw(**COMMON | {"cut_id": 0}, image=image, codec=codec))
    assert frame.header.flags & FLAG_RAW and frame.header.is_raw
    (record,) = frame.tensors
    assert (record.name, record.dtype, record.bits, record.shape) == ("input", DType.UINT8, 8, (96, 96, 3))
    assert record.codec == Codec(codec)
    pixels = frame.dequantized()["input"]
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, image)


def test_mixed_records_and_zero_size_tensor():
    tensors = [
        TensorRecord.raw("thumb", np.arange(12, dtype=np.uint8).reshape(2, 2, 3)),
        TensorRecord.int8("empty", np.zeros((0, 4), np.int8), 1.0, 0),
        TensorRecord.packed("p", requantize(ACTS["skip"], 0.01, 0, 2)),
    ]
    frame = decode_frame(encode_frame(**COMMON, tensors=tensors))
    assert [t.shape for t in frame.tensors] == [(2, 2, 3), (0, 4), (1, 24, 24, 7)]
    assert frame.tensor("empty").data.size == 0


def test_bytearray_and_memoryview_inputs_decode_the_same():
    data = encode_activation(**COMMON, activations=ACTS, quant=QUANT, bits=4)
    for variant in (bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(
            decode_frame(variant).tensor("skip").data, decode_frame(data).tensor("skip").data
        )


def test_stamp_send_ts_sets_only_the_send_time():
    data = encode_activation(**COMMON, activations=ACTS, quant=QUANT, bits=4)
    assert decode_frame(data).header.send_ts is None
    stamped = stamp_send_ts(data, 1_712_345_678.5)
    assert len(stamped) == len(data) and decode_frame(stamped).header.send_us == 1_712_345_678_500_000
    assert stamped[:52] == data[:52] and stamped[60:] == data[60:]


def test_encoder_misuse_is_value_or_type_error():
    q = ACTS["pooled"]
    with pytest.raises(ValueError, match="at most 16"):
        encode_activation(
            **COMMON | {"device_id": "x" * 17}, activations={"a": q}, quant={"a": (1.0, 0)}, bits=8
        )
    with pytest.raises(ValueError, match="no \\(scale, zero_point\\)"):
        encode_activation(**COMMON, activations={"a": q}, quant={}, bits=8)
    with pytest.raises(ValueError, match="unique"):
        encode_frame(**COMMON, tensors=[TensorRecord.int8("a", q, 1, 0)] * 2)
    with pytest.raises(ValueError, match="out of range"):
        encode_frame(**COMMON | {"cut_id": 70000}, tensors=[])
    with pytest.raises(ValueError, match="capture_ts"):
        encode_frame(**COMMON | {"capture_ts": -1.0}, tensors=[])
    with pytest.raises(TypeError, match="int8"):
        TensorRecord.int8("a", q.astype(np.int16), 1.0, 0)
