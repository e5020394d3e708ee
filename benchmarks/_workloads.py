"""Which workloads the wire, device and cloud benchmarks run on, and the line each of their tables opens with.

Each of those modules takes ``run(workloads=...)``: a list of names of ``converter.workloads``, a
comma-separated string, ``"all"``, or None (``$SPLITEDGE_BENCH_WORKLOADS``, else every workload whose
trained model is in ``converter/assets/``, digits included). A workload whose trained model is missing is
listed in the section with the command that trains it; one whose bundle cannot be built is listed with
the error. A bundle folder (``bundle=`` or ``$SPLITEDGE_BENCH_BUNDLE``) replaces the workloads by that
one bundle. Bundles are built on first use by ``converter.reference.bundle_path`` (minutes for a 224 px
model on two cores) and reused afterwards.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter import workloads as wl
from sdk.manifest import CutKind, Manifest, load_manifest

ENV = "SPLITEDGE_BENCH_WORKLOADS"
BUNDLE_ENV = "SPLITEDGE_BENCH_BUNDLE"
FRAME_SEED = 5  #: test-split frames, not the calibration seed

Spec = str | Sequence[str] | None


@dataclass(frozen=True, slots=True)
class Target:
    """One bundle to measure: a workload's (``workload`` set) or a user's folder."""

    name: str
    root: Path
    manifest: Manifest
    workload: wl.Workload | None

    def frames(self, n: int, seed: int = FRAME_SEED) -> np.ndarray:
        """uint8 (n, H, W, C): the workload's labelled test frames, or seeded random bytes for a user's bundle."""
        if self.workload is not None:
            return np.ascontiguousarray(self.workload.frames(n, seed, "test").x)
        shape = tuple(self.manifest.input.shape)
        return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)

    @property
    def splits(self) -> list:
        return [c for c in self.manifest.cuts if c.kind is CutKind.SPLIT]

    def describe(self) -> str:
        """'model X (workload W: description), bundle 0x..., input HxWxC = N bytes' for a table's header."""
        m = self.manifest
        shape = "x".join(map(str, m.input.shape))
        what = f"workload `{self.name}`: {self.workload.description}" if self.workload else f"bundle `{self.root}`"
        return (f"model {m.model_name} ({what}), bundle 0x{m.wire_bundle_id:08x}, "
                f"input {shape} = {m.input.nbytes:,} bytes")


def host() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def choose(spec: Spec = None) -> tuple[list[wl.Workload], list[wl.Workload]]:
    """(workloads to run, workloads left out because their trained model is missing), in ``names()`` order.

    Unknown names raise ``BundleError`` naming the known ones."""
    if spec is None:
        spec = os.environ.get(ENV) or None
    if isinstance(spec, str):
        spec = None if spec.strip().lower() in ("", "all") else [s.strip() for s in spec.split(",") if s.strip()]
    chosen = [wl.get(n) for n in spec] if spec is not None else [wl.get(n) for n in wl.names()]
    if spec is not None:
        chosen.sort(key=lambda w: wl.names().index(w.name))
    present = [w for w in chosen if w.asset.is_file()]
    return present, [w for w in chosen if not w.asset.is_file()]


def targets(spec: Spec = None, bundle: str | Path | None = None) -> tuple[list[Target], list[str]]:
    """The bundles to measure and Markdown bullet lines for the workloads that could not be measured."""
    bundle = bundle or os.environ.get(BUNDLE_ENV) or None
    if bundle is not None:
        root = Path(bundle)
        m = load_manifest(root)
        w = wl.for_manifest(m)
        return [Target(w.name if w else root.name, root, m, w)], []
    from converter.reference import bundle_path

    present, missing = choose(spec)
    out, notes = [], [missing_line(w) for w in missing]
    for w in present:
        print(f"   bundle of {w.name} (built on first use)", file=sys.stderr, flush=True)
        try:
            root, m = bundle_path(w.name)
        except Exception as exc:  # one workload that cannot be built is a line of the report, not the end of it
            notes.append(f"- `{w.name}`: not measured, its bundle could not be built: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]}")
            continue
        out.append(Target(w.name, root, m, w))
    return out, notes


def missing_line(w: wl.Workload) -> str:
    return (f"- `{w.name}` ({w.description}): not measured, its trained model `{w.asset.relative_to(w.asset.parents[2])}` "
            f"is missing; train it with `{w.train_command}`, then rerun this section.")


def notes_block(notes: list[str]) -> str:
    return ("Workloads not in this section:\n\n" + "\n".join(notes) + "\n") if notes else ""


def document(intro: list[str], summary_title: str, summary: list[str], blocks: list[str], notes: list[str]) -> str:
    """A per-workload section: the intro lines, the summary table (when any workload was measured), one block
    per workload, then the workloads left out."""
    lines = list(intro)
    if summary:
        lines += ["", summary_title, "", *summary]
    text = "\n".join(lines) + "\n\n" + "\n\n".join(blocks)
    return text + ("\n\n" + notes_block(notes) if notes else "")
