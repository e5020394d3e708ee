"""Step 3 on every core: each candidate cut exported and measured in a worker process of its own.

A cut's conversion (converter/convert.py ``_convert_cut``: the int8 head with its calibration, the float tail,
the exit's training and export, their measurements) runs on one core: TensorFlow's calibrator and MLIR
converter are single-threaded (measured: EfficientNetB0's whole-model int8 export, 26.1 s wall for 25.8 s of
CPU; docs/CONVERTER.md). The cuts are independent, so on a host with several cores they are converted side by
side, one worker process per core, longest first. Each worker loads the
prepared model (saved once as ``.keras``) and the conversion's arrays (memory-mapped ``.npy``), rebuilds the same
graph (checked node by node: a cut index must name the same layer in every process) and writes its cut's files
into the shared bundle folder, under its own ``cut_NNN/``.

What a worker computes does not depend on where it runs: the exits are seeded per cut
(converter/early_exit.py), and the head, exit and tail times each worker records are replaced by the
interleaved retiming of every cut at the end (converter/measure.py ``retime``), after the workers are gone.

Workers are used when they pay: a worker costs an interpreter start, a TensorFlow import and a model
load (~10 s), so a model below :data:`PARALLEL_MIN_FLOPS` per frame (the test-sized ones) is converted in
process. A model Keras cannot save and reload (a custom layer not registered for serialization) is converted
in process too, with a progress line that says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConversionError, SplitEdgeError
from sdk.manifest import CutSpec

__all__ = ["PARALLEL_MIN_FLOPS", "convert_cuts", "worker_count"]

#: A float model cheaper than this per frame (profile FLOPs) converts in process: spawning workers would cost
#: more than they save. EfficientNetB0 at 224 px (~0.8 GFLOPs) converts in workers; the digits model does not.
PARALLEL_MIN_FLOPS = 200_000_000

_ARRAYS = ("x", "labels", "float_pred", "exit_x", "exit_targets")
_REPLY = "splitedge-worker-done"  # a worker's reply line on stdout (TensorFlow may print other lines)


def worker_count(workers: int | None, n_cuts: int, model_flops: int) -> int:
    """How many processes convert the cuts: `workers` when given (1 = in process), else one per core when
    the model is worth it (module doc), never more than the cuts."""
    if workers is not None:
        if workers < 1:
            raise ConversionError(f"workers={workers}: expected 1 (convert in process) or more")
        return max(1, min(workers, n_cuts))
    if model_flops < PARALLEL_MIN_FLOPS:
        return 1
    return max(1, min(os.cpu_count() or 1, n_cuts))


def convert_cuts(ctx: Any, candidates: Sequence[Any], convert_one: Callable[[Any, Any], CutSpec], *, workers: int,
                 report: Callable[[int, int, str], None]) -> tuple[list[CutSpec], dict[int, float], int]:
    """(the cuts' specs in candidate order, seconds per cut index, workers used) for `candidates`.

    ``convert_one(ctx, boundary)`` converts one cut (converter/convert.py); with ``workers`` > 1 it runs in that
    many worker processes, else here, one cut after the other.
    """
    if workers > 1:
        try:
            stage = _stage(ctx)
        except Exception as exc:  # Keras could not save or reload the prepared model: convert in process
            report(0, 0, f"converting the cuts one at a time in this process: the model could not be handed to "
                         f"worker processes ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
        else:
            try:
                return _in_workers(stage, candidates, workers, report)
            finally:
                stage.cleanup()
    specs, seconds = [], {}
    for i, bd in enumerate(candidates):
        t0 = time.perf_counter()
        report(i, len(candidates), f"cut {bd.index} ({bd.name}, {bd.kind.value})")
        specs.append(convert_one(ctx, bd))
        seconds[bd.index] = round(time.perf_counter() - t0, 2)
        report(i + 1, len(candidates), f"cut {bd.index} done")
    return specs, seconds, 1


def _stage(ctx: Any) -> tempfile.TemporaryDirectory:
    """The prepared model (.keras) and the arrays (.npy) in a temp folder; the model must reload to the same graph."""
    import keras

    from converter.graph import read_graph

    stage = tempfile.TemporaryDirectory(prefix="splitedge-convert-")
    try:
        root = Path(stage.name)
        ctx.graph.model.save(root / "model.keras")
        reloaded = read_graph(keras.models.load_model(root / "model.keras", compile=False))
        if _node_names(reloaded) != _node_names(ctx.graph):
            raise ConversionError("the reloaded model's layers differ from the model's")
        for name in _ARRAYS:
            value = ctx.data.x if name == "x" else getattr(ctx, name)
            np.save(root / f"{name}.npy", np.ascontiguousarray(value))
        small = {f: getattr(ctx, f) for f in ("parts", "ev", "bits", "threads", "num_classes", "work", "seed")}
        small["nodes"] = _node_names(ctx.graph)
        small["data_meta"] = (ctx.data.class_names, ctx.data.source)
        (root / "context.pickle").write_bytes(pickle.dumps(small))
    except BaseException:
        stage.cleanup()
        raise
    return stage


def _node_names(graph: Any) -> list[str]:
    return [str(n.name) for n in graph.nodes]


def _in_workers(stage: tempfile.TemporaryDirectory, candidates: Sequence[Any], workers: int,
                report: Callable[[int, int, str], None]) -> tuple[list[CutSpec], dict[int, float], int]:
    """The cuts on `workers` processes (``python -m converter.workers STAGE``), each fed the next cut, longest first,
    by a thread of its own. Plain subprocesses, not multiprocessing's spawn: that re-imports the caller's main
    module, which a script embedding ``convert()`` without an ``if __name__ == "__main__"`` guard cannot survive."""
    n = len(candidates)
    root = Path(stage.name)
    (root / "candidates.pickle").write_bytes(pickle.dumps(list(candidates)))
    tasks: queue.Queue[int] = queue.Queue()
    for i in sorted(range(n), key=lambda i: -(candidates[i].head_flops + candidates[i].tail_flops)):  # longest first
        tasks.put(i)
    report(0, 0, f"converting {n} cuts in {workers} worker processes")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               PYTHONPATH=os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH", "")) if p))
    procs = [subprocess.Popen([sys.executable, "-m", "converter.workers", stage.name], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True) for _ in range(workers)]
    results: dict[int, tuple[CutSpec, float]] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def fail(message: str) -> None:
        """The first failure is the one reported; the other workers' cuts are not wanted any more."""
        with lock:
            failures.append(message)
            for p in procs:
                if p.poll() is None:
                    p.kill()

    def drive(proc: subprocess.Popen) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        while not failures:
            try:
                i = tasks.get_nowait()
            except queue.Empty:
                break
            proc.stdin.write(f"{i}\n")
            proc.stdin.flush()
            while not (line := proc.stdout.readline()).startswith(_REPLY):
                if not line:  # the worker is gone
                    fail(f"cut {candidates[i].index} ({candidates[i].name}): the conversion worker exited (code "
                         f"{proc.wait()}) while converting it (out of memory?); convert with --workers 1 to use one "
                         "process")
                    return
            outcome = pickle.loads((root / f"result_{i}.pickle").read_bytes())
            if isinstance(outcome, str):
                fail(f"cut {candidates[i].index} ({candidates[i].name}): {outcome}")
                return
            with lock:
                results[i] = outcome
                report(len(results), n, f"cut {candidates[i].index} done ({outcome[1]:.0f} s)")

    threads = [threading.Thread(target=drive, args=(p,), daemon=True) for p in procs]
    done = False
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done = not failures
    finally:
        for p in procs:
            if p.poll() is not None:
                continue
            if done:
                with contextlib.suppress(OSError):
                    p.stdin.close()  # type: ignore[union-attr]  # the worker's signal to exit
            else:  # a cut failed (or we were interrupted): the others' cuts are not wanted, do not wait for them
                p.kill()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if failures:
        raise ConversionError(failures[0])
    specs = [results[i][0] for i in range(n)]
    return specs, {candidates[i].index: results[i][1] for i in range(n)}, workers


def _init(stage: str) -> Any:
    """Worker start: TensorFlow quiet, the model reloaded, its graph checked; the conversion's context."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from converter.convert import _Context, _quiet_tensorflow
    from converter.data import CalibData
    from converter.graph import read_graph

    _quiet_tensorflow()
    root = Path(stage)
    small = pickle.loads((root / "context.pickle").read_bytes())
    graph = read_graph(keras.models.load_model(root / "model.keras", compile=False))
    if _node_names(graph) != small["nodes"]:
        raise ConversionError("a worker's reloaded model has other layers than the model converted")
    arrays = {name: np.load(root / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    class_names, source = small["data_meta"]
    data = CalibData(np.asarray(arrays["x"]), None, source, tuple(class_names))
    return _Context(graph, data, np.asarray(arrays["labels"]), np.asarray(arrays["float_pred"]),
                             small["parts"], small["ev"], small["bits"], small["threads"], small["num_classes"],
                             small["work"], small["seed"], np.asarray(arrays["exit_x"]),
                             np.asarray(arrays["exit_targets"]))


def _worker(stage: str) -> int:
    """A worker's loop: read a candidate's position on stdin, convert it, write its result, reply; EOF ends it."""
    root = Path(stage)
    try:
        ctx = _init(stage)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, SplitEdgeError) else f"{type(exc).__name__}: {exc}"
        for line in iter(sys.stdin.readline, ""):  # every cut this worker is handed fails with the reason
            i = int(line)
            (root / f"result_{i}.pickle").write_bytes(pickle.dumps(f"the worker could not start: {reason}"))
            print(f"{_REPLY} {i}", flush=True)
        return 1
    candidates = pickle.loads((root / "candidates.pickle").read_bytes())
    for line in iter(sys.stdin.readline, ""):
        i = int(line)
        (root / f"result_{i}.pickle").write_bytes(pickle.dumps(_run(ctx, candidates[i])))
        print(f"{_REPLY} {i}", flush=True)
    return 0


def _run(ctx: Any, bd: Any) -> tuple[CutSpec, float] | str:
    """One cut in a worker: (its spec, seconds), or the error's message (SplitEdgeError subclasses are not all
    picklable, and the parent says which cut it was)."""
    from converter.convert import _convert_cut

    t0 = time.perf_counter()
    try:
        # the boundary names its live tensors by id() in the parent's graph: the same tensors here
        live = ctx.graph.live_after(bd.index)
        if len(live) != len(bd.live):
            raise ConversionError(f"cut {bd.index}: {len(live)} tensors cross it in the worker's graph, "
                                  f"{len(bd.live)} in the model's")
        spec = _convert_cut(ctx, dataclasses.replace(bd, live=live))
    except SplitEdgeError as exc:
        return str(exc)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return spec, round(time.perf_counter() - t0, 2)


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
