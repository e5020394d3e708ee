"""`splitedge convert MODEL --calib DATA --out BUNDLE [--board NAME] [--bits 8,4,2] [--force]`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sdk.errors import ConversionError


def parse_bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits {text!r}: expected a comma-separated list like 8,4,2") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge convert", description=__doc__)
    p.add_argument("model", help="Keras 3 functional or Sequential model (.keras or .h5)")
    p.add_argument("--calib", required=True, help=".npz with x (N,H,W,C uint8) [and y], or a folder of images by class")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--board", default=None, help="board profile (pi3bplus, pi4, pi5, zero2w, qemu-aarch64, or a .toml)")
    p.add_argument("--bits", type=parse_bits, default=(8, 4, 2), help="bit widths to measure (default 8,4,2)")
    p.add_argument("--force", action="store_true", help="write over an existing bundle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p.parse_args(argv)


class _Bar:
    """A tqdm bar over the cuts when tqdm is installed, plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def __call__(self, step: int, total: int, msg: str) -> None:
        if self.quiet:
            return
        if total == 0:
            print(msg, file=sys.stderr)
            return
        if self.bar is None:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="cut", file=sys.stderr)
            except ImportError:
                self.bar = False
        if self.bar:
            self.bar.set_description(msg)
            self.bar.n = step
            self.bar.refresh()
        else:
            print(f"[{step}/{total}] {msg}", file=sys.stderr)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def summary(manifest: Any) -> str:
    lines = [f"bundle {manifest.bundle_id[:12]}  model {manifest.model_name}  board {manifest.board}  "
             f"float accuracy {manifest.float_accuracy:.4f}  ({manifest.n_eval} held-out frames)",
             f"{'cut':>4} {'name':<28} {'kind':<6} " + " ".join(f"{'B@' + str(b):>8}" for b in manifest.bits)
             + " " + " ".join(f"{'acc@' + str(b):>7}" for b in manifest.bits) + f" {'head ms':>8} {'tail ms':>8}"]
    for c in manifest.cuts:
        sizes = " ".join(f"{(c.payload_bytes(b) if c.kind.value != 'device' else 0):>8}" for b in manifest.bits)
        accs = " ".join(f"{(a.accuracy if (a := c.accuracy_at(b)) else float('nan')):>7.4f}" for b in manifest.bits)
        lines.append(f"{c.index:>4} {c.name[:28]:<28} {c.kind.value:<6} {sizes} {accs} {c.head_ms:>8.3f} {c.tail_ms:>8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from converter.convert import convert

    bar = _Bar(args.quiet)
    try:
        result = convert(args.model, args.calib, args.out, board=args.board, bits=args.bits, force=args.force,
                         seed=args.seed, progress=bar)
    except ConversionError as exc:
        bar.close()
        print(f"splitedge convert: error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    print(summary(result.manifest))
    for index, why in result.dropped:
        print(f"dropped cut {index}: {why}")
    print(f"wrote {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
