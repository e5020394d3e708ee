"""Step 3: export TFLite models: full-integer int8 heads and exits, float tails.

The int8 recipe is the one measured to work here (../shared/PLATFORM.md): ``from_keras_model`` +
``representative_dataset`` + ``TFLITE_BUILTINS_INT8``, uint8 frames in (a uint8 Keras input passes
raw camera bytes straight in), int8 tensors out. Signature keys name every input and output, so
multi-output heads are mapped by name (``output_0``... in the Keras output order), never by position.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
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

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[input_type]
    conv.inference_output_type = tf.int8
    with _quiet():
        return bytes(conv.convert())


def export_float(model: Any) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    with _quiet():
        return bytes(conv.convert())


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
