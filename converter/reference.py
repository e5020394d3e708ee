"""A workload's bundle: its committed, trained model converted on calibration frames made by the same
seeded generator it was trained on (test split: objects and photo bands it never saw).

One function serves the README's first command, the tests, the demo and the benchmarks
(``build_reference_bundle``; ``bundle_path`` for callers that want the folder), and reuses a bundle
already built for the same model and settings (its manifest records them). The workload defaults to
``digits``, the fast one the tests use; the demo and ``bench dynamic`` name theirs
(``converter.workloads.DEFAULT_WORKLOAD`` when the user does not).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from converter.convert import ConversionResult, Progress, convert, converter_digest
from converter.data import CalibData
from converter.workloads import get
from sdk.errors import BundleError
from sdk.manifest import Manifest, load_manifest, sha256_file

CALIB_FRAMES = 600
CALIB_SEED = 1234


def default_bundle_dir(workload: str = "digits") -> Path:
    """$SPLITEDGE_CACHE or ~/.cache/splitedge, then reference-bundle (digits) or bundle-NAME."""
    return get(workload).bundle_dir()


def calibration_data(n: int = CALIB_FRAMES, seed: int = CALIB_SEED, workload: str = "digits") -> CalibData:
    w = get(workload)
    frames = w.frames(n, seed, "test")
    if w.name == "digits":  # the source string the digits bundles have always recorded
        source = f"reference_data.make_frames({n}, seed={seed}, split='test')"
    else:
        source = f"workload {w.name}: reference_data.generate({n}, seed={seed}, split='test', " \
                 f"size={w.frame_size}, objects={w.objects!r})"
    return CalibData(frames.x, frames.y, source, w.class_names())


def build_reference_bundle(
    out: str | Path | None = None,
    *,
    workload: str = "digits",
    board: str | None = None,
    bits: Sequence[int] = (8, 4, 2),
    n: int = CALIB_FRAMES,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> Manifest:
    """Convert the workload's model into `out` unless a valid bundle of the same model, settings and converter
    code (``converter_digest``) is there."""
    w = get(workload)
    asset = w.model_path()
    out = Path(out) if out is not None else w.bundle_dir()
    model_sha = sha256_file(asset)
    if out.exists() and not rebuild:
        try:
            m = load_manifest(out)
            same = (m.model_sha256 == model_sha and tuple(sorted(m.bits)) == tuple(sorted(bits))
                    and m.board == (board or "host")
                    and f"({n}, seed={CALIB_SEED}, split='test'" in m.extra.get("data_source", "")
                    and m.extra.get("converter_digest") == converter_digest())
            if same:
                return m
        except BundleError:
            pass  # stale or damaged: rebuild it
    result: ConversionResult = convert(asset, calibration_data(n, workload=workload), out, board=board, bits=bits,
                                       force=True, progress=progress)
    return result.manifest


def bundle_path(workload: str = "digits", *, progress: Progress | None = None) -> tuple[Path, Manifest]:
    """(folder, manifest) of the workload's default bundle, built on first use and reused afterwards."""
    out = default_bundle_dir(workload)
    return out, build_reference_bundle(out, workload=workload, progress=progress)
