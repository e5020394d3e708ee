"""Step 3b: the early-exit classifier on a head's tensors, and its temperature calibration.

The exit reads the same tensors the head ships (named like the tail's inputs), so the device runs
it on what it already computed. Its confidence is the max softmax of logits / T, with T fitted by
temperature scaling (minimum negative log-likelihood) on a held-out split the exit never trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sdk.manifest import ExitPoint


def build_exit(specs: Sequence[tuple[str, tuple[int, ...]]], num_classes: int, *, seed: int = 0) -> Any:
    """A small classifier: per spatial tensor two strided 3x3 convs + global pooling; concat; dense."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs, feats = [], []
    for name, shape in specs:
        inp = keras.Input(shape=shape, name=name)
        inputs.append(inp)
        x = inp
        if len(shape) == 3:
            for i, width in enumerate((24, 32)):
                if x.shape[1] > 4:
                    x = layers.Conv2D(width, 3, strides=2, padding="same", name=f"exit_{name}_conv{i}")(x)
                    x = layers.ReLU(6.0, name=f"exit_{name}_relu{i}")(x)
            x = layers.GlobalAveragePooling2D(name=f"exit_{name}_pool")(x)
        elif len(shape) != 1:
            x = layers.Flatten(name=f"exit_{name}_flat")(x)
        feats.append(x)
    x = feats[0] if len(feats) == 1 else layers.Concatenate(name="exit_concat")(feats)
    out = layers.Dense(num_classes, name="exit_logits")(x)
    return keras.Model(inputs, out, name="early_exit")


def train_exit(model: Any, features: dict[str, np.ndarray], labels: np.ndarray, *, epochs: int = 15,
               seed: int = 0) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(features, labels, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
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
