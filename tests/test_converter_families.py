"""Every keras.applications family a Pi can run reads, profiles and finds split cuts (small, random weights).

Fast checks build each family at its smallest resolution (converter/applications.py) with its own
--preprocess mode folded in, and look for natural bottlenecks without exporting anything. One full
conversion (marked slow: TFLite export costs ~3 s per model here) runs a MobileNetV3Small backbone, with
its keras.ops nodes, nested in a transfer-learning wrapper.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="the converter needs splitedge[convert]")

from converter.applications import FAMILIES, build  # noqa: E402
from converter.convert import prepare_model  # noqa: E402
from converter.cuts import select_cuts  # noqa: E402
from converter.graph import build_head, build_tail, read_graph  # noqa: E402
from converter.profile import profile  # noqa: E402
from sdk.errors import ConversionWarning  # noqa: E402
from sdk.manifest import CutKind  # noqa: E402


def _graph(name: str):
    """(the model, its graph with the family's --preprocess folded in front)."""
    model = build(name, small=True)
    prepared, prep, said = prepare_model(model, preprocess=FAMILIES[name].preprocess)
    assert prep is not None and prep.mode.value == FAMILIES[name].preprocess and not said
    g = read_graph(prepared)
    assert str(g.input_tensor.dtype) == "uint8"  # raw frames go in
    return model, g


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_reads_profiles_and_has_split_candidates(name):
    model = build(name, small=True)  # float input as built; the preprocessing fold is tested below
    g = read_graph(model)
    try:
        prof = profile(g)
        assert all(p.flops >= 0 and p.weight_bytes_i8 >= 0 for p in prof)
        assert sum(p.weight_bytes_i8 for p in prof) == model.count_params()  # every weight counted once
        sel = select_cuts(g, [p.flops for p in prof], [p.weight_bytes_i8 for p in prof], bits=(8, 4, 2),
                          memory_budget_bytes=None)
        kinds = [c.kind for c in sel.candidates]
        assert kinds[0] is CutKind.RAW and kinds[-1] is CutKind.DEVICE
        splits = sel.candidates[1:-1]
        assert splits, f"{name}: no natural bottleneck found"
        assert all(c.bytes_at(8) < sel.raw_bytes or c.compressive_bits for c in splits)
        assert all(c.tail_flops > 0 and c.head_weight_bytes > 0 for c in splits)
    finally:
        keras.backend.clear_session()


@pytest.mark.parametrize("name", ["MobileNetV3Small", "ConvNeXtTiny", "ResNet50"])
def test_family_splits_equal_the_preprocessed_model(name):
    """Ops nodes (V3's hard sigmoid, ConvNeXt's adds), nested Sequentials (ConvNeXt), caffe's channel flip."""
    model, g = _graph(name)
    pre = {"none": lambda v: v, "caffe": keras.applications.resnet50.preprocess_input}[FAMILIES[name].preprocess]
    frames = np.random.default_rng(0).integers(0, 256, (2, *g.input_tensor.shape[1:]), dtype=np.uint8)
    want = np.asarray(model(pre(frames.astype("float32")), training=False))
    prof = profile(g)
    sel = select_cuts(g, [p.flops for p in prof], [p.weight_bytes_i8 for p in prof], bits=(8,),
                      memory_budget_bytes=None)
    for bd in (sel.candidates[1], sel.candidates[-2]):
        head, tail = build_head(g, bd.index), build_tail(g, bd.index)
        outs = head(frames, training=False)
        outs = outs if isinstance(outs, list | tuple) else [outs]
        got = np.asarray(tail({i.name: o for i, o in zip(tail.inputs, outs, strict=True)}, training=False))
        scale = max(1.0, float(np.abs(want).max()))
        assert np.abs(got - want).max() < 1e-4 * scale, f"{name} cut {bd.index} ({bd.name})"
    keras.backend.clear_session()


def _v3_wrapped(seed: int = 1):
    """A MobileNetV3Small backbone (keras.ops nodes) nested in a transfer-learning wrapper."""
    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=False,
                                                   alpha=0.75)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inp))
    return keras.Model(inp, keras.layers.Dense(4, name="classes")(x), name="wrapped_v3")


@pytest.mark.slow
def test_nested_mobilenetv3_small_converts_end_to_end(tmp_path):
    from converter.convert import convert
    from converter.data import CalibData
    from sdk.litert import LiteRTModel
    from sdk.manifest import load_manifest

    model = _v3_wrapped()
    frames = np.random.default_rng(0).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)  # --preprocess given: no warning
        result = convert(model, CalibData(frames, None, "random"), tmp_path / "b", bits=(8,), preprocess="none")
    m = load_manifest(tmp_path / "b")
    assert m == result.manifest and m.input.dtype == "uint8" and m.input.preprocess.mode.value == "none"
    splits = [c for c in m.cuts if c.kind is CutKind.SPLIT]
    assert splits and all(c.head and c.tail and c.exit for c in splits)
    assert any(gn.startswith("expanded_conv") for gn in (c.name for c in splits)), "a cut inside the backbone"
    layer_types = {p.type for p in m.layers}
    assert {"ops.Add", "ops.Multiply"} <= layer_types
    head = LiteRTModel(tmp_path / "b" / splits[0].head.path)
    (info,) = head.inputs.values()
    assert info.dtype == np.uint8 and (info.scale, info.zero_point) in ((0.0, 0), (1.0, 0))  # raw bytes in


@pytest.mark.slow
def test_cuts_convert_alike_in_worker_processes(tmp_path):
    """converter/workers.py: the cuts converted in 2 worker processes (the model saved, reloaded there, its graph
    rebuilt: ops nodes, a nested backbone, a folded preprocessing) give the bundle one process gives, timings
    aside (each run times its models afresh): the same cuts, tensors, accuracies, exits and head outputs."""
    from dataclasses import replace

    from converter.convert import convert
    from converter.data import CalibData
    from sdk.litert import LiteRTModel

    frames = np.random.default_rng(0).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    data = CalibData(frames, np.arange(60) % 4, "random")
    got = {}
    for workers in (1, 2):
        keras.backend.clear_session()  # the same auto layer names (re_lu_N) for both builds
        result = convert(_v3_wrapped(), data, tmp_path / f"w{workers}", bits=(8, 4), preprocess="tf", workers=workers)
        assert result.manifest.extra["convert_workers"] == workers
        got[workers] = result.manifest.cuts
        keras.backend.clear_session()
    assert len(got[1]) >= 4 and [c.index for c in got[1]] == [c.index for c in got[2]]
    for one, two in zip(got[1], got[2], strict=True):
        assert one.tensors == two.tensors and one.accuracy == two.accuracy, one.index
        assert one.exit_temperature == two.exit_temperature and one.exit_curve == two.exit_curve, one.index
        # every field but the times and the files' hashes (tensor names carry Keras' per-process layer counters)
        unfiled = dict(head_ms=0.0, tail_ms=0.0, exit_ms=0.0, head=None, tail=None, exit=None)
        assert replace(one, **unfiled) == replace(two, **unfiled), one.index
        if one.head is not None:  # the heads compute the same int8 bytes
            a, b = (LiteRTModel(tmp_path / f"w{w}" / c.head.path) for w, c in ((1, one), (2, two)))
            key = next(iter(a.inputs))
            for k in a.outputs:
                assert np.array_equal(a.run({key: frames[:1]})[k], b.run({key: frames[:1]})[k]), (one.index, k)


def test_worker_count_uses_the_cores_only_for_a_model_worth_it():
    import os

    from converter.workers import PARALLEL_MIN_FLOPS, worker_count
    from sdk.errors import ConversionError

    cores = os.cpu_count() or 1
    assert worker_count(None, 7, PARALLEL_MIN_FLOPS - 1) == 1  # a test-sized model: spawning costs more
    assert worker_count(None, 7, PARALLEL_MIN_FLOPS) == min(cores, 7)
    assert worker_count(None, 1, 10**12) == 1 and worker_count(3, 2, 0) == 2 and worker_count(1, 9, 10**12) == 1
    with pytest.raises(ConversionError, match="workers=0"):
        worker_count(0, 5, 0)
