"""Step 3: export TFLite models: full-integer int8 heads and exits, float tails.

The int8 recipe is the one measured to work here (../shared/PLATFORM.md): ``from_keras_model`` +
``representative_dataset`` + ``TFLITE_BUILTINS_INT8``, uint8 frames in (a uint8 Keras input passes
raw camera bytes straight in), int8 tensors out. Signature keys name every input and output, so
multi-output heads are mapped by name (``output_0``... in the Keras output order), never by position.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConversionError


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converter's stdout/stderr chatter (it writes from C++); keep it for an error message."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except Exception as exc:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            sink.seek(0)
            tail = sink.read()[-2000:].decode("utf-8", "replace")
            raise ConversionError(f"TFLite conversion failed: {exc}\n--- converter output (tail) ---\n{tail}") from exc
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def export_int8(
    model: Any,
    representative: Callable[[], Iterator[dict[str, np.ndarray]]],
    *,
    input_type: str,
) -> bytes:
    """Full-integer int8 model. `representative` yields {signature input key: batch-1 array}.

    input_type "uint8": raw camera bytes in (a uint8 Keras input); "int8": quantized tensors in (early
    exits); "float32": a float-input model (e.g. keras.applications) keeps a float input with the
    quantize op inside, so the device feeds its frames as they are.
    """
    import tensorflow as tf

    conv, keys = _frozen_converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    # a model without a signature is calibrated on inputs in its input order
    conv.representative_dataset = lambda: ([sample[k] for k in keys] for sample in representative())
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[input_type]
    conv.inference_output_type = tf.int8
    with _quiet():
        return _with_signature(bytes(conv.convert()), keys)


def export_float(model: Any) -> bytes:
    conv, keys = _frozen_converter(model)
    with _quiet():
        return _with_signature(bytes(conv.convert()), keys)


def _frozen_converter(model: Any) -> tuple[Any, list[str]]:
    """(a TFLite converter of the model's inference call, frozen in memory; its input keys in order).

    ``TFLiteConverter.from_keras_model`` first writes the model out as a SavedModel and reads it back; from a
    concrete function without a trackable object it freezes the graph in memory instead: the same ops and
    weights, a third of EfficientNetB0's tail export time (1.7 against 5.9 s), and for EfficientNetB4 the
    round trip was 215 of the 858 s its conversion took. That path writes no signature, so
    :func:`_with_signature` adds the one the device maps tensors by.
    """
    import tensorflow as tf

    keys = [str(t.name) for t in model.inputs]
    specs = [tf.TensorSpec(t.shape, t.dtype, name=k) for t, k in zip(model.inputs, keys, strict=True)]

    @tf.function(input_signature=specs)
    def serve(*args: Any) -> list[Any]:
        y = model(list(args) if len(args) > 1 else args[0], training=False)
        return list(y) if isinstance(y, list | tuple) else [y]

    absl = logging.getLogger("absl")
    if not any(isinstance(f, _NoTrackableNote) for f in absl.filters):
        absl.addFilter(_NoTrackableNote())
    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()]), keys


class _NoTrackableNote(logging.Filter):
    """Drop TensorFlow's note that a concrete function without ``trackable_obj`` takes the frozen-graph path:
    that path is the point (:func:`_frozen_converter`), and the note would print once per exported model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "trackable_obj" not in record.getMessage()


def _with_signature(blob: bytes, keys: Sequence[str]) -> bytes:
    """`blob` with the signature ``serving_default``: inputs by `keys` (the Keras input names, which must
    name the subgraph's input tensors in order), outputs ``output_0``... in the Keras output order (the subgraph's own
    output order, which the frozen function's ``Identity``, ``Identity_1``... names confirm)."""
    from tensorflow.lite.python import schema_py_generated as fb
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    sub = model.subgraphs[0]
    name = {int(i): sub.tensors[i].name.decode() for i in list(sub.inputs) + list(sub.outputs)}
    expected = ["Identity" if j == 0 else f"Identity_{j}" for j in range(len(sub.outputs))]
    got = [name[int(i)].removesuffix("_int8") for i in sub.outputs]
    order = [name[int(i)] for i in sub.inputs]  # the calibration fed inputs in this order: it must be `keys`'
    if order != list(keys) or got != expected:
        raise ConversionError(f"the converted model's inputs {order} / outputs {got} do not match the "
                              f"Keras model's inputs {list(keys)} / {len(expected)} outputs; convert with a "
                              "different TensorFlow version or report it")
    sig = fb.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = b"serving_default", 0
    sig.inputs = [_tensor_map(k, int(i)) for k, i in zip(keys, sub.inputs, strict=True)]
    sig.outputs = [_tensor_map(f"output_{j}", int(i)) for j, i in enumerate(sub.outputs)]
    model.signatureDefs = [sig]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tensor_map(name: str, index: int) -> Any:
    from tensorflow.lite.python import schema_py_generated as fb

    m = fb.TensorMapT()
    m.name, m.tensorIndex = name.encode(), index
    return m


def write(path: Path, blob: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def representative_from(arrays: dict[str, np.ndarray], limit: int = 200) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """A representative_dataset over the first `limit` samples of {key: (N, ...) array}."""
    n = min(limit, len(next(iter(arrays.values()))))

    def gen() -> Iterator[dict[str, np.ndarray]]:
        for i in range(n):
            yield {k: v[i : i + 1] for k, v in arrays.items()}

    return gen
