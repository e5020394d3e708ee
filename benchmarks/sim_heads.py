"""Heads in simulated time: a :class:`~device_runner.heads.CutExecutor` that replays recorded outputs.

:class:`RecordedHeads` stands in for ``LiteRTHeads`` at the runner's executor seam: running a cut on
frame ``k`` of the replayed frames returns what the real head and exit produced on that frame when the
bundle was measured (the int8 activations the runner packs and sends, the exit's prediction) after the
cut's measured board time, which it spends by advancing the :class:`~benchmarks.sim_clock.SimClock`
(messages due meanwhile are delivered, as on a device). A frame that is not one of the replayed ones
(the runner's blank frame when it times every head on start) gets frame 0's outputs.

Frames are recognised by where their pixels live: the replay's source yields views ``frames[k]`` of one
array, so ``k`` is the view's offset in it - no hashing, and the runner passes the frame through as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from benchmarks.sim_clock import SimClock
from device_runner.heads import CutOutput, Prediction
from sdk.manifest import CutSpec

__all__ = ["Recorded", "RecordedHeads"]


#: per frame of a cut: (activations {tensor: int8 with a batch dimension of 1}, the exit's or model's prediction)
Recorded = tuple[Mapping[str, np.ndarray], Prediction | None]


class RecordedHeads:
    """A :class:`~device_runner.heads.CutExecutor` over recorded per-frame outputs and per-cut board ms."""

    emulated = False  # the times are the board's already: nothing to stretch

    def __init__(self, clock: SimClock, frames: np.ndarray, outputs: Mapping[int, Sequence[Recorded]],
                 board_ms: Mapping[int, float], *, raw_ms: float | None = None) -> None:
        """``raw_ms``: the board ms of encoding the raw frame as JPEG (:meth:`raw_board_ms`)."""
        self.clock, self.frames, self.outputs, self.board_ms = clock, frames, outputs, board_ms
        self.raw_ms = raw_ms
        self._base = int(frames.__array_interface__["data"][0])
        self._stride = int(frames.strides[0]) if frames.ndim else 0
        self.runs = 0

    def index(self, frame: np.ndarray) -> int:
        """Which replayed frame ``frame`` is (0 for any other array)."""
        offset = int(frame.__array_interface__["data"][0]) - self._base
        if self._stride <= 0 or offset < 0 or offset % self._stride or offset // self._stride >= len(self.frames):
            return 0
        return offset // self._stride

    def raw_board_ms(self, host_ms: float) -> float:
        """The measured board ms of the raw frame's JPEG encoding (the runner sleeps it on the sim clock)."""
        return self.raw_ms if self.raw_ms is not None else host_ms

    def run(self, cut: CutSpec, frame: np.ndarray) -> CutOutput:
        recorded = self.outputs.get(cut.index)
        if not recorded:
            raise ValueError(f"cut {cut.index}: no recorded outputs to replay (measured cuts: {sorted(self.outputs)})")
        acts, pred = recorded[self.index(frame) % len(recorded)]
        ms = float(self.board_ms[cut.index])
        self.clock.sleep(ms / 1000.0)
        self.runs += 1
        return CutOutput(cut.index, dict(acts), pred, ms, 0.0, ms, False)
