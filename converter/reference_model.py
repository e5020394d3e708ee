"""The reference model: a small MobileNetV2-like digit classifier for 96x96 camera frames.

Every demo, test and benchmark of splitedge splits this network. It takes raw camera bytes
(``uint8``, 96x96x3) and does its own preprocessing inside the graph (``Rescaling(1/127.5, -1)``),
so an int8 TFLite head calibrated on 0..255 gets the input quantization (1.0, 0) and the device
feeds frames straight in. Its inverted-residual blocks have *natural bottlenecks*: every block's
linear projection is smaller in bytes than the 27,648-byte frame, shrinking down the network
(48x48x8 -> 24x24x16 -> 12x12x24 -> 6x6x32), and the stride-1 blocks end in an ``Add`` so a cut
inside them carries two tensors. It outputs logits (no softmax), named ``logits``.

Only built-in Keras layers are used, so ``keras.models.load_model`` needs no custom objects.
The trained artifact is ``converter/assets/reference.keras``, made by
``scripts/train_reference.py`` (see docs/REFERENCE_MODEL.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sdk.errors import BundleError, MissingDependencyError

if TYPE_CHECKING:
    import keras

__all__ = ["ASSET_PATH", "FRAME_SHAPE", "INPUT_NAME", "METADATA_PATH", "OUTPUT_NAME", "build", "load"]

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
)
STEM_CHANNELS = 16
HEAD_CHANNELS = 96


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


def build(num_classes: int = 10) -> keras.Model:
    """The untrained reference architecture: uint8 frame (96, 96, 3) -> ``num_classes`` logits."""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    keras = _keras()
    layers = keras.layers
    frame = keras.Input(FRAME_SHAPE, dtype="uint8", name=INPUT_NAME)
    # Rescaling casts its input to float32 itself, so the raw bytes go in and 0..255 -> -1..1.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(frame)
    x = _conv_bn_relu6(x, STEM_CHANNELS, 3, 2, "stem")
    for index, (expansion, filters, stride) in enumerate(BLOCKS, start=1):
        x = _inverted_residual(x, expansion, filters, stride, index)
    x = _conv_bn_relu6(x, HEAD_CHANNELS, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    logits = layers.Dense(num_classes, name=OUTPUT_NAME)(x)
    return keras.Model(frame, logits, name="splitedge_reference")


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
