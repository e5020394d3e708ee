"""Quantized activations on the wire: requantize int8 codes to n bits, pack them into bytes, and back.

Pure numpy, vectorised (no Python loop over elements). The numerics only; the frame layout lives in
``sdk/wire.py`` and the byte-level contract in ``docs/WIRE.md``.

Affine convention everywhere: ``real = scale * (code - zero_point)``.

Bit order of :func:`pack_bits` (a contract, see docs/WIRE.md "Bit packing"): codes are flattened in C
order (for an NHWC activation, along the channel axis first) and written as one little-endian
bit stream, LSB-first: code ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, where stream
bit ``k`` is bit ``k % 8`` (value ``1 << (k % 8)``) of byte ``k // 8``. So at 4 bits code 0 is the low
nibble of byte 0 and code 1 its high nibble; at 2 bits byte 0 holds codes 0..3 from its low bits up;
at 6 bits four codes fill three bytes (``c0 | c1 << 6 | c2 << 12 | c3 << 18`` little-endian); at 8
bits a code is a byte. The last byte is padded with zero bits. Packed length: ``ceil(count*bits/8)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SUPPORTED_BITS",
    "Quantized",
    "dequantize",
    "pack_bits",
    "packed_size",
    "requant_int8",
    "requantize",
    "unpack_bits",
]

#: Bit widths this module packs (and the wire format carries).
SUPPORTED_BITS: tuple[int, ...] = (8, 6, 4, 2)

# Lookup tables are indexed by the uint8 view of an int8 code: entry u stands for int8 value
# u (u < 128) or u - 256 (u >= 128). np.take on a uint8 view is the fastest numpy gather.
_INT8_VALUES = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8).astype(np.int64)
_I16, _U2, _U4 = np.dtype(np.int16), np.dtype("<u2"), np.dtype("<u4")


@dataclass(frozen=True, slots=True)
class Quantized:
    """Unsigned n-bit codes with their affine parameters: ``real ≈ scale * (codes - zero_point)``.

    ``zero_point`` is an integer but may lie outside ``[0, 2**bits - 1]`` when the tensor does not
    straddle zero (e.g. all-positive values); real 0 is exactly representable when it is in range.
    """

    codes: np.ndarray  # uint8, same shape as the input, values in [0, 2**bits - 1]
    scale: float
    zero_point: int
    bits: int

    def dequantize(self) -> np.ndarray:
        """The float32 values these codes stand for."""
        return dequantize(self.codes, self.scale, self.zero_point)


def _check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits!r} is not supported; expected one of {SUPPORTED_BITS}")


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits occupy once packed: ``ceil(count * bits / 8)``."""
    _check_bits(bits)
    if count < 0:
        raise ValueError(f"count={count} must be >= 0")
    return (count * bits + 7) // 8


def _lut_int8(q: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a 256-entry table (entry u is for the int8 whose bit pattern is u) to int8 ``q``."""
    return lut.take(q.view(np.uint8))


def _require_int8(q: np.ndarray, what: str) -> np.ndarray:
    q = np.asarray(q)
    if q.dtype != np.int8:
        raise TypeError(f"{what} must be an int8 array (the head's quantized output); got dtype {q.dtype}")
    return q


def requantize(q: np.ndarray, scale: float, zero_point: int, bits: int) -> Quantized:
    """Re-express int8 codes ``q`` (``real = scale * (q - zero_point)``) as unsigned ``bits``-bit codes.

    bits=8 is lossless: ``code = q + 128``, ``zero_point + 128``, same scale. Below 8 bits the
    per-tensor (per-frame) int8 range ``[lo, hi] = [min(q), max(q)]`` is mapped onto the n-bit grid
    (``levels = 2**bits - 1``):

    - ``hi - lo <= levels``: step 1, ``code = q - lo``, ``zero_point' = zero_point - lo``, same
      scale: lossless (this covers constant tensors).
    - otherwise ``step = (hi - lo) / levels`` int8 units, ``scale' = scale * step``,
      ``zero_point' = floor((zero_point - lo) / step + 1/2)`` and
      ``code = clip(floor((q - zero_point) / step + zero_point' + 1/2), 0, levels)``, computed
      exactly in integers. Error <= half a step (``scale' / 2``) per element; real 0 is exact.
    """
    q = _require_int8(q, "q")
    _check_bits(bits)
    scale, zero_point = float(scale), int(zero_point)
    if not -128 <= zero_point <= 127:
        raise ValueError(f"zero_point={zero_point} is not an int8 zero point (expected -128..127)")
    codes, scale, zero_point = _requantized(q, scale, zero_point, bits)
    return Quantized(codes=codes, scale=scale, zero_point=zero_point, bits=bits)


def _requantized(
    q: np.ndarray, scale: float, zero_point: int, bits: int, *, wide: bool = False
) -> tuple[np.ndarray, float, int]:
    """:func:`requantize` of checked arguments: (uint8 codes of ``q``'s shape, scale, zero point).

    ``wide``: the codes may come back as the int16 array they were computed in (same values, C order)."""
    if bits == 8:
        return np.bitwise_xor(q.view(np.uint8), np.uint8(0x80)), scale, zero_point + 128
    levels = (1 << bits) - 1
    lo, hi = (int(np.minimum.reduce(q, axis=None)), int(np.maximum.reduce(q, axis=None))) if q.size else (0, 0)
    span = hi - lo
    if span <= levels:  # q - lo lies in [0, span]: int8 arithmetic cannot overflow
        return np.subtract(q, np.int8(lo)).view(np.uint8), scale, zero_point - lo
    new_zp = (2 * (zero_point - lo) * levels + span) // (2 * span)
    # floor((2N + span) / (2 span)) with N = (q - zero_point) * levels + new_zp * span. Every
    # intermediate stays within int16 for levels <= 63 and |zero_point| <= 128 (|offset| < 16640,
    # |2 q levels| <= 16128, the sum in [0, 32640]), and numpy's int16 ops are SIMD. The code grows
    # with q and is >= 0 at q = lo (new_zp rounds the same quantity), so it needs clipping only when
    # the code of hi exceeds levels (by one, when that quantity ends in exactly one half): rarely.
    offset = 2 * (new_zp * span - zero_point * levels) + span
    acc = q.astype(np.int16)
    acc *= 2 * levels
    acc += offset
    acc //= 2 * span
    if (2 * levels * hi + offset) // (2 * span) > levels:
        np.clip(acc, 0, levels, out=acc)
    return acc if wide else acc.astype(np.uint8), scale * span / levels, new_zp


def wire_codes(q: np.ndarray, scale: float, zero_point: int, bits: int) -> tuple[bytes, float, int]:
    """(packed payload, scale, zero point) of int8 ``q`` at ``bits`` bits: ``requantize`` then
    ``pack_bits``, for arguments the caller has checked (int8 array, int8 zero point, supported bits)."""
    codes, scale, zero_point = _requantized(q, scale, zero_point, bits, wide=True)
    if codes.dtype == _I16:
        if bits == 4 and codes.ndim and not codes.shape[-1] % 2 and codes.flags.c_contiguous:
            # int16 code pairs as one u32 c0 | c1 << 16: the low byte of (v | v >> 12) is c0 | c1 << 4
            v = codes.view(_U4)
            w = v >> 12
            w |= v
            return w.astype(np.uint8).tobytes(), scale, zero_point
        codes = codes.astype(np.uint8)
    return _pack_codes(codes, bits), scale, zero_point


def dequantize(codes: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """``float32(scale * (codes - zero_point))`` for uint8 or int8 codes of any shape."""
    codes = np.asarray(codes)
    if codes.size <= 64:  # a few logits: the table costs more than the arithmetic (same float32 values)
        return ((codes.astype(np.float64) - zero_point) * scale).astype(np.float32)
    if codes.dtype == np.uint8:
        lut = ((np.arange(256, dtype=np.float64) - zero_point) * scale).astype(np.float32)
        return np.take(lut, codes)
    if codes.dtype == np.int8:
        lut = ((_INT8_VALUES.astype(np.float64) - zero_point) * scale).astype(np.float32)
        return _lut_int8(codes, lut)
    return ((codes.astype(np.float64) - zero_point) * scale).astype(np.float32)


def requant_int8(q: np.ndarray, scale_in: float, zp_in: int, scale_out: float, zp_out: int) -> np.ndarray:
    """Rescale int8 codes from ``(scale_in, zp_in)`` to ``(scale_out, zp_out)``, rounded and clipped.

    Used to feed one int8 model's output into another int8 model whose input quantization differs.
    """
    q = _require_int8(q, "q")
    if not scale_out > 0:
        raise ValueError(f"scale_out={scale_out!r} must be > 0")
    real = (_INT8_VALUES - int(zp_in)) * float(scale_in)
    lut = np.clip(np.rint(real / float(scale_out)) + int(zp_out), -128, 127).astype(np.int8)
    return _lut_int8(q, lut)


# ---- bit packing -------------------------------------------------------------------------------
# Each stage merges byte pairs: two codes of b bits in adjacent bytes become one 2b-bit value in one
# byte. Viewing the pair as a little-endian u16 v = c0 | c1 << 8, the byte (v | v >> (8 - b)) & 0xff
# is c0 | c1 << b. numpy runs these u16 ops with SIMD, which is far faster than strided slicing.


def _merge_pairs(codes: np.ndarray, bits: int) -> np.ndarray:
    v = codes.view(_U2)
    w = v >> (8 - bits)
    w |= v
    return w.astype(np.uint8)


def _split_pairs(packed: np.ndarray, bits: int) -> np.ndarray:
    v = packed.astype("<u2")
    v |= v << (8 - bits)
    v &= ((1 << bits) - 1) * 0x0101
    return v.view(np.uint8)


def _flat_uint8(codes: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(f"codes must be a uint8 array; got dtype {codes.dtype} (use requantize() first)")
    flat = np.ascontiguousarray(codes).reshape(-1)
    if bits < 8 and flat.size and int(flat.max()) >> bits:
        raise ValueError(f"codes hold {int(flat.max())}, which does not fit in {bits} bits")
    return flat


def _padded(flat: np.ndarray, multiple: int) -> np.ndarray:
    rest = flat.size % multiple
    if rest == 0:
        return flat
    out = np.zeros(flat.size + multiple - rest, np.uint8)
    out[: flat.size] = flat
    return out


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned ``bits``-bit codes (uint8 array, any shape, C order) LSB-first into bytes."""
    _check_bits(bits)
    return _pack_codes(_flat_uint8(codes, bits), bits)


def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """:func:`pack_bits` for uint8 codes already known to fit in ``bits`` bits (no range check)."""
    flat = codes.reshape(-1) if codes.flags.c_contiguous else np.ascontiguousarray(codes).reshape(-1)
    if bits == 8:
        return flat.tobytes()
    if bits == 4:
        return _merge_pairs(_padded(flat, 2), 4).tobytes()
    if bits == 2:
        return _merge_pairs(_merge_pairs(_padded(flat, 4), 2), 4).tobytes()
    # 6 bits: byte pairs -> 12-bit u16 (c0 | c1 << 6), u16 pairs -> 24-bit word in a u32, keep 3 bytes
    v = _padded(flat, 4).view("<u2")
    half = (v & 0x3F) | ((v >> 2) & 0xFC0)
    u = half.view("<u4")
    word = (u & 0xFFF) | ((u >> 4) & 0xFFF000)
    lanes = word.view(np.uint8).reshape(-1, 4)
    out = np.empty((lanes.shape[0], 3), np.uint8)
    for k in range(3):  # three byte lanes, not a loop over elements (faster than one strided copy)
        out[:, k] = lanes[:, k]
    return out.tobytes()[: packed_size(flat.size, 6)]


def unpack_bits(data: bytes | bytearray | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` codes as a flat uint8 array.

    ``data`` must hold exactly ``ceil(count * bits / 8)`` bytes (``ValueError`` otherwise).
    """
    expected = packed_size(count, bits)
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != expected:
        raise ValueError(f"{count} codes of {bits} bits need {expected} bytes; got {raw.size}")
    if bits == 8:
        return raw
    if bits == 4:
        return _split_pairs(raw, 4)[:count]
    if bits == 2:
        return _split_pairs(_split_pairs(raw, 4), 2)[:count]
    # 6 bits
    whole = _padded(raw, 3).reshape(-1, 3).astype(np.uint32)
    word = whole[:, 0] | (whole[:, 1] << 8) | (whole[:, 2] << 16)
    out = np.empty((word.size, 4), np.uint8)
    for k in range(4):  # four output lanes, not a loop over elements
        out[:, k] = (word >> (6 * k)) & 0x3F
    return out.reshape(-1)[:count]
