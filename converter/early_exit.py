"""Step 3b: the early-exit classifier on a head's tensors, its training and calibration, and where it pays.

The exit reads the same tensors the head ships (named like the tail's inputs), so the device runs it
on what it already computed. Its confidence is the max softmax of logits / T, with T fitted by
temperature scaling (minimum negative log-likelihood) on a held-out split the exit never trained on.

Training (:func:`training_set`, :func:`train_exit`). A few hundred calibration frames are too few for a
classifier on early features (trained on the 300 fit frames alone, the digits exits at the 1,152-byte cut
answered 50 % of frames right and the earlier ones were at chance). Two things fix most of it, and
neither needs labels beyond what the converter has:

* **augmented frames**: each fit frame is shifted (up to 1/12 of its side, wrapping) and its brightness
  and contrast jittered, ``copies`` times (:func:`augment`); the head turns them into more features;
* **distillation**: the target is ``(1 - w) * one-hot(label) + w * softmax(float model logits)``
  (:data:`DISTILL_WEIGHT`), so on a shifted frame the float model says what it is, and the exit learns
  where the float model itself is unsure. Escalated frames go to the tail, which *is* the float model's
  back end: an exit that agrees with it on the frames it keeps loses nothing.

How many copies: :func:`augment_copies` for the whole conversion, within a budget of float-model FLOPs (the
teacher runs on every copy) and of frame bytes: 6 (:data:`MAX_COPIES`) on the digits network, 2 on 224x224
frames, none on ResNet-50; then :func:`copies_for_cut` per cut, within a budget of feature bytes and of the
FLOPs its head and exit training spend on them (none at cuts with very large tensors: the exit trains on the
fit frames alone there). With 6 copies the digits conversion took ~30 % longer (docs/DEVICE.md, "Early exits").

Where it pays (:func:`budget_point`): the escalation rate q at which the *combined* accuracy (the exit's
answers on the frames it keeps, the tail's on the frames it escalates, frame by frame) stays within a
budget (1 pp) of the float model; E[T] = T_dev + q * T_esc follows from it (THEORY.md, sdk.planner).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sdk.manifest import ExitBudget, ExitPoint

#: weight of the float model's softmax in the exit's training target (the rest is the one-hot label)
DISTILL_WEIGHT = 0.5
#: augmented copies of the fit frames, at most
MAX_COPIES = 6
#: float-model FLOPs the augmented frames may cost in all (the teacher runs on each): 37 copies of 300 frames
#: of the 89 MFLOP digits network would fit (it gets MAX_COPIES); ResNet-50 (~8 GFLOP) none
AUG_FLOP_BUDGET = 1e12
#: bytes of float32 features (every copy of every fit frame) one cut's exit may train on
AUG_FEATURE_BYTES = 256 * 1024 * 1024
#: bytes of augmented uint8 frames held at once
AUG_FRAME_BYTES = 128 * 1024 * 1024
#: FLOPs one cut may spend on the copies (its head on them, the exit's training on their features): keeps the
#: digits conversion within ~30 % of its time with 300-frame exits
CUT_FLOP_BUDGET = 1.5e11
EPOCHS = 8
#: allowed drop of the combined accuracy below the float model's (0.01 = 1 percentage point)
ACCURACY_BUDGET = 0.01


def build_exit(specs: Sequence[tuple[str, tuple[int, ...]]], num_classes: int, *, seed: int = 0) -> Any:
    """A small CNN per spatial tensor, global pooling, concat, a 64-unit hidden layer, logits.

    Per (H, W, C) tensor: 2x2 average pooling while H > 24 (the exits on such early, big tensors are weak,
    so they stay cheap), a 3x3 stride-1 conv (64) when H <= 8 (cheap there; the digits cut at 6x6x32
    kept 56 % of frames at 1 pp with it, 46 % without), then 3x3 stride-2 convs until H <= 4 (at most
    four; widths 64/96/128 after the stride-1 conv, 16/32/48/64 on larger maps, so the convs on a big
    early tensor stay cheap to train and to run). Vectors go straight to the concat, other ranks are
    flattened.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs, feats = [], []
    for name, shape in specs:
        inp = keras.Input(shape=shape, name=name)
        inputs.append(inp)
        x = inp
        if len(shape) == 3:
            for i in range(3):  # 2x2 average pooling first on big maps: their exits are weak, keep them cheap
                if x.shape[1] <= 24:
                    break
                x = layers.AveragePooling2D(2, name=f"exit_{name}_down{i}")(x)
            small = shape[0] <= 8
            if small:
                x = layers.Conv2D(64, 3, padding="same", name=f"exit_{name}_conv")(x)
                x = layers.ReLU(6.0, name=f"exit_{name}_relu")(x)
            widths = (64, 96, 128) if small else (16, 32, 48, 64)
            for i, width in enumerate(widths):
                if x.shape[1] <= 4:
                    break
                x = layers.Conv2D(width, 3, strides=2, padding="same", name=f"exit_{name}_conv{i}")(x)
                x = layers.ReLU(6.0, name=f"exit_{name}_relu{i}")(x)
            x = layers.GlobalAveragePooling2D(name=f"exit_{name}_pool")(x)
        elif len(shape) != 1:
            x = layers.Flatten(name=f"exit_{name}_flat")(x)
        feats.append(x)
    x = feats[0] if len(feats) == 1 else layers.Concatenate(name="exit_concat")(feats)
    x = layers.Dense(64, name="exit_hidden")(x)
    x = layers.ReLU(6.0, name="exit_hidden_relu")(x)
    out = layers.Dense(num_classes, name="exit_logits")(x)
    return keras.Model(inputs, out, name="early_exit")


def augment(frames: np.ndarray, copies: int, *, seed: int = 0) -> np.ndarray:
    """``copies`` augmented versions of uint8 frames (N, H, W, C), copy-major: (copies * N, H, W, C).

    Per frame: a wrapping shift of up to H/12, W/12 pixels, then ``(x - 128) * a + 128 + b`` with contrast
    a in [0.75, 1.25] and brightness b in [-20, 20], clipped to 0..255. No flips: they change digits.
    """
    n, h, w = frames.shape[:3]
    if copies <= 0 or n == 0:
        return frames[:0].copy()
    rng = np.random.default_rng(seed)
    out = np.empty((copies * n, *frames.shape[1:]), dtype=np.uint8)
    for i in range(copies * n):
        dy, dx = rng.integers(-(h // 12), h // 12 + 1), rng.integers(-(w // 12), w // 12 + 1)
        a, b = rng.uniform(0.75, 1.25), rng.uniform(-20.0, 20.0)
        img = np.roll(frames[i % n], (int(dy), int(dx)), axis=(0, 1)).astype(np.float32)
        out[i] = np.clip((img - 128.0) * a + 128.0 + b, 0.0, 255.0).astype(np.uint8)
    return out


def augment_copies(n_fit: int, frame_bytes: int, model_flops: int, *, max_copies: int = MAX_COPIES,
                   flop_budget: float = AUG_FLOP_BUDGET, frame_budget: int = AUG_FRAME_BYTES) -> int:
    """How many augmented copies of the fit frames the whole conversion makes (module doc)."""
    if n_fit <= 0:
        return 0
    by_flops = int(flop_budget // max(1, n_fit * model_flops))
    by_bytes = int(frame_budget // max(1, n_fit * frame_bytes))
    return max(0, min(max_copies, by_flops, by_bytes))


def exit_macs(model: Any) -> int:
    """Multiply-accumulates of one frame through a Keras exit (Conv2D and Dense layers)."""
    macs = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, cout = layer.output.shape
            kh, kw = layer.kernel_size
            macs += int(h) * int(w) * kh * kw * int(layer.input.shape[-1]) * int(cout)
        elif kind == "Dense":
            macs += int(layer.input.shape[-1]) * int(layer.units)
    return macs


def copies_for_cut(copies: int, n_fit: int, feature_bytes: int, head_flops: int, macs: int, *,
                   epochs: int = EPOCHS, byte_budget: int = AUG_FEATURE_BYTES,
                   flop_budget: float = CUT_FLOP_BUDGET) -> int:
    """Copies one cut's exit trains on: the float32 features of the fit frames and their copies fit in
    ``byte_budget``, and the copies' cost (the float head once, the exit's training at ~6 FLOPs per MAC per
    epoch) in ``flop_budget``."""
    by_bytes = int(byte_budget // max(1, n_fit * feature_bytes)) - 1  # the fit frames themselves come first
    by_flops = int(flop_budget // max(1, n_fit * (head_flops + 6 * epochs * macs)))
    return max(0, min(copies, by_bytes, by_flops))


def soft_targets(labels: np.ndarray, teacher_logits: np.ndarray, weight: float = DISTILL_WEIGHT) -> np.ndarray:
    """(1 - weight) * one-hot(labels) + weight * softmax(teacher_logits), float32 (N, classes)."""
    classes = teacher_logits.shape[-1]
    onehot = np.eye(classes, dtype=np.float64)[np.asarray(labels, dtype=np.int64)]
    return ((1.0 - weight) * onehot + weight * softmax(teacher_logits)).astype(np.float32)


def train_exit(model: Any, features: dict[str, np.ndarray], targets: np.ndarray, *, epochs: int = EPOCHS,
               seed: int = 0) -> Any:
    """Fit on integer labels (N,) or target distributions (N, classes) (:func:`soft_targets`)."""
    import keras

    keras.utils.set_random_seed(seed)
    soft = targets.ndim == 2
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=(keras.losses.CategoricalCrossentropy(from_logits=True) if soft
              else keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    )
    model.fit(features, targets, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    return model


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """argmin_T NLL(softmax(logits / T)) by golden-section search on log T in [log 0.05, log 20]."""
    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (confidence > lo) & (confidence <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


TAU_GRID = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0)


def coverage_curve(confidence: np.ndarray, correct: np.ndarray, taus: Sequence[float] = TAU_GRID) -> tuple[ExitPoint, ...]:
    """Accuracy of the frames answered locally (confidence >= tau) and their share, per tau."""
    points = []
    for tau in taus:
        keep = confidence >= tau if tau < 1.0 else np.zeros_like(correct, dtype=bool)
        cov = float(keep.mean()) if len(keep) else 0.0
        acc = float(correct[keep].mean()) if keep.any() else 1.0
        points.append(ExitPoint(tau=float(tau), coverage=round(cov, 4), accuracy=round(acc, 4)))
    return tuple(points)


def budget_point(confidence: np.ndarray, exit_correct: np.ndarray, tail_correct: np.ndarray | float,
                 reference: float, *, bits: int = 8, budget: float = ACCURACY_BUDGET) -> ExitBudget:
    """The fewest escalations whose combined accuracy stays within ``budget`` of ``reference``.

    Frames are kept most confident first (``confidence >= tau``; frames of equal confidence go
    together). Keeping the k most confident of n frames gives

        combined(k) = (sum of exit_correct over the kept + sum of tail_correct over the rest) / n

    ``tail_correct``: per frame whether the tail (at ``bits``) is right, or one number, its accuracy
    (then every escalated frame counts that much: the policy's assumption, optimistic since escalated
    frames are the harder ones). The answer is the largest k with ``combined(k) >= reference - budget``
    (q = 1 - k / n); tau is halfway between the confidences of the last kept and the first escalated
    frame, 0.0 when all are kept and 1.0 (keep none) when none is. When even q = 1 misses the target (the
    tail alone is more than ``budget`` below ``reference``), q = 1 and ``met`` is False.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    n = len(conf)
    if n == 0:
        raise ValueError("budget_point needs at least one frame")
    ok = np.asarray(exit_correct, dtype=np.float64).reshape(-1)
    tail = np.broadcast_to(np.asarray(tail_correct, dtype=np.float64), (n,))
    if len(ok) != n:
        raise ValueError(f"{n} confidences but {len(ok)} exit outcomes")
    order = np.argsort(-conf, kind="stable")
    c = conf[order]
    kept_right = np.concatenate([[0.0], np.cumsum(ok[order])])  # [k]: exit right among the k kept
    tail_right = np.concatenate([[0.0], np.cumsum(tail[order])])
    ks = np.array([k for k in range(n + 1) if k in (0, n) or c[k - 1] != c[k]])  # ends of confidence ties
    combined = (kept_right[ks] + tail_right[n] - tail_right[ks]) / n
    good = np.flatnonzero(combined >= reference - budget - 1e-9)
    met = bool(len(good))
    j = int(good[-1]) if met else 0
    k = int(ks[j])
    tau = 1.0 if k == 0 else 0.0 if k == n else float((c[k - 1] + c[k]) / 2)
    return ExitBudget(bits=int(bits), budget=float(budget), tau=tau, escalation_rate=round((n - k) / n, 4),
                      accuracy=round(float(combined[j]), 4), met=met)
