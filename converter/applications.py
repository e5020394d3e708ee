"""The keras.applications families a Pi can run, as the converter takes them: constructor, size, preprocessing.

One table for the family tests (tests/test_converter_families.py, small resolutions) and the converter
benchmark (benchmarks/bench_converter.py, native resolutions), so both speak of the same models. Each
entry names the ``--preprocess`` mode of the family's own ``preprocess_input`` (``none`` where the model
rescales inside: EfficientNet, EfficientNetV2, MobileNetV3, ConvNeXt). Models are always built with
``weights=None``: nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAMILIES", "Family", "build"]


@dataclass(frozen=True, slots=True)
class Family:
    """One keras.applications constructor and how to build it natively and small."""

    constructor: str  # attribute of keras.applications
    native: int  # the resolution it was designed for (square)
    preprocess: str  # the --preprocess mode matching keras.applications.<module>.preprocess_input
    small: int = 32  # the smallest resolution the constructor accepts (InceptionV3: 75)
    small_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. a narrow alpha for the fast tests


FAMILIES: dict[str, Family] = {
    "MobileNet": Family("MobileNet", 224, "tf", small_kwargs={"alpha": 0.25}),
    "MobileNetV2": Family("MobileNetV2", 224, "tf", small_kwargs={"alpha": 0.35}),
    "MobileNetV3Small": Family("MobileNetV3Small", 224, "none", small_kwargs={"alpha": 0.75}),
    "MobileNetV3Large": Family("MobileNetV3Large", 224, "none", small_kwargs={"alpha": 0.75}),
    "EfficientNetB0": Family("EfficientNetB0", 224, "none"),
    "EfficientNetB1": Family("EfficientNetB1", 240, "none"),
    "EfficientNetB2": Family("EfficientNetB2", 260, "none"),
    "EfficientNetB3": Family("EfficientNetB3", 300, "none"),
    "EfficientNetB4": Family("EfficientNetB4", 380, "none"),
    "EfficientNetV2B0": Family("EfficientNetV2B0", 224, "none"),
    "EfficientNetV2B1": Family("EfficientNetV2B1", 240, "none"),
    "EfficientNetV2B2": Family("EfficientNetV2B2", 260, "none"),
    "EfficientNetV2B3": Family("EfficientNetV2B3", 300, "none"),
    "ResNet50": Family("ResNet50", 224, "caffe"),
    "ResNet50V2": Family("ResNet50V2", 224, "tf"),
    "DenseNet121": Family("DenseNet121", 224, "torch"),
    "InceptionV3": Family("InceptionV3", 299, "tf", small=75),
    "NASNetMobile": Family("NASNetMobile", 224, "tf"),
    "ConvNeXtTiny": Family("ConvNeXtTiny", 224, "none"),
}


def build(name: str, *, size: int | None = None, small: bool = False, classes: int = 10, seed: int = 0) -> Any:
    """keras.applications `name` with random weights (weights=None), `classes` logits, at `size` px.

    small: the family's smallest resolution and narrowest width, for tests that only read the graph.
    """
    import keras

    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {', '.join(FAMILIES)}")
    fam = FAMILIES[name]
    px = size or (fam.small if small else fam.native)
    keras.utils.set_random_seed(seed)
    kwargs = dict(fam.small_kwargs) if small else {}
    ctor = getattr(keras.applications, fam.constructor)
    return ctor(input_shape=(px, px, 3), weights=None, classes=classes, classifier_activation=None, **kwargs)
