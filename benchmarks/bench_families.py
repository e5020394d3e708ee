"""Converter benchmark, keras.applications families: each at its native resolution (converter/applications.py),
converted with random weights, timed, verified; its cuts, bytes and head/tail times.

Run: ``python -m benchmarks.bench_families [--families A,B | all]``, one conversion at a time. Through
``python -m benchmarks.run families`` the families come from ``$SPLITEDGE_BENCH_FAMILIES`` (default: all; the
whole set took 48 min on two cores on 2026-12-04, 106 min with the one-process converter of 2026-12-03). Families have random weights
(weights=None, nothing is downloaded), so their agreement figures mean nothing (../shared/PLATFORM.md): the table
reports time, cuts, bytes and latencies only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sdk.manifest import CutKind, Manifest

COMMAND = "python -m benchmarks.bench_families"
FAMILIES_ENV = "SPLITEDGE_BENCH_FAMILIES"
GOAL_SECONDS = 600  # the bound per family at native resolution on 2 cores
FAMILY_FRAMES = 100  # random uint8 calibration frames per family (50 fit, 20 temperature, 30 held out)


def convert_family(name: str, out: Path) -> tuple[Manifest, float]:
    """keras.applications `name` at its native resolution (random weights), converted with its --preprocess."""
    import keras

    from converter.applications import FAMILIES, build
    from converter.convert import convert
    from converter.data import CalibData

    model = build(name)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    frames = np.random.default_rng(0).integers(0, 256, (FAMILY_FRAMES, *shape), dtype=np.uint8)
    t0 = time.perf_counter()
    result = convert(model, CalibData(frames, None, "random frames"), out, bits=(8, 4, 2),
                     preprocess=FAMILIES[name].preprocess)
    seconds = time.perf_counter() - t0
    keras.backend.clear_session()
    return result.manifest, seconds


def verify_family(out: Path, manifest: Manifest, frames: int = 8) -> str:
    """`splitedge verify` on the converted bundle (hashes, every head and tail at every bit width) on random
    frames: "ok (N)" with N the (cut, bits) rows run; agreement is not reported (random weights)."""
    from converter.verify_cli import verify

    x = np.random.default_rng(1).integers(0, 256, (frames, *manifest.input.shape), dtype=np.uint8)
    return f"ok ({len(verify(out, x, None)['cuts'])})"  # type: ignore[arg-type]


def family_row(name: str, m: Manifest, seconds: float, verified: str) -> str:
    raw = m.raw_cut.payload_bytes(0) if m.raw_cut else 0
    splits = [c for c in m.cuts if c.kind is CutKind.SPLIT]
    device = m.device_cut
    cuts = ", ".join(f"{c.index}:{c.payload_bytes(8)}" for c in splits) or "-"
    heads = ", ".join(f"{c.head_ms:.2f}" for c in splits) or "-"
    tails = ", ".join(f"{c.tail_ms:.2f}" for c in splits) or "-"
    smallest = min((c.payload_bytes(min(m.bits)) for c in splits), default=0)
    params = sum(p.weight_bytes_i8 for p in m.layers)
    per_cut = seconds / max(1, len(m.cuts))
    return (f"| {name} | {m.input.shape[0]} | {m.input.preprocess.mode.value if m.input.preprocess else '-'} | "
            f"{len(m.layers)} | {params / 1e6:.2f} | {len(splits)} | {cuts} | {raw} | {smallest} | {heads} | "
            f"{tails} | {device.head_ms if device else float('nan'):.2f} | {m.raw_cut.tail_ms:.2f} | "
            f"{seconds:.0f} | {m.extra.get('convert_workers', 1)} | {per_cut:.1f} | {verified} |")


FAMILY_HEADER = ("| family | px | --preprocess | nodes | params M | split cuts | cut:bytes @8 | raw bytes | "
                 "smallest @2 | head ms per cut | tail ms per cut | all-on-device ms | raw (cloud) ms | convert s | "
                 "workers | s per cut | verify |\n|" + "---|" * 17)


def family_names(spec: str | None) -> list[str]:
    from converter.applications import FAMILIES

    if spec is None or spec.strip().lower() == "all":
        return list(FAMILIES)
    if spec.strip().lower() in ("", "none"):
        return []
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}, all or none")
    return names


def families_section(names: list[str]) -> str:
    if not names:
        return ""
    rows, failed, slow = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"   family {name}", file=sys.stderr, flush=True)
            try:
                m, seconds = convert_family(name, Path(tmp) / name)
                verified = verify_family(Path(tmp) / name, m)
            except Exception as exc:  # a family that fails is a row of the report, not the end of the run
                failed.append(f"- {name}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                continue
            rows.append(family_row(name, m, seconds, verified))
            if seconds > GOAL_SECONDS:
                slow.append(f"{name} {seconds:.0f} s")
    host = f"{os.cpu_count()} cores"
    text = (f"keras.applications families at native resolution, random weights, {FAMILY_FRAMES} random frames, "
            f"bits 8,4,2, one family at a time ({host}), its cuts on the workers column's processes "
            "(converter/workers.py); s per cut = convert s / cuts (wall); head/tail ms are LiteRT on this host per split cut, "
            "in cut order; verify: `splitedge verify` ran every head and tail at every bit width on 8 random frames "
            "(the number of cut x bits rows):\n\n" + FAMILY_HEADER + "\n" + "\n".join(rows))
    text += (f"\n\nGoal: each family converts in <= {GOAL_SECONDS // 60} min on 2 cores. "
             + (f"Over it in this run: {', '.join(slow)}." if slow else "Every family converted met it in this run."))
    if failed:
        text += "\n\nFailed:\n" + "\n".join(failed)
    return text + "\n"


def run() -> str:
    return families_section(family_names(os.environ.get(FAMILIES_ENV)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=None, help="comma-separated families, or all (default)")
    args = p.parse_args(argv)
    print(families_section(family_names(args.families)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
