"""Float-input models: fold their input preprocessing into the graph so the camera still sends raw uint8.

``--preprocess`` names one of the ``keras.applications`` ``preprocess_input`` modes, or an explicit affine map:

    none           model input = x                                  (the model rescales inside, e.g. EfficientNet)
    tf             model input = x / 127.5 - 1                      (MobileNet V1/V2, ResNetV2, Inception, NASNet)
    torch          model input = (x / 255 - mean) / std per channel (DenseNet; ImageNet mean and std)
    caffe          model input = x[..., ::-1] - ImageNet BGR mean   (ResNet50: RGB -> BGR, no scaling)
    SCALE,OFFSET   model input = x * SCALE + OFFSET

:func:`parse_preprocess` is pure (no TensorFlow: the CLI checks the flag before the import). :func:`fold_into`
builds a new uint8 input, a ``Rescaling`` with the per-channel scale and offset (and, for caffe, a channel
flip op), then re-calls the model's own layers on it with :func:`converter.graph.replay`, the one mechanism
that also flattens nested models. The int8 heads then take the frame's bytes with quantization (1.0, 0).
"""

from __future__ import annotations

from typing import Any

from sdk.errors import ConversionError
from sdk.manifest import Preprocess, PreprocessMode

__all__ = ["IMAGENET_BGR_MEAN", "IMAGENET_MEAN", "IMAGENET_STD", "fold_into", "parse_preprocess",
           "unfed_range_warning"]

#: keras.applications.imagenet_utils: torch mode (RGB, on x / 255) and caffe mode (BGR, on 0..255 values)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)

CHOICES = "none, tf, torch, caffe or SCALE,OFFSET (e.g. 0.00392,0 for x/255)"


def parse_preprocess(text: str | Preprocess | None, channels: int | None = None) -> Preprocess | None:
    """The Preprocess for a ``--preprocess`` value (None stays None: the caller decides what that means).

    `channels` (when known) sizes the per-channel scale and offset; torch and caffe need 3 (RGB) channels.
    """
    if text is None or isinstance(text, Preprocess):
        return text
    value = text.strip().lower()
    if value in ("tf", "torch", "caffe") and channels not in (None, 3):
        raise ConversionError(f"--preprocess {value}: the model input has {channels} channels; {value} mode is "
                              "for RGB (3 channels): pass SCALE,OFFSET instead")
    n = channels or 3
    if value == "none":
        return Preprocess(PreprocessMode.NONE, (1.0,) * n, (0.0,) * n)
    if value == "tf":
        return Preprocess(PreprocessMode.TF, (1 / 127.5,) * n, (-1.0,) * n)
    if value == "torch":
        return Preprocess(PreprocessMode.TORCH, tuple(1 / (255.0 * s) for s in IMAGENET_STD),
                          tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)))
    if value == "caffe":
        return Preprocess(PreprocessMode.CAFFE, (1.0,) * 3, tuple(-m for m in IMAGENET_BGR_MEAN), flip_channels=True)
    parts = value.split(",")
    try:
        scale, offset = (float(p) for p in parts)
    except ValueError:
        raise ConversionError(f"--preprocess {text!r}: expected {CHOICES}") from None
    if scale == 0.0 or scale != scale or offset != offset:
        raise ConversionError(f"--preprocess {text!r}: the scale must be a nonzero number; expected {CHOICES}")
    return Preprocess(PreprocessMode.AFFINE, (scale,) * n, (offset,) * n)


def with_channels(spec: Preprocess, channels: int) -> Preprocess:
    """`spec` sized to the model's channel count (the CLI parses it before the model is loaded)."""
    if len(spec.scale) == channels:
        return spec
    if spec.mode in (PreprocessMode.TORCH, PreprocessMode.CAFFE, PreprocessMode.TF):
        parse_preprocess(spec.mode.value, channels)  # raises for torch/caffe on a non-RGB model
    return Preprocess(spec.mode, (spec.scale[0],) * channels, (spec.offset[0],) * channels, spec.flip_channels,
                      spec.model_dtype)


def unfed_range_warning(model_name: str, dtype: str) -> str:
    """The warning for a float-input model converted without --preprocess (fed 0..255 as floats)."""
    return (f"model {model_name!r} takes {dtype} input and no --preprocess was given: it will be fed the camera's "
            "raw 0..255 uint8 values as floats, unscaled. If it was trained on preprocessed inputs (e.g. [-1, 1]), "
            f"its answers will be wrong: pass --preprocess {{tf,torch,caffe}} or SCALE,OFFSET "
            "(or --preprocess none to silence this when 0..255 is right)")


def fold_into(model: Any, spec: Preprocess) -> Any:
    """A keras.Model: uint8 frame -> Rescaling(scale, offset) [-> channel flip] -> `model`'s layers (shared weights)."""
    import keras

    from converter.graph import replay

    src = model.inputs[0]
    name = str(src._keras_history[0].name)
    frame = keras.Input(shape=src.shape[1:], dtype="uint8", name=name)
    scale, offset = list(spec.scale), list(spec.offset)
    if spec.flip_channels:  # Rescaling runs on RGB, then the flip: flip(x) * s + o == flip(x * s[::-1] + o[::-1])
        scale, offset = scale[::-1], offset[::-1]
    scalar = len(set(scale)) == 1 and len(set(offset)) == 1
    x = keras.layers.Rescaling(scale[0] if scalar else scale, offset[0] if scalar else offset,
                               dtype=str(src.dtype), name=f"{name}_preprocess")(frame)
    if spec.flip_channels:
        x = keras.ops.flip(x, axis=-1)  # an ops.Flip node: REVERSE_V2 in TFLite, no weights, splittable
    outs = replay(model, [x])
    return keras.Model(frame, outs if len(outs) > 1 else outs[0], name=model.name)
