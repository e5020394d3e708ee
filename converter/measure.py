"""Step 4: measure a cut on held-out data with the exported models, run by LiteRT as the device would.

int8 head -> (requantized to n bits, packed, unpacked as on the wire) -> dequantized -> float tail:
accuracy vs the labels and top-1 agreement with the float model, per bit width. The early exit reads
the head's int8 tensors rescaled to its own input quantization, exactly as the device runner does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sdk.litert import LiteRTModel
from sdk.manifest import AccuracyAtBits, TensorSpec
from sdk.packing import dequantize, pack_bits, requant_int8, requantize, unpack_bits


def run_head(head: LiteRTModel, frames: np.ndarray, tensors: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """{tensor name: int8 (N, ...)} from the int8 head, mapped by signature key."""
    out = head.run_batched({next(iter(head.inputs)): frames})
    return {t.name: out[t.head_output] for t in tensors}


def transmit(q: np.ndarray, spec: TensorSpec, bits: int) -> np.ndarray:
    """What the cloud gets for int8 tensor(s) q sent at `bits`: per frame requantize, pack, unpack, dequantize."""
    out = np.empty(q.shape, dtype=np.float32)
    for i in range(len(q)):
        rq = requantize(q[i], spec.scale, spec.zero_point, bits)
        codes = unpack_bits(pack_bits(rq.codes, bits), bits, rq.codes.size).reshape(q[i].shape)
        out[i] = dequantize(codes, rq.scale, rq.zero_point)
    return out


def run_tail(tail: LiteRTModel, feeds: dict[str, np.ndarray]) -> np.ndarray:
    out = tail.run_batched(feeds)
    return next(iter(out.values()))


def run_exit(exit_model: LiteRTModel, head_out: dict[str, np.ndarray], tensors: Sequence[TensorSpec]) -> np.ndarray:
    """Dequantized exit logits (N, classes)."""
    feeds = {
        t.name: requant_int8(head_out[t.name], t.scale, t.zero_point, t.exit_scale, t.exit_zero_point)
        for t in tensors
    }
    out_info = next(iter(exit_model.outputs.values()))
    q = exit_model.run_batched(feeds)[out_info.key]
    return dequantize_int8(q, out_info.scale, out_info.zero_point)


def dequantize_int8(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if scale == 0.0:  # a float output
        return q.astype(np.float32)
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def accuracy_at_bits(
    tail: LiteRTModel,
    head_out: dict[str, np.ndarray],
    tensors: Sequence[TensorSpec],
    bits: Sequence[int],
    labels: np.ndarray,
    float_pred: np.ndarray,
) -> tuple[AccuracyAtBits, ...]:
    rows = []
    for b in bits:
        feeds = {t.name: transmit(head_out[t.name], t, b) for t in tensors}
        pred = run_tail(tail, feeds).argmax(axis=-1)
        rows.append(
            AccuracyAtBits(
                bits=int(b),
                accuracy=round(float((pred == labels).mean()), 4),
                agreement=round(float((pred == float_pred).mean()), 4),
            )
        )
    return tuple(rows)
