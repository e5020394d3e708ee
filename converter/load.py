"""Model intake: what users have on disk -> a Keras model, or one line saying what to do instead.

The format is read from the first bytes, not the suffix, so a file named ``model.bin`` or ``best`` loads
as what it is:

    b"PK\\x03\\x04"           a Keras 3 ``.keras`` archive (a zip)
    b"\\x89HDF\\r\\n\\x1a\\n"    an HDF5 file (Keras 2/3 ``model.save("x.h5")``)
    folder + saved_model.pb  a TensorFlow SavedModel: Keras 3 only wraps it as an opaque ``TFSMLayer``,
                             which has no layers to split, so it is refused with the export to do

:func:`sniff_model` needs the standard library only: ``splitedge convert`` runs it (and its other argument
checks) before TensorFlow is imported, so a refused command returns at once. :func:`load_model` imports
Keras and maps every failure to one :class:`~sdk.errors.ConversionError` line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any

from sdk.errors import ConversionError

__all__ = ["HDF5_MAGIC", "ZIP_MAGIC", "ModelFormat", "load_model", "sniff_model"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"

EXPORT_HINT = 'from the code that built the model, save it with model.save("model.keras") (Keras 3)'
EXPECTED = "a Keras 3 .keras file (a zip) or an HDF5 model file (.h5)"


class ModelFormat(StrEnum):
    """A model file format, as recognised from its first bytes."""

    KERAS = "keras"  # Keras 3 zip archive
    HDF5 = "hdf5"  # legacy Keras HDF5


def sniff_model(path: str | Path) -> ModelFormat:
    """The format of the model at `path` from its magic bytes; a precise ConversionError otherwise.

    Reads at most 8 bytes and imports nothing heavy, so it can run before TensorFlow is imported.
    """
    p = Path(path)
    if not p.exists():
        hint = f" (did you mean {p.with_suffix('.keras')}?)" if p.with_suffix(".keras").is_file() else ""
        raise ConversionError(f"model {p} does not exist{hint}; pass {EXPECTED}")
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            raise ConversionError(
                f"model {p} is a TensorFlow SavedModel folder; Keras 3 loads it only as an opaque TFSMLayer, which "
                f"has no layers to split. Expected {EXPECTED}: {EXPORT_HINT} and pass that file"
            )
        raise ConversionError(f"model {p} is a folder without saved_model.pb; expected {EXPECTED}")
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ConversionError(f"model {p} cannot be read ({exc.strerror or exc}); check its permissions") from None
    if head.startswith(ZIP_MAGIC):
        return ModelFormat.KERAS
    if head.startswith(HDF5_MAGIC):
        return ModelFormat.HDF5
    what = "an empty file" if not head else f"a file starting with bytes {head!r}"
    guess = _guess(head, p)
    raise ConversionError(f"model {p} is {what}{guess}; expected {EXPECTED}: {EXPORT_HINT}")


def _guess(head: bytes, p: Path) -> str:
    """A few common wrong files, named, so the message says what was received."""
    if p.suffix in (".tflite", ".lite") or head[4:8] == b"TFL3":
        return " (a TFLite flatbuffer, already converted: splitedge needs the Keras model it came from)"
    if p.suffix == ".pb":
        return " (a TensorFlow graph; pass the Keras model instead)"
    if p.suffix in (".pt", ".pth", ".onnx"):
        return f" (a {p.suffix[1:]} file of another framework)"
    if head.startswith(b"\x80"):
        return " (a Python pickle)"
    return ""


def load_model(path: str | Path) -> Any:
    """The Keras model at `path` (uncompiled), whatever its suffix; one ConversionError line if it cannot be."""
    p = Path(path)
    fmt = sniff_model(p)
    import keras

    target = p
    suffix = ".keras" if fmt is ModelFormat.KERAS else ".h5"
    tmp = None
    try:
        if p.suffix.lower() != suffix and not (fmt is ModelFormat.HDF5 and p.suffix.lower() == ".hdf5"):
            # Keras dispatches on the suffix: show it the file under the right one (a symlink, no copy).
            tmp = tempfile.mkdtemp(prefix="splitedge-load-")
            target = Path(tmp) / f"model{suffix}"
            try:
                os.symlink(p.resolve(), target)
            except OSError:
                shutil.copyfile(p, target)
        model = keras.models.load_model(target, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file; the user gets one line
        said = _one_line(exc).replace(str(target), str(p))  # not the temporary name Keras was shown
        raise ConversionError(f"model {p} ({fmt.value}): Keras cannot load it: {said}; "
                              f"{_load_hint(exc)}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if not isinstance(model, keras.Model):
        raise ConversionError(f"model {p}: holds a {type(model).__name__}, not a keras.Model; {EXPORT_HINT}")
    return model


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _load_hint(exc: BaseException) -> str:
    text = str(exc)
    if "model config" in text or "No model found in config" in text or "model_config" in text:
        return "it holds weights only (save_weights); save the whole model with model.save(\"model.keras\")"
    if "Unknown" in text or "custom_objects" in text or "Could not locate" in text:
        return ("it uses a custom layer this process does not know; register it with "
                "@keras.saving.register_keras_serializable() and import its module, or rebuild the model from "
                "built-in layers")
    if "zip" in text.lower() or "truncated" in text.lower() or "signature" in text.lower():
        return "the file looks truncated or corrupt: copy or save it again"
    return EXPORT_HINT + " with the Keras version installed here"
