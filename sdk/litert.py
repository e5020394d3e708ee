"""The LiteRT adapter: the only module that imports an interpreter (ai_edge_litert, else tflite_runtime).

Models are run through their signature runner, so inputs and outputs are mapped by *name* (a
multi-output head's ``get_output_details()`` order is not the Keras order; the signature keys are).
On a 32-bit Pi OS only ``tflite_runtime`` exists: it is used when ai_edge_litert is not installed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sdk.errors import BundleError, MissingDependencyError

__all__ = ["HeadRunner", "LiteRTModel", "TensorInfo", "interpreter_class", "runtime_name"]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    key: str  # signature key
    shape: tuple[int, ...]  # without the batch dimension
    dtype: np.dtype
    scale: float
    zero_point: int


class HeadRunner(Protocol):
    """What the device loop needs of a model: named inputs in, named outputs out."""

    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


_RUNTIME: tuple[str, Any] | None = None


def interpreter_class() -> tuple[str, Any]:
    """(name, Interpreter class) of the runtime installed: ai_edge_litert first, then tflite_runtime."""
    global _RUNTIME
    if _RUNTIME is None:
        try:
            from ai_edge_litert.interpreter import Interpreter

            _RUNTIME = ("ai_edge_litert", Interpreter)
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

                _RUNTIME = ("tflite_runtime", Interpreter)
            except ImportError:
                raise MissingDependencyError.for_extra("ai-edge-litert (or tflite-runtime)", "device") from None
    return _RUNTIME


def runtime_name() -> str:
    return interpreter_class()[0]


class LiteRTModel:
    """One .tflite model behind its (single) signature, batch 1 by default."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        self.path = Path(path)
        _, interpreter = interpreter_class()
        try:
            self._interp = interpreter(model_path=str(self.path), num_threads=max(1, int(threads)))
        except (ValueError, RuntimeError) as exc:
            raise BundleError(
                f"{self.path}: LiteRT cannot load this model ({exc}); the file is corrupt or was written by a "
                "newer converter than this runtime supports: re-convert it or upgrade ai-edge-litert"
            ) from exc
        signatures = self._interp.get_signature_list()
        if len(signatures) != 1:
            raise BundleError(f"{self.path}: expected one signature, found {sorted(signatures)}; re-convert it")
        self._runner = self._interp.get_signature_runner(next(iter(signatures)))
        self.inputs = {k: _info(k, d) for k, d in self._runner.get_input_details().items()}
        self.outputs = {k: _info(k, d) for k, d in self._runner.get_output_details().items()}
        self.last_invoke_ms = 0.0

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feed {key: array with a leading batch dimension}; returns {key: array}."""
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise ValueError(f"{self.path.name}: missing inputs {sorted(missing)}; expected {sorted(self.inputs)}")
        t0 = time.perf_counter()
        out = self._runner(**{k: np.ascontiguousarray(v, dtype=self.inputs[k].dtype) for k, v in feeds.items()})
        self.last_invoke_ms = (time.perf_counter() - t0) * 1000.0
        return out

    def run_batched(self, feeds: Mapping[str, np.ndarray], batch: int = 64) -> dict[str, np.ndarray]:
        """Run N samples in slices of `batch` (the signature runner resizes the input as needed)."""
        n = len(next(iter(feeds.values())))
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        for i in range(0, n, batch):
            out = self.run({k: v[i : i + batch] for k, v in feeds.items()})
            for k, v in out.items():
                parts[k].append(v)
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    def time_ms(self, *, repeats: int = 30, warmup: int = 3) -> float:
        """Median invoke time at batch 1 on zero-filled (valid) inputs."""
        feeds = {k: np.zeros((1, *i.shape), dtype=i.dtype) for k, i in self.inputs.items()}
        for _ in range(warmup):
            self.run(feeds)
        times = []
        for _ in range(repeats):
            self.run(feeds)
            times.append(self.last_invoke_ms)
        return float(np.median(times))


def _info(key: str, d: Mapping[str, Any]) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(key, tuple(int(x) for x in d["shape"][1:]), np.dtype(d["dtype"]), float(scale), int(zp))
