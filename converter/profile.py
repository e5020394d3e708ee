"""Step 1: profile every layer of the graph: FLOPs, output bytes (float32 and int8), weight bytes.

FLOPs count a multiply-add as two. The formulas are the usual ones for the supported layer types;
element-wise layers count one op per output element; reshaping layers count zero. Keras Operation nodes
(``x + 3.0``, ``keras.ops.*``, shown as ``ops.NAME``) have no weights and count as element-wise (a reduction
such as ``ops.Mean`` counts its input elements; shape ops count zero).
"""

from __future__ import annotations

import math
from typing import Any

from converter.graph import ModelGraph
from sdk.manifest import LayerProfile

_ZERO_COST = {"InputLayer", "Dropout", "SpatialDropout2D", "Flatten", "Reshape", "Identity", "Permute",
              "ZeroPadding2D", "Cropping2D", "Cast", "GaussianNoise", "GaussianDropout", "ActivityRegularization",
              "ops.Reshape", "ops.Transpose", "ops.ExpandDims", "ops.Squeeze", "ops.Flip", "ops.Cast"}
_REDUCTIONS = {"ops.Mean", "ops.Max", "ops.Sum"}
_BINARY = {"Add", "Multiply", "Subtract", "Maximum", "Minimum", "Average"}


def _elements(shape: Any) -> int:
    return int(math.prod(int(d) for d in shape[1:]))


def layer_flops(layer: Any, input_shapes: list[Any], output_shapes: list[Any], kind: str | None = None) -> int:
    """FLOPs of one call (batch 1); `kind` is the node's type (GraphNode.type, ``ops.NAME`` for an Operation)."""
    kind = kind or type(layer).__name__
    out = sum(_elements(s) for s in output_shapes)
    if kind == "Conv2D":
        kh, kw = layer.kernel_size
        cin = int(input_shapes[0][-1])
        return 2 * out * kh * kw * cin // int(getattr(layer, "groups", 1) or 1)
    if kind == "DepthwiseConv2D":
        kh, kw = layer.kernel_size
        return 2 * out * kh * kw
    if kind == "SeparableConv2D":
        kh, kw = layer.kernel_size
        cin = int(input_shapes[0][-1])
        mid = out // int(output_shapes[0][-1]) * cin * int(layer.depth_multiplier)
        return 2 * mid * kh * kw + 2 * out * cin * int(layer.depth_multiplier)
    if kind == "Dense":
        return 2 * _elements(input_shapes[0]) * int(layer.units)
    if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        return _elements(input_shapes[0])
    if kind in ("AveragePooling2D", "MaxPooling2D"):
        ph, pw = layer.pool_size
        return out * ph * pw
    if kind == "BatchNormalization":
        return 2 * out
    if kind in _ZERO_COST:
        return 0
    if kind == "Activation" and getattr(getattr(layer, "activation", None), "__name__", "") == "linear":
        return 0  # classifier_activation=None in keras.applications: an identity
    if kind in _BINARY:
        return out * max(1, len(input_shapes) - 1)
    if kind in _REDUCTIONS:
        return _elements(input_shapes[0]) if input_shapes else out
    if kind in ("Softmax", "ops.Softmax", "LayerNormalization"):
        return 5 * out
    return out  # Rescaling, ReLU, Activation, UpSampling2D, Concatenate, LayerScale, element-wise ops.*


def profile(graph: ModelGraph) -> tuple[LayerProfile, ...]:
    rows = []
    for gn in graph.nodes:
        ins = [graph.tensors[t].shape for t in gn.inputs]
        outs = [graph.tensors[t].shape for t in gn.outputs]
        params = int(sum(math.prod(w.shape) for w in getattr(gn.layer, "weights", ())))  # an Operation has none
        elements = sum(_elements(s) for s in outs)
        rows.append(
            LayerProfile(
                index=gn.position,
                name=gn.name,
                type=gn.type,
                output_shapes=tuple(tuple(int(d) for d in s[1:]) for s in outs),
                flops=int(layer_flops(gn.layer, ins, outs, gn.type)),
                out_bytes_f32=4 * elements,
                out_bytes_i8=elements,
                weight_bytes_f32=4 * params,
                weight_bytes_i8=params,
            )
        )
    return tuple(rows)
