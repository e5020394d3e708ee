"""Hostile input: decode_frame raises only WireError, quickly, without allocating forged sizes."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk.errors import WireError
from sdk.wire import Codec, decode_frame, encode_activation, encode_raw

# derandomize: the same examples on every run (tests are deterministic); raise max_examples locally to dig.
FUZZ = settings(
    max_examples=300, deadline=250, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
_RNG = np.random.default_rng(11)
_ACTS = {
    "a": np.maximum(_RNG.integers(-128, 128, (1, 6, 6, 8), dtype=np.int8), -30).astype(np.int8),
    "b": _RNG.integers(-128, 128, (1, 3), dtype=np.int8),
}
_QUANT = {"a": (0.1, -30), "b": (0.5, 0)}
_KW = dict(device_id="cam-01", seq=9, cut_id=2, bundle_id=77, capture_ts=1.0e9)
VALID = [
    encode_activation(**_KW, activations=_ACTS, quant=_QUANT, bits=bits, codec=codec)
    for bits in (8, 6, 4, 2)
    for codec in (Codec.NONE, Codec.ZSTD)  # JPEG is for raw frames only (test_wire_jpeg.py)
] + [encode_raw(**_KW, image=np.zeros((8, 8, 3), np.uint8), codec=Codec.ZSTD)]
HEADER_LEN = 60


def _fix_crcs(data: bytes) -> bytes:
    """Recompute every payload CRC, so mutations reach the checks *behind* the CRC."""
    if len(data) < HEADER_LEN:
        return data
    out = bytearray(data)
    count = struct.unpack_from("<H", out, 10)[0]
    offset = struct.unpack_from("<H", out, 6)[0]
    for _ in range(count):
        if offset + 28 > len(out):
            break
        desc_len = struct.unpack_from("<H", out, offset)[0]
        length = struct.unpack_from("<I", out, offset + 20)[0]
        start = offset + desc_len
        struct.pack_into("<I", out, offset + 24, zlib.crc32(out[start : start + length]))
        offset = start + length
    return bytes(out)


def _decode_only_wire_errors(data: bytes) -> None:
    started = time.perf_counter()
    try:
        frame = decode_frame(data)
    except WireError:
        pass
    else:
        for record in frame.tensors:  # whatever decodes must be self-consistent
            assert record.data.shape == record.shape
        frame.dequantized()
    assert time.perf_counter() - started < 0.2


@given(st.binary(max_size=400))
@FUZZ
def test_random_bytes(data):
    _decode_only_wire_errors(data)


@given(st.binary(max_size=200))
@FUZZ
def test_random_bytes_behind_a_valid_prefix(tail):
    _decode_only_wire_errors(VALID[0][:12] + tail)
    _decode_only_wire_errors(VALID[0][:HEADER_LEN] + tail)


@given(st.sampled_from(VALID), st.data())
@FUZZ
def test_bit_flips(frame, data):
    out = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(out) * 8 - 1))
        out[position // 8] ^= 1 << (position % 8)
    _decode_only_wire_errors(bytes(out))
    _decode_only_wire_errors(_fix_crcs(bytes(out)))


@given(st.sampled_from(VALID), st.data())
@FUZZ
def test_truncations_and_splices(frame, data):
    cut = data.draw(st.integers(0, len(frame)))
    _decode_only_wire_errors(frame[:cut])
    other = data.draw(st.sampled_from(VALID))
    at = data.draw(st.integers(0, len(other)))
    spliced = frame[:cut] + other[at:]
    _decode_only_wire_errors(spliced)
    _decode_only_wire_errors(_fix_crcs(spliced))


@given(st.sampled_from(VALID), st.data())
@FUZZ
def test_forged_sizes(frame, data):
    """Overwrite a size field of the first descriptor with something huge or odd (CRCs fixed up)."""
    out = bytearray(frame)
    offset = HEADER_LEN
    field = data.draw(
        st.sampled_from(
            [
                (offset + 0, "<H"),  # descriptor length
                (offset + 5, "<B"),  # ndim
                (offset + 6, "<B"),  # name length
                (offset + 20, "<I"),  # payload length
                (offset + 28, "<I"),  # shape[0]
                (offset + 32, "<I"),  # shape[1]
                (10, "<H"),  # tensor count
                (6, "<H"),  # header length
            ]
        )
    )
    where, fmt = field
    limit = 2 ** (8 * struct.calcsize(fmt)) - 1
    value = data.draw(st.one_of(st.integers(0, 64), st.integers(limit - 64, limit), st.integers(0, limit)))
    struct.pack_into(fmt, out, where, value)
    _decode_only_wire_errors(bytes(out))
    _decode_only_wire_errors(_fix_crcs(bytes(out)))


def _zstd_frame_with_forged_content_size(content_size: int) -> bytes:
    """A zstd frame whose header claims ``content_size`` bytes; the data is a single 1-byte RLE block."""
    magic = bytes.fromhex("28b52ffd")
    descriptor = bytes([0b1110_0000])  # FCS field 8 bytes, single segment
    fcs = content_size.to_bytes(8, "little")
    block = bytes.fromhex("130000") + b"\x00"  # last block, RLE, size 2 -> b"\x00\x00"
    return magic + descriptor + fcs + block


@pytest.mark.parametrize("claimed", [2**40, 2**63 - 1, 3])
def test_zstd_payload_claiming_a_huge_size_is_bounded(claimed):
    """A zstd payload whose frame header lies: never allocate what it claims."""
    good = VALID[3]  # bits 6 + zstd
    out = bytearray(good[:HEADER_LEN])
    struct.pack_into("<H", out, 10, 1)  # keep only the first tensor
    desc_len = struct.unpack_from("<H", good, HEADER_LEN)[0]
    desc = bytearray(good[HEADER_LEN : HEADER_LEN + desc_len])
    payload = _zstd_frame_with_forged_content_size(claimed)
    desc[4] = 1  # codec zstd
    struct.pack_into("<II", desc, 20, len(payload), zlib.crc32(payload))
    started = time.perf_counter()
    with pytest.raises(WireError):
        decode_frame(bytes(out + desc + payload))
    assert time.perf_counter() - started < 0.2


@pytest.mark.parametrize("write_content_size", [True, False])
def test_zstd_bomb_is_bounded_by_the_expected_size(write_content_size):
    """A genuine zstd frame of 16 MiB of zeros (a few hundred bytes on the wire) for a 216-byte tensor."""
    import zstandard

    bomb = zstandard.ZstdCompressor(level=1, write_content_size=write_content_size).compress(bytes(16 << 20))
    good = VALID[3]
    out = bytearray(good[:HEADER_LEN])
    struct.pack_into("<H", out, 10, 1)
    desc_len = struct.unpack_from("<H", good, HEADER_LEN)[0]
    desc = bytearray(good[HEADER_LEN : HEADER_LEN + desc_len])
    desc[4] = 1
    struct.pack_into("<II", desc, 20, len(bomb), zlib.crc32(bomb))
    started = time.perf_counter()
    with pytest.raises(WireError, match="more than 216|too much memory"):
        decode_frame(bytes(out + desc + bomb))
    assert time.perf_counter() - started < 0.2
