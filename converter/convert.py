"""The converter's façade: Keras model + calibration data -> a verified bundle (see sdk/manifest.py).

    profile -> cuts -> per cut: export head/tail/exit, calibrate the exit, measure -> bundle

``convert(...)`` returns a frozen :class:`ConversionResult`; writing over an existing bundle needs
``force=True``. The model is taken as users have it (converter/load.py: .keras or HDF5 under any name;
converter/graph.py: Sequential, functional, nested backbones, ops nodes, one output of several) and a
float-input model gets its preprocessing folded in front (converter/preprocess.py), so every head takes the
camera's raw uint8 bytes. The bundle is assembled in a sibling temp folder and moved into place at the end, so
an interrupted conversion never leaves a half-written bundle under the target name.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter import early_exit, export, measure
from converter.cuts import Boundary, select_cuts
from converter.data import CalibData, load_data, split
from converter.graph import (
    ModelGraph,
    as_functional,
    build_head,
    build_tail,
    check_input,
    read_graph,
    select_output,
)
from converter.load import load_model
from converter.preprocess import fold_into, parse_preprocess, unfed_range_warning, with_channels
from converter.profile import profile
from converter.workers import convert_cuts, worker_count
from sdk import __version__
from sdk.errors import ConversionError, ConversionWarning
from sdk.litert import LiteRTModel
from sdk.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    AccuracyAtBits,
    CutKind,
    CutSpec,
    FileRef,
    InputSpec,
    LabelsSource,
    Manifest,
    Preprocess,
    PreprocessMode,
    TensorSpec,
    load_manifest,
    sha256_file,
)
from sdk.packing import SUPPORTED_BITS

#: progress(step, total, message): total == 0 for a plain message, else the cut loop's step of total
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class ConversionResult:
    manifest: Manifest
    path: Path
    seconds_per_cut: dict[int, float]
    dropped: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...] = ()  # also issued as ConversionWarning when they arise


__all__ = ["ConversionResult", "board_settings", "convert", "load_model", "prepare_model"]

#: Head, tail and exit times are the 10th percentile of the timed invokes, as the host calibration
#: (sdk.host_speed): the host undisturbed. The median moved with the load of a shared 2-core host: the
#: MobileNetV2 workload's whole model was recorded at 7.99 ms while training ran, against 3.5 ms idle.
_TIMING_PERCENTILE = 10.0


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's Python warnings (retracing of each cut's predict, deprecations) off the user's screen."""
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


def board_settings(board: str | None) -> tuple[str, int, int | None]:
    """(name, LiteRT threads, memory budget in bytes) of a board profile; no board: host, 1 thread, no budget.

    Heads and exits are timed at 1 thread unless this host is the board itself: a board's speed factor is its
    time over a 1-thread host time (firmware_configs/README.md), and the emulating device runner runs its heads
    at 1 thread (device_runner/heads.py). Timed at 2 threads on 2 cores, MobileNetV2 planned at 22.8 ms on a
    Zero 2 W where the device reported 35.4 ms.
    """
    if board is None:
        return "host", 1, None
    from sdk.config import load_board

    spec = load_board(board).board
    threads = 1 if spec.emulate_timing else int(spec.threads)
    return spec.name, threads, int(spec.memory_budget_mb * 1024 * 1024)


def prepare_model(model: Any, *, preprocess: str | Preprocess | None = None,
                  output: str | None = None) -> tuple[Any, Preprocess | None, tuple[str, ...]]:
    """(functional uint8-input model, the preprocessing folded in or None, warnings) for one chosen output.

    A float-input model gets a uint8 input followed by its preprocessing (``none`` when not given, with a
    ConversionWarning that says it will see 0..255 values); a uint8-input model is taken as it is.
    """
    model = select_output(check_input(as_functional(model)), output)
    src = model.inputs[0]
    dtype, channels = str(src.dtype), src.shape[-1]
    if dtype == "uint8":
        spec = parse_preprocess(preprocess, channels)
        if spec is not None and spec.mode is not PreprocessMode.NONE:
            raise ConversionError(
                f"--preprocess {spec.mode.value}: model {model.name!r} already takes uint8 frames (it preprocesses "
                "them itself); drop --preprocess, or pass the float model it wraps"
            )
        return model, None, ()
    if not dtype.startswith(("float", "bfloat")):
        raise ConversionError(f"model {model.name!r} takes {dtype} input; expected camera frames as uint8 or float")
    said: tuple[str, ...] = ()
    if preprocess is None:
        said = (unfed_range_warning(str(model.name), dtype),)
        warnings.warn(said[0], ConversionWarning, stacklevel=3)
        preprocess = "none"
    spec = parse_preprocess(preprocess, channels)
    spec = with_channels(spec, int(channels))
    spec = Preprocess(spec.mode, spec.scale, spec.offset, spec.flip_channels, dtype)
    return fold_into(model, spec), spec, said


def convert(
    model: Any,
    data: CalibData | str | Path,
    out: str | Path,
    *,
    board: str | None = None,
    bits: Sequence[int] = (8, 4, 2),
    force: bool = False,
    seed: int = 0,
    max_eval: int = 400,
    progress: Progress | None = None,
    preprocess: str | Preprocess | None = None,
    output: str | None = None,
    min_cut_reduction: float = 0.25,
    workers: int | None = None,
) -> ConversionResult:
    """Convert `model` (a keras.Model or a path) into a bundle at `out`, calibrated and measured on `data`.

    preprocess: for a float-input model, how its input is made from the 0..255 frame (converter/preprocess.py);
    output: the output to convert when the model has several;
    min_cut_reduction: a cut is kept only when it ships at most 1 - this of the bytes of the last one kept
    (converter/cuts.py), so near-equal neighbours are not each exported and measured;
    workers: processes converting the cuts side by side (converter/workers.py); None: one per core when the
    model is large enough to pay for them, 1: in this process.
    """
    _quiet_tensorflow()
    out = Path(out)
    if out.exists() and not force:
        raise ConversionError(f"{out} exists; pass --force (force=True) to write over it")
    bad = [b for b in bits if b not in SUPPORTED_BITS]
    if bad or not bits:
        raise ConversionError(f"bit widths {list(bits)}: each must be one of {list(SUPPORTED_BITS)}")
    bits = tuple(sorted(set(bits), reverse=True))
    report = progress or (lambda _i, _n, _msg: None)
    model_sha = ""
    if isinstance(model, str | Path):
        path = Path(model)
        model = load_model(path)
        model_sha = sha256_file(path)
    model, prep, said = prepare_model(model, preprocess=preprocess, output=output)
    graph = read_graph(model)
    in_shape = tuple(int(d) for d in graph.input_tensor.shape[1:])
    if isinstance(data, str | Path):
        data = load_data(data, input_shape=in_shape)
    board_name, threads, budget = board_settings(board)

    layers = profile(graph)
    sel = select_cuts(graph, [p.flops for p in layers], [p.weight_bytes_i8 for p in layers], bits=bits,
                      memory_budget_bytes=budget, min_reduction=min_cut_reduction)
    report(0, 0, f"profiled {graph.n} layers; {len(sel.candidates)} candidate cuts "
        f"({', '.join(f'{c.index}:{c.name}' for c in sel.candidates)})")

    parts = split(len(data.x), seed=seed)
    ev = parts.eval[:max_eval]
    float_logits = np.asarray(graph.model.predict(data.x, batch_size=64, verbose=0))
    float_pred = float_logits.argmax(-1)
    labels_source = LabelsSource.LABELS if data.y is not None else LabelsSource.FLOAT_MODEL
    labels = data.y if data.y is not None else float_pred
    num_classes = int(float_logits.shape[-1])
    float_acc = round(float((float_pred[ev] == labels[ev]).mean()), 4)
    # The exits' training set, shared by every cut: the fit frames, then augmented copies of them, with
    # targets distilled from the float model (converter/early_exit.py, "Training").
    copies = early_exit.augment_copies(len(parts.fit), int(np.prod(in_shape)), sum(p.flops for p in layers))
    aug = early_exit.augment(data.x[parts.fit], copies, seed=seed)
    teacher = [float_logits[parts.fit]]
    if copies:
        teacher.append(np.asarray(graph.model.predict(aug, batch_size=64, verbose=0)))
    exit_x = np.concatenate([data.x[parts.fit], aug])
    exit_targets = early_exit.soft_targets(np.tile(labels[parts.fit], copies + 1), np.concatenate(teacher))

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ctx = _Context(graph, data, labels, float_pred, parts, ev, bits, threads, num_classes, work, seed, exit_x,
                       exit_targets)
        n_workers = worker_count(workers, len(sel.candidates), sum(p.flops for p in layers))
        cuts, seconds, workers_used = convert_cuts(ctx, sel.candidates, _convert_cut, workers=n_workers,
                                                   report=report)
        # Each cut was timed alone when converted; timed again side by side, their ratios survive a busy host.
        cuts = measure.retime(work, cuts, threads=threads, cloud_threads=os.cpu_count() or 1,
                              percentile=_TIMING_PERCENTILE)
        files = tuple(sorted((ref for c in cuts for ref in (c.head, c.tail, c.exit) if ref), key=lambda r: r.path))
        bundle_id = hashlib.sha256("".join(f"{r.path}:{r.sha256};" for r in files).encode()).hexdigest()
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            bundle_id=bundle_id,
            created_by=f"splitedge {__version__}",
            model_name=str(graph.model.name),
            model_sha256=model_sha,
            num_classes=num_classes,
            input=InputSpec(str(graph.input_tensor._keras_history[0].name), in_shape, str(graph.input_tensor.dtype),
                            prep),
            labels_source=labels_source,
            board=board_name,
            threads=threads,
            host=f"{platform.machine()} {platform.processor() or platform.system()}".strip(),
            bits=bits,
            n_calib=int(len(parts.fit) + len(parts.calib)),
            n_eval=int(len(ev)),
            float_accuracy=float_acc,
            layers=layers,
            cuts=tuple(cuts),
            files=files,
            extra={"convert_seconds_per_cut": {str(k): v for k, v in seconds.items()},
                   "dropped_cuts": [{"index": i, "reason": r} for i, r in sel.dropped],
                   "class_names": list(data.class_names), "data_source": data.source,
                   "converter_digest": converter_digest(), "convert_workers": workers_used,
                   **({"warnings": list(said)} if said else {})},
        )
        (work / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        load_manifest(work)  # what we wrote must load and verify
        work.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ConversionResult(manifest, out, seconds, sel.dropped, said)


#: The converter modules whose code decides what a bundle holds (cuts, exports, exits, measurements).
_DIGESTED = ("cuts", "convert", "early_exit", "export", "graph", "measure", "preprocess", "profile", "workers")


def converter_digest() -> str:
    """sha256 (16 hex) of the converter's own source: a cached bundle made by other code is stale."""
    h = hashlib.sha256()
    for name in _DIGESTED:
        h.update((Path(__file__).with_name(f"{name}.py")).read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Context:
    graph: ModelGraph
    data: CalibData
    labels: np.ndarray
    float_pred: np.ndarray
    parts: Any
    ev: np.ndarray
    bits: tuple[int, ...]
    threads: int
    num_classes: int
    work: Path
    seed: int
    exit_x: np.ndarray  # the exits' training frames: the fit frames, then augmented copies (copy-major)
    exit_targets: np.ndarray  # their distilled targets (N, classes)


def _ref(work: Path, rel: str, blob: bytes) -> FileRef:
    path = export.write(work / rel, blob)
    return FileRef(rel, hashlib.sha256(blob).hexdigest(), path.stat().st_size)


def _convert_cut(ctx: _Context, bd: Boundary) -> CutSpec:
    x, folder = ctx.data.x, f"cut_{bd.index:03d}"
    in_dtype = str(ctx.graph.input_tensor.dtype)
    in_type = "uint8" if in_dtype == "uint8" else "float32"
    rep_frames = export.representative_from(
        {ctx.graph.input_tensor._keras_history[0].name: x[ctx.parts.fit].astype(in_dtype)})
    y_ev, fp_ev = ctx.labels[ctx.ev], ctx.float_pred[ctx.ev]
    common = dict(index=bd.index, name=bd.name, kind=bd.kind, head_flops=bd.head_flops, tail_flops=bd.tail_flops,
                  head_weight_bytes=bd.head_weight_bytes, head_peak_activation_bytes=bd.head_peak_activation_bytes)
    cloud_threads = os.cpu_count() or 1

    if bd.kind is CutKind.RAW:
        tail = _ref(ctx.work, f"{folder}/tail.tflite", export.export_float(ctx.graph.model))
        tail_rt = LiteRTModel(ctx.work / tail.path, threads=cloud_threads)
        pred = measure.run_tail(tail_rt, {next(iter(tail_rt.inputs)): x[ctx.ev]}).argmax(-1)
        acc = AccuracyAtBits(8, round(float((pred == y_ev).mean()), 4), round(float((pred == fp_ev).mean()), 4))
        frame = TensorSpec(next(iter(tail_rt.inputs)), tuple(x.shape[1:]), "uint8", 1.0, 0, "")
        return CutSpec(**common, tensors=(frame,), bytes_at_bits={"raw": int(np.prod(x.shape[1:]))},
                       compressive_bits=(), head_ms=0.0, exit_ms=0.0,
                       tail_ms=round(tail_rt.time_ms(percentile=_TIMING_PERCENTILE), 4),
                       float_accuracy=acc.accuracy, accuracy=(acc,), exit_curve=(), exit_temperature=1.0,
                       exit_accuracy=0.0, tail=tail)

    head_model = ctx.graph.model if bd.kind is CutKind.DEVICE else build_head(ctx.graph, bd.index)
    head = _ref(ctx.work, f"{folder}/head.tflite", export.export_int8(head_model, rep_frames, input_type=in_type))
    head_rt = LiteRTModel(ctx.work / head.path, threads=ctx.threads)
    names = [ctx.graph.tensor_name(t) for t in bd.live]
    tensors = tuple(
        TensorSpec(name, tuple(info.shape), "int8", info.scale, info.zero_point, key)
        for name, (key, info) in zip(names, [(f"output_{i}", head_rt.outputs[f"output_{i}"]) for i in range(len(names))],
                                     strict=True)
    )
    held = np.concatenate([ctx.parts.calib, ctx.ev])
    head_out = measure.run_head(head_rt, x[held], tensors)
    n_cal = len(ctx.parts.calib)
    head_ms = round(head_rt.time_ms(percentile=_TIMING_PERCENTILE), 4)

    if bd.kind is CutKind.DEVICE:  # the full int8 model: its own softmax is the confidence
        logits = measure.dequantize_int8(head_out[names[0]], tensors[0].scale, tensors[0].zero_point)
        pred = logits[n_cal:].argmax(-1)
        acc = AccuracyAtBits(8, round(float((pred == y_ev).mean()), 4), round(float((pred == fp_ev).mean()), 4))
        temp, curve, exit_acc, _ = _calibrate(logits, ctx.labels[held], n_cal)
        return CutSpec(**common, tensors=tensors, bytes_at_bits={}, compressive_bits=(), head_ms=head_ms,
                       tail_ms=0.0, exit_ms=0.0, float_accuracy=acc.accuracy, accuracy=(acc,), exit_curve=curve,
                       exit_temperature=temp, exit_accuracy=exit_acc, head=head)

    tail = _ref(ctx.work, f"{folder}/tail.tflite", export.export_float(build_tail(ctx.graph, bd.index)))
    tail_rt = LiteRTModel(ctx.work / tail.path, threads=cloud_threads)
    missing = set(names) - set(tail_rt.inputs)
    if missing:
        raise ConversionError(f"cut {bd.index}: the tail's inputs {sorted(tail_rt.inputs)} miss {sorted(missing)}")
    ev_out = {k: v[n_cal:] for k, v in head_out.items()}
    tail_preds = measure.tail_predictions(tail_rt, ev_out, tensors, ctx.bits)
    accuracy = measure.accuracy_at_bits(tail_rt, ev_out, tensors, ctx.bits, y_ev, fp_ev, predictions=tail_preds)

    # Early exit: trained on the float head's tensors of the fit frames and as many of their augmented copies as
    # the feature budget allows (distilled targets), exported int8, calibrated on `calib`.
    n_fit = len(ctx.parts.fit)
    copies = len(ctx.exit_x) // n_fit - 1
    exit_k = early_exit.build_exit([(t.name, t.shape) for t in tensors], ctx.num_classes, seed=ctx.seed)
    rows = n_fit * (1 + early_exit.copies_for_cut(copies, n_fit, 4 * sum(t.elements for t in tensors), bd.head_flops,
                                                  early_exit.exit_macs(exit_k)))
    feats = head_model.predict(ctx.exit_x[:rows], batch_size=64, verbose=0)  # the float head, built once above
    feats = feats if isinstance(feats, list) else [feats]
    fit_feats = dict(zip(names, feats, strict=True))  # the fit frames first: the int8 representative set
    early_exit.train_exit(exit_k, fit_feats, ctx.exit_targets[:rows], seed=ctx.seed)
    exit_ref = _ref(ctx.work, f"{folder}/exit.tflite",
                    export.export_int8(exit_k, export.representative_from(fit_feats), input_type="int8"))
    exit_rt = LiteRTModel(ctx.work / exit_ref.path, threads=ctx.threads)
    tensors = tuple(
        TensorSpec(t.name, t.shape, t.dtype, t.scale, t.zero_point, t.head_output,
                   exit_rt.inputs[t.name].scale, exit_rt.inputs[t.name].zero_point)
        for t in tensors
    )
    logits = measure.run_exit(exit_rt, head_out, tensors)
    temp, curve, exit_acc, probs = _calibrate(logits, ctx.labels[held], n_cal)
    budgets = measure.exit_budgets(probs, y_ev, tail_preds, _float_acc(ctx))
    return CutSpec(
        **common, tensors=tensors,
        bytes_at_bits={str(b): bd.bytes_at(b) for b in ctx.bits}, compressive_bits=bd.compressive_bits,
        head_ms=head_ms, tail_ms=round(tail_rt.time_ms(percentile=_TIMING_PERCENTILE), 4),
        exit_ms=round(exit_rt.time_ms(percentile=_TIMING_PERCENTILE), 4),
        float_accuracy=_float_acc(ctx), accuracy=accuracy, exit_curve=curve, exit_temperature=temp,
        exit_accuracy=exit_acc, head=head, tail=tail, exit=exit_ref, exit_budget=budgets,
    )


def _float_acc(ctx: _Context) -> float:
    return round(float((ctx.float_pred[ctx.ev] == ctx.labels[ctx.ev]).mean()), 4)


def _calibrate(logits: np.ndarray, labels: np.ndarray, n_cal: int) -> tuple[float, tuple, float, np.ndarray]:
    """Temperature on the first n_cal rows; curve, accuracy and calibrated probabilities on the rest (eval)."""
    temp = round(early_exit.fit_temperature(logits[:n_cal], labels[:n_cal]), 4) if n_cal else 1.0
    probs = early_exit.softmax(logits[n_cal:], temp)
    correct = probs.argmax(-1) == labels[n_cal:]
    curve = early_exit.coverage_curve(probs.max(-1), correct)
    return temp, curve, round(float(correct.mean()), 4), probs
