"""Read a Keras 3 model as a DAG of layer and operation calls in topological order, and rebuild pieces of it.

Every later step (profile, cuts, split) works on this view, so that a Sequential and a functional
model look the same and the original graph is captured once, before any head or tail re-calls a
layer (re-calling adds nodes to the layers; we keep the nodes of the model as loaded).

A node is a call of a Layer or of a Keras 3 Operation: ``x + 3.0`` or ``keras.ops.multiply`` inside a
functional model are ``keras.src.ops`` Operation nodes (MobileNetV3's hard sigmoid, ConvNeXt's residual adds);
they have no weights and are re-called like layers. A nested model (a ``keras.applications`` backbone inside a
transfer-learning wrapper, ConvNeXt's stem) is flattened: :func:`replay` re-calls each inner layer on the outer
tensors, sharing the weights, so cuts can fall inside it. The same :func:`replay` folds preprocessing in front
of a float model (converter/preprocess.py) and builds the tails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdk.errors import ConversionError

#: Layer types the converter knows how to profile and split. Others are refused by name.
SUPPORTED_LAYERS = frozenset(
    {
        "InputLayer", "Rescaling", "Normalization", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
        "BatchNormalization", "ReLU", "Activation", "Add", "Multiply", "Concatenate", "GlobalAveragePooling2D",
        "GlobalMaxPooling2D", "AveragePooling2D", "MaxPooling2D", "ZeroPadding2D", "Dropout", "Flatten",
        "Reshape", "Softmax", "LeakyReLU", "Identity", "Cast", "Subtract", "Maximum", "Minimum",
        "UpSampling2D", "Cropping2D", "SpatialDropout2D", "Permute", "Average", "LayerNormalization",
        "PReLU", "ELU", "GaussianNoise", "GaussianDropout", "ActivityRegularization",
        "LayerScale",  # keras.applications.convnext: x * gamma per channel
    }
)

#: keras.src.ops Operation classes (by class name) that may appear as nodes of a functional graph: the
#: element-wise arithmetic and activations keras.applications and user code write as ops (``x + 3.0``,
#: ``keras.ops.hard_sigmoid(x)``), plus shape ops TFLite handles in int8. Profiled and shown as ``ops.NAME``.
SUPPORTED_OPS = frozenset(
    {
        "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Negative", "Absolute",
        "Square", "Sqrt", "Exp", "Tanh", "Clip", "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu",
        "Gelu", "LeakyRelu", "Elu", "Softmax", "Mean", "Max", "Sum", "Reshape", "Transpose", "Concatenate",
        "ExpandDims", "Squeeze", "Flip", "Cast",
    }
)


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One call of one layer (or Keras Operation) in the model's graph."""

    position: int  # 1-based topological position (0 is the model input)
    layer: Any  # keras.Layer, or a keras.src.ops Operation (no weights)
    node: Any  # the keras Node of this call
    inputs: tuple[int, ...]  # tensor ids (id(KerasTensor)) consumed
    outputs: tuple[int, ...]  # tensor ids produced

    @property
    def name(self) -> str:
        return str(self.layer.name)

    @property
    def is_op(self) -> bool:
        """A bare Keras Operation (``x + y``, ``keras.ops.*``), not a Layer."""
        return _is_op(self.layer)

    @property
    def type(self) -> str:
        """The layer's class name; ``ops.NAME`` for an Operation (``ops.Add`` is ``x + y``, ``Add`` the layer)."""
        return f"ops.{type(self.layer).__name__}" if self.is_op else type(self.layer).__name__


@dataclass(frozen=True, slots=True)
class ModelGraph:
    model: Any  # keras.Model (functional)
    input_tensor: Any  # the KerasTensor of the single model input
    nodes: tuple[GraphNode, ...]  # topological order, InputLayer excluded
    tensors: dict[int, Any]  # id -> KerasTensor
    producer: dict[int, int]  # tensor id -> position of the producing node (0 for the model input)
    consumers: dict[int, tuple[int, ...]]  # tensor id -> positions of consuming nodes
    output_ids: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.nodes)

    def tensor_name(self, tid: int) -> str:
        pos = self.producer[tid]
        if pos == 0:
            return str(self.input_tensor._keras_history[0].name)
        node = self.nodes[pos - 1]
        name = node.name
        if len(node.outputs) > 1:
            name = f"{name}_{node.outputs.index(tid)}"
        return name

    def live_after(self, s: int) -> tuple[int, ...]:
        """Tensor ids produced at positions <= s and needed after s (consumed later, or a model output).

        In a DAG this is every tensor that crosses the cut, e.g. a residual branch and the main path.
        Ordered by producing position, then output index.
        """
        live = []
        for tid, pos in self.producer.items():
            if pos > s:
                continue
            if any(c > s for c in self.consumers.get(tid, ())) or tid in self.output_ids:
                live.append(tid)
        return tuple(sorted(live, key=lambda t: (self.producer[t], list(self.tensors).index(t))))


def _is_op(op: Any) -> bool:
    import keras

    return not isinstance(op, keras.layers.Layer)


def _is_graph_model(op: Any) -> bool:
    """A Functional or Sequential model: its own graph of layers, which replay() can re-call layer by layer."""
    import keras

    return isinstance(op, keras.Sequential) or (
        isinstance(op, keras.Model) and (type(op).__name__ == "Functional" or hasattr(op, "_nodes_by_depth"))
    )


def _model_nodes(model: Any) -> list[tuple[Any, Any]]:
    """(operation, node) of every call in functional `model`, InputLayers excluded, in topological order.

    Walks back from the outputs through _keras_history (exactly this model's nodes, not other calls of the same
    layers), then orders them by Kahn's algorithm preferring ``model.operations`` order (a natural order).
    """
    found: dict[int, tuple[Any, Any]] = {}  # id(node) -> (op, node)
    stack = list(model.outputs)
    while stack:
        t = stack.pop()
        op, node_index, _ = t._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in found or type(op).__name__ == "InputLayer":
            continue
        found[id(node)] = (op, node)
        stack.extend(node.input_tensors)
    order = {id(op): i for i, op in enumerate(getattr(model, "operations", model.layers))}
    remaining = sorted(found.values(), key=lambda on: order.get(id(on[0]), len(order)))
    known = {id(t) for t in model.inputs}
    ordered = []
    while remaining:
        ready = next((i for i, (_, n) in enumerate(remaining) if all(id(t) in known for t in n.input_tensors)), None)
        if ready is None:
            names = [op.name for op, _ in remaining]
            raise ConversionError(f"cannot order layers {names[:8]} topologically; is the graph cyclic?")
        op, node = remaining.pop(ready)
        known.update(id(t) for t in node.output_tensors)
        ordered.append((op, node))
    return ordered


def _flat(out: Any) -> list[Any]:
    import keras

    return list(keras.tree.flatten(out))


def _call(op: Any, node: Any, values: dict[int, Any]) -> list[Any]:
    """Re-call one node's operation on new tensors (`values`: id of the node's KerasTensors -> new tensor).

    A nested Functional/Sequential model is not called as one layer but replayed inside (flattened).
    """
    args, kwargs = node.arguments.fill_in(values)
    if _is_graph_model(op):
        import keras

        feeds = [a for a in _flat(args) if isinstance(a, keras.KerasTensor)]
        return replay(op, feeds)
    return _flat(op(*args, **kwargs))


def replay(model: Any, feeds: Sequence[Any]) -> list[Any]:
    """Re-call every layer of functional or Sequential `model` on `feeds` (one tensor per model input).

    The weights are shared (the same layer objects are called again); nested models are replayed layer by
    layer, so the tensors returned (the model's outputs, flattened) come from a graph of plain layers and ops.
    This is the one re-calling mechanism: flattening, preprocessing folded in front, tails.
    """
    import keras

    if isinstance(model, keras.Sequential):
        if len(feeds) != 1:
            raise ConversionError(f"Sequential model {model.name!r} got {len(feeds)} inputs; it takes one")
        x = feeds[0]
        for layer in model.layers:
            (x,) = replay(layer, [x]) if _is_graph_model(layer) else _flat(layer(x))
        return [x]
    if not _is_graph_model(model):
        raise ConversionError(
            f"layer {model.name!r} is a subclassed {type(model).__name__} inside the model; the converter can only "
            "look inside functional and Sequential models: rebuild it with keras.Model(inputs, outputs)"
        )
    if len(feeds) != len(model.inputs):
        raise ConversionError(f"nested model {model.name!r} takes {len(model.inputs)} inputs, got {len(feeds)}")
    values: dict[int, Any] = {id(t): f for t, f in zip(model.inputs, feeds, strict=True)}
    for op, node in _model_nodes(model):
        for t, value in zip(node.output_tensors, _call(op, node, values), strict=True):
            values[id(t)] = value
    return [values[id(t)] for t in model.outputs]


def output_names(model: Any) -> list[str]:
    """The names --output chooses from: each output's producing layer (with _k for a layer's k-th output)."""
    names = []
    for t in model.outputs:
        layer, _, k = t._keras_history
        names.append(str(layer.name) if len(layer._inbound_nodes[0].output_tensors) == 1 else f"{layer.name}_{k}")
    return names


def select_output(model: Any, output: str | None) -> Any:
    """The model restricted to one output: `output` by name; required when the model has several."""
    import keras

    names = output_names(model)
    if output is None:
        if len(names) == 1:
            return model
        raise ConversionError(
            f"model {model.name!r} has {len(names)} outputs {names}; the converter splits one logits output: "
            f"choose it with --output NAME (output=NAME), e.g. --output {names[0]}"
        )
    if output not in names:
        raise ConversionError(f"--output {output!r}: model {model.name!r} has no output of that name; its outputs "
                              f"are {names}")
    if len(names) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[names.index(output)], name=model.name)


def as_functional(model: Any) -> Any:
    """A Sequential model becomes the equivalent functional one; subclassed models are refused."""
    import keras

    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ConversionError(
                f"Sequential model {model.name!r} has no input shape; build it with keras.Input(...) first"
            )
        inp = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="input")
        return keras.Model(inp, replay(model, [inp])[0], name=model.name)
    if not _is_graph_model(model) or not getattr(model, "inputs", None):
        raise ConversionError(
            f"model {getattr(model, 'name', model)!r} is a subclassed {type(model).__name__}; the converter "
            "supports Keras 3 functional and Sequential models only (rebuild it with keras.Model(inputs, outputs))"
        )
    return model


def flatten(model: Any) -> Any:
    """Functional `model` with every nested model's layers inlined (same layer objects, so shared weights)."""
    import keras

    if not any(_is_graph_model(op) for op, _ in _model_nodes(model)):
        return model
    src = model.inputs[0]
    inp = keras.Input(shape=src.shape[1:], dtype=src.dtype, name=str(src._keras_history[0].name))
    outs = replay(model, [inp])
    try:
        return keras.Model(inp, outs if len(outs) > 1 else outs[0], name=model.name)
    except ValueError as exc:
        if "should be unique" not in str(exc):
            raise
        raise ConversionError(
            f"model {model.name!r}: flattening its nested models gives two layers one name ({exc}); rename the "
            "wrapper's layers (e.g. name='head_dense') so no name is used twice"
        ) from None


def check_input(model: Any) -> Any:
    """`model` if it has one input of a fixed size (the camera frame); a ConversionError naming it otherwise."""
    if len(model.inputs) != 1:
        raise ConversionError(f"model {model.name!r} has {len(model.inputs)} inputs; one image input is supported")
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ConversionError(
            f"model {model.name!r} takes input of shape {shape} with unknown sizes; the converter needs a fixed "
            "frame size: build it with input_shape=(H, W, C)"
        )
    return model


def _check_supported(op: Any) -> None:
    kind = type(op).__name__
    if _is_op(op):
        if kind not in SUPPORTED_OPS:
            raise ConversionError(
                f"operation {op.name!r} (keras.ops {kind}) is not supported by the converter; supported ops: "
                f"{', '.join(sorted(SUPPORTED_OPS))}. Replace it with a layer or one of these ops"
            )
    elif kind not in SUPPORTED_LAYERS:
        raise ConversionError(
            f"layer {op.name!r} of type {kind} is not supported by the converter; supported: "
            f"{', '.join(sorted(SUPPORTED_LAYERS))}"
        )


def read_graph(model: Any, *, output: str | None = None) -> ModelGraph:
    """The model's DAG in topological order; refuses what the converter cannot split, naming it.

    Sequential becomes functional, nested models are flattened, and a multi-output model is cut down to the
    one `output` named (refused without it, listing the names).
    """
    model = flatten(select_output(check_input(as_functional(model)), output))
    input_tensor = model.inputs[0]
    tensors: dict[int, Any] = {id(input_tensor): input_tensor}
    producer: dict[int, int] = {id(input_tensor): 0}

    pending = _model_nodes(model)
    calls: dict[int, int] = {}
    for layer, _ in pending:
        calls[id(layer)] = calls.get(id(layer), 0) + 1
        if calls[id(layer)] > 1:
            raise ConversionError(
                f"layer {layer.name!r} is called more than once (a shared layer); the converter needs each layer "
                "called once: give each call its own layer"
            )
        _check_supported(layer)

    nodes: list[GraphNode] = []
    for layer, node in pending:
        pos = len(nodes) + 1
        outs = tuple(node.output_tensors)
        for t in outs:
            tensors[id(t)] = t
            producer[id(t)] = pos
        nodes.append(GraphNode(pos, layer, node, tuple(id(t) for t in node.input_tensors), tuple(id(t) for t in outs)))

    consumers: dict[int, list[int]] = {}
    for gn in nodes:
        for tid in gn.inputs:
            consumers.setdefault(tid, []).append(gn.position)
    return ModelGraph(
        model=model,
        input_tensor=input_tensor,
        nodes=tuple(nodes),
        tensors=tensors,
        producer=producer,
        consumers={k: tuple(v) for k, v in consumers.items()},
        output_ids=tuple(id(t) for t in model.outputs),
    )


def build_head(graph: ModelGraph, s: int) -> Any:
    """keras.Model(frame -> the tensors crossing cut s), outputs in live_after(s) order."""
    import keras

    live = graph.live_after(s)
    return keras.Model(graph.model.inputs, [graph.tensors[t] for t in live], name=f"head_{s}")


def build_tail(graph: ModelGraph, s: int) -> Any:
    """keras.Model(named inputs, one per tensor crossing cut s -> logits), sharing the model's weights."""
    import keras

    live = graph.live_after(s)
    inputs = []
    values: dict[int, Any] = {}
    for tid in live:
        t = graph.tensors[tid]
        inp = keras.Input(shape=t.shape[1:], dtype=t.dtype, name=graph.tensor_name(tid))
        inputs.append(inp)
        values[tid] = inp
    for gn in graph.nodes[s:]:
        for tid, value in zip(gn.outputs, _call(gn.layer, gn.node, values), strict=True):
            values[tid] = value
    return keras.Model(inputs, [values[t] for t in graph.output_ids], name=f"tail_{s}")
