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


def test_a_kept_cut_ships_at_most_three_quarters_of_the_last_one_kept(ref_graph):
    prof = profile(ref_graph)
    args = ([p.flops for p in prof], [p.weight_bytes_i8 for p in prof])
    every = select_cuts(ref_graph, *args, bits=(8, 4, 2), memory_budget_bytes=None, min_reduction=0.0)
    thinned = select_cuts(ref_graph, *args, bits=(8, 4, 2), memory_budget_bytes=None)  # default 0.25
    assert {c.index for c in thinned.candidates} <= {c.index for c in every.candidates}
    for b in (8, 4, 2):
        sizes = [thinned.raw_bytes] + [c.bytes_at(b) for c in thinned.candidates[1:-1] if b in c.compressive_bits]
        assert all(later <= 0.75 * earlier for earlier, later in zip(sizes, sizes[1:], strict=False))
    strict = select_cuts(ref_graph, *args, bits=(8,), memory_budget_bytes=None, min_reduction=0.9)
    sizes = [c.bytes_at(8) for c in strict.candidates[1:-1]]
    assert all(later <= 0.1 * earlier for earlier, later in zip([strict.raw_bytes, *sizes], sizes, strict=False))
    assert len(strict.candidates) < len(every.candidates)
    with pytest.raises(ValueError, match=r"min_reduction must be in \[0, 1\)"):
        select_cuts(ref_graph, *args, bits=(8,), memory_budget_bytes=None, min_reduction=1.0)


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


# ------------------------------------------------------------------ Keras 3 graphs as users have them


def _every_split_matches(g, model, x, atol=1e-4):
    want = np.asarray(model(x, training=False))
    for s in range(1, g.n):
        got = _run_split(g, s, x)
        assert np.abs(got - want).max() < atol, f"cut {s} ({g.nodes[s - 1].name}, {g.nodes[s - 1].type})"


def test_operation_nodes_are_profiled_and_split():
    """x + 3.0, keras.ops.* inside a functional model are Operation nodes (MobileNetV3's hard sigmoid)."""
    from keras import layers, ops

    inp = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="c1")(inp)
    gate = layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)  # ops.Add, ops.Multiply with constants
    x = layers.Multiply()([x, gate])
    x = ops.hard_silu(layers.Conv2D(8, 1, name="c2")(x)) + x  # ops.HardSilu, a two-tensor ops.Add
    out = layers.Dense(4, name="logits")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    g = read_graph(model)
    types = [gn.type for gn in g.nodes]
    assert {"ops.Add", "ops.Multiply", "ops.HardSilu", "Multiply"} <= set(types)
    prof = {p.name: p for p in profile(g)}
    for gn in g.nodes:
        if gn.is_op:
            p = prof[gn.name]
            assert p.weight_bytes_i8 == 0 and p.flops == p.out_bytes_i8, gn.type  # element-wise, no weights
    x_in = np.random.default_rng(2).random((2, 12, 12, 3)).astype("float32")
    _every_split_matches(g, model, x_in)


def test_unsupported_operation_is_named_with_what_to_do():
    from keras import layers, ops

    inp = keras.Input((6, 4))
    out = layers.Dense(2)(layers.Flatten()(ops.cumsum(inp, axis=-1)))
    with pytest.raises(ConversionError, match=r"operation 'cumsum.*\(keras.ops Cumsum\) is not supported.*Replace it"):
        read_graph(keras.Model(inp, out))


def _backbone():
    """A small functional 'backbone' with a residual, a nested Sequential block and an ops node."""
    from keras import layers

    inp = keras.Input((16, 16, 3), name="bb_in")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="bb_stem")(inp)
    block = keras.Sequential([layers.Conv2D(8, 3, padding="same", name="bb_conv"),
                              layers.BatchNormalization(name="bb_bn")], name="bb_block")
    x = layers.ReLU(name="bb_relu")(block(x) + x)
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="bb_down")(x)
    return keras.Model(inp, x, name="backbone")


def test_nested_backbone_is_flattened_with_shared_weights_and_cuts_inside():
    from keras import layers

    keras.utils.set_random_seed(4)
    bb = _backbone()
    inp = keras.Input((16, 16, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="gap")(bb(inp))
    model = keras.Model(inp, layers.Dense(3, name="cls")(x), name="transfer")
    g = read_graph(model)
    names = [gn.name for gn in g.nodes]
    assert names[0] == "bb_stem" and {"bb_conv", "bb_bn", "bb_down", "gap", "cls"} <= set(names)
    assert not any(isinstance(gn.layer, keras.Model) for gn in g.nodes)
    assert g.model.name == "transfer" and g.tensor_name(id(g.input_tensor)) == "image"
    assert g.model.get_layer("bb_conv") is bb.get_layer("bb_block").get_layer("bb_conv")  # weights shared
    x_in = np.random.default_rng(3).random((2, 16, 16, 3)).astype("float32")
    _every_split_matches(g, model, x_in)
    prof = profile(g)
    sel = select_cuts(g, [p.flops for p in prof], [p.weight_bytes_i8 for p in prof], bits=(8,),
                      memory_budget_bytes=None)
    assert any(c.name.startswith("bb_") for c in sel.candidates[1:-1]), "a cut inside the backbone"


def test_name_clash_when_flattening_is_refused_with_the_fix():
    from keras import layers

    bb = _backbone()
    inp = keras.Input((16, 16, 3))
    out = layers.Dense(2)(layers.GlobalAveragePooling2D(name="bb_stem")(bb(inp)))  # the backbone has bb_stem
    with pytest.raises(ConversionError, match=r"two layers one name.*bb_stem.*rename the wrapper's layers"):
        read_graph(keras.Model(inp, out))


def test_multi_output_model_needs_output_and_converts_the_one_named():
    from keras import layers

    inp = keras.Input((8, 8, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, name="conv")(inp))
    model = keras.Model(inp, [layers.Dense(3, name="classes")(x), layers.Dense(1, name="box")(x)])
    with pytest.raises(ConversionError, match=r"2 outputs \['classes', 'box'\].*--output NAME"):
        read_graph(model)
    with pytest.raises(ConversionError, match=r"--output 'score'.*outputs are \['classes', 'box'\]"):
        read_graph(model, output="score")
    g = read_graph(model, output="classes")
    assert g.nodes[-1].name == "classes" and len(g.output_ids) == 1 and "box" not in [n.name for n in g.nodes]
    x_in = np.random.default_rng(5).random((2, 8, 8, 3)).astype("float32")
    want = np.asarray(model(x_in)[0])
    for s in range(1, g.n):
        assert np.abs(_run_split(g, s, x_in) - want).max() < 1e-5
