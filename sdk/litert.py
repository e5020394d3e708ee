"""The LiteRT adapter: the only module that imports an interpreter (ai_edge_litert, else tflite_runtime).

Inputs and outputs are mapped by the signature's *names* (a multi-output head's
``get_output_details()`` order is not the Keras order; the signature keys are). On a 32-bit Pi OS
only ``tflite_runtime`` exists: it is used when ai_edge_litert is not installed.

Per call, :meth:`LiteRTModel.run` does only what the frame needs: ``set_tensor`` for each input,
``invoke``, ``get_tensor`` for each output, on the signature's tensor indices. An input is resized
(and the tensors re-allocated) only when its shape differs from the previous call's - the stock
signature runner resizes and re-allocates on every call, which on a small head costs more than the
runner's whole bookkeeping. ``last_invoke_ms`` is the interpreter's part of the call: copying the
inputs in, ``invoke``, copying the outputs out (the signature runner's call minus its resize). A model whose signature is
not the primary subgraph (never produced by our converter) falls back to the signature runner.
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

    def __init__(self, path: str | Path, *, threads: int = 1, cpu_time: bool = True) -> None:
        self.path = Path(path)
        #: measure ``last_invoke_cpu_ms`` (two ``time.thread_time`` calls, ~1 us a run; only emulated
        #: board timing needs it). Off: it stays 0.0.
        self.cpu_time = bool(cpu_time)
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
        runner = self._interp.get_signature_runner(next(iter(signatures)))
        in_details, out_details = runner.get_input_details(), runner.get_output_details()
        self.inputs = {k: _info(k, d) for k, d in in_details.items()}
        self.outputs = {k: _info(k, d) for k, d in out_details.items()}
        #: wall time of the last run (input copy + invoke + output copy), and the calling thread's CPU
        #: time over it: equal on an idle host, the CPU time leaves out the host's scheduling stalls.
        #: With one interpreter thread the kernels run on the calling thread, so it is the compute time.
        self.last_invoke_ms = 0.0
        self.last_invoke_cpu_ms = 0.0
        # The direct path needs the signature to be the primary subgraph: its tensor indices must be
        # the interpreter's own inputs/outputs. Otherwise keep the signature runner (slower, same results).
        primary = {d["index"] for d in self._interp.get_input_details()} == {
            d["index"] for d in in_details.values()
        } and {d["index"] for d in self._interp.get_output_details()} == {d["index"] for d in out_details.values()}
        self._runner: Any = None if primary else runner
        del runner  # it holds the interpreter's wrapper, which makes Interpreter.invoke() refuse to run
        self._in_index = {k: int(d["index"]) for k, d in in_details.items()}
        self._out_index = tuple((k, int(d["index"])) for k, d in out_details.items())
        self._dtypes = {k: i.dtype for k, i in self.inputs.items()}
        self._shapes: dict[str, tuple[int, ...] | None] = {}
        if primary:
            for k, d in in_details.items():
                self._shapes[k] = tuple(int(x) for x in d["shape"])
            self._interp.allocate_tensors()
        # The camera's case - one input, same shape every frame - skips the general bookkeeping.
        self._single: tuple[str, int, np.dtype] | None = None
        if primary and len(self._in_index) == 1:
            key, index = next(iter(self._in_index.items()))
            self._single = (key, index, self._dtypes[key])
        self._set, self._invoke, self._get = self._interp.set_tensor, self._interp.invoke, self._interp.get_tensor

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feed {key: array with a leading batch dimension}; returns {key: array} (copies)."""
        single = self._single
        if single is not None and len(feeds) == 1:
            key, index, dtype = single
            v = feeds.get(key)
            if v is not None:
                if v.__class__ is not np.ndarray or v.dtype != dtype or not v.flags.c_contiguous:
                    v = np.ascontiguousarray(v, dtype=dtype)
                if v.shape == self._shapes[key]:
                    get, cpu = self._get, self.cpu_time
                    c0 = time.thread_time() if cpu else 0.0
                    t0 = time.perf_counter()
                    self._set(index, v)
                    self._invoke()
                    out = {k: get(i) for k, i in self._out_index}
                    self.last_invoke_ms = (time.perf_counter() - t0) * 1000.0
                    if cpu:
                        self.last_invoke_cpu_ms = (time.thread_time() - c0) * 1000.0
                    return out
        if len(feeds) != len(self._in_index) or any(k not in self._in_index for k in feeds):
            missing = set(self.inputs) - set(feeds)
            unknown = set(feeds) - set(self.inputs)
            raise ValueError(
                f"{self.path.name}: missing inputs {sorted(missing)}, unknown inputs {sorted(unknown)}; "
                f"expected exactly {sorted(self.inputs)}"
            )
        dtypes = self._dtypes
        arrays = {k: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in feeds.items()}
        if self._runner is not None:
            c0, t0 = time.thread_time(), time.perf_counter()
            out: dict[str, np.ndarray] = self._runner(**arrays)
            self.last_invoke_ms = (time.perf_counter() - t0) * 1000.0
            if self.cpu_time:
                self.last_invoke_cpu_ms = (time.thread_time() - c0) * 1000.0
            return out
        interp, shapes = self._interp, self._shapes
        changed = [k for k, v in arrays.items() if v.shape != shapes[k]]
        if changed:
            try:
                for k in changed:
                    shapes[k] = None  # unknown until the allocation succeeds: the next call resizes again
                    interp.resize_tensor_input(self._in_index[k], arrays[k].shape)
                interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise ValueError(
                    f"{self.path.name}: cannot run inputs of shapes {({k: v.shape for k, v in arrays.items()})} "
                    f"(model inputs {({k: (-1, *i.shape) for k, i in self.inputs.items()})}): {exc}"
                ) from exc
            for k in changed:
                shapes[k] = arrays[k].shape
        c0, t0 = time.thread_time(), time.perf_counter()
        for k, v in arrays.items():
            interp.set_tensor(self._in_index[k], v)
        interp.invoke()
        out = {k: interp.get_tensor(i) for k, i in self._out_index}
        self.last_invoke_ms = (time.perf_counter() - t0) * 1000.0
        if self.cpu_time:
            self.last_invoke_cpu_ms = (time.thread_time() - c0) * 1000.0
        return out

    def warm_up(self) -> None:
        """One invoke on zero-filled inputs: the first call of a fresh interpreter is several times slower
        (XNNPACK packs its weights then), and that time must not reach the latency estimates."""
        self.run({k: np.zeros((1, *i.shape), dtype=i.dtype) for k, i in self.inputs.items()})

    def run_batched(self, feeds: Mapping[str, np.ndarray], batch: int = 64) -> dict[str, np.ndarray]:
        """Run N samples in slices of `batch` (the input is resized when the batch changes)."""
        n = len(next(iter(feeds.values())))
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        for i in range(0, n, batch):
            out = self.run({k: v[i : i + batch] for k, v in feeds.items()})
            for k, v in out.items():
                parts[k].append(v)
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    def time_ms(self, *, repeats: int = 30, warmup: int = 3, percentile: float = 50.0) -> float:
        """Invoke time at batch 1 on zero-filled (valid) inputs: the median, or another ``percentile``."""
        feeds = {k: np.zeros((1, *i.shape), dtype=i.dtype) for k, i in self.inputs.items()}
        for _ in range(warmup):
            self.run(feeds)
        times = []
        for _ in range(repeats):
            self.run(feeds)
            times.append(self.last_invoke_ms)
        return float(np.percentile(times, percentile))


def _info(key: str, d: Mapping[str, Any]) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(key, tuple(int(x) for x in d["shape"][1:]), np.dtype(d["dtype"]), float(scale), int(zp))
