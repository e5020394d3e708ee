"""Converter benchmark: conversion time per cut, the reference model's per-cut table, bytes vs the raw frame,
and the keras.applications families at their native resolution (converter/applications.py).

Run: ``python -m benchmarks.bench_converter [--families A,B | all | none] [--no-reference]``
(converts the reference model afresh into a temp folder, then each family, one at a time). Through
``python -m benchmarks.run converter`` the families come from ``$SPLITEDGE_BENCH_FAMILIES`` (default: all; the
whole set takes about an hour on two cores). Families have random weights (weights=None, nothing is
downloaded), so their agreement figures mean nothing (../shared/PLATFORM.md): the table reports time, cuts,
bytes and latencies only.
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
from sdk.planner import costs_from_manifest, evaluate

COMMAND = "python -m benchmarks.bench_converter"
FAMILIES_ENV = "SPLITEDGE_BENCH_FAMILIES"
GOAL_SECONDS = 600  # the bound per family at native resolution on 2 cores
FAMILY_FRAMES = 100  # random uint8 calibration frames per family (50 fit, 20 temperature, 30 held out)


def convert_reference(out: Path) -> tuple[Manifest, float]:
    from converter.reference import build_reference_bundle

    t0 = time.perf_counter()
    manifest = build_reference_bundle(out, rebuild=True)
    return manifest, time.perf_counter() - t0


def per_cut_table(m: Manifest) -> str:
    """One row per cut; without labels the figures are agreement with the float model, and the header says so."""
    secs = m.extra.get("convert_seconds_per_cut", {})
    bits = list(m.bits)
    labelled = m.metric == "accuracy"
    head = ("| cut | after layer | tensors | " + " | ".join(f"bytes @{b}" for b in bits)
            + " | " + " | ".join(f"acc @{b} (agree)" if labelled else f"agree @{b}" for b in bits)
            + f" | {'exit acc' if labelled else 'exit agree'} | head ms | tail ms | exit ms | convert s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in m.cuts:
        tens = "frame" if c.kind is CutKind.RAW else " + ".join("x".join(map(str, t.shape)) for t in c.tensors)
        sizes = " | ".join(str(c.payload_bytes(b)) for b in bits)
        accs = " | ".join(("-" if (a := c.accuracy_at(b)) is None else
                           f"{a.accuracy:.3f} ({a.agreement:.3f})" if labelled else f"{a.agreement:.3f}") for b in bits)
        exit_acc = f"{c.exit_accuracy:.3f}" if c.kind is not CutKind.RAW else "-"
        lines.append(f"| {c.index} | {c.name} ({c.kind.value}) | {tens} | {sizes} | {accs} | {exit_acc} | "
                     f"{c.head_ms:.3f} | {c.tail_ms:.3f} | {c.exit_ms:.3f} | {secs.get(str(c.index), '-')} |")
    return "\n".join(lines)


LINK_LATENCIES_MS = (2.0, 50.0)  # Wi-Fi/LAN to an edge server; LTE to a cloud region (sdk.defaults.CELLULAR_RTT_MS)


#: Boards of the best-cut table: their factor for the model's family x this host's scale (sdk.host_speed).
BEST_CUT_BOARDS = ("pi5", "pi4", "zero2w")


def board_factors(m: Manifest) -> list[tuple[str, float]]:
    from sdk.config import load_board
    from sdk.families import model_family
    from sdk.host_speed import board_factor

    family = model_family(m.model_name)
    return [("host", 1.0)] + [(b, round(board_factor(load_board(b).board, family), 2)) for b in BEST_CUT_BOARDS]


def best_cut_table(m: Manifest) -> str:
    raw = m.raw_cut.payload_bytes(0)
    lines = ["| link latency | uplink | board (factor) | best cut | bits | bytes sent | vs raw frame | T ms (best) | "
             "T ms (all on device) | T ms (raw) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    boards = board_factors(m)
    for link_ms in LINK_LATENCIES_MS:
        for rate_mbit in (0.5, 2.0, 10.0, 50.0):
            for board, factor in boards:
                plan = evaluate(costs_from_manifest(m), bandwidth_bytes_per_s=rate_mbit * 1e6 / 8,
                                link_latency_ms=link_ms, device_factor=factor, accuracy_drop_budget=0.02)
                b = plan.best
                device = f"{plan.option(m.device_cut.index).total_ms:.2f}" if m.device_cut is not None else "-"
                lines.append(
                    f"| {link_ms:g} ms | {rate_mbit} Mbit/s | {board} ({factor}) | {b.index} {b.name} ({b.kind.value}) | "
                    f"{b.bits or '-'} | {b.nbytes} | {b.nbytes / raw:.3f}x | {b.total_ms:.2f} | {device} | "
                    f"{plan.option(0).total_ms:.2f} |"
                )
    smallest = min((c for c in m.cuts if c.kind is CutKind.SPLIT), key=lambda c: c.payload_bytes(min(m.bits)))
    lines.append(f"\nSmallest split payload: cut {smallest.index} ({smallest.name}) at {min(m.bits)} bits = "
                 f"{smallest.payload_bytes(min(m.bits))} bytes, {raw / smallest.payload_bytes(min(m.bits)):.0f}x "
                 f"fewer than the {raw}-byte raw frame.")
    return "\n".join(lines)


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
            f"{seconds:.0f} | {per_cut:.1f} | {verified} |")


FAMILY_HEADER = ("| family | px | --preprocess | nodes | params M | split cuts | cut:bytes @8 | raw bytes | "
                 "smallest @2 | head ms per cut | tail ms per cut | all-on-device ms | raw (cloud) ms | convert s | "
                 "s per cut | verify |\n|" + "---|" * 16)


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
            f"bits 8,4,2, one conversion at a time ({host}); head/tail ms are LiteRT on this host per split cut, "
            "in cut order; verify: `splitedge verify` ran every head and tail at every bit width on 8 random frames "
            "(the number of cut x bits rows):\n\n" + FAMILY_HEADER + "\n" + "\n".join(rows))
    text += (f"\n\nGoal: each family converts in <= {GOAL_SECONDS // 60} min on 2 cores. "
             + (f"Over it in this run: {', '.join(slow)}." if slow else "Every family converted met it in this run."))
    if failed:
        text += "\n\nFailed:\n" + "\n".join(failed)
    return text + "\n"


def workload_section(name: str) -> str:
    """A trained real-scale workload's bundle (built on first use, else the cached one): its per-cut table."""
    from converter.reference import bundle_path, default_bundle_dir

    fresh = not (default_bundle_dir(name) / "manifest.json").is_file()
    t0 = time.perf_counter()
    _, m = bundle_path(name)
    took = time.perf_counter() - t0
    secs = m.extra.get("convert_seconds_per_cut", {})
    when = f"converted in this run, {took:.0f} s" if fresh else "the cached bundle (same model and converter code)"
    return (f"\n### Workload `{name}` ({m.model_name}, {'x'.join(map(str, m.input.shape))}, trained here: "
            f"docs/WORKLOADS.md)\n\n"
            f"Command: `splitedge reference {name}`; {when}; per-cut conversion seconds sum to "
            f"{sum(float(v) for v in secs.values()):.0f} s. Float accuracy {m.float_accuracy:.3f} on "
            f"{m.n_eval} held-out frames; head/tail ms: LiteRT on this host ({m.threads} threads).\n\n"
            f"{per_cut_table(m)}\n\nBest cut by the planner (accuracy-drop budget 0.02):\n\n{best_cut_table(m)}\n")


def run(families: list[str] | None = None) -> str:
    from converter.workloads import get
    from converter.workloads import names as workload_names

    real = [w for w in workload_names() if w != "digits" and get(w).asset.is_file()]
    names = family_names(os.environ.get(FAMILIES_ENV)) if families is None else families
    with tempfile.TemporaryDirectory() as tmp:
        m, total = convert_reference(Path(tmp) / "bundle")
    quality = f"float accuracy {m.float_accuracy:.3f}" if m.metric == "accuracy" else "no labels (agreement only)"
    return (
        f"Command: `{COMMAND}`\n\n"
        f"Reference model, {m.n_calib} calibration + {m.n_eval} held-out frames, host `{m.host}`, "
        f"{m.threads} LiteRT threads; {quality}; whole conversion {total:.1f} s.\n\n"
        f"{per_cut_table(m)}\n\n"
        "Best cut by the planner (accuracy-drop budget 0.02; link latency 2 ms = Wi-Fi/LAN to an edge server, "
        "50 ms = LTE to a cloud region; the board factor stretches this host's head times: the profile's factor "
        "for the model's family x this host's scale, firmware_configs/README.md):\n\n"
        f"{best_cut_table(m)}\n\n"
        + "".join(workload_section(w) for w in real) + "\n"
        f"{families_section(names)}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=None, help="comma-separated families, all (default) or none")
    p.add_argument("--no-reference", action="store_true", help="only the families table")
    args = p.parse_args(argv)
    names = family_names(args.families)
    print(families_section(names) if args.no_reference else run(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
