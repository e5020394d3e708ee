"""Pack a frame's payload at a cut: the raw frame at the raw cut (as a JPEG with ``raw_jpeg_quality``), else the head's int8 activations at the
chosen bit width, with the profile's codec (the wire format is ``sdk.wire``; this module only chooses
what goes in). Used by the runner for a frame's own escalation and for shadow probes.

**The raw frame as JPEG is device work.** Its encode time is the raw cut's "head" time and its size
the raw cut's bytes, both learned from the frames themselves (:meth:`PayloadEncoder.encode_timed`; the
runner feeds them to the estimator and ``CutPolicy.observe_payload``). Before the raw cut is first
planned, :meth:`PayloadEncoder.size_raw` encodes one frame untimed and once more timed: the process's
first encode loads Pillow's JPEG codec (~100 ms here, 400 ms once scaled to a Zero 2 W), and a raw cut
priced at that would never be tried again to correct it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from device_runner.heads import CutOutput
from sdk.config import CodecChoice
from sdk.manifest import CutKind, CutSpec, Manifest
from sdk.wire import Codec, encode_activation, encode_raw

__all__ = ["PayloadEncoder", "codec_for"]


def codec_for(choice: CodecChoice) -> Codec:
    """The wire codec for a profile's ``codec``; ``auto`` falls back to none without zstandard."""
    if choice is CodecChoice.NONE:
        return Codec.NONE
    try:
        import zstandard  # noqa: F401
    except ImportError:
        if choice is CodecChoice.ZSTD:
            raise
        return Codec.NONE
    return Codec.ZSTD  # the encoder keeps zstd only for payloads it makes smaller (= auto)


class PayloadEncoder:
    """One device's payloads for a bundle; the per-cut quantization table is built on a cut's first frame."""

    def __init__(self, manifest: Manifest, device_id: str, codec: Codec, jpeg_quality: int | None = None, *,
                 clock: Callable[[], float] = time.time, to_board: Callable[[float], float] | None = None) -> None:
        """``jpeg_quality``: the raw frame goes as a JPEG of that quality (``[device] raw_jpeg_quality``);
        ``clock`` times its encode (a simulated clock charges only the board time) and ``to_board`` turns
        host ms into board ms (the executor's ``raw_board_ms``; None: the host is the board)."""
        self.manifest, self.device_id, self.codec = manifest, device_id, codec
        self.jpeg_quality = jpeg_quality
        self.clock, self.to_board = clock, to_board
        self.raw_sized = not jpeg_quality  # size_raw ran, or nothing to size (once per encoder: a swap makes a new one)
        self._quant: dict[int, dict[str, tuple[float, int]]] = {}  # per cut: {tensor: (scale, zero point)}

    def encode_timed(self, cut: CutSpec, bits: int, seq: int, frame: np.ndarray, out: CutOutput | None,
                     capture_ts: float) -> tuple[bytes, float | None, float]:
        """(payload, board ms, host ms) of the frame at ``cut``: the times of the raw frame's JPEG encode,
        (None, 0) for any other payload (its device work is the head's, timed by the executor)."""
        if cut.kind is not CutKind.RAW or not self.jpeg_quality:
            return self.encode(cut, bits, seq, frame, out, capture_ts), None, 0.0
        t0 = self.clock()
        payload = self.encode(cut, bits, seq, frame, out, capture_ts)
        host_ms = (self.clock() - t0) * 1000.0
        return payload, float(self.to_board(host_ms)) if self.to_board is not None else host_ms, host_ms

    def size_raw(self, seq: int, frame: np.ndarray, capture_ts: float) -> tuple[bytes, float, float] | None:
        """Once per encoder, with a JPEG quality: one untimed encode of the raw frame (module doc), then
        :meth:`encode_timed`'s (payload, board ms, host ms); None when already done or not JPEG."""
        if self.raw_sized:
            return None
        self.raw_sized = True
        raw = self.manifest.cut(0)
        self.encode(raw, 0, seq, frame, None, capture_ts)
        payload, board_ms, host_ms = self.encode_timed(raw, 0, seq, frame, None, capture_ts)
        assert board_ms is not None
        return payload, board_ms, host_ms

    def encode(self, cut: CutSpec, bits: int, seq: int, frame: np.ndarray, out: CutOutput | None,
               capture_ts: float) -> bytes:
        """The frame's wire payload at ``cut`` (``out``: the head's output; None at the raw cut)."""
        if cut.kind is CutKind.RAW:
            return encode_raw(
                device_id=self.device_id, seq=seq, bundle_id=self.manifest.wire_bundle_id,
                image=np.asarray(frame, dtype=np.uint8)[None], capture_ts=capture_ts,
                name=cut.tensors[0].name, cut_id=cut.index,
                **({"codec": Codec.JPEG, "jpeg_quality": self.jpeg_quality} if self.jpeg_quality else {"codec": self.codec}),
            )  # fmt: skip
        assert out is not None
        quant = self._quant.get(cut.index)
        if quant is None:
            quant = self._quant[cut.index] = {t.name: (t.scale, t.zero_point) for t in cut.tensors}
        return encode_activation(
            device_id=self.device_id, seq=seq, cut_id=cut.index, bundle_id=self.manifest.wire_bundle_id,
            activations=out.activations, quant=quant, bits=bits or 8, capture_ts=capture_ts, codec=self.codec,
        )  # fmt: skip
