"""Pack a frame's payload at a cut: the raw frame at the raw cut (as a JPEG with ``raw_jpeg_quality``), else the head's int8 activations at the
chosen bit width, with the profile's codec (the wire format is ``sdk.wire``; this module only chooses
what goes in). Used by the runner for a frame's own escalation and for shadow probes."""

from __future__ import annotations

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

    def __init__(self, manifest: Manifest, device_id: str, codec: Codec, jpeg_quality: int | None = None) -> None:
        """``jpeg_quality``: the raw frame goes as a JPEG of that quality (``[device] raw_jpeg_quality``)."""
        self.manifest, self.device_id, self.codec = manifest, device_id, codec
        self.jpeg_quality = jpeg_quality
        self._quant: dict[int, dict[str, tuple[float, int]]] = {}  # per cut: {tensor: (scale, zero point)}

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
