"""Run a cut on the device: the int8 head, then the early exit (or the full model at the device cut).

Models are loaded lazily from the bundle and kept in an LRU cache bounded by the board's memory
budget (``memory_budget_mb``): a model costs its file size plus the head's peak live activations
from the manifest; loading one that does not fit evicts the least recently used ones first. A model
larger than the whole budget is still loaded (alone), with a warning: refusing would leave the
camera without an answer.

Timing. ``CutOutput.head_ms``/``exit_ms`` are what the *board* would take: on the board itself the
measured invoke time; when ``board.emulate_timing`` is set (a Pi profile on a development host) the
CPU time of the invoke on **one** host thread times ``board.speed_factor`` (firmware_configs/README.md),
and ``CutOutput.emulated`` says so. CPU time, not wall time: a host that is busy with other work
stalls the invoke for milliseconds, and a stall times the speed factor would read as a much slower
board. ``measured_ms`` is always the host's wall time. Every model gets one warm-up invoke when it is
loaded: the first call of a fresh interpreter is several times slower. When emulating, each model is
invoked a second time on the same input and *that* invoke is timed: the speed factor relates warm,
back-to-back times (published board benchmarks, the host's calibration loop), while a frame at 2 fps
starts with caches that the rest of the host evicted; its CPU time was 1.6-2.4x the warm one, which the
board factor (~71 for the Zero 2 W here) turned into 7-10 ms of board time no board pays for that reason
(docs/DYNAMIC.md, "Replay vs live"). The second invoke costs host time only (0.03-0.2 ms here).

Only LiteRT (``sdk.litert``) and numpy are imported here - never TensorFlow.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from sdk.config import BoardSpec
from sdk.errors import BundleError
from sdk.families import model_family
from sdk.litert import HeadRunner, LiteRTModel, TensorInfo
from sdk.manifest import CutKind, CutSpec, FileRef, Manifest
from sdk.packing import dequantize, requant_int8

__all__ = [
    "CutExecutor",
    "CutOutput",
    "LiteRTHeads",
    "ModelCache",
    "Prediction",
    "int8_prediction",
    "softmax_prediction",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prediction:
    """A local classification: top-1 class, its calibrated confidence (max softmax), the top-k."""

    cls: int
    confidence: float
    topk: tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class CutOutput:
    """What running a cut on one frame produced.

    ``activations``: {tensor name: int8 array with a leading batch dimension of 1} (empty for the
    device cut); ``prediction``: the early exit's (split cuts) or the full model's (device cut).
    """

    cut: int
    activations: dict[str, np.ndarray] = field(repr=False)
    prediction: Prediction | None
    head_ms: float
    exit_ms: float
    measured_ms: float
    emulated: bool

    @property
    def device_ms(self) -> float:
        return self.head_ms + self.exit_ms


class CutExecutor(Protocol):
    """What the runner needs: run a cut (head + exit) on one uint8 frame."""

    emulated: bool

    def run(self, cut: CutSpec, frame: np.ndarray) -> CutOutput: ...


def softmax_prediction(logits: np.ndarray, temperature: float, k: int = 3) -> Prediction:
    """Top-1, confidence = max softmax(logits / temperature), and the top-k (class, probability).

    float64 softmax; ties keep the lower class first (a stable sort of -p). For a few classes the
    top-k is taken in Python from the probabilities (``sorted(..., reverse=True)`` is stable too),
    which is cheaper than ``argsort``; the values are the same either way (a test compares both).
    """
    return _prediction(np.asarray(logits, dtype=np.float64).reshape(-1) / max(float(temperature), 1e-6), k)


def _prediction(z: np.ndarray, k: int) -> Prediction:
    """:func:`softmax_prediction` of ``z = logits / temperature`` (a fresh float64 vector, changed in place)."""
    z -= np.maximum.reduce(z)  # = z.max() without the method's Python wrapper
    np.exp(z, out=z)
    total = np.add.reduce(z)  # = z.sum(): the same pairwise summation
    z /= total
    if z.size <= _PY_TOPK_MAX and total == total:  # no NaN (a NaN anywhere makes the sum NaN)
        p = z.tolist()
        order = sorted(range(len(p)), key=p.__getitem__, reverse=True)[:k]
        return Prediction(order[0], p[order[0]], tuple([(i, p[i]) for i in order]))
    order = np.argsort(-z, kind="stable")[:k]
    return Prediction(int(order[0]), float(z[order[0]]), tuple((int(i), float(z[i])) for i in order))


_PY_TOPK_MAX = 64  # classes up to which the top-k is sorted in Python
_LOGIT_TABLES: dict[tuple[float, int, float], _LogitTable] = {}
_INT8 = np.dtype(np.int8)
_FLIP = bytes(i ^ 0x80 for i in range(256))  # int8 bit pattern <-> its value + 128 (order-preserving bytes)


class _LogitTable:
    """The 256 values ``z = float32(scale * (v - zero_point)) / temperature`` (float64) of one logits
    quantization, indexed by the uint8 view of the int8 code ``v``, and, per top code ``m`` met so far,
    the row ``exp(z - z[m])`` as a Python list: the softmax numerators of every frame whose largest
    logit is ``m`` (numpy's own ``exp``, so elementwise the numbers :func:`_prediction` computes)."""

    __slots__ = ("monotone", "rows", "z")

    def __init__(self, scale: float, zero_point: int, temperature: float) -> None:
        values = np.arange(256, dtype=np.uint8).view(np.int8)
        self.z = dequantize(values, scale, zero_point).astype(np.float64) / max(float(temperature), 1e-6)
        self.z.flags.writeable = False
        ordered = self.z[np.argsort(values, kind="stable")]  # in int8 order
        # The largest logit is the largest code only when z does not decrease with the code (scale >= 0).
        self.monotone = bool(np.all(ordered[1:] >= ordered[:-1]))
        self.rows: dict[int, list[float]] = {}

    def row(self, top: int) -> list[float]:
        row = self.z - self.z[top]
        with np.errstate(over="ignore"):  # codes above `top` (never gathered with this row) may overflow
            np.exp(row, out=row)
        values = self.rows[top] = row.tolist()
        return values


def _numpy_sum(a: list[float]) -> float:
    """``np.add.reduce`` of a float64 vector of up to 128 values, in Python: numpy's pairwise summation
    (eight interleaved partial sums, combined as a tree, then the remainder in order; fewer than eight
    values in order). :func:`_python_sum_is_numpys` checks it against the installed numpy once."""
    n = len(a)
    if n < 8:
        res = 0.0
        for v in a:
            res += v
        return res
    r0, r1, r2, r3, r4, r5, r6, r7 = a[:8]
    end = n - n % 8
    for i in range(8, end, 8):
        r0, r1, r2, r3 = r0 + a[i], r1 + a[i + 1], r2 + a[i + 2], r3 + a[i + 3]
        r4, r5, r6, r7 = r4 + a[i + 4], r5 + a[i + 5], r6 + a[i + 6], r7 + a[i + 7]
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for v in a[end:]:
        res += v
    return res


_PY_SUM: list[bool] = []  # [whether _numpy_sum gives np.add.reduce's bits here], filled on first use


def _python_sum_is_numpys() -> bool:
    """Whether :func:`_numpy_sum` reproduces ``np.add.reduce`` bit for bit on this numpy (checked once on
    random softmax numerators of every length up to ``_PY_TOPK_MAX``); if not, the numpy sum is used."""
    if not _PY_SUM:
        rng = np.random.default_rng(0)
        pool = np.exp(-rng.exponential(1.0, 3 * _PY_TOPK_MAX) * rng.choice([0.1, 3.0, 30.0], 3 * _PY_TOPK_MAX))
        ok = all(
            _numpy_sum(e.tolist()) == float(np.add.reduce(e))  # a different grouping shows within a few trials
            for n in range(1, _PY_TOPK_MAX + 1)
            for e in (pool[:n], pool[n : 2 * n], pool[2 * n : 3 * n])
        )
        _PY_SUM.append(ok)
    return _PY_SUM[0]


def _logit_table(scale: float, zero_point: int, temperature: float) -> _LogitTable:
    key = (scale, zero_point, temperature)
    table = _LOGIT_TABLES.get(key)
    if table is None:
        if len(_LOGIT_TABLES) >= 256:
            _LOGIT_TABLES.clear()
        table = _LOGIT_TABLES[key] = _LogitTable(float(scale), int(zero_point), float(temperature))
    return table


def int8_prediction(q: np.ndarray, scale: float, zero_point: int, temperature: float, k: int = 3) -> Prediction:
    """``softmax_prediction(dequantize(q, scale, zero_point), temperature, k)`` for int8 logits ``q``.

    The same numbers with fewer numpy calls: per (scale, zero point, temperature) a 256-entry table of
    the logits every int8 code stands for, and per largest code the table of ``exp(logit - largest)``;
    a frame then costs a gather, numpy's pairwise sum and the top-k, all in Python.
    """
    return _table_prediction(_logit_table(scale, zero_point, temperature), q, k)


def _table_prediction(table: _LogitTable, q: np.ndarray, k: int) -> Prediction:
    codes = q.tobytes()  # the uint8 bit patterns of the int8 logits, in C order
    if not table.monotone or not 0 < len(codes) <= _PY_TOPK_MAX:
        return _prediction(table.z.take(q.view(np.uint8).reshape(-1)), k)
    top = max(codes.translate(_FLIP)) ^ 0x80  # bit pattern of the largest int8 code
    row = table.rows.get(top)
    if row is None:
        row = table.row(top)
    e = [row[c] for c in codes]
    total = _numpy_sum(e) if (_PY_SUM[0] if _PY_SUM else _python_sum_is_numpys()) else float(np.add.reduce(e))
    if total != total:  # NaN (a degenerate quantization): the general path handles it
        return _prediction(table.z.take(q.view(np.uint8).reshape(-1)), k)
    p = [v / total for v in e]  # Python's float division is numpy's (IEEE, correctly rounded)
    order = sorted(range(len(p)), key=p.__getitem__, reverse=True)[:k]
    return Prediction(order[0], p[order[0]], tuple([(i, p[i]) for i in order]))


Loader = Callable[[Path, int], HeadRunner]


def _litert_loader(path: Path, threads: int, *, cpu_time: bool = True) -> HeadRunner:
    model = LiteRTModel(path, threads=threads, cpu_time=cpu_time)
    model.warm_up()  # the first invoke is several times slower; keep it out of the estimates
    return model


class ModelCache:
    """LiteRT models by bundle path, loaded on first use, LRU-evicted to stay within ``budget_bytes``."""

    def __init__(self, root: Path, *, threads: int, budget_bytes: int, loader: Loader = _litert_loader) -> None:
        self.root = Path(root)
        self.threads = threads
        self.budget_bytes = int(budget_bytes)
        self._loader = loader
        self._models: OrderedDict[str, tuple[HeadRunner, int]] = OrderedDict()
        self.loads = 0
        self.evictions = 0

    @property
    def used_bytes(self) -> int:
        return sum(cost for _, cost in self._models.values())

    @property
    def loaded(self) -> tuple[str, ...]:
        """Paths of the models in memory, least recently used first."""
        return tuple(self._models)

    def get(self, ref: FileRef, *, extra_bytes: int = 0) -> HeadRunner:
        hit = self._models.get(ref.path)
        if hit is not None:
            self._models.move_to_end(ref.path)
            return hit[0]
        cost = int(ref.size) + int(extra_bytes)
        if cost > self.budget_bytes:
            log.warning(
                "%s needs ~%d bytes, more than the board's whole memory budget (%d bytes); loading it alone. "
                "Raise memory_budget_mb or pick a smaller cut", ref.path, cost, self.budget_bytes,
            )
        while self._models and self.used_bytes + cost > self.budget_bytes:
            evicted, _ = self._models.popitem(last=False)
            self.evictions += 1
            log.info("evicted %s to stay within the memory budget", evicted)
        model = self._loader(self.root / ref.path, self.threads)
        self.loads += 1
        self._models[ref.path] = (model, cost)
        return model


class LiteRTHeads:
    """:class:`CutExecutor` over a bundle's LiteRT heads and exits (tails are never loaded here).

    What a cut needs per frame beyond its models (the head's input key, the tensors' output keys, the
    exit's requantization tables and its logits table) is worked out on the cut's first frame and kept
    (:class:`_Plan`), so a frame costs the model-cache lookup, the invokes and a few dictionary steps.
    """

    def __init__(
        self,
        bundle: str | Path,
        manifest: Manifest,
        board: BoardSpec,
        *,
        loader: Loader = _litert_loader,
        budget_bytes: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.board = board
        self.emulated = bool(board.emulate_timing)
        self.family = model_family(manifest.model_name)  # which board factor stretches these heads
        # Emulation scales times measured on ONE host thread (the speed_factor's definition).
        threads = 1 if self.emulated else board.threads
        budget = budget_bytes if budget_bytes is not None else board.memory_budget_mb * 1024 * 1024
        if loader is _litert_loader and not self.emulated:  # only emulated timing reads the CPU time
            loader = partial(_litert_loader, cpu_time=False)
        self.cache = ModelCache(Path(bundle), threads=threads, budget_bytes=budget, loader=loader)
        self._plans: dict[int, _Plan] = {}
        self._factor: float | None = None  # board ms per host ms when emulating (sdk.host_speed.board_factor)

    def _board_ms(self, measured_ms: float) -> float:
        if not self.emulated:
            return measured_ms
        if self._factor is None:  # per frame on the emulated path: the family's factor is looked up once
            self._factor = self.board.emulated_ms(1.0, self.family)
        return measured_ms * self._factor

    def raw_board_ms(self, host_ms: float) -> float:
        """Board ms of device work outside a head (the raw frame's JPEG encoding), measured as ``host_ms`` here:
        x the board's factor for no network family when emulating (firmware_configs/README.md)."""
        return self.board.emulated_ms(host_ms, None) if self.emulated else host_ms

    def run(self, cut: CutSpec, frame: np.ndarray) -> CutOutput:
        t0 = time.perf_counter()
        plan = self._plans.get(cut.index)
        if plan is None or plan.cut is not cut:
            plan = self._plans[cut.index] = _Plan(cut)
        cache, emulated = self.cache, self.emulated
        head = cache.get(cut.head, extra_bytes=plan.head_extra)  # type: ignore[arg-type]  # _Plan checked it
        key = plan.head_key
        if key is None:
            key = plan.head_key = next(iter(head.inputs))
        if frame.__class__ is not np.ndarray or frame.dtype != _UINT8:
            frame = np.asarray(frame, dtype=np.uint8)
        outs = head.run({key: frame[None]})
        if emulated:  # time a second, warm invoke of the same input (module doc, "Timing")
            head.run({key: frame[None]})
        head_ms = _invoke_ms(head, t0, cpu=emulated)
        if plan.device:
            spec = cut.tensors[0]
            raw = outs[spec.head_output]
            if raw.dtype == _INT8:
                pred = _table_prediction(plan.logits(spec.scale, spec.zero_point), raw, 3)
            else:
                pred = softmax_prediction(dequantize(raw, spec.scale, spec.zero_point), cut.exit_temperature)
            measured = (time.perf_counter() - t0) * 1000.0
            if emulated:
                head_ms = self._board_ms(head_ms)
            return CutOutput(cut.index, {}, pred, head_ms, 0.0, measured, emulated)
        try:
            acts = {name: outs[output] for name, output, _ in plan.tensors}
        except KeyError:
            raise _inconsistent(cut, outs) from None
        pred, exit_ms = None, 0.0
        if cut.exit is not None:
            t1 = time.perf_counter()
            exit_model = cache.get(cut.exit)
            feeds = {name: acts[name] if lut is None else lut.take(acts[name].view(np.uint8))
                     for name, _, lut in plan.tensors}  # fmt: skip
            out = exit_model.run(feeds)
            if emulated:
                exit_model.run(feeds)
            exit_ms = _invoke_ms(exit_model, t1, cpu=emulated)
            okey, oinfo = plan.exit_output(exit_model)
            raw = out[okey]
            if raw.dtype == _INT8:
                pred = _table_prediction(plan.logits(oinfo.scale, oinfo.zero_point), raw, 3)
            else:
                pred = softmax_prediction(raw, cut.exit_temperature)
        measured = (time.perf_counter() - t0) * 1000.0
        if emulated:
            head_ms, exit_ms = self._board_ms(head_ms), self._board_ms(exit_ms)
        return CutOutput(cut.index, acts, pred, head_ms, exit_ms, measured, emulated)


_UINT8 = np.dtype(np.uint8)


class _Plan:
    """What :meth:`LiteRTHeads.run` needs of one cut beyond its models, worked out once per cut.

    ``tensors``: (name, head output key, int8 -> int8 table into the exit's input quantization, or
    None when both quantizations agree - the usual case - and the codes go to the exit as they are).
    """

    __slots__ = ("_exit_output", "_logits", "cut", "device", "head_extra", "head_key", "tensors")

    def __init__(self, cut: CutSpec) -> None:
        if cut.kind is CutKind.RAW or cut.head is None:
            raise ValueError(f"cut {cut.index} ({cut.kind.value}) has no head to run on the device")
        self.cut = cut
        self.device = cut.kind is CutKind.DEVICE
        self.head_extra = cut.head_peak_activation_bytes
        self.head_key: str | None = None
        self.tensors = tuple(
            (t.name, t.head_output, _exit_table(t.scale, t.zero_point, t.exit_scale, t.exit_zero_point)
             if cut.exit is not None and not self.device else None)
            for t in cut.tensors
        )  # fmt: skip
        self._exit_output: tuple[str, TensorInfo] | None = None
        self._logits: tuple[float, int, _LogitTable] | None = None

    def exit_output(self, model: HeadRunner) -> tuple[str, TensorInfo]:
        """(key, info) of the exit's (first) output: the same for every load of the same file."""
        if self._exit_output is None:
            self._exit_output = next(iter(model.outputs.items()))
        return self._exit_output

    def logits(self, scale: float, zero_point: int) -> _LogitTable:
        """The logits table of this cut's exit temperature at the given output quantization."""
        cached = self._logits
        if cached is None or cached[0] != scale or cached[1] != zero_point:
            cached = self._logits = (scale, zero_point, _logit_table(scale, zero_point, self.cut.exit_temperature))
        return cached[2]


def _exit_table(scale: float, zp: int, exit_scale: float, exit_zp: int) -> np.ndarray | None:
    """The int8 -> int8 table from the head's output quantization into the exit's input one, or None
    when both agree (the usual case: the codes go to the exit as they are)."""
    if zp == exit_zp and abs(scale - exit_scale) <= 1e-6 * abs(scale):
        return None
    return requant_int8(np.arange(256, dtype=np.uint8).view(np.int8), scale, zp, exit_scale, exit_zp)


def _exit_input(q: np.ndarray, scale: float, zp: int, exit_scale: float, exit_zp: int) -> np.ndarray:
    """The head's int8 codes in the exit's input quantization (as is when both agree, the usual case)."""
    table = _exit_table(scale, zp, exit_scale, exit_zp)
    return q if table is None else table.take(q.view(np.uint8))


def _invoke_ms(model: HeadRunner, t0: float, *, cpu: bool = False) -> float:
    """The interpreter's own invoke time when it reports one, else the wall time since ``t0``.

    ``cpu``: the calling thread's CPU time over the invoke instead (emulated timing, one thread): a
    host scheduling stall of a few ms, times a board's speed factor, would otherwise read as a much
    slower board and push the cut around.
    """
    if cpu:
        ms = getattr(model, "last_invoke_cpu_ms", None)
        if ms:
            return float(ms)
    ms = getattr(model, "last_invoke_ms", None)
    return float(ms) if ms else (time.perf_counter() - t0) * 1000.0


def _inconsistent(cut: CutSpec, outs: Mapping[str, np.ndarray]) -> BundleError:
    t = next(t for t in cut.tensors if t.head_output not in outs)
    return BundleError(
        f"cut {cut.index} head has outputs {sorted(outs)}; the manifest expects {t.head_output!r} "
        f"for tensor {t.name!r}: the bundle is inconsistent, re-convert it"
    )


def _activations(cut: CutSpec, outs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if any(t.head_output not in outs for t in cut.tensors):
        raise _inconsistent(cut, outs)
    return {t.name: np.asarray(outs[t.head_output]) for t in cut.tensors}
