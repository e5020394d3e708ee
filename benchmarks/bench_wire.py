"""Wire-format cost at the real payloads of each workload's cuts: n-bit packing, frame encode and decode.

Run: ``python -m benchmarks.bench_wire [--workloads A,B | all] [BUNDLE]``. Prints Markdown, one table per
workload, each headed by that command (``benchmarks.run`` calls :func:`run`: every workload whose trained
model exists, or ``$SPLITEDGE_BENCH_WORKLOADS``; see ``benchmarks/_workloads.py``).

For each cut the workload's int8 head runs once on one of its labelled test frames; its real activations
are then packed and framed at every bit width of the bundle, without and with zstd (level 1). Best-of-N
wall time with ``time.perf_counter`` after one warm-up; frames and seeds are fixed, so runs compare.

* **pack**: requantize + bit-pack every tensor of the cut (``sdk.packing.wire_codes``, the path
  ``encode_activation`` takes; at 8 bits the int8 codes are sent as they are: a copy);
* **unpack**: ``unpack_bits`` of those payloads (8 bits: none, the codes are read in place);
* **encode** = the whole ``encode_activation`` (header, descriptors, pack, codec); **decode+dequantize** =
  ``decode_frame(...).dequantized()``, what a tail worker does before its model. The raw-frame row (cut 0)
  is ``encode_raw`` / ``decode_frame`` of the uint8 frame, what a cloud-only camera sends.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np

from benchmarks import _workloads
from sdk.litert import LiteRTModel
from sdk.manifest import CutSpec
from sdk.packing import unpack_bits, wire_codes
from sdk.wire import Codec, decode_frame, encode_activation, encode_raw

JPEG_QUALITY = 85  # the raw frame as JPEG at this quality: one more row (sdk/jpeg.py)

COMMAND = "python -m benchmarks.bench_wire"
REPEAT = 20
#: fewer repeats for payloads above this many int8 bytes (a 224 px model's early cuts): the best of 10 is as stable
LARGE = 256 * 1024


def best_of(fn: Callable[[], object], repeat: int = REPEAT) -> float:
    """Fastest of ``repeat`` runs, in seconds (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds >= 1e-6 else "<0.001"


def cut_rows(target: _workloads.Target, repeat: int = REPEAT) -> list[str]:
    """One row per (cut, bits): the raw frame first, then every split cut at every bit width of the bundle."""
    m, root = target.manifest, target.root
    frame = target.frames(1)
    raw_bytes = m.input.nbytes
    common = dict(device_id="bench", seq=1, bundle_id=m.wire_bundle_id, capture_ts=1.7e9)
    rows = []
    if m.raw_cut is not None:
        image = frame[0]
        name = m.raw_cut.tensors[0].name if m.raw_cut.tensors else "input"
        sizes, enc, dec = [], [], []
        for codec in (Codec.NONE, Codec.ZSTD, Codec.JPEG):
            def encode(c: Codec = codec) -> bytes:
                return encode_raw(**common, image=image, name=name, cut_id=m.raw_cut.index, codec=c,
                                  jpeg_quality=JPEG_QUALITY)

            data = encode()
            sizes.append(len(data))
            enc.append(best_of(encode, repeat))
            dec.append(best_of(lambda d=data: decode_frame(d), repeat))
        rows.append(f"| {m.raw_cut.index} raw frame | uint8 {'x'.join(map(str, m.input.shape))} | {raw_bytes:,} | - | "
                    f"{raw_bytes:,} | - | - | {sizes[0]:,} / {sizes[1]:,} | {sizes[0] / raw_bytes:.3f}x / "
                    f"{sizes[1] / raw_bytes:.3f}x | {_ms(enc[0])} / {_ms(enc[1])} | {_ms(dec[0])} / {_ms(dec[1])} |")
        rows.append(f"| {m.raw_cut.index} raw frame as JPEG q{JPEG_QUALITY} (`raw_jpeg_quality`) | uint8 "
                    f"{'x'.join(map(str, m.input.shape))} | {raw_bytes:,} | - | - | - | - | {sizes[2]:,} | "
                    f"{sizes[2] / raw_bytes:.3f}x | {_ms(enc[2])} | {_ms(dec[2])} |")
    for cut in target.splits:
        head = LiteRTModel(root / cut.head.path)
        res = head.run({next(iter(head.inputs)): frame})
        acts = {t.name: res[t.head_output][0] for t in cut.tensors}
        rows += _split_rows(cut, acts, m.bits, raw_bytes, common, repeat)
    return rows


def _split_rows(cut: CutSpec, acts: dict[str, np.ndarray], bits_list: tuple[int, ...], raw_bytes: int,
                common: dict, repeat: int) -> list[str]:
    """The rows of one split cut, from its head's int8 outputs ``acts``."""
    quant = {t.name: (t.scale, t.zero_point) for t in cut.tensors}
    int8_bytes = sum(a.size for a in acts.values())
    n = max(5, repeat // 2) if int8_bytes > LARGE else repeat
    shapes = " + ".join("x".join(map(str, a.shape)) for a in acts.values())
    rows = []
    for bits in bits_list:
        def pack(b: int = bits) -> list[bytes]:
            if b == 8:
                return [a.tobytes() for a in acts.values()]
            return [wire_codes(a, *quant[k], b)[0] for k, a in acts.items()]

        payloads = pack()
        t_pack = best_of(pack, n)
        if bits == 8:
            unpack_cell = "-"
        else:
            def unpack(b: int = bits, p: list[bytes] = payloads) -> None:
                for data, a in zip(p, acts.values(), strict=True):
                    unpack_bits(data, b, a.size)

            unpack_cell = _ms(best_of(unpack, n))
        sizes, enc, dec = [], [], []
        for codec in (Codec.NONE, Codec.ZSTD):  # JPEG is for the raw frame only
            def encode(b: int = bits, c: Codec = codec) -> bytes:
                return encode_activation(**common, cut_id=cut.index, activations=acts, quant=quant, bits=b, codec=c)

            data = encode()
            sizes.append(len(data))
            enc.append(best_of(encode, n))
            dec.append(best_of(lambda d=data: decode_frame(d).dequantized(), n))
        rows.append(
            f"| {cut.index} {cut.name} | {shapes} | {int8_bytes:,} | {bits} | {sum(map(len, payloads)):,} | "
            f"{_ms(t_pack)} | {unpack_cell} | {sizes[0]:,} / {sizes[1]:,} | {sizes[0] / raw_bytes:.3f}x / "
            f"{sizes[1] / raw_bytes:.3f}x | {_ms(enc[0])} / {_ms(enc[1])} | {_ms(dec[0])} / {_ms(dec[1])} |"
        )
    return rows


def workload_table(target: _workloads.Target, repeat: int = REPEAT) -> str:
    m = target.manifest
    header = [
        f"### {target.name}",
        "",
        f"`{COMMAND} --workloads {target.name}` — {target.describe()}; activations of its int8 heads on one "
        f"labelled test frame (seed {_workloads.FRAME_SEED}); host {_workloads.host()}, numpy {np.__version__}; "
        f"no board factor, no trace, no network (in process). Best of {repeat} (of {max(5, repeat // 2)} for "
        f"payloads over {LARGE // 1024} KiB); cells 'a / b' = codec none / zstd level 1; bits {', '.join(map(str, m.bits))}.",
        "",
        "| cut | tensors | int8 bytes | bits | payload bytes | pack ms | unpack ms | frame bytes | vs raw frame | "
        "encode ms | decode+dequantize ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(header + cut_rows(target, repeat))


def run(workloads: _workloads.Spec = None, bundle: str | None = None, repeat: int = REPEAT) -> str:
    """The Markdown section: one table per workload (see the module docstring), then the ones left out."""
    targets, notes = _workloads.targets(workloads, bundle)
    parts = [
        "Per cut: bytes on the wire and what packing, encoding and decoding them cost, at each workload's real "
        "activations. pack = requantize + bit-pack of every tensor (8 bits: a copy); unpack = the inverse "
        "(8 bits: none, read in place); encode = the whole frame (pack + header + codec); decode+dequantize = what "
        "a tail worker does before its model. Compare within a table.",
    ]
    for target in targets:
        print(f"   wire: {target.name}", file=sys.stderr, flush=True)
        parts.append(workload_table(target, repeat))
    if notes:
        parts.append(_workloads.notes_block(notes))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", help="one bundle folder instead of the workloads")
    p.add_argument("--workloads", default=None, help="comma-separated workload names or all (default: every "
                   f"workload whose trained model exists, or ${_workloads.ENV})")
    p.add_argument("--repeat", type=int, default=REPEAT, help=f"best of N (default {REPEAT})")
    args = p.parse_args(argv)
    print(run(args.workloads, args.bundle, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
