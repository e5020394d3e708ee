"""Profile, cuts and head/tail splitting on real Keras graphs (float: no TFLite here, fast)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="the converter needs splitedge[convert]")

from converter.cuts import select_cuts  # noqa: E402
from converter.graph import build_head, build_tail, read_graph  # noqa: E402
from converter.profile import profile  # noqa: E402
from sdk.errors import ConversionError  # noqa: E402
from sdk.manifest import CutKind  # noqa: E402


@pytest.fixture(scope="module")
def ref_graph():
    from converter.reference_model import build

    keras.utils.set_random_seed(0)
    return read_graph(build())


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)


def _run_split(graph, s, frames):
    head, tail = build_head(graph, s), build_tail(graph, s)
    outs = head(frames, training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    feeds = {inp.name: o for inp, o in zip(tail.inputs, outs, strict=True)}
    return np.asarray(tail(feeds, training=False))


def test_float_head_plus_tail_equals_model_at_every_boundary(ref_graph, frames):
    want = np.asarray(ref_graph.model(frames, training=False))
    two_tensor_cuts = [s for s in range(1, ref_graph.n) if len(ref_graph.live_after(s)) == 2]
    assert two_tensor_cuts, "the reference model must have residual cuts that carry two tensors"
    for s in range(1, ref_graph.n):
        got = _run_split(ref_graph, s, frames)
        assert np.abs(got - want).max() < 1e-4, f"cut {s} ({ref_graph.nodes[s - 1].name})"


def test_two_tensor_cut_ships_the_residual_branch(ref_graph):
    s = next(s for s in range(1, ref_graph.n) if len(ref_graph.live_after(s)) == 2)
    names = [ref_graph.tensor_name(t) for t in ref_graph.live_after(s)]
    add = next(gn for gn in ref_graph.nodes[s:] if gn.type == "Add")
    assert set(ref_graph.live_after(s)) <= set(ref_graph.producer) and len(set(names)) == 2
    # both tensors feed something after the cut, one of them the residual Add
    assert any(t in add.inputs for t in ref_graph.live_after(s))


def test_candidates_are_compressive_bottlenecks(ref_graph):
    prof = profile(ref_graph)
    sel = select_cuts(ref_graph, [p.flops for p in prof], [p.weight_bytes_i8 for p in prof], bits=(8, 4, 2),
                      memory_budget_bytes=None)
    kinds = [c.kind for c in sel.candidates]
    assert kinds[0] is CutKind.RAW and kinds[-1] is CutKind.DEVICE
    assert sel.raw_bytes == 96 * 96 * 3
    splits = sel.candidates[1:-1]
    assert len(splits) >= 4
    for b in (8, 4, 2):
        at_b = [c for c in splits if b in c.compressive_bits]
        sizes = [c.bytes_at(b) for c in at_b]
        assert all(x < sel.raw_bytes for x in sizes)
        assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
        # no earlier boundary is smaller than a kept cut at the same bit width
        for c in at_b:
            assert all(bd.bytes_at(b) >= c.bytes_at(b) for bd in sel.boundaries[1 : c.index])
    # the 8-bit bottlenecks of the reference design: 48x48x8, 24x24x16, 12x12x24, 6x6x32
    assert {18432, 9216, 3456, 1152} <= {c.bytes_at(8) for c in splits}


def test_flops_and_bytes_of_known_layers(ref_graph):
    prof = {p.name: p for p in profile(ref_graph)}
    stem = next(p for p in prof.values() if p.type == "Conv2D")
    h, w, c = stem.output_shapes[0]
    assert stem.flops == 2 * h * w * c * 3 * 3 * 3  # 3x3 kernel over 3 input channels
    assert stem.out_bytes_f32 == 4 * stem.out_bytes_i8 == 4 * h * w * c
    dense = prof["logits"]
    units = dense.output_shapes[0][0]
    features = (dense.weight_bytes_i8 - units) // units  # kernel (features x units) + bias (units)
    assert dense.flops == 2 * features * units


def test_memory_budget_drops_heads_that_do_not_fit(ref_graph):
    prof = profile(ref_graph)
    sel = select_cuts(ref_graph, [p.flops for p in prof], [p.weight_bytes_i8 for p in prof], bits=(8,),
                      memory_budget_bytes=60_000)
    assert sel.dropped, "a 60 kB budget must drop the later heads"
    assert all("budget 60000" in why for _, why in sel.dropped)
    for c in sel.candidates[1:]:
        assert c.head_weight_bytes + c.head_peak_activation_bytes <= 60_000


def test_sequential_model_is_accepted():
    from keras import layers

    m = keras.Sequential([keras.Input((16, 16, 3)), layers.Conv2D(4, 3, strides=2), layers.ReLU(),
                          layers.GlobalAveragePooling2D(), layers.Dense(3)])
    g = read_graph(m)
    x = np.random.default_rng(1).random((2, 16, 16, 3)).astype("float32")
    want = np.asarray(m(x))
    for s in range(1, g.n):
        assert np.abs(_run_split(g, s, x) - want).max() < 1e-5


def test_subclassed_model_is_refused_with_its_name():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ConversionError, match="subclassed Net.*functional and Sequential"):
        read_graph(Net())


def test_unsupported_layer_is_named():
    from keras import layers

    inp = keras.Input((8, 4))
    out = layers.Dense(2)(layers.LSTM(3, name="my_lstm")(inp))
    with pytest.raises(ConversionError, match="my_lstm.*LSTM.*not supported.*supported: "):
        read_graph(keras.Model(inp, out))


def test_shared_layer_is_refused():
    from keras import layers

    inp = keras.Input((4,))
    d = layers.Dense(4, name="shared")
    out = d(d(inp))
    with pytest.raises(ConversionError, match="shared"):
        read_graph(keras.Model(inp, out))
