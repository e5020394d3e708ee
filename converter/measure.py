"""Step 4: measure a cut on held-out data with the exported models, run by LiteRT as the device would.

int8 head -> (requantized to n bits, packed, unpacked as on the wire) -> dequantized -> float tail:
accuracy vs the labels and top-1 agreement with the float model, per bit width. The early exit reads
the head's int8 tensors rescaled to its own input quantization, exactly as the device runner does.
Per bit width, the exit's operating point within 1 pp of the float model (:func:`exit_budgets`): the exit's
answers on the frames it keeps and the tail's, frame by frame, on the ones it escalates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from converter import early_exit
from sdk.litert import LiteRTModel
from sdk.manifest import AccuracyAtBits, CutKind, CutSpec, ExitBudget, Manifest, TensorSpec
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


def tail_predictions(
    tail: LiteRTModel, head_out: dict[str, np.ndarray], tensors: Sequence[TensorSpec], bits: Sequence[int]
) -> dict[int, np.ndarray]:
    """{bits: the tail's top-1 per frame} when the head's tensors are sent at each bit width."""
    out = {}
    for b in bits:
        feeds = {t.name: transmit(head_out[t.name], t, b) for t in tensors}
        out[int(b)] = run_tail(tail, feeds).argmax(axis=-1)
    return out


def accuracy_at_bits(
    tail: LiteRTModel,
    head_out: dict[str, np.ndarray],
    tensors: Sequence[TensorSpec],
    bits: Sequence[int],
    labels: np.ndarray,
    float_pred: np.ndarray,
    *,
    predictions: dict[int, np.ndarray] | None = None,
) -> tuple[AccuracyAtBits, ...]:
    """Per bit width: accuracy vs ``labels`` and agreement with ``float_pred`` (from ``predictions`` when given)."""
    preds = predictions if predictions is not None else tail_predictions(tail, head_out, tensors, bits)
    rows = []
    for b in bits:
        pred = preds[int(b)]
        rows.append(
            AccuracyAtBits(
                bits=int(b),
                accuracy=round(float((pred == labels).mean()), 4),
                agreement=round(float((pred == float_pred).mean()), 4),
            )
        )
    return tuple(rows)


def exit_budgets(
    exit_probs: np.ndarray,
    labels: np.ndarray,
    tail_preds: dict[int, np.ndarray],
    reference: float,
    *,
    budget: float = early_exit.ACCURACY_BUDGET,
) -> tuple[ExitBudget, ...]:
    """Per bit width, the exit's operating point within ``budget`` of ``reference`` (early_exit.budget_point),
    frame by frame: calibrated exit probabilities (N, classes), the tail's top-1 per frame at each width."""
    conf, right = exit_probs.max(-1), exit_probs.argmax(-1) == labels
    return tuple(
        early_exit.budget_point(conf, right, tail_preds[b] == labels, reference, bits=b, budget=budget)
        for b in sorted(tail_preds, reverse=True)
    )


def bundle_exit_budgets(bundle: str | Path, manifest: Manifest, frames: np.ndarray, labels: np.ndarray, *,
                        reference: float | None = None, threads: int = 2) -> dict[int, tuple[ExitBudget, ...]]:
    """:func:`exit_budgets` of every split cut of a written bundle, re-run with LiteRT on held-out ``frames``
    (int8 head, int8 exit at the manifest's temperature, the tail at each bit width), against ``reference``
    (default: the manifest's ``float_accuracy``, right for its own held-out frames; for other frames
    :func:`float_accuracy`): the same figures for a bundle converted before the field existed."""
    root, out = Path(bundle), {}
    reference = manifest.float_accuracy if reference is None else reference
    for cut in manifest.cuts:
        if cut.kind is not CutKind.SPLIT or cut.exit is None or cut.head is None or cut.tail is None:
            continue
        head_out = run_head(LiteRTModel(root / cut.head.path, threads=threads), frames, cut.tensors)
        logits = run_exit(LiteRTModel(root / cut.exit.path, threads=threads), head_out, cut.tensors)
        probs = early_exit.softmax(logits, cut.exit_temperature)
        preds = tail_predictions(LiteRTModel(root / cut.tail.path, threads=threads), head_out, cut.tensors,
                                 manifest.bits)
        out[cut.index] = exit_budgets(probs, labels, preds, reference)
    return out


def float_accuracy(bundle: str | Path, manifest: Manifest, frames: np.ndarray, labels: np.ndarray, *,
                   threads: int = 2) -> float:
    """Top-1 accuracy of the float model on ``frames``: the raw cut's tail is the whole float model."""
    raw = manifest.raw_cut
    if raw is None or raw.tail is None:
        raise ValueError("the bundle has no raw cut, so no float model to measure against")
    tail = LiteRTModel(Path(bundle) / raw.tail.path, threads=threads)
    return float((run_tail(tail, {next(iter(tail.inputs)): frames}).argmax(-1) == labels).mean())


def retime(work: Path, cuts: Sequence[CutSpec], *, threads: int, cloud_threads: int, rounds: int = 40,
           percentile: float = 10.0) -> list[CutSpec]:
    """Every cut's head, exit and tail timed again, interleaved: one invoke of each model per round.

    Timed one after another (as each cut is converted), a cut converted while the shared host was busy
    records a longer head than a deeper cut timed a minute later (measured: MobileNetV2's block 13 head
    3.3 ms against the whole model's 2.1 ms), and the planner then never picks it. Interleaved, load that
    comes and goes hits every model alike, so the head times keep their true order and ratios; the
    ``percentile`` (10th) of the rounds drops the invokes a burst of load hit. Device models run on the
    board's ``threads``, tails on the cloud's ``cloud_threads``, as each cut's first timing did.
    """
    models: dict[tuple[int, str], LiteRTModel] = {}
    for c in cuts:
        for role, ref, n in (("head", c.head, threads), ("exit", c.exit, threads), ("tail", c.tail, cloud_threads)):
            if ref is not None:
                models[(c.index, role)] = m = LiteRTModel(work / ref.path, threads=n)
                m.warm_up()
    feeds = {key: {k: np.zeros((1, *i.shape), dtype=i.dtype) for k, i in m.inputs.items()}
             for key, m in models.items()}
    times: dict[tuple[int, str], list[float]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, m in models.items():
            m.run(feeds[key])
            times[key].append(m.last_invoke_ms)
    ms = {key: round(float(np.percentile(t, percentile)), 4) for key, t in times.items()}
    return [replace(c, **{f"{role}_ms": ms[(c.index, role)] for role in ("head", "exit", "tail")
                          if (c.index, role) in ms}) for c in cuts]
