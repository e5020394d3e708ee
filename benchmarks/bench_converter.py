"""Converter benchmark: the reference model's per-cut table (converted afresh), each trained workload's
(its bundle, built on first use), conversion time per cut, bytes vs the raw frame, the planner's best cut.

Run: ``python -m benchmarks.bench_converter`` (or ``python -m benchmarks.run converter``). The keras.applications
families at native resolution are their own benchmark: benchmarks/bench_families.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sdk.manifest import CutKind, Manifest
from sdk.planner import costs_from_manifest, evaluate

COMMAND = "python -m benchmarks.bench_converter"


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


def workload_section(name: str) -> str:
    """A trained real-scale workload's bundle (built on first use or when stale, else the cached one): its per-cut
    table."""
    from converter.reference import bundle_path, default_bundle_dir

    manifest_file = default_bundle_dir(name) / "manifest.json"
    before = manifest_file.stat().st_mtime if manifest_file.is_file() else None
    t0 = time.perf_counter()
    _, m = bundle_path(name)
    took = time.perf_counter() - t0
    fresh = before is None or manifest_file.stat().st_mtime != before
    secs = m.extra.get("convert_seconds_per_cut", {})
    workers = m.extra.get("convert_workers", 1)
    when = f"converted in this run, {took:.0f} s" if fresh else "the cached bundle (same model and converter code)"
    return (f"\n### Workload `{name}` ({m.model_name}, {'x'.join(map(str, m.input.shape))}, trained here: "
            f"docs/WORKLOADS.md)\n\n"
            f"Command: `splitedge reference {name}`; {when}; per-cut conversion seconds sum to "
            f"{sum(float(v) for v in secs.values()):.0f} s on {workers} worker process{'es' if workers > 1 else ''}. "
            f"Float accuracy {m.float_accuracy:.3f} on "
            f"{m.n_eval} held-out frames; head/tail ms: LiteRT on this host ({m.threads} threads).\n\n"
            f"{per_cut_table(m)}\n\nBest cut by the planner (accuracy-drop budget 0.02):\n\n{best_cut_table(m)}\n")


def run() -> str:
    from converter.workloads import get
    from converter.workloads import names as workload_names

    real = [w for w in workload_names() if w != "digits" and get(w).asset.is_file()]
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
        + "".join(workload_section(w) for w in real)
        + "\nThe keras.applications families at native resolution: `python -m benchmarks.run families` "
        "(benchmarks/bench_families.py).\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args(argv)
    print(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
