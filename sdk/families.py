"""Workload families: which of a board's speed factors a bundle's head times are stretched by.

A board profile's ``speed_factor`` is defined on MobileNetV2 224 int8 (firmware_configs/README.md). The
int8 kernels do not speed every operation up by the same amount, on the board or on the emulating host,
so a network built from other operations can stretch by another factor: the optional
``[board.speed_factor_by_family]`` table holds those (`sdk.config.BoardSpec.factor_for`). A bundle's
family comes from its ``manifest.model_name`` (the Keras model's name) through :func:`model_family`.

Only the name is used (no heavy import, no graph): the patterns below match the names that
``keras.applications`` and this project give their models, case-insensitively; anything else is
:attr:`ModelFamily.DEFAULT`.
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["ModelFamily", "model_family"]


class ModelFamily(StrEnum):
    """A family of networks whose int8 speed-up is alike; the keys of ``[board.speed_factor_by_family]``."""

    MOBILENET = "mobilenet"  # depthwise + pointwise convolutions: MobileNet V1-V3, MnasNet, NASNet-Mobile, the reference model
    EFFICIENTNET = "efficientnet"  # MBConv (depthwise + pointwise) with squeeze-excitation and swish
    RESNET = "resnet"  # dense 3x3 (and 1x1 bottleneck) convolutions: ResNet, ResNetV2, VGG
    DENSENET = "densenet"  # dense blocks of 1x1 + 3x3 convolutions joined by concatenation
    INCEPTION = "inception"  # parallel 1x1 / 3x3 / 5x5 branches: GoogLeNet, InceptionV3, Inception-ResNet, Xception
    DEFAULT = "default"  # anything else


#: (pattern on the lower-cased model name, family), first match wins: "inception_resnet_v2" is an
#: Inception network, "splitedge_reference" is the MobileNetV2-like reference model (converter/reference_model.py).
_PATTERNS: tuple[tuple[re.Pattern[str], ModelFamily], ...] = (
    (re.compile(r"inception|googlenet|xception"), ModelFamily.INCEPTION),
    (re.compile(r"efficientnet"), ModelFamily.EFFICIENTNET),
    (re.compile(r"mobilenet|mnasnet|nasnet|splitedge_reference|reference_digits"), ModelFamily.MOBILENET),
    (re.compile(r"densenet"), ModelFamily.DENSENET),
    (re.compile(r"resnet|resnext|vgg"), ModelFamily.RESNET),
)


def model_family(model_name: str | None) -> ModelFamily:
    """The family of a model by its name (``manifest.model_name``): ``"mobilenetv2_1.00_224"`` -> MOBILENET,
    ``"resnet50"`` -> RESNET, ``"efficientnetb0"`` -> EFFICIENTNET; unknown names and None -> DEFAULT."""
    name = (model_name or "").lower()
    for pattern, family in _PATTERNS:
        if pattern.search(name):
            return family
    return ModelFamily.DEFAULT
