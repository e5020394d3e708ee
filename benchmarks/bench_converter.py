"""Converter benchmark: conversion time per cut, the reference model's per-cut table, bytes vs the raw frame.

Run: ``python -m benchmarks.bench_converter`` (converts the reference model afresh into a temp folder).
"""

from __future__ import annotations

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
    secs = m.extra.get("convert_seconds_per_cut", {})
    bits = list(m.bits)
    head = ("| cut | after layer | tensors | " + " | ".join(f"bytes @{b}" for b in bits)
            + " | " + " | ".join(f"acc @{b} (agree)" for b in bits)
            + " | exit acc | head ms | tail ms | exit ms | convert s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in m.cuts:
        tens = "frame" if c.kind is CutKind.RAW else " + ".join("x".join(map(str, t.shape)) for t in c.tensors)
        sizes = " | ".join(str(c.payload_bytes(b)) for b in bits)
        accs = " | ".join(f"{a.accuracy:.3f} ({a.agreement:.3f})" if (a := c.accuracy_at(b)) else "-" for b in bits)
        exit_acc = f"{c.exit_accuracy:.3f}" if c.kind is not CutKind.RAW else "-"
        lines.append(f"| {c.index} | {c.name} ({c.kind.value}) | {tens} | {sizes} | {accs} | {exit_acc} | "
                     f"{c.head_ms:.3f} | {c.tail_ms:.3f} | {c.exit_ms:.3f} | {secs.get(str(c.index), '-')} |")
    return "\n".join(lines)


LINK_LATENCIES_MS = (2.0, 20.0)


def best_cut_table(m: Manifest) -> str:
    raw = m.raw_cut.payload_bytes(0)
    lines = ["| link latency | uplink | board factor | best cut | bits | bytes sent | vs raw frame | T ms (best) | "
             "T ms (all on device) | T ms (raw) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for link_ms in LINK_LATENCIES_MS:
        for rate_mbit in (0.5, 2.0, 10.0, 50.0):
            for factor in (1.0, 2.5, 10.5):
                plan = evaluate(costs_from_manifest(m), bandwidth_bytes_per_s=rate_mbit * 1e6 / 8,
                                link_latency_ms=link_ms, device_factor=factor, accuracy_drop_budget=0.02)
                b = plan.best
                device = f"{plan.option(m.device_cut.index).total_ms:.2f}" if m.device_cut is not None else "-"
                lines.append(
                    f"| {link_ms:g} ms | {rate_mbit} Mbit/s | {factor} | {b.index} {b.name} ({b.kind.value}) | "
                    f"{b.bits or '-'} | {b.nbytes} | {b.nbytes / raw:.3f}x | {b.total_ms:.2f} | {device} | "
                    f"{plan.option(0).total_ms:.2f} |"
                )
    smallest = min((c for c in m.cuts if c.kind is CutKind.SPLIT), key=lambda c: c.payload_bytes(min(m.bits)))
    lines.append(f"\nSmallest split payload: cut {smallest.index} ({smallest.name}) at {min(m.bits)} bits = "
                 f"{smallest.payload_bytes(min(m.bits))} bytes, {raw / smallest.payload_bytes(min(m.bits)):.0f}x "
                 f"fewer than the {raw}-byte raw frame.")
    return "\n".join(lines)


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        m, total = convert_reference(Path(tmp) / "bundle")
    return (
        f"Command: `{COMMAND}`\n\n"
        f"Reference model, {m.n_calib} calibration + {m.n_eval} held-out frames, host `{m.host}`, "
        f"{m.threads} LiteRT threads; float accuracy {m.float_accuracy:.3f}; whole conversion {total:.1f} s.\n\n"
        f"{per_cut_table(m)}\n\n"
        "Best cut by the planner (accuracy-drop budget 0.02; link latency 2 ms = Wi-Fi/LAN to an edge server, "
        "20 ms = cellular to a cloud region; board factor stretches head times: 1.0 = this host, 2.5 = Pi 4, "
        "10.5 = Zero 2 W estimates from firmware_configs/):\n\n"
        f"{best_cut_table(m)}\n"
    )


if __name__ == "__main__":
    print(run())
