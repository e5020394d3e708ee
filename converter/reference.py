"""The reference bundle: the committed reference model converted on calibration frames made from
the same seeded generator it was trained on (test split: digits it never saw).

One function serves the README's first command, the tests, the demo and the benchmarks, and reuses
a bundle already built for the same model and settings (its manifest records them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from converter.convert import ConversionResult, Progress, convert
from converter.data import CalibData
from sdk.errors import BundleError
from sdk.manifest import Manifest, load_manifest, sha256_file

CALIB_FRAMES = 600
CALIB_SEED = 1234


def default_bundle_dir() -> Path:
    """$SPLITEDGE_CACHE or ~/.cache/splitedge, then reference-bundle."""
    root = Path(os.environ.get("SPLITEDGE_CACHE", Path.home() / ".cache" / "splitedge"))
    return root / "reference-bundle"


def calibration_data(n: int = CALIB_FRAMES, seed: int = CALIB_SEED) -> CalibData:
    from converter.reference_data import make_frames

    x, y = make_frames(n, seed=seed, split="test")
    return CalibData(x, y, f"reference_data.make_frames({n}, seed={seed}, split='test')",
                     tuple(str(d) for d in range(10)))


def build_reference_bundle(
    out: str | Path | None = None,
    *,
    board: str | None = None,
    bits: Sequence[int] = (8, 4, 2),
    n: int = CALIB_FRAMES,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> Manifest:
    """Convert the reference model into `out` unless a valid bundle of the same model and settings is there."""
    from converter.reference_model import ASSET_PATH

    out = Path(out) if out is not None else default_bundle_dir()
    model_sha = sha256_file(ASSET_PATH)
    if out.exists() and not rebuild:
        try:
            m = load_manifest(out)
            same = (m.model_sha256 == model_sha and tuple(sorted(m.bits)) == tuple(sorted(bits))
                    and m.board == (board or "host") and m.extra.get("data_source", "").endswith(f"({n}, seed={CALIB_SEED}, split='test')"))
            if same:
                return m
        except BundleError:
            pass  # stale or damaged: rebuild it
    result: ConversionResult = convert(ASSET_PATH, calibration_data(n), out, board=board, bits=bits, force=True,
                                       progress=progress)
    return result.manifest
