"""`splitedge reference [NAME] [--list] [--out DIR] [--board NAME] [--bandwidth RATE] [--rebuild]`: build (or
reuse) a workload's bundle and print its cuts and the plan for one uplink; `--list` names the workloads."""

from __future__ import annotations

import argparse
import json
import sys

from converter.workloads import DEFAULT_WORKLOAD, WORKLOADS, names
from sdk.defaults import CELLULAR_RTT_MS, DEFAULT_BOARD


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge reference", description=__doc__)
    p.add_argument("workload", nargs="?", default=DEFAULT_WORKLOAD, choices=names(), metavar="NAME",
                   help=f"the workload (default {DEFAULT_WORKLOAD}; --list names them all)")
    p.add_argument("--list", action="store_true", help="name the workloads (the default first) and exit")
    p.add_argument("--out", default=None, help="bundle folder (default: ~/.cache/splitedge/bundle-NAME)")
    p.add_argument("--board", default=DEFAULT_BOARD, help=f"board profile for the plan (default {DEFAULT_BOARD})")
    p.add_argument("--bandwidth", default="2Mbit/s", help="uplink for the plan (default 2Mbit/s)")
    p.add_argument("--link-latency", type=float, default=CELLULAR_RTT_MS,
                   help=f"per-transfer round trip in ms (default {CELLULAR_RTT_MS:g}: LTE, sdk.defaults)")
    p.add_argument("--rebuild", action="store_true", help="convert again even if a valid bundle is there")
    return p.parse_args(argv)


def listing() -> str:
    lines = []
    for name in names():
        w = WORKLOADS[name]
        accuracy = ""
        if w.metadata_path.is_file():
            meta = json.loads(w.metadata_path.read_text())
            accuracy = f"  test accuracy {meta['test_accuracy']:.3f}"
        state = "" if w.asset.is_file() else f"  (not trained here yet: {w.train_command})"
        default = " (default)" if name == DEFAULT_WORKLOAD else ""
        lines.append(f"{name:<22} {w.frame_size}x{w.frame_size}  {w.description}{default}{accuracy}{state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print(listing())
        return 0
    from converter.convert_cli import _Bar, summary
    from converter.reference import build_reference_bundle, default_bundle_dir
    from sdk import plan_cli

    out = args.out or str(default_bundle_dir(args.workload))
    bar = _Bar(quiet=False)
    manifest = build_reference_bundle(out, workload=args.workload, rebuild=args.rebuild, progress=bar)
    bar.close()
    print(summary(manifest))
    print(f"\nbundle: {out}\n")
    return plan_cli.main([out, "--bandwidth", args.bandwidth, "--link-latency", str(args.link_latency),
                          "--board", args.board])


if __name__ == "__main__":
    sys.exit(main())
