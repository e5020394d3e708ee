"""`splitedge reference [--out DIR] [--board NAME] [--bandwidth RATE] [--rebuild]`: build (or reuse) the
reference model's bundle and print its cuts and the plan for one uplink."""

from __future__ import annotations

import argparse
import sys

from converter.convert_cli import _Bar, summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge reference", description=__doc__)
    p.add_argument("--out", default=None, help="bundle folder (default: ~/.cache/splitedge/reference-bundle)")
    p.add_argument("--board", default="pi4", help="board profile for the plan (default pi4)")
    p.add_argument("--bandwidth", default="2Mbit/s", help="uplink for the plan (default 2Mbit/s)")
    p.add_argument("--link-latency", type=float, default=20.0, help="per-transfer link latency in ms (default 20)")
    p.add_argument("--rebuild", action="store_true", help="convert again even if a valid bundle is there")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from converter.reference import build_reference_bundle, default_bundle_dir
    from sdk import plan_cli

    out = args.out or str(default_bundle_dir())
    bar = _Bar(quiet=False)
    manifest = build_reference_bundle(out, rebuild=args.rebuild, progress=bar)
    bar.close()
    print(summary(manifest))
    print(f"\nbundle: {out}\n")
    return plan_cli.main([out, "--bandwidth", args.bandwidth, "--link-latency", str(args.link_latency),
                          "--board", args.board])


if __name__ == "__main__":
    sys.exit(main())
