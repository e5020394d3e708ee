"""Early exits: per cut, the escalation rate q at which exit + tail stay within 1 pp of the float model, the
share of frames kept on the camera, and E[T] = T_dev + q * T_esc (THEORY.md, "Cascades and early exit").

    python -m benchmarks.run exits                              # every workload with a trained model: docs/BENCHMARKS.md
    python -m benchmarks.run exits --workload digits            # one (repeatable); prints, writes nothing
    python -m benchmarks.run exits --bundle PATH                # a bundle on disk (e.g. one converted before)
    python -m benchmarks.run exits --bundle PATH --frames 1000  # q re-measured on 1000 fresh frames
    python -m benchmarks.bench_exits --workload digits --bandwidth 5Mbit/s --board zero2w --rtt-ms 20

q comes from the bundle's ``exit_budget`` (measured by the converter, frame by frame on the held-out split:
the exit answers the frames it is confident of, the tail - at that bit width - the others). A bundle converted
before that field existed is re-measured here with LiteRT on the same held-out frames (regenerated from its
manifest's data source) and says so. Per cut the bit width shown is the one with the lowest E[T] among those
meeting the budget. T_dev = (head + exit ms) x the board's factor for the model's family x this host's scale
(``sdk.host_speed.board_factor``, as ``splitedge plan --board``); T_esc = payload bytes / bandwidth + round trip
+ tail ms (the tail as measured on the converting host). A workload whose trained model is not in
converter/assets/ is skipped with a note.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sdk.defaults import BENCH_RTTS_MS, CELLULAR_RTT_MS, DEFAULT_BOARD
from sdk.manifest import CutKind, CutSpec, ExitBudget, Manifest, load_manifest
from sdk.planner import breakeven_bandwidth, cascade_latency, parse_rate

COMMAND = "python -m benchmarks.run exits"
BANDWIDTH = "2Mbit/s"
WORKLOADS = ("digits", "mobilenetv2-fashion", "resnet50-fashion", "resnet50-fashion-224")
BREAKEVEN_BOARDS = ("pi4", "zero2w")  # a fast and a slow board
FRESH_SEED = 4321  # --frames: the calibration frames use converter.reference.CALIB_SEED (1234)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", action="append", choices=WORKLOADS, help="repeatable; default: all of them")
    p.add_argument("--bundle", type=Path, help="measure this bundle instead of the workloads' default bundles")
    p.add_argument("--bandwidth", default=BANDWIDTH, help=f"uplink, e.g. 2Mbit/s (default {BANDWIDTH})")
    p.add_argument("--rtt-ms", type=float, default=CELLULAR_RTT_MS,
                   help=f"round trip per escalated frame (default {CELLULAR_RTT_MS:g}, sdk.defaults.CELLULAR_RTT_MS)")
    p.add_argument("--board", default=DEFAULT_BOARD, help=f"board profile for T_dev (default {DEFAULT_BOARD})")
    p.add_argument("--rebuild", action="store_true", help="re-convert the workloads' bundles first")
    p.add_argument("--frames", type=int, default=0, metavar="N",
                   help=f"re-measure q on N fresh test frames of the workload (seed {FRESH_SEED}) instead of the "
                        "manifest's held-out split; the float model's accuracy on them is the raw cut's tail")
    return p.parse_args(argv)


def budgets(bundle: Path, manifest: Manifest, frames: int = 0) -> tuple[dict[int, tuple[ExitBudget, ...]], str]:
    """({cut: exit budgets}, how they were had): the manifest's, or measured now - for a bundle without them on
    its own held-out frames, or on ``frames`` fresh test frames of its workload."""
    stored = {c.index: c.exit_budget for c in manifest.cuts if c.kind is CutKind.SPLIT and c.exit_budget}
    if not frames and (stored or not any(c.kind is CutKind.SPLIT and c.exit is not None for c in manifest.cuts)):
        return stored, f"q from the manifest, on its {manifest.n_eval} held-out frames"
    from converter.data import split
    from converter.measure import bundle_exit_budgets, float_accuracy
    from converter.reference import calibration_data
    from converter.workloads import for_manifest

    w = for_manifest(manifest)
    if w is None:
        raise ValueError(f"{bundle}: no exit_budget in its manifest and not a workload's bundle: cannot regenerate "
                         "its held-out frames; re-convert it with this splitedge")
    if frames:
        fresh = w.frames(frames, FRESH_SEED, "test")
        ref = float_accuracy(bundle, manifest, fresh.x, fresh.y)
        return (bundle_exit_budgets(bundle, manifest, fresh.x, fresh.y, reference=ref),
                f"q re-measured on {frames} fresh test frames (seed {FRESH_SEED}), float accuracy there {ref:.4f}")
    n = manifest.n_calib + manifest.n_eval
    data = calibration_data(n, workload=w.name)
    ev = split(n, seed=0).eval[: manifest.n_eval]  # convert()'s split and max_eval (seed 0, the default)
    return (bundle_exit_budgets(bundle, manifest, data.x[ev], data.y[ev]),
            f"q re-measured on its {manifest.n_eval} held-out frames: the bundle predates exit_budget")


def table(bundle: Path, manifest: Manifest, *, bandwidth: str, rtt_ms: float, board: str, frames: int = 0) -> str:
    from sdk.config import load_board
    from sdk.families import model_family
    from sdk.host_speed import board_factor

    rate = parse_rate(bandwidth)
    spec = load_board(board).board
    factor = board_factor(spec, model_family(manifest.model_name))
    found, how = budgets(bundle, manifest, frames)
    lines = [f"`{manifest.model_name}` (bundle {manifest.bundle_id[:12]}, float {manifest.metric} "
             f"{manifest.float_accuracy:.4f} on {manifest.n_eval} held-out frames"
             f"; {how}). "
             f"{bandwidth}, round trip {rtt_ms:g} ms, board {spec.name} (device ms x {factor:.2f}).", "",
             "| cut | after layer | exit acc | bits | bytes | q at 1 pp | kept on camera | T_dev ms | T_esc ms "
             "| E[T] ms | E[T] if every frame escalates |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in manifest.cuts:
        if c.kind is CutKind.RAW:
            t = c.payload_bytes(0) / rate * 1000.0 + rtt_ms + c.tail_ms
            lines.append(f"| {c.index} | raw frame (cloud only) | - | - | {c.payload_bytes(0)} | 1 | 0 % | 0.00 | "
                         f"{t:.2f} | {t:.2f} | {t:.2f} |")
        elif c.kind is CutKind.DEVICE:
            t = (c.head_ms + c.exit_ms) * factor
            lines.append(f"| {c.index} | {c.name} (all on device) | {c.exit_accuracy:.3f} | - | 0 | 0 | 100 % | "
                         f"{t:.2f} | - | {t:.2f} | - |")
        else:
            lines.append(_split_row(c, found.get(c.index, ()), rate, rtt_ms, factor))
    lines.append("")
    lines.append("q at 1 pp: the fewest escalations at which the exit's answers on the frames it keeps and the tail's "
                 "on the others stay within 1 percentage point of the float model (a `*`: even escalating every "
                 "frame misses it at every bit width; the row shows the widest, q = 1). exit acc: the manifest's, on its "
                 "held-out frames. E[T] = T_dev + q x T_esc.")
    return "\n".join(lines)


def _split_row(c: CutSpec, points: tuple[ExitBudget, ...], rate: float, rtt_ms: float, factor: float) -> str:
    t_dev = (c.head_ms + c.exit_ms) * factor

    def t_esc(bits: int) -> float:
        return c.payload_bytes(bits) / rate * 1000.0 + rtt_ms + c.tail_ms

    met = [p for p in points if p.met]
    if met:
        p = min(met, key=lambda p: (cascade_latency(t_dev, p.escalation_rate, t_esc(p.bits)), -p.bits))
        bits, q, flag = p.bits, p.escalation_rate, ""
    else:
        bits, q, flag = max((p.bits for p in points), default=max(int(b) for b in c.bytes_at_bits)), 1.0, "*"
    e = cascade_latency(t_dev, q, t_esc(bits))
    return (f"| {c.index} | {c.name} | {c.exit_accuracy:.3f} | {bits} | {c.payload_bytes(bits)} | {q:.3f}{flag} | "
            f"{(1 - q) * 100:.0f} % | {t_dev:.2f} | {t_esc(bits):.2f} | {e:.2f} | {t_dev + t_esc(bits):.2f} |")


def workload_section(name: str, *, bandwidth: str, rtt_ms: float, board: str, rebuild: bool = False,
                     frames: int = 0) -> str:
    from converter.reference import build_reference_bundle
    from converter.workloads import get
    from sdk.errors import BundleError

    w = get(name)
    try:
        w.check_asset()
    except BundleError as exc:
        return f"### {name}\n\nskipped: {exc}"
    out = w.bundle_dir()
    manifest = build_reference_bundle(out, workload=name, rebuild=rebuild)
    return f"### {name}\n\n" + table(out, manifest, bandwidth=bandwidth, rtt_ms=rtt_ms, board=board, frames=frames)


def breakeven_rows(manifest: Manifest, board: str, rtt_ms: float, budgets_by_cut: dict[int, tuple[ExitBudget, ...]]
                   ) -> str:
    """One row: the uplink above which the best split cut (its exit at q at 1 pp, or every frame sent) beats the
    whole model on ``board`` at ``rtt_ms``; "never" with the floor E[T] at an unlimited uplink otherwise."""
    from sdk.config import load_board
    from sdk.families import model_family
    from sdk.host_speed import board_factor

    factor = board_factor(load_board(board).board, model_family(manifest.model_name))
    device = next(c for c in manifest.cuts if c.kind is CutKind.DEVICE)
    t_dev = device.head_ms * factor
    best: tuple[float, str] | None = None
    floor = (float("inf"), "")
    for c in manifest.cuts:
        if c.kind is not CutKind.SPLIT:
            continue
        choices = [(int(b), 1.0, c.head_ms * factor) for b in c.bytes_at_bits]  # no exit: every frame is sent
        choices += [(p.bits, p.escalation_rate, (c.head_ms + c.exit_ms) * factor)
                    for p in budgets_by_cut.get(c.index, ()) if p.met]
        for bits, q, t_head in choices:
            what = f"{c.index} {c.name} @{bits}, q {q:.2f}"
            e_inf = t_head + q * (rtt_ms + c.tail_ms)
            floor = min(floor, (e_inf, what))
            rate = breakeven_bandwidth(t_dev, t_head, q, c.payload_bytes(bits), rtt_ms, c.tail_ms)
            if rate is not None and (best is None or rate < best[0]):
                best = (rate, what)
    raw = next((c for c in manifest.cuts if c.kind is CutKind.RAW), None)
    raw_rate = breakeven_bandwidth(t_dev, 0.0, 1.0, raw.payload_bytes(0), rtt_ms, raw.tail_ms) if raw else None
    raw_cell = "never" if raw_rate is None else f"{raw_rate * 8 / 1e6:.1f}"
    if best is None:
        cell = f"never (best E[T] at an unlimited uplink {floor[0]:.1f} ms: {floor[1]})"
    elif best[0] == 0.0:
        cell = f"any: nothing is sent ({best[1]}: the exit answers every frame, sooner than the whole model)"
    else:
        cell = f"**{best[0] * 8 / 1e6:.2f}** ({best[1]})"
    return f"| {board} | {t_dev:.1f} | {rtt_ms:g} | {cell} | {raw_cell} |"


def breakeven_section(names: Sequence[str] = WORKLOADS) -> str:
    """docs/BENCHMARKS.md: per workload, board and round trip, the uplink at which splitting starts to pay."""
    from converter.reference import build_reference_bundle
    from converter.workloads import get
    from sdk.errors import BundleError
    from sdk.traces import load_trace, shared_traces

    means = [load_trace(p).mean_rate() * 8 / 1e6 for p in shared_traces()]
    context = (f"The shared cellular uplink traces average {min(means):.2f}-{max(means):.2f} Mbit/s."
               if means else "No shared traces here for context.")
    out = ["### Where splitting pays: the uplink each split needs", "",
           f"`{COMMAND}` - per workload and board, the uplink (Mbit/s) above which the best split cut beats running "
           "the whole model on the device at each round trip (sdk.planner.breakeven_bandwidth): T_head + q (bytes / "
           "rate + RTT + tail) < T_dev, with the cut's early exit at its q at 1 pp or without it (q = 1, every frame "
           "sent), whichever needs less. `never`: even an unlimited uplink loses, the round trip (or the head) "
           "alone costs more than the device saves. Raw frame: the same for sending the frame itself (boards with "
           f"privacy on never do). Head times: this host's x the board's factor for the family. {context}", ""]
    for name in names:
        w = get(name)
        try:
            w.check_asset()
        except BundleError as exc:
            out += [f"{name}: skipped: {exc}", ""]
            continue
        bundle = w.bundle_dir()
        manifest = build_reference_bundle(bundle, workload=name)
        found, _how = budgets(bundle, manifest)
        out += [f"`{name}` ({manifest.model_name}, {'x'.join(map(str, manifest.input.shape))}):", "",
                "| board | T_dev ms | RTT ms | split pays above (Mbit/s) | raw frame pays above (Mbit/s) |",
                "|---|---|---|---|---|"]
        out += [breakeven_rows(manifest, board, rtt, found) for board in BREAKEVEN_BOARDS for rtt in BENCH_RTTS_MS]
        out.append("")
    return "\n".join(out)


def run() -> str:
    """docs/BENCHMARKS.md: every workload at the defaults, then where splitting pays."""
    return "\n\n".join([*(workload_section(n, bandwidth=BANDWIDTH, rtt_ms=CELLULAR_RTT_MS, board=DEFAULT_BOARD)
                          for n in WORKLOADS), breakeven_section()])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bundle is not None:
        print(table(args.bundle, load_manifest(args.bundle), bandwidth=args.bandwidth, rtt_ms=args.rtt_ms,
                    board=args.board, frames=args.frames))
        return 0
    for name in args.workload or WORKLOADS:
        print(workload_section(name, bandwidth=args.bandwidth, rtt_ms=args.rtt_ms, board=args.board,
                               rebuild=args.rebuild, frames=args.frames) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
