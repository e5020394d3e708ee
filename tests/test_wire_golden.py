"""Golden bytes of the activation frame.

THE LAYOUT BELOW IS A CONTRACT (docs/WIRE.md, "Worked example"). These bytes are written by hand,
one commented line per field; they are not produced by the encoder nor by struct-packing the same
format string. If a test here fails, the wire format changed: bump the format version and update
docs/WIRE.md instead of editing the bytes.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from sdk.errors import (
    BadMagicError,
    ChecksumError,
    ShapeMismatchError,
    TruncatedError,
    UnknownCodecError,
    UnsupportedVersionError,
    WireError,
)
from sdk.packing import Quantized
from sdk.wire import Codec, DType, FrameHeader, TensorRecord, decode_frame, encode_frame

HEADER = bytes.fromhex(
    "53504c54"  # 0x00 magic "SPLT"
    "0100"  # 0x04 format version 1 (u16)
    "3c00"  # 0x06 header length 60 (u16)
    "0000"  # 0x08 flags 0 (u16): not a raw frame
    "0100"  # 0x0a tensor count 1 (u16)
    "63616d2d303100000000000000000000"  # 0x0c device id "cam-01", 16 bytes UTF-8, NUL padded
    "2a00000000000000"  # 0x1c frame seq 42 (u64)
    "0300"  # 0x24 cut id 3 (u16)
    "0000"  # 0x26 reserved, zero (u16)
    "4d3c2b1a"  # 0x28 bundle id 0x1a2b3c4d (u32)
    "00401e18240a0600"  # 0x2c capture time 1_700_000_000_000_000 µs (u64)
    "c4491e18240a0600"  # 0x34 send time 1_700_000_000_002_500 µs (u64)
)
DESCRIPTOR = bytes.fromhex(
    "2f00"  # +0x00 descriptor length 47 = 28 fixed + 4*4 shape + 3 name (u16)
    "02"  # +0x02 dtype 2 = packed n-bit codes (u8)
    "04"  # +0x03 bits 4 (u8)
    "00"  # +0x04 codec 0 = none (u8)
    "04"  # +0x05 ndim 4 (u8)
    "03"  # +0x06 name length 3 (u8)
    "00"  # +0x07 reserved, zero (u8)
    "000000000000c03f"  # +0x08 scale 0.125 (f64)
    "08000000"  # +0x10 zero point 8 (i32)
    "06000000"  # +0x14 payload length 6 (u32)
    "d9df1699"  # +0x18 CRC32 0x9916dfd9 of the 6 payload bytes (u32)
    "01000000"  # +0x1c shape[0] = 1 (u32)
    "02000000"  # +0x20 shape[1] = 2
    "02000000"  # +0x24 shape[2] = 2
    "03000000"  # +0x28 shape[3] = 3
    "616374"  # +0x2c name "act" (UTF-8)
)
PAYLOAD = bytes.fromhex(
    "10"  # codes 0, 1 (code 0 in the low nibble: LSB-first)
    "32"  # codes 2, 3
    "54"  # codes 4, 5
    "76"  # codes 6, 7
    "98"  # codes 8, 9
    "fa"  # codes 10, 15
)
GOLDEN = HEADER + DESCRIPTOR + PAYLOAD
CODES = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15], np.uint8).reshape(1, 2, 2, 3)


def _crc_le(payload: bytes) -> bytes:
    return zlib.crc32(payload).to_bytes(4, "little")


def _encode_example() -> bytes:
    record = TensorRecord.packed("act", Quantized(CODES, 0.125, 8, 4))
    return encode_frame(
        device_id="cam-01",
        seq=42,
        cut_id=3,
        bundle_id=0x1A2B3C4D,
        tensors=[record],
        capture_ts=1_700_000_000.0,
        send_ts=1_700_000_000.0025,
    )


def test_golden_lengths_and_crc_are_self_consistent():
    assert len(HEADER) == 60 and len(DESCRIPTOR) == 47 and len(GOLDEN) == 113
    assert DESCRIPTOR[0x18:0x1C] == _crc_le(PAYLOAD)


def test_worked_example_decodes_to_its_fields():
    frame = decode_frame(GOLDEN)
    h = frame.header
    assert (h.magic, h.version, h.header_len, h.flags, h.tensor_count) == (b"SPLT", 1, 60, 0, 1)
    assert (h.device_id, h.seq, h.cut_id, h.bundle_id) == ("cam-01", 42, 3, 0x1A2B3C4D)
    assert (h.capture_us, h.send_us) == (1_700_000_000_000_000, 1_700_000_000_002_500)
    assert h.capture_ts == pytest.approx(1_700_000_000.0) and not h.is_raw
    (t,) = frame.tensors
    assert (t.name, t.shape, t.dtype, t.bits, t.scale, t.zero_point, t.codec) == (
        "act", (1, 2, 2, 3), DType.PACKED, 4, 0.125, 8, Codec.NONE,
    )  # fmt: skip
    np.testing.assert_array_equal(t.data, CODES)
    np.testing.assert_allclose(frame.dequantized()["act"], (CODES.astype(np.float32) - 8) * 0.125)


def test_worked_example_encodes_to_the_same_bytes():
    assert _encode_example() == GOLDEN


def test_header_to_bytes_is_the_golden_header():
    assert FrameHeader.from_bytes(GOLDEN).to_bytes() == HEADER


@pytest.mark.parametrize("cut", [0, 1, 8, 30, 59])
def test_truncated_header(cut):
    with pytest.raises(TruncatedError, match=f"got {cut}|remain|needs"):
        decode_frame(GOLDEN[:cut])


def test_truncated_header_from_bytes_names_sizes():
    with pytest.raises(TruncatedError, match="needs 60 bytes; got 20"):
        FrameHeader.from_bytes(GOLDEN[:20])


@pytest.mark.parametrize("cut", [60, 61, 87, 106, 107, 112])
def test_truncated_tensor(cut):
    with pytest.raises(TruncatedError):
        decode_frame(GOLDEN[:cut])


def test_bad_magic():
    with pytest.raises(BadMagicError, match=r"b'SPLX'.*expected magic b'SPLT'"):
        decode_frame(b"SPLX" + GOLDEN[4:])


def test_bad_magic_on_short_garbage_says_magic_not_truncation():
    with pytest.raises(BadMagicError):
        decode_frame(b"{}")


def test_from_bytes_is_pure_and_validate_is_separate():
    header = FrameHeader.from_bytes(b"JUNK" + GOLDEN[4:])  # parses: fails only on truncation
    assert header.magic == b"JUNK"
    with pytest.raises(BadMagicError):
        header.validate()


def test_unsupported_version():
    newer = GOLDEN[:4] + bytes.fromhex("0200") + GOLDEN[6:]  # version 2
    with pytest.raises(UnsupportedVersionError, match="version 2; this reader supports version 1"):
        decode_frame(newer)


def test_longer_newer_header_extra_fields_are_skipped():
    longer = (
        HEADER[:6]
        + bytes.fromhex("4400")  # header length 68 = 60 + 8 bytes of fields this reader does not know
        + HEADER[8:]
        + bytes.fromhex("deadbeefcafef00d")  # the unknown fields, skipped
        + DESCRIPTOR
        + PAYLOAD
    )
    frame = decode_frame(longer)
    assert frame.header.header_len == 68
    assert frame.header.seq == 42 and frame.tensors[0].name == "act"
    np.testing.assert_array_equal(frame.tensors[0].data, CODES)


def test_longer_tensor_descriptor_extra_fields_are_skipped():
    longer = (
        HEADER
        + bytes.fromhex("3300")  # descriptor length 51 = 47 + 4 unknown bytes
        + DESCRIPTOR[2:]
        + bytes.fromhex("01020304")  # fields of a newer writer, skipped
        + PAYLOAD
    )
    np.testing.assert_array_equal(decode_frame(longer).tensors[0].data, CODES)


def test_shorter_older_header_is_refused():
    older = HEADER[:6] + bytes.fromhex("3400") + HEADER[8:52] + DESCRIPTOR + PAYLOAD  # length 52, no send ts
    with pytest.raises(UnsupportedVersionError, match="header length 52 is shorter than the 60 bytes"):
        decode_frame(older)


def test_crc_mismatch():
    corrupted = GOLDEN[:-1] + bytes.fromhex("fb")  # last code 15 -> 11, CRC left as sent
    with pytest.raises(ChecksumError, match="0x9916dfd9"):
        decode_frame(corrupted)


def test_unknown_codec():
    bad = HEADER + DESCRIPTOR[:4] + bytes.fromhex("07") + DESCRIPTOR[5:] + PAYLOAD  # codec 7
    with pytest.raises(UnknownCodecError, match="codec id 7"):
        decode_frame(bad)


def test_unknown_dtype():
    bad = HEADER + DESCRIPTOR[:2] + bytes.fromhex("09") + DESCRIPTOR[3:] + PAYLOAD  # dtype 9
    with pytest.raises(UnknownCodecError, match="dtype id 9"):
        decode_frame(bad)


def test_shape_and_payload_length_disagree():
    # shape[3] = 4 -> 16 codes at 4 bits need 8 bytes, the payload has 6 (CRC still valid)
    bad = HEADER + DESCRIPTOR[:0x28] + bytes.fromhex("04000000") + DESCRIPTOR[0x2C:] + PAYLOAD
    with pytest.raises(ShapeMismatchError, match="is 6 bytes; shape .* needs 8"):
        decode_frame(bad)


def test_bits_not_allowed_for_dtype():
    bad = HEADER + DESCRIPTOR[:3] + bytes.fromhex("03") + DESCRIPTOR[4:] + PAYLOAD  # 3 bits
    with pytest.raises(ShapeMismatchError, match="bits 3"):
        decode_frame(bad)


def test_forged_huge_shape_is_refused_before_allocating():
    huge = bytes.fromhex("ffffffff")  # shape[1] = 4294967295
    bad = HEADER + DESCRIPTOR[:0x20] + huge + DESCRIPTOR[0x24:] + PAYLOAD
    with pytest.raises(ShapeMismatchError, match="at most 67108864"):
        decode_frame(bad)


def test_forged_ndim_is_refused():
    bad = HEADER + DESCRIPTOR[:5] + bytes.fromhex("ff") + DESCRIPTOR[6:] + PAYLOAD  # ndim 255
    with pytest.raises(ShapeMismatchError, match="ndim 255"):
        decode_frame(bad)


def test_forged_payload_length_is_truncation():
    bad = HEADER + DESCRIPTOR[:0x14] + bytes.fromhex("ffffff7f") + DESCRIPTOR[0x18:] + PAYLOAD
    with pytest.raises(TruncatedError, match="2147483647 bytes"):
        decode_frame(bad)


def test_trailing_bytes_are_refused():
    with pytest.raises(ShapeMismatchError, match="trailing"):
        decode_frame(GOLDEN + b"\0")


def test_every_error_is_a_wire_error():
    for bad in (b"", b"SPLT", GOLDEN[:-1], b"SPLX" + GOLDEN[4:]):
        with pytest.raises(WireError):
            decode_frame(bad)


def test_zero_sized_tensor_with_a_huge_dimension_is_refused():
    # shape (1, 0, 4294967295, 3): no elements, but numpy cannot even describe it
    bad = (
        HEADER
        + DESCRIPTOR[:0x14]
        + bytes.fromhex("00000000")  # payload length 0
        + bytes.fromhex("00000000")  # CRC32 of no bytes
        + bytes.fromhex("01000000")  # shape[0] = 1
        + bytes.fromhex("00000000")  # shape[1] = 0
        + bytes.fromhex("ffffffff")  # shape[2] = 4294967295
        + bytes.fromhex("03000000")  # shape[3] = 3
        + DESCRIPTOR[0x2C:]
    )
    with pytest.raises(ShapeMismatchError, match="0 counted as 1"):
        decode_frame(bad)


def test_docs_worked_example_is_these_bytes():
    """docs/WIRE.md's hex dump is the same contract: a third party implements from it."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "WIRE.md").read_text(encoding="utf-8")
    block = text.split("<!-- golden-hex: begin")[1].split("<!-- golden-hex: end -->")[0]
    dump = [line.split(":", 1)[1] for line in block.splitlines() if line[:4].strip() and ":" in line[:6]]
    assert bytes.fromhex("".join(dump)) == GOLDEN
