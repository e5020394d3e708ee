"""Wire-format throughput: n-bit pack/unpack and whole-frame encode+decode (none vs zstd).

Run: ``python -m benchmarks.bench_wire``. Prints Markdown tables, each headed by that command.
Best-of-N wall time with ``time.perf_counter``; inputs are seeded, so runs are comparable.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np

from sdk.packing import pack_bits, requantize, unpack_bits
from sdk.wire import Codec, decode_frame, encode_activation

COMMAND = "python -m benchmarks.bench_wire"
MIB = 1 << 20


def best_of(fn: Callable[[], object], repeat: int = 30) -> float:
    """Fastest of ``repeat`` runs, in seconds (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _activation(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """ReLU-like int8 activation (zero point -128): half the codes at -128, the rest half-normal."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(0.0, 60.0, size=shape), 0.0) - 128.0
    return np.clip(np.rint(x), -128, 127).astype(np.int8)


def packing_table(repeat: int = 30) -> str:
    q = _activation((MIB,), seed=0)
    rows = [
        f"`{COMMAND}` — 1 MiB int8 tensor (1,048,576 elements), best of {repeat}; "
        "GB/s = int8 input bytes / time (8-bit unpack is a zero-copy view)",
        "",
        "| bits | packed bytes | requantize GB/s | pack GB/s | unpack GB/s | requantize+pack GB/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for bits in (8, 6, 4, 2):
        quantized = requantize(q, 0.05, -128, bits)
        codes = quantized.codes
        packed = pack_bits(codes, bits)
        t_req = best_of(lambda b=bits: requantize(q, 0.05, -128, b), repeat)
        t_pack = best_of(lambda b=bits, c=codes: pack_bits(c, b), repeat)
        t_unpack = best_of(lambda b=bits, p=packed: unpack_bits(p, b, MIB), repeat)
        t_both = best_of(lambda b=bits: pack_bits(requantize(q, 0.05, -128, b).codes, b), repeat)
        rows.append(
            f"| {bits} | {len(packed):,} | {MIB / t_req / 1e9:.2f} | {MIB / t_pack / 1e9:.2f} | "
            f"{MIB / t_unpack / 1e9:.2f} | {MIB / t_both / 1e9:.2f} |"
        )
    return "\n".join(rows)


def frame_table(repeat: int = 20) -> str:
    acts = {
        "block_6": _activation((1, 28, 28, 64), seed=1),
        "block_5": _activation((1, 28, 28, 32), seed=2),
        "pooled": _activation((1, 256), seed=3),
    }
    quant = {name: (0.05, -128) for name in acts}
    raw_bytes = sum(a.size for a in acts.values())
    rows = [
        f"`{COMMAND}` — 3-tensor frame (1x28x28x64 + 1x28x28x32 + 1x256 int8 = {raw_bytes:,} bytes), "
        f"ReLU-like activations, best of {repeat}, zstd level 1",
        "",
        "| bits | codec | frame bytes | encode ms | decode ms | decode+dequantize ms |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    common = dict(device_id="bench", seq=1, cut_id=3, bundle_id=1, capture_ts=1.7e9)
    for bits in (8, 4):
        for codec in Codec:

            def encode(b: int = bits, c: Codec = codec) -> bytes:
                return encode_activation(**common, activations=acts, quant=quant, bits=b, codec=c)

            data = encode()
            t_enc = best_of(encode, repeat)
            t_dec = best_of(lambda d=data: decode_frame(d), repeat)
            t_deq = best_of(lambda d=data: decode_frame(d).dequantized(), repeat)
            rows.append(
                f"| {bits} | {codec.value} | {len(data):,} | {t_enc * 1e3:.3f} | {t_dec * 1e3:.3f} | "
                f"{t_deq * 1e3:.3f} |"
            )
    return "\n".join(rows)


def run() -> str:
    machine = f"{platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}"
    return f"Machine: {machine}\n\n{packing_table()}\n\n{frame_table()}\n\n{reference_cut_table()}\n"


if __name__ == "__main__":
    print(run())


def reference_cut_table(bundle: str | None = None, repeat: int = 20) -> str:
    """Bytes per frame and encode+decode time per cut x bits x codec of the reference bundle (real activations)."""
    from pathlib import Path

    from sdk.litert import LiteRTModel
    from sdk.manifest import CutKind, load_manifest

    if bundle is None:
        from converter.reference import build_reference_bundle, default_bundle_dir

        build_reference_bundle()
        bundle = str(default_bundle_dir())
    root = Path(bundle)
    m = load_manifest(root)
    from converter.reference_data import make_frames

    frame, _ = make_frames(1, seed=5, split="test")
    raw_bytes = m.input.nbytes
    rows = [
        f"`{COMMAND}` — real activations of the reference bundle on one test frame; raw frame = {raw_bytes:,} bytes; "
        f"best of {repeat}",
        "",
        "| cut | bits | codec | frame bytes | vs raw frame | encode ms | decode+dequantize ms |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for cut in m.cuts:
        if cut.kind is not CutKind.SPLIT:
            continue
        head = LiteRTModel(root / cut.head.path)
        res = head.run({next(iter(head.inputs)): frame})
        acts = {t.name: res[t.head_output][0] for t in cut.tensors}
        quant = {t.name: (t.scale, t.zero_point) for t in cut.tensors}
        for bits in m.bits:
            for codec in Codec:
                def encode(b: int = bits, c: Codec = codec, i: int = cut.index, a: dict = acts,
                           q: dict = quant) -> bytes:
                    return encode_activation(device_id="bench", seq=1, cut_id=i, bundle_id=1, capture_ts=1.7e9,
                                             activations=a, quant=q, bits=b, codec=c)

                data = encode()
                t_enc = best_of(encode, repeat)
                t_dec = best_of(lambda d=data: decode_frame(d).dequantized(), repeat)
                rows.append(f"| {cut.index} {cut.name} | {bits} | {codec.value} | {len(data):,} | "
                            f"{len(data) / raw_bytes:.3f}x | {t_enc * 1e3:.3f} | {t_dec * 1e3:.3f} |")
    return "\n".join(rows)
