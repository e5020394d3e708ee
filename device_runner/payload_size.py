"""Learn a cut's payload size from the payloads sent: the raw frame as JPEG.

The manifest prices the raw cut at the uncompressed frame's bytes; as a JPEG (``[device]
raw_jpeg_quality``) its size depends on the scene, so the device learns it from the frames it encodes:
an EWMA (weight ``ALPHA``) of the sizes sent, reported to the policy only when it moved by more than
``MOVE`` (relative) from the size the plan prices, so a steady scene does not re-solve the plan every frame.
"""

from __future__ import annotations

__all__ = ["ALPHA", "MOVE", "PayloadSizes"]

ALPHA = 0.2  # EWMA weight of a sent payload's size
MOVE = 0.05  # a learned size this far (relative) from the priced one re-prices the cut


class PayloadSizes:
    """Per cut: the EWMA of the payload bytes sent."""

    def __init__(self) -> None:
        self._ewma: dict[int, float] = {}

    def learn(self, cut: int, nbytes: int, priced: int) -> int | None:
        """Add a payload of ``nbytes`` sent at ``cut``, priced at ``priced`` bytes by the plan; returns
        the new price when the cut's first size or when the EWMA moved by more than ``MOVE``, else None."""
        if nbytes <= 0:
            return None
        learned = self._ewma.get(cut)
        value = float(nbytes) if learned is None else learned + ALPHA * (nbytes - learned)
        self._ewma[cut] = value
        if learned is None or abs(round(value) - priced) > MOVE * priced:
            return max(1, round(value))
        return None
