"""Requantization and bit packing (sdk/packing.py): round trips, error bounds, bit order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sdk.packing import (
    SUPPORTED_BITS,
    Quantized,
    dequantize,
    pack_bits,
    packed_size,
    requant_int8,
    requantize,
    unpack_bits,
)

SHAPES = [(0,), (1,), (3,), (5,), (7,), (1, 3, 3, 5), (2, 7, 7, 3), (1, 96, 96, 3), (4, 4, 16), (13, 11)]


def _reference_pack(codes: np.ndarray, bits: int) -> bytes:
    """Independent bit-by-bit reference: code i at stream bits [i*bits, (i+1)*bits), LSB-first."""
    stream = 0
    for i, code in enumerate(codes.reshape(-1).tolist()):
        stream |= code << (i * bits)
    return stream.to_bytes((codes.size * bits + 7) // 8, "little")


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
@pytest.mark.parametrize("shape", SHAPES)
def test_pack_unpack_round_trip(bits, shape):
    rng = np.random.default_rng(sum(shape) * 10 + bits)
    codes = rng.integers(0, 1 << bits, size=shape, dtype=np.uint8)
    packed = pack_bits(codes, bits)
    assert len(packed) == packed_size(codes.size, bits) == -(-codes.size * bits // 8)
    back = unpack_bits(packed, bits, codes.size)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back.reshape(shape), codes)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 9, 31, 64, 65])
def test_bit_order_matches_independent_reference(bits, count):
    codes = np.random.default_rng(count).integers(0, 1 << bits, size=count, dtype=np.uint8)
    assert pack_bits(codes, bits) == _reference_pack(codes, bits)


def test_documented_bit_order_examples():
    assert pack_bits(np.array([0x1, 0x2], np.uint8), 4) == b"\x21"  # code 0 in the low nibble
    assert pack_bits(np.array([1, 2, 3, 0], np.uint8), 2) == bytes([0b00_11_10_01])
    assert pack_bits(np.array([1], np.uint8), 2) == b"\x01"  # padded with zero bits
    # 6 bits: c0 | c1 << 6 | c2 << 12 | c3 << 18, little-endian, 3 bytes
    word = 0x21 | 0x3F << 6 | 0x01 << 12 | 0x2A << 18
    assert pack_bits(np.array([0x21, 0x3F, 0x01, 0x2A], np.uint8), 6) == word.to_bytes(3, "little")


@given(
    bits=st.sampled_from(SUPPORTED_BITS),
    codes=hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, max_side=9), elements=st.integers(0, 3)
    ),
)
@settings(max_examples=150, deadline=None)
def test_pack_round_trip_property(bits, codes):
    np.testing.assert_array_equal(unpack_bits(pack_bits(codes, bits), bits, codes.size), codes.reshape(-1))


def test_pack_rejects_out_of_range_codes_and_wrong_dtype():
    with pytest.raises(ValueError, match="16, which does not fit in 4 bits"):
        pack_bits(np.array([1, 16], np.uint8), 4)
    with pytest.raises(TypeError, match="uint8"):
        pack_bits(np.array([1, 2], np.int16), 4)
    with pytest.raises(ValueError, match="bits=3"):
        pack_bits(np.array([1], np.uint8), 3)


def test_unpack_rejects_wrong_length():
    with pytest.raises(ValueError, match="need 3 bytes; got 2"):
        unpack_bits(b"\x00\x00", 4, 5)


@pytest.mark.parametrize("shape", SHAPES)
def test_bits8_is_lossless(shape):
    rng = np.random.default_rng(len(shape))
    q = rng.integers(-128, 128, size=shape, dtype=np.int8)
    out = requantize(q, 0.07, -5, 8)
    assert (out.bits, out.scale, out.zero_point) == (8, 0.07, 123)
    np.testing.assert_array_equal(out.codes.astype(np.int16), q.astype(np.int16) + 128)
    np.testing.assert_array_equal(out.dequantize(), dequantize(q, 0.07, -5))


@pytest.mark.parametrize("bits", [6, 4, 2])
@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("zero_point", [-128, -3, 0, 40, 127])
def test_requantized_error_is_within_half_a_step(bits, shape, zero_point):
    rng = np.random.default_rng(bits * 1000 + zero_point + 128)
    q = rng.integers(-128, 128, size=shape, dtype=np.int8)
    scale = 0.0371
    out = requantize(q, scale, zero_point, bits)
    assert out.codes.shape == q.shape and out.codes.dtype == np.uint8
    assert int(out.codes.max()) < 1 << bits
    real = (q.astype(np.float64) - zero_point) * scale
    err = np.abs(out.dequantize().astype(np.float64) - real)
    assert err.max() <= out.scale / 2 + 1e-6  # one step is out.scale; we promise half of it
    assert out.scale >= scale


@pytest.mark.parametrize("bits", [6, 4, 2])
def test_requantize_uses_dynamic_range(bits):
    q = np.array([-20, -10, 0, 10, 25], np.int8)  # range 45 int8 codes, not 256
    out = requantize(q, 1.0, 0, bits)
    levels = (1 << bits) - 1
    assert out.scale == pytest.approx(max(45 / levels, 1.0))
    assert out.codes.min() == 0 and out.codes.max() == min(levels, 45)


@pytest.mark.parametrize("bits", [6, 4, 2])
@pytest.mark.parametrize("value", [-128, -1, 0, 77, 127])
def test_constant_tensor_is_exact(bits, value):
    q = np.full((2, 3, 5), value, np.int8)
    out = requantize(q, 0.5, 3, bits)
    np.testing.assert_array_equal(out.codes, 0)
    np.testing.assert_array_equal(out.dequantize(), np.float32((value - 3) * 0.5))


def test_narrow_range_is_lossless_even_at_4_bits():
    q = np.array([3, 5, 7, 10, 12, 17, 3], np.int8)  # spans 15 codes -> step 1
    out = requantize(q, 0.25, 1, 4)
    np.testing.assert_array_equal(out.dequantize(), dequantize(q, 0.25, 1))


def test_zero_is_exact_when_in_range():
    q = np.array([-100, -7, 0, 0, 50, 120], np.int8)
    out = requantize(q, 0.1, 0, 4)
    assert out.dequantize()[2] == 0.0


def test_requantize_rejects_non_int8():
    with pytest.raises(TypeError, match="int8"):
        requantize(np.zeros(3, np.uint8), 1.0, 0, 4)
    with pytest.raises(ValueError, match="bits=5"):
        requantize(np.zeros(3, np.int8), 1.0, 0, 5)


def test_dequantize_dtypes():
    np.testing.assert_allclose(dequantize(np.array([0, 255], np.uint8), 0.5, 128), [-64.0, 63.5])
    np.testing.assert_allclose(dequantize(np.array([-128, 127], np.int8), 0.5, -128), [0.0, 127.5])
    assert dequantize(np.array([1, 2], np.uint16), 2.0, 1).dtype == np.float32


def test_quantized_is_frozen():
    out = Quantized(np.zeros(1, np.uint8), 1.0, 0, 4)
    with pytest.raises(AttributeError):
        out.bits = 2  # type: ignore[misc]


def test_requant_int8_matches_float_reference():
    q = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    out = requant_int8(q, 0.05, -10, 0.08, 7)
    real = (q.astype(np.float64) + 10) * 0.05
    expected = np.clip(np.rint(real / 0.08) + 7, -128, 127).astype(np.int8)
    assert out.dtype == np.int8 and out.shape == q.shape
    np.testing.assert_array_equal(out, expected)


def test_requant_int8_identity_and_clipping():
    q = np.array([-128, -1, 0, 1, 127], np.int8)
    np.testing.assert_array_equal(requant_int8(q, 0.1, 3, 0.1, 3), q)
    np.testing.assert_array_equal(requant_int8(q, 1.0, 0, 0.5, 0), [-128, -2, 0, 2, 127])
    with pytest.raises(ValueError, match="scale_out"):
        requant_int8(q, 1.0, 0, 0.0, 0)


@pytest.mark.parametrize("bits", [6, 4, 2])
@pytest.mark.parametrize("zero_point", [-128, -1, 0, 127])
@pytest.mark.parametrize("lo_hi", [(-128, 127), (-128, 0), (0, 127), (-5, 100), (-100, -100 + 64), (3, 4)])
def test_requantize_matches_exact_rational_reference(bits, zero_point, lo_hi):
    """Every int8 value of the range against the documented formula in exact fractions."""
    from fractions import Fraction
    from math import floor

    lo, hi = lo_hi
    q = np.arange(lo, hi + 1, dtype=np.int8)
    out = requantize(q, 0.5, zero_point, bits)
    levels, span = (1 << bits) - 1, hi - lo
    if span <= levels:
        assert (out.scale, out.zero_point) == (0.5, zero_point - lo)
        expected = [v - lo for v in range(lo, hi + 1)]
    else:
        step = Fraction(span, levels)
        new_zp = floor((zero_point - lo) / step + Fraction(1, 2))
        assert out.zero_point == new_zp and out.scale == pytest.approx(0.5 * float(step))
        expected = [
            min(max(floor((v - zero_point) / step + new_zp + Fraction(1, 2)), 0), levels)
            for v in range(lo, hi + 1)
        ]
    assert out.codes.tolist() == expected


def test_requantize_rejects_a_non_int8_zero_point():
    with pytest.raises(ValueError, match="zero_point=200"):
        requantize(np.zeros(3, np.int8), 1.0, 200, 4)
