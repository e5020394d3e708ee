"""The named workloads: a trained model, the frames it sees, and how to build its bundle.

``splitedge reference --list`` prints them (the default first); ``splitedge reference NAME``,
``splitedge demo --workload NAME`` and ``splitedge bench dynamic --workload NAME`` use them.

    resnet50-fashion-224  the default of ``splitedge demo`` and ``bench dynamic``: ResNet-50 at its native 224x224x3
                          (23.6 M parameters, 4.1 GFLOPs), the 128 px weights below fine-tuned here at 224 px:
                          ~200 ms on a Zero 2 W, where the raw frame as JPEG to the cloud answers first over LTE.
    mobilenetv2-fashion   MobileNetV2-1.0 at 224x224x3 (keras.applications architecture, 2.2 M parameters),
                          trained here on camera-like frames of Fashion-MNIST items on photos: the model a Pi
                          camera would run (~35 ms on a Zero 2 W, so it stays on the device over LTE).
    resnet50-fashion      ResNet-50 at 128x128x3 (1.35 GFLOPs: 4.5x MobileNetV2-224), trained here from scratch on
                          the same frames, progressively up to 128 px (docs/WORKLOADS.md).
    digits                the 96x96 digits network (1.1 M parameters, ~1.3 ms whole): the fast test workload.

Every model takes raw camera bytes (uint8) and rescales them in the graph, so the device feeds frames
as they are. Frames come from :mod:`converter.reference_data` (one generator, sized per workload);
nothing is downloaded. The trained artifacts are committed under ``converter/assets/`` with the seeded
script that made them (``scripts/train_workload.py``; the digits model: ``scripts/train_reference.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import BundleError, MissingDependencyError

__all__ = ["ARCHES", "DEFAULT_WORKLOAD", "WORKLOADS", "Workload", "build_model", "for_manifest", "get",
           "load_weights_npz", "names", "save_weights_npz"]

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True, slots=True)
class Workload:
    """One named workload: which model, on which frames."""

    name: str
    description: str
    arch: str  #: a key of ARCHES, or "digits" for the reference model
    frame_size: int
    objects: str  #: reference_data object source: "digits" or "fashion"
    asset: Path  #: the committed, trained model: a .keras, or a float16 .weights.npz for build_model (large models)
    train_command: str

    @property
    def metadata_path(self) -> Path:
        """The JSON the training script wrote next to the artifact (accuracy, seed, command, time)."""
        if self.arch == "digits":
            return ASSETS / "reference_model.json"
        return self.asset.with_name(self.asset.name.split(".")[0] + ".json")

    def model_path(self) -> Path:
        """The trained .keras to convert: the asset itself, or (a float16 .weights.npz) the model rebuilt with
        ``build_model`` and those weights, saved once under $SPLITEDGE_CACHE/models/ keyed by the npz's hash."""
        asset = self.check_asset()
        if asset.suffix == ".keras":
            return asset
        from sdk.manifest import sha256_file

        root = Path(os.environ.get("SPLITEDGE_CACHE", Path.home() / ".cache" / "splitedge")) / "models"
        target = root / f"{self.name}-{sha256_file(asset)[:16]}.keras"
        if not target.is_file():
            model = build_model(self.arch, self.frame_size)
            model.set_weights(load_weights_npz(asset))
            root.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial.keras")
            model.save(partial)
            partial.rename(target)
        return target

    def bundle_dir(self) -> Path:
        """$SPLITEDGE_CACHE (or ~/.cache/splitedge) / reference-bundle for digits, bundle-NAME otherwise."""
        root = Path(os.environ.get("SPLITEDGE_CACHE", Path.home() / ".cache" / "splitedge"))
        return root / ("reference-bundle" if self.name == "digits" else f"bundle-{self.name}")

    def class_names(self) -> tuple[str, ...]:
        from converter.reference_data import FASHION_CLASSES

        return FASHION_CLASSES if self.objects == "fashion" else tuple(str(d) for d in range(10))

    def frames(self, n: int, seed: int, split: str = "test") -> Any:
        """``reference_data.Frames`` of this workload's size and objects."""
        from converter.reference_data import generate

        return generate(n, seed, split, size=self.frame_size, objects=self.objects)

    def check_asset(self) -> Path:
        if not self.asset.is_file():
            raise BundleError(f"workload {self.name!r}: its trained model {self.asset} is missing; "
                              f"re-create it with: {self.train_command}")
        return self.asset


def save_weights_npz(model: Any, path: Path) -> Path:
    """Every weight of ``model`` as float16 in one compressed .npz (``w0000``, ``w0001``... in get_weights order):
    half the bytes of a .keras, for committing large models; BatchNorm variances stay float32 (tiny, and
    float16 would flush small ones)."""
    import numpy as np

    arrays = {}
    for i, w in enumerate(model.get_weights()):
        w = np.asarray(w)
        arrays[f"w{i:04d}"] = w if w.ndim == 1 else w.astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_weights_npz(path: Path) -> list[Any]:
    """The weights ``save_weights_npz`` wrote, as float32, in order."""
    import numpy as np

    with np.load(path) as data:
        return [data[k].astype(np.float32) for k in sorted(data.files)]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("mobilenetv2-fashion", "MobileNetV2-1.0 224x224 on Fashion-MNIST items over photos",
                 "mobilenetv2", 224, "fashion", ASSETS / "mobilenetv2_fashion.keras",
                 "python scripts/train_workload.py --arch mobilenetv2"),
        Workload("resnet50-fashion", "ResNet-50 at 128x128 on the same frames (the device-far-too-slow end: "
                 "4.5x MobileNetV2-224's FLOPs)",
                 "resnet50", 128, "fashion", ASSETS / "resnet50_fashion.weights.npz",
                 "python scripts/train_workload.py --arch resnet50"),
        Workload("resnet50-fashion-224", "ResNet-50 at its native 224x224, fine-tuned there from the 128 px weights "
                 "(the main demo's workload, where the device is slow enough for the cloud to pay over LTE)",
                 "resnet50", 224, "fashion", ASSETS / "resnet50_fashion_224.weights.npz",
                 "python scripts/train_workload.py --arch resnet50 --learning-rate 4e-4 --resume-from "
                 "converter/assets/resnet50_fashion.weights.npz --stages 224:3:5000:0.3 --test-frames 500 "
                 "--out converter/assets/resnet50_fashion_224.weights.npz"),
        Workload("digits", "96x96 digits network, 1.1 M parameters (the fast test workload)",
                 "digits", 96, "digits", ASSETS / "reference.keras", "python scripts/train_reference.py"),
    )
}
#: The workload of `splitedge demo` and `splitedge bench dynamic` when none is named.
DEFAULT_WORKLOAD = "resnet50-fashion-224"


def names() -> list[str]:
    """Workload names, the default first."""
    return [DEFAULT_WORKLOAD, *(n for n in WORKLOADS if n != DEFAULT_WORKLOAD)]


def get(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise BundleError(f"unknown workload {name!r}; expected one of {', '.join(names())} "
                          "(splitedge reference --list)") from None


def for_manifest(manifest: Any) -> Workload | None:
    """The workload a bundle was built from (its manifest's ``data_source``), or None for a user's bundle."""
    source = str(manifest.extra.get("data_source", ""))
    if source.startswith("workload "):
        return WORKLOADS.get(source[len("workload "):].split(":", 1)[0])
    if source.startswith("reference_data.make_frames("):
        return WORKLOADS["digits"]
    return None


#: arch -> (keras.applications constructor name, model name)
ARCHES: dict[str, tuple[str, str]] = {
    "mobilenetv2": ("MobileNetV2", "mobilenetv2_fashion"),
    "resnet50": ("ResNet50", "resnet50_fashion"),
}


def build_model(arch: str, size: int, num_classes: int = 10) -> Any:
    """The untrained keras.applications architecture on a uint8 (size, size, 3) frame -> logits.

    The frame is rescaled to 0..1 in the graph (exactly representable in int8, as in the digits model),
    and the architecture is built on that tensor (``input_tensor=``), so the model is one flat functional
    graph the converter can cut anywhere. Layer names do not depend on ``size``: weights trained at a low
    resolution load into the model at 224 (``set_weights``).
    """
    try:
        import keras
    except ImportError as exc:
        raise MissingDependencyError.for_extra("tensorflow", "convert") from exc
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {sorted(ARCHES)}, got {arch!r}")
    constructor, name = ARCHES[arch]
    frame = keras.Input((size, size, 3), dtype="uint8", name="frame")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(frame)
    base = getattr(keras.applications, constructor)(
        input_tensor=x, weights=None, classes=num_classes, classifier_activation=None, include_top=True
    )
    for layer in base.layers:  # keras.applications' 0.999 needs thousands of steps to settle: train here is short
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.99
    return keras.Model(frame, base.output, name=name)
