"""Run the benchmarks and write their tables into docs/BENCHMARKS.md.

    python -m benchmarks.run                 # every benchmark
    python -m benchmarks.run wire converter  # only these; the other sections of the file stay as they were
    splitedge bench dynamic --trace FILE ...  # a benchmark with its own CLI: the options go to its main()

Each benchmark module has ``run() -> str`` (Markdown headed by the command that reproduces it). Sections
are delimited by HTML comments so a partial run replaces only its own sections. Machines here are shared
and noisy: every table compares alternatives side by side in one run (ratios), never against a constant.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import re
import sys
import time
from pathlib import Path

BENCHMARKS: dict[str, tuple[str, str]] = {
    "converter": ("benchmarks.bench_converter", "Converter: per-cut table of the reference model"),
    "families": ("benchmarks.bench_families", "Converter: keras.applications families at native resolution"),
    "wire": ("benchmarks.bench_wire", "Wire format: packing and frame encode/decode"),
    "transport": ("benchmarks.bench_transport", "Transport: loopback round trip through Mosquitto"),
    "cloud": ("benchmarks.bench_cloud", "Cloud tail: throughput, batching, workers"),
    "device": ("benchmarks.bench_device", "Device runner: per-frame overhead"),
    "dynamic": ("benchmarks.bench_dynamic", "Dynamic vs static cuts: trace replay"),
    "exits": ("benchmarks.bench_exits", "Early exits: escalation rate at 1 pp, frames kept on the camera, E[T]"),
    "predict": ("benchmarks.bench_predict", "Link prediction: transfer time at a quantile on real uplink traces"),
}
#: benchmarks with their own command line (``main(argv) -> int``): ``NAME --option ...`` runs it.
CLIS = frozenset({"dynamic", "exits", "predict"})
DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every table below is written by `python -m benchmarks.run [NAME ...]` (the whole file) or by the command
shown above the table (that section alone, printed). Numbers are from the machine named in each section;
the machines are shared and noisy, so compare within a table (ratios), not across runs.
"""


def section(name: str, title: str, body: str) -> str:
    stamp = time.strftime("%Y-%m-%d")
    return (f"<!-- bench:{name}:start -->\n## {title}\n\n_Run {stamp} on {platform.machine()} "
            f"({platform.python_version()}); regenerate: `python -m benchmarks.run {name}`_\n\n"
            f"{body.strip()}\n<!-- bench:{name}:end -->")


def write(results: dict[str, str]) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    for name, block in results.items():
        pattern = re.compile(rf"<!-- bench:{name}:start -->.*?<!-- bench:{name}:end -->", re.S)
        text = pattern.sub(lambda _m, b=block: b, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(BENCHMARKS)} (default: all)")
    p.add_argument("--print-only", action="store_true", help="print, do not write docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] in CLIS and argv[1].startswith("-") and argv[1] != "--print-only":
        return int(importlib.import_module(BENCHMARKS[argv[0]][0]).main(argv[1:]))
    args = parse_args(argv)
    names = args.names or list(BENCHMARKS)
    results, failed = {}, []
    for name in names:
        module_name, title = BENCHMARKS[name]
        print(f"== {name} ({module_name})", file=sys.stderr)
        try:
            body = importlib.import_module(module_name).run()
        except Exception as exc:  # one broken benchmark must not lose the others' tables
            failed.append(name)
            print(f"benchmark {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        results[name] = section(name, title, body)
        print(results[name])
    if not args.print_only and results:
        write(results)
        print(f"wrote {DOC}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
