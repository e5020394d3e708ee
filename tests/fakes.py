"""A small fake manifest shared by the device-runner and replay tests (no bundle files behind it).

raw 3072 B (tail 5 ms) | cut 1: 2048 B at 8 bits, 1024 at 4 (head 1, tail 2) | cut 2: 128/64 B (head 3,
tail 1) | device cut 20 ms; 2 bits is over a 0.02 accuracy budget everywhere.
"""

from __future__ import annotations

import math

from sdk.manifest import (
    AccuracyAtBits,
    CutKind,
    CutSpec,
    ExitPoint,
    InputSpec,
    LabelsSource,
    Manifest,
    TensorSpec,
)

CURVE = (
    ExitPoint(0.0, 1.0, 0.6),
    ExitPoint(0.5, 0.6, 0.8),
    ExitPoint(0.9, 0.2, 0.95),
    ExitPoint(1.0, 0.0, 1.0),
)


def fake_cut(index: int, kind: CutKind, shape: tuple[int, ...], head_ms: float, tail_ms: float, two_bit_acc: float = 0.8) -> CutSpec:
    n = math.prod(shape)
    if kind is CutKind.RAW:
        tensors = (TensorSpec("frame", shape, "uint8", 1.0, 0, ""),)
        nbytes, acc = {"raw": n}, (AccuracyAtBits(8, 0.9, 1.0),)
    elif kind is CutKind.DEVICE:
        tensors = (TensorSpec("logits", shape, "int8", 0.1, 0, "output_0"),)
        nbytes, acc = {}, (AccuracyAtBits(8, 0.9, 1.0),)
    else:
        tensors = (TensorSpec(f"t{index}", shape, "int8", 0.05, -3, "output_0", 0.05, -3),)
        nbytes = {"8": n, "4": (n + 1) // 2, "2": (n + 3) // 4}
        acc = (AccuracyAtBits(8, 0.9, 1.0), AccuracyAtBits(4, 0.9, 1.0), AccuracyAtBits(2, two_bit_acc, 0.9))
    return CutSpec(
        index=index, name=f"c{index}", kind=kind, tensors=tensors, bytes_at_bits=nbytes, compressive_bits=(),
        head_flops=0, tail_flops=0, head_weight_bytes=0, head_peak_activation_bytes=0, head_ms=head_ms,
        tail_ms=tail_ms, exit_ms=0.0, float_accuracy=0.9, accuracy=acc,
        exit_curve=CURVE if kind is CutKind.SPLIT else (), exit_temperature=1.0, exit_accuracy=0.7,
    )  # fmt: skip


def fake_manifest() -> Manifest:
    """raw 3072 B | cut 1: 2048 B at 8 bits, 1024 at 4 | cut 2: 128 B | device cut 20 ms."""
    cuts = (
        fake_cut(0, CutKind.RAW, (32, 32, 3), 0.0, 5.0),
        fake_cut(1, CutKind.SPLIT, (16, 16, 8), 1.0, 2.0),
        fake_cut(2, CutKind.SPLIT, (4, 4, 8), 3.0, 1.0),
        fake_cut(3, CutKind.DEVICE, (10,), 20.0, 0.0),
    )
    return Manifest(
        schema_version=1, bundle_id="1a2b3c4d" + "0" * 56, created_by="test", model_name="fake", model_sha256="0" * 64,
        num_classes=10, input=InputSpec("frame", (32, 32, 3), "uint8"), labels_source=LabelsSource.LABELS,
        board="host", threads=1, host="test", bits=(8, 4, 2), n_calib=1, n_eval=100_000, float_accuracy=0.9,
        layers=(), cuts=cuts, files=(),
    )  # fmt: skip

