"""Read a Keras 3 model as a DAG of layer calls in topological order, and rebuild pieces of it.

Every later step (profile, cuts, split) works on this view, so that a Sequential and a functional
model look the same and the original graph is captured once, before any head or tail re-calls a
layer (re-calling adds nodes to the layers; we keep the nodes of the model as loaded).
"""

from __future__ import annotations

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
        "UpSampling2D", "Cropping2D", "SpatialDropout2D", "Permute",
    }
)


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One call of one layer in the model's graph."""

    position: int  # 1-based topological position (0 is the model input)
    layer: Any  # keras.Layer
    node: Any  # the keras Node of this call
    inputs: tuple[int, ...]  # tensor ids (id(KerasTensor)) consumed
    outputs: tuple[int, ...]  # tensor ids produced

    @property
    def name(self) -> str:
        return str(self.layer.name)

    @property
    def type(self) -> str:
        return type(self.layer).__name__


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


def as_functional(model: Any) -> Any:
    """A Sequential model becomes the equivalent functional one; subclassed models are refused."""
    import keras

    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ConversionError(
                f"Sequential model {model.name!r} has no input shape; build it with keras.Input(...) first"
            )
        inp = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="input")
        x = inp
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inp, x, name=model.name)
    functional = type(model).__name__ == "Functional" or hasattr(model, "_nodes_by_depth")
    if not functional or not getattr(model, "inputs", None):
        raise ConversionError(
            f"model {getattr(model, 'name', model)!r} is a subclassed {type(model).__name__}; the converter "
            "supports Keras 3 functional and Sequential models only (rebuild it with keras.Model(inputs, outputs))"
        )
    return model


def read_graph(model: Any) -> ModelGraph:
    """The model's DAG in topological order; refuses what the converter cannot split, naming it."""
    model = as_functional(model)
    if len(model.inputs) != 1:
        raise ConversionError(f"model {model.name!r} has {len(model.inputs)} inputs; one image input is supported")
    if len(model.outputs) != 1:
        raise ConversionError(f"model {model.name!r} has {len(model.outputs)} outputs; one logits output is supported")
    input_tensor = model.inputs[0]
    tensors: dict[int, Any] = {id(input_tensor): input_tensor}
    producer: dict[int, int] = {id(input_tensor): 0}

    # Walk back from the output through _keras_history to collect exactly this model's nodes.
    found: dict[int, tuple[Any, Any]] = {}  # id(node) -> (layer, node)
    stack = list(model.outputs)
    while stack:
        t = stack.pop()
        layer, node_index, _ = t._keras_history
        node = layer._inbound_nodes[node_index]
        if id(node) in found or type(layer).__name__ == "InputLayer":
            continue
        found[id(node)] = (layer, node)
        stack.extend(node.input_tensors)

    order = {id(layer): i for i, layer in enumerate(model.layers)}
    pending = sorted(found.values(), key=lambda ln: order.get(id(ln[0]), len(order)))
    calls_per_layer: dict[int, int] = {}
    for layer, _ in pending:
        calls_per_layer[id(layer)] = calls_per_layer.get(id(layer), 0) + 1
        if calls_per_layer[id(layer)] > 1:
            raise ConversionError(
                f"layer {layer.name!r} is called more than once (a shared layer); the converter needs each layer "
                "called once: give each call its own layer"
            )
        kind = type(layer).__name__
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            raise ConversionError(
                f"layer {layer.name!r} is a nested model ({kind}); flatten it into one functional model first"
            )
        if kind not in SUPPORTED_LAYERS:
            raise ConversionError(
                f"layer {layer.name!r} of type {kind} is not supported by the converter; supported: "
                f"{', '.join(sorted(SUPPORTED_LAYERS))}"
            )

    # Kahn's algorithm, preferring model.layers order: a stable, natural topological order.
    nodes: list[GraphNode] = []
    remaining = list(pending)
    while remaining:
        ready = next((i for i, (_, n) in enumerate(remaining) if all(id(t) in producer for t in n.input_tensors)), None)
        if ready is None:
            names = [layer.name for layer, _ in remaining]
            raise ConversionError(f"cannot order layers {names} topologically; is the graph cyclic?")
        layer, node = remaining.pop(ready)
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
        args, kwargs = gn.node.arguments.fill_in(values)
        out = gn.layer(*args, **kwargs)
        flat = out if isinstance(out, list | tuple) else [out]
        for tid, value in zip(gn.outputs, flat, strict=True):
            values[tid] = value
    return keras.Model(inputs, [values[t] for t in graph.output_ids], name=f"tail_{s}")
