"""`splitedge plan BUNDLE --bandwidth RATE [--link-latency MS] [--board NAME] [--no-raw] [--json]`.

Evaluates T(s, b) = head_ms(s) x board factor + bytes(s, b) / bandwidth + link latency + tail_ms(s) over
every cut of the bundle (raw frame and all-on-device included) and bit width; prints the table and the
argmin. Head times are the converter's LiteRT measurements on its host; with --board they are stretched
by the board's speed factor (said in the output). numpy-free: runs on the device too.
"""

from __future__ import annotations

import argparse
import json
import sys

from sdk.manifest import load_manifest
from sdk.planner import Plan, costs_from_manifest, evaluate, parse_rate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--bandwidth", required=True, help="uplink, e.g. 2Mbit/s, 20mbps, 250kB/s")
    p.add_argument("--link-latency", type=float, default=0.0, help="per-transfer latency in ms (default 0)")
    p.add_argument("--board", default=None, help="stretch head times by this board's speed factor")
    p.add_argument("--no-raw", action="store_true", help="privacy: never send the raw frame")
    p.add_argument("--accuracy-budget", type=float, default=None, help="max accuracy drop vs the float model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def format_plan(plan: Plan, note: str = "") -> str:
    head = f"{'cut':>4} {'name':<26} {'bits':>4} {'bytes':>8} {'head':>8} {'xfer':>9} {'link':>6} {'tail':>7} {'T ms':>9}  "
    lines = [head]
    for o in plan.options:
        mark = "<- best" if o is plan.best else ("" if o.feasible else f"({o.reason})")
        bits = "-" if o.bits == 0 else str(o.bits)
        lines.append(f"{o.index:>4} {o.name[:26]:<26} {bits:>4} {o.nbytes:>8} {o.head_ms:>8.3f} {o.transfer_ms:>9.3f} "
                     f"{o.link_ms:>6.1f} {o.tail_ms:>7.3f} {o.total_ms:>9.3f}  {mark}")
    b = plan.best
    lines.append(f"\nbest: cut {b.index} ({b.name}, {b.kind.value}"
                 f"{', ' + str(b.bits) + ' bits' if b.bits else ''}) {b.total_ms:.2f} ms at "
                 f"{plan.bandwidth_bytes_per_s * 8 / 1e6:.3f} Mbit/s{note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rate = parse_rate(args.bandwidth)
    except ValueError as exc:
        print(f"splitedge plan: {exc}", file=sys.stderr)
        return 2
    manifest = load_manifest(args.bundle)
    factor, note = 1.0, f" (head times measured on {manifest.host})"
    if args.board:
        from sdk.config import load_board
        from sdk.families import model_family
        from sdk.host_speed import board_factor, describe_factor

        spec = load_board(args.board).board
        family = model_family(manifest.model_name)
        factor = board_factor(spec, family)
        note = f" (head times EMULATED: measured on {manifest.host} x the {describe_factor(spec, family)})"
    try:
        plan = evaluate(costs_from_manifest(manifest), bandwidth_bytes_per_s=rate, link_latency_ms=args.link_latency,
                        device_factor=factor, allow_raw=not args.no_raw, accuracy_drop_budget=args.accuracy_budget)
    except ValueError as exc:
        print(f"splitedge plan: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = plan.to_dict()
        out["device_factor"] = factor
        out["board"] = args.board
        print(json.dumps(out))
    else:
        print(format_plan(plan, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
