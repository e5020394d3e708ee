"""The device's half of an over-the-air update: load a verified bundle's LiteRT heads before the swap.

Receiving, verifying and handing over a bundle is :mod:`sdk.update` (shared with the cloud tail workers);
what a device must do with a verified bundle before it may run it - load every head and exit and run each
once - is here, because it needs LiteRT.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from sdk.config import BoardSpec
from sdk.manifest import CutKind, Manifest
from sdk.update import Prepare, StagedBundle

__all__ = ["litert_prepare"]


def litert_prepare(board: BoardSpec, make_policy: Callable[[Manifest], object] | None = None) -> Prepare:
    """The CLI's ``prepare``: LiteRT heads of the new bundle, every head and exit loaded and run once on a blank
    frame (a model that does not load fails here, not on a live frame), and its policy from ``make_policy``."""

    def prepare(path: Path, manifest: Manifest) -> StagedBundle:
        from device_runner.heads import LiteRTHeads

        heads = LiteRTHeads(path, manifest, board)
        frame = np.zeros(manifest.input.shape, dtype=np.uint8)
        times = {c.index: heads.run(c, frame).device_ms for c in manifest.cuts if c.kind is not CutKind.RAW}
        return StagedBundle(path, manifest, heads, make_policy(manifest) if make_policy else None, times)

    return prepare
