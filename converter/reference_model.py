"""The reference model: a MobileNetV2-like digit classifier for 96x96 camera frames.

Every demo, test and benchmark of splitedge splits this network. It takes raw camera bytes
(``uint8``, 96x96x3) and does its own preprocessing inside the graph (``Rescaling(1/255)``, exactly
representable in int8), so the device feeds frames straight in. Its inverted-residual blocks have
*natural bottlenecks*: the light front's block projections are smaller in bytes than the
27,648-byte frame and shrink down the network (48x48x8 -> 24x24x16 -> 12x12x24 -> 6x6x32); the
stride-1 blocks end in an ``Add`` so a cut inside them carries two tensors. Behind the last
bottleneck, wide blocks at 6x6 (96-160 channels, expansion 6) and a 640-channel head hold most of
the FLOPs: cutting at the 1,152-byte bottleneck leaves the camera a small part of the work, which
is what makes the split worth planning on a slow board. It outputs logits (no softmax), named
``logits``.

Only built-in Keras layers are used, so ``keras.models.load_model`` needs no custom objects.
The trained artifact is ``converter/assets/reference.keras``, made in two stages by
``scripts/train_reference.py`` (see docs/REFERENCE_MODEL.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sdk.errors import BundleError, MissingDependencyError

if TYPE_CHECKING:
    import keras

__all__ = [
    "ASSET_PATH", "FRAME_SHAPE", "INPUT_NAME", "METADATA_PATH", "OUTPUT_NAME", "build", "build_stage1", "load",
    "transfer_stage1",
]

#: The committed, trained artifact and its metadata (accuracy, seed, command).
ASSET_PATH: Path = Path(__file__).parent / "assets" / "reference.keras"
METADATA_PATH: Path = Path(__file__).parent / "assets" / "reference_model.json"

FRAME_SHAPE: tuple[int, int, int] = (96, 96, 3)
INPUT_NAME = "frame"
OUTPUT_NAME = "logits"

#: (expansion factor, output channels, stride) of each inverted-residual block, in order.
BLOCKS: tuple[tuple[int, int, int], ...] = (
    (1, 8, 1),  # block_1: 48x48x16 -> 48x48x8   (18,432 B)
    (4, 16, 2),  # block_2: -> 24x24x16            (9,216 B)
    (4, 16, 1),  # block_3: residual
    (4, 24, 2),  # block_4: -> 12x12x24            (3,456 B)
    (4, 24, 1),  # block_5: residual
    (4, 32, 2),  # block_6: -> 6x6x32              (1,152 B)
    (4, 32, 1),  # block_7: residual
    # The cloud-heavy back end: wide blocks at 6x6, where most of the FLOPs are, so a cut at the
    # 1,152-byte bottleneck above leaves the device little work and the cloud most of it.
    (6, 96, 1),  # block_8: 6x6x96
    (6, 96, 1),  # block_9: residual
    (6, 160, 1),  # block_10: 6x6x160
    (6, 160, 1),  # block_11: residual
    (6, 160, 1),  # block_12: residual
)
STEM_CHANNELS = 16
HEAD_CHANNELS = 640
#: The first training stage (the earlier light model): blocks 1-7 and a 96-channel head.
STAGE1_BLOCKS = 7
STAGE1_HEAD_CHANNELS = 96


def _keras() -> object:
    try:
        import keras
    except ImportError as exc:
        raise MissingDependencyError.for_extra("tensorflow", "convert") from exc
    return keras


def _conv_bn_relu6(x: object, filters: int, kernel: int, stride: int, name: str) -> object:
    keras = _keras()
    layers = keras.layers
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def _inverted_residual(x: object, expansion: int, filters: int, stride: int, index: int) -> object:
    """1x1 expand + ReLU6, depthwise 3x3 + ReLU6, 1x1 linear projection, Add when shapes match."""
    keras = _keras()
    layers = keras.layers
    name = f"block_{index}"
    in_channels = int(x.shape[-1])
    y = x
    if expansion != 1:
        y = _conv_bn_relu6(y, in_channels * expansion, 1, 1, f"{name}_expand")
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_depthwise")(y)
    y = layers.BatchNormalization(name=f"{name}_depthwise_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(y)
    y = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def _classifier(frame: object, x: object, head_channels: int, num_classes: int, name: str) -> keras.Model:
    keras = _keras()
    layers = keras.layers
    x = _conv_bn_relu6(x, head_channels, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    logits = layers.Dense(num_classes, name=OUTPUT_NAME)(x)
    return keras.Model(frame, logits, name=name)


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")


def build(num_classes: int = 10) -> keras.Model:
    """The untrained reference architecture: uint8 frame (96, 96, 3) -> ``num_classes`` logits."""
    _check_classes(num_classes)
    keras = _keras()
    frame = keras.Input(FRAME_SHAPE, dtype="uint8", name=INPUT_NAME)
    # Rescaling casts its input to float32 itself, so the raw bytes go in and 0..255 -> 0..1:
    # exactly representable in int8 (scale 1/255, zero point -128), unlike -1..1.
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(frame)
    x = _conv_bn_relu6(x, STEM_CHANNELS, 3, 2, "stem")
    for index, (expansion, filters, stride) in enumerate(BLOCKS, start=1):
        x = _inverted_residual(x, expansion, filters, stride, index)
    return _classifier(frame, x, HEAD_CHANNELS, num_classes, "splitedge_reference")


def build_stage1(num_classes: int = 10) -> keras.Model:
    """The first training stage: the front (stem + blocks 1-7) under a small head, preprocessing -1..1.

    This is the earlier, light reference model (37,578 parameters); ``scripts/train_reference.py``
    trains it first and starts :func:`build`'s front from it (:func:`transfer_stage1`).
    """
    _check_classes(num_classes)
    keras = _keras()
    frame = keras.Input(FRAME_SHAPE, dtype="uint8", name=INPUT_NAME)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(frame)
    x = _conv_bn_relu6(x, STEM_CHANNELS, 3, 2, "stem")
    for index, (expansion, filters, stride) in enumerate(BLOCKS[:STAGE1_BLOCKS], start=1):
        x = _inverted_residual(x, expansion, filters, stride, index)
    return _classifier(frame, x, STAGE1_HEAD_CHANNELS, num_classes, "splitedge_reference_stage1")


def transfer_stage1(stage1: keras.Model, model: keras.Model) -> list[str]:
    """Copy the stage-1 front into ``model`` (same layer names and shapes); return the layers copied.

    The stage-1 input is ``x' = 2u - 1`` (u = bytes / 255); the full model's is ``u``. For the stem
    conv (no bias) ``conv(W, 2u - 1) = conv(2W, u) - sum(W)`` away from the zero-padded border, so
    the stem's kernel is doubled and its batch-norm moving mean shifted by ``sum(W)`` per channel.
    """
    import numpy as np

    copied: list[str] = []
    shift = np.zeros(STEM_CHANNELS, dtype=np.float32)  # set from the stem's kernel, used by stem_bn
    for layer in stage1.layers:
        weights = layer.get_weights()
        if not weights or layer.name in ("head", "head_bn", OUTPUT_NAME):
            continue
        try:
            target = model.get_layer(layer.name)
        except ValueError:
            continue
        if [w.shape for w in target.get_weights()] != [w.shape for w in weights]:
            continue
        if layer.name == "stem":
            kernel = weights[0]
            shift = kernel.sum(axis=(0, 1, 2))
            weights = [2.0 * kernel]
        elif layer.name == "stem_bn":
            gamma, beta, mean, var = weights
            weights = [gamma, beta, mean + shift, var]  # "stem" comes before "stem_bn"
        target.set_weights([np.asarray(w) for w in weights])
        copied.append(layer.name)
    return copied


def load(path: Path | str | None = None) -> keras.Model:
    """Load the committed, trained reference model (or the ``.keras`` file at ``path``)."""
    keras = _keras()
    target = ASSET_PATH if path is None else Path(path)
    if not target.is_file():
        raise BundleError(
            f"reference model not found at {target}; expected a .keras file. "
            "Re-create it with: python scripts/train_reference.py"
        )
    return keras.models.load_model(target, compile=False)
