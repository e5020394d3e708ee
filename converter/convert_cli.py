"""`splitedge convert MODEL --calib DATA --out BUNDLE [--board NAME] [--bits 8,4,2] [--preprocess MODE]
[--output NAME] [--force]`.

The checks that need no model (paths, the model file's magic bytes, --bits, --preprocess, --out vs --force) run
before TensorFlow is imported, so a refused command answers in a fraction of a second instead of 5-7 s.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdk.errors import ConversionError, ConversionWarning


def parse_bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits {text!r}: expected a comma-separated list like 8,4,2") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge convert", description=__doc__)
    p.add_argument("model", help="Keras 3 functional or Sequential model: a .keras or HDF5 file (any name)")
    p.add_argument("--calib", required=True, help=".npz with x (N,H,W,C uint8) [and y], or a folder of images by class")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--board", default=None, help="board profile (pi3bplus, pi4, pi5, zero2w, qemu-aarch64, or a .toml)")
    p.add_argument("--bits", type=parse_bits, default=(8, 4, 2), help="bit widths to measure (default 8,4,2)")
    p.add_argument("--preprocess", default=None, metavar="MODE",
                   help="float-input models: how the model's input is made from the 0..255 frame, folded into the "
                        "int8 head: none, tf (x/127.5-1), torch (ImageNet mean/std), caffe (BGR minus mean) or "
                        "SCALE,OFFSET (x*SCALE+OFFSET); the keras.applications preprocess_input modes")
    p.add_argument("--output", default=None, metavar="NAME", help="the output to convert, for a multi-output model")
    p.add_argument("--min-cut-reduction", type=float, default=0.25, metavar="F",
                   help="keep a cut only when it ships at most 1-F of the bytes of the last cut kept (default 0.25; "
                        "0 keeps every compressive boundary)")
    p.add_argument("--sign-key", default=None, metavar="KEY.pem",
                   help="Ed25519 private key (PEM): sign the manifest into BUNDLE/manifest.sig (splitedge sign)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes converting the cuts side by side (default: one per core for a model of 200 MFLOPs "
                        "or more, else 1; 1 = in this process)")
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
    """The per-cut table; without labels every figure is top-1 agreement with the float model, and says so."""
    labelled = manifest.metric == "accuracy"
    quality = (f"float accuracy {manifest.float_accuracy:.4f}" if labelled
               else "no labels: agreement with the float model")
    col = "acc@" if labelled else "agr@"
    lines = [f"bundle {manifest.bundle_id[:12]}  model {manifest.model_name}  board {manifest.board}  "
             f"{quality}  ({manifest.n_eval} held-out frames)",
             f"{'cut':>4} {'name':<28} {'kind':<6} " + " ".join(f"{'B@' + str(b):>8}" for b in manifest.bits)
             + " " + " ".join(f"{col + str(b):>7}" for b in manifest.bits) + f" {'head ms':>8} {'tail ms':>8}"
             + f" {'exit ' + col[:3]:>8} {'q@1pp':>6} {'tau':>6}"]
    for c in manifest.cuts:
        sizes = " ".join(f"{(c.payload_bytes(b) if c.kind.value != 'device' else 0):>8}" for b in manifest.bits)
        accs = " ".join(f"{_figure(c.accuracy_at(b), labelled):>7.4f}" for b in manifest.bits)
        lines.append(f"{c.index:>4} {c.name[:28]:<28} {c.kind.value:<6} {sizes} {accs} {c.head_ms:>8.3f} {c.tail_ms:>8.3f}"
                     + _exit_columns(c, max(manifest.bits)))
    if any(c.exit_budget for c in manifest.cuts):
        lines.append(f"q@1pp: share of frames the early exit escalates (at {max(manifest.bits)} bits) while exit + tail "
                     f"stay within 1 pp of the float {manifest.metric}; 1 - q stay on the camera; "
                     "E[T] = T_dev + q * T_esc ('*': the tail alone misses it)")
    return "\n".join(lines)


def _exit_columns(c: Any, bits: int) -> str:
    if c.kind.value != "split" or c.exit is None:
        return ""
    b = c.exit_budget_at(bits)
    tail = f" {b.escalation_rate:>6.3f}{'' if b.met else '*'} {b.tau:>6.3f}" if b is not None else f" {'-':>6} {'-':>6}"
    return f" {c.exit_accuracy:>8.4f}" + tail


def _figure(a: Any, labelled: bool) -> float:
    if a is None:
        return float("nan")
    return a.accuracy if labelled else a.agreement


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no model loaded, before TensorFlow is imported: one ConversionError line each."""
    from converter.load import sniff_model
    from converter.preprocess import parse_preprocess
    from sdk.packing import SUPPORTED_BITS

    sniff_model(args.model)
    calib = Path(args.calib)
    if not calib.exists():
        raise ConversionError(f"--calib {calib} does not exist; pass an .npz with x (N,H,W,C uint8) [and y], or a "
                              "folder of images with one sub-folder per class")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConversionError(f"--out {out} exists; pass --force to write over it, or choose another folder")
    bad = [b for b in args.bits if b not in SUPPORTED_BITS]
    if bad or not args.bits:
        raise ConversionError(f"--bits {','.join(map(str, args.bits))}: each must be one of "
                              f"{','.join(map(str, SUPPORTED_BITS))}, e.g. --bits 8,4,2")
    parse_preprocess(args.preprocess)
    if not 0.0 <= args.min_cut_reduction < 1.0:
        raise ConversionError(f"--min-cut-reduction {args.min_cut_reduction}: expected a fraction in [0, 1), e.g. "
                              "0.25 (a kept cut ships at most 75 % of the previous one's bytes) or 0 (every cut)")
    if args.workers is not None and args.workers < 1:
        raise ConversionError(f"--workers {args.workers}: expected 1 (convert in this process) or more processes")
    if args.sign_key is not None:  # a bad key is refused now, not after a long conversion
        from sdk.errors import ConfigError
        from sdk.signing import load_private_key

        try:
            args.sign_key = load_private_key(args.sign_key)
        except ConfigError as exc:
            raise ConversionError(str(exc)) from None
    if args.board is not None:
        from sdk.config import load_board
        from sdk.errors import ConfigError

        try:
            load_board(args.board)
        except ConfigError as exc:  # names the file and the key
            raise ConversionError(f"--board {args.board}: {exc}") from None


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """ConversionWarnings printed at once, loud and on one line, not at the end of a long conversion.

    Other warnings (TensorFlow's) go where they went before.
    """
    previous = warnings.showwarning

    def show(message: Any, category: type, *rest: Any, **kw: Any) -> None:
        if issubclass(category, ConversionWarning):
            print(f"splitedge convert: WARNING: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, *rest, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("always", ConversionWarning)
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
    except ConversionError as exc:
        print(f"splitedge convert: error: {exc}", file=sys.stderr)
        return 1
    from converter.convert import convert

    bar = _Bar(args.quiet)
    try:
        with _warnings_to_stderr():
            result = convert(args.model, args.calib, args.out, board=args.board, bits=args.bits, force=args.force,
                             seed=args.seed, progress=bar, preprocess=args.preprocess, output=args.output,
                             min_cut_reduction=args.min_cut_reduction, workers=args.workers)
    except ConversionError as exc:
        bar.close()
        print(f"splitedge convert: error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    print(summary(result.manifest))
    for index, why in result.dropped:
        print(f"dropped cut {index}: {why}")
    print(f"wrote {result.path}")
    if args.sign_key is not None:
        from sdk.signing import fingerprint, sign_bundle

        sig = sign_bundle(result.path, args.sign_key)
        print(f"signed: wrote {sig} (key {fingerprint(args.sign_key.public_key())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
