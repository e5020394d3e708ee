"""The bundle's manifest: schema, loading, validation and file hashes (numpy-free, stdlib only).

A bundle is a folder::

    BUNDLE/
      manifest.json            this schema (``schema_version`` below)
      cut_003/head.tflite      int8 head: uint8 frame in, int8 tensors out (signature keys output_0..)
      cut_003/tail.tflite      float tail: the dequantized tensors in (signature keys = tensor names)
      cut_003/exit.tflite      int8 early-exit classifier on the head's tensors
      ...

Rule for unknown keys: the manifest is written by the converter and read by every side, so an unknown
key is an error (``ManifestError`` naming the key and its place) unless it sits under an ``extra`` field.
A newer ``schema_version`` is refused with the version this code reads; loading checks the sha256 of
every file listed, so a missing, truncated or tampered file is refused with its name and expected hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from sdk.errors import IntegrityError, ManifestError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "AccuracyAtBits",
    "CutKind",
    "CutSpec",
    "ExitBudget",
    "ExitPoint",
    "FileRef",
    "InputSpec",
    "LabelsSource",
    "LayerProfile",
    "Manifest",
    "Preprocess",
    "PreprocessMode",
    "TensorSpec",
    "load_manifest",
    "sha256_file",
]


class CutKind(StrEnum):
    """Where the work happens for a cut."""

    RAW = "raw"  # s = 0: the raw frame goes to the cloud, which runs the whole model
    SPLIT = "split"  # 0 < s < n: head on the device, tail in the cloud
    DEVICE = "device"  # s = n: all on the device, nothing sent


class LabelsSource(StrEnum):
    """Where the accuracy figures' labels came from."""

    LABELS = "labels"  # the calibration data had labels
    FLOAT_MODEL = "float_model_predictions"  # no labels: the float model's own top-1 stands in


@dataclass(frozen=True, slots=True)
class FileRef:
    path: str  # relative to the bundle folder, forward slashes
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor crossing a cut, as the int8 head emits it."""

    name: str  # the producing layer's name; also the tail's and the exit's input key
    shape: tuple[int, ...]  # without the batch dimension
    dtype: str  # "int8" for split cuts, "uint8" for the raw frame
    scale: float
    zero_point: int
    head_output: str  # the head's signature output key (output_0, ...): mapped by name, not position
    exit_scale: float = 0.0  # the early exit's input quantization for this tensor (0 when no exit)
    exit_zero_point: int = 0

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass(frozen=True, slots=True)
class AccuracyAtBits:
    bits: int
    accuracy: float  # int8 head -> n-bit requantized -> float tail, vs labels
    agreement: float  # top-1 agreement with the float model


@dataclass(frozen=True, slots=True)
class ExitPoint:
    """One point of the early exit's accuracy-vs-coverage curve (on the held-out split)."""

    tau: float
    coverage: float  # fraction answered locally (confidence >= tau)
    accuracy: float  # accuracy on the frames answered locally (1.0 when coverage is 0)


@dataclass(frozen=True, slots=True)
class ExitBudget:
    """Where the early exit pays at one bit width: the fewest escalations within an accuracy budget.

    Measured frame by frame on the held-out split (converter/early_exit.py ``budget_point``): the exit
    answers the frames with ``confidence >= tau``, the tail (fed at ``bits``) the others; ``accuracy`` is
    that combined top-1, at most ``budget`` below the manifest's ``float_accuracy`` when ``met``. Then
    E[T] = T_dev + escalation_rate * T_esc (sdk.planner.cascade_latency). Older bundles have none (the field is optional).
    """

    bits: int
    budget: float  # allowed drop below the float model's accuracy (0.01 = 1 percentage point)
    tau: float  # answer locally when confidence >= tau (1.0: escalate every frame)
    escalation_rate: float  # q: the share of held-out frames escalated at tau
    accuracy: float  # combined top-1 at tau: the exit on kept frames, the tail on escalated ones
    met: bool  # False: even escalating every frame stays below float_accuracy - budget


@dataclass(frozen=True, slots=True)
class CutSpec:
    index: int  # s: 0 = raw frame, n = all on device; also the wire's cut id
    name: str  # the layer the cut follows ("raw" for s = 0)
    kind: CutKind
    tensors: tuple[TensorSpec, ...]
    bytes_at_bits: dict[str, int]  # "8"/"6"/"4"/"2" -> payload bytes (raw cut: "raw" -> frame bytes)
    compressive_bits: tuple[int, ...]  # bit widths at which this cut is a compressive bottleneck
    head_flops: int
    tail_flops: int
    head_weight_bytes: int
    head_peak_activation_bytes: int
    head_ms: float  # LiteRT on the converting host, batch 1, 1 thread (board threads on the board itself)
    tail_ms: float
    exit_ms: float
    float_accuracy: float
    accuracy: tuple[AccuracyAtBits, ...]
    exit_curve: tuple[ExitPoint, ...]
    exit_temperature: float
    exit_accuracy: float  # the early exit's top-1 over all held-out frames
    head: FileRef | None = None
    tail: FileRef | None = None
    exit: FileRef | None = None
    exit_budget: tuple[ExitBudget, ...] = ()  # per bit width (split cuts); empty in older bundles

    def accuracy_at(self, bits: int) -> AccuracyAtBits | None:
        for a in self.accuracy:
            if a.bits == bits:
                return a
        return None

    def exit_budget_at(self, bits: int) -> ExitBudget | None:
        """The exit's operating point at ``bits`` (field ``exit_budget``), or None (no exit, an older bundle)."""
        for b in self.exit_budget:
            if b.bits == bits:
                return b
        return None

    def payload_bytes(self, bits: int) -> int:
        if self.kind is CutKind.DEVICE:
            return 0
        if self.kind is CutKind.RAW:
            return int(self.bytes_at_bits["raw"])
        return int(self.bytes_at_bits[str(bits)])


class PreprocessMode(StrEnum):
    """How the float model's input was made from the uint8 frame (``splitedge convert --preprocess``)."""

    NONE = "none"  # the model takes the 0..255 values as floats
    TF = "tf"  # x / 127.5 - 1
    TORCH = "torch"  # (x / 255 - ImageNet mean) / std, per channel
    CAFFE = "caffe"  # RGB -> BGR, minus the ImageNet BGR mean
    AFFINE = "affine"  # x * scale + offset (--preprocess scale,offset)


@dataclass(frozen=True, slots=True)
class Preprocess:
    """The preprocessing folded into every head and the raw cut's tail: the frame stays raw uint8 bytes.

    model input = frame[..., ::-1 if flip_channels] * scale + offset, with scale and offset per channel
    (in the model's channel order, after the flip).
    """

    mode: PreprocessMode
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    flip_channels: bool = False
    model_dtype: str = "float32"  # the original model's input dtype


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]  # H, W, C
    dtype: str  # uint8
    preprocess: Preprocess | None = None  # None: the model itself takes uint8 frames (and bundles before 2026-12)

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


@dataclass(frozen=True, slots=True)
class LayerProfile:
    index: int  # position in topological order (1-based; 0 is the input)
    name: str
    type: str
    output_shapes: tuple[tuple[int, ...], ...]
    flops: int
    out_bytes_f32: int
    out_bytes_i8: int
    weight_bytes_f32: int
    weight_bytes_i8: int


@dataclass(frozen=True, slots=True)
class Manifest:
    schema_version: int
    bundle_id: str  # hex sha256 over every model file's hash: identifies the bundle on the wire (first 8 hex)
    created_by: str
    model_name: str
    model_sha256: str
    num_classes: int
    input: InputSpec
    labels_source: LabelsSource
    board: str
    threads: int
    host: str
    bits: tuple[int, ...]
    n_calib: int
    n_eval: int
    float_accuracy: float
    layers: tuple[LayerProfile, ...]
    cuts: tuple[CutSpec, ...]
    files: tuple[FileRef, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wire_bundle_id(self) -> int:
        """The u32 that travels in every frame header."""
        return int(self.bundle_id[:8], 16)

    def cut(self, index: int) -> CutSpec:
        for c in self.cuts:
            if c.index == index:
                return c
        known = ", ".join(str(c.index) for c in self.cuts)
        raise KeyError(f"cut {index} is not in this bundle (cuts: {known})")

    @property
    def device_cut(self) -> CutSpec | None:
        return next((c for c in self.cuts if c.kind is CutKind.DEVICE), None)

    @property
    def raw_cut(self) -> CutSpec | None:
        return next((c for c in self.cuts if c.kind is CutKind.RAW), None)

    @property
    def device_files(self) -> tuple[FileRef, ...]:
        """The files a device runs (every cut's head and exit), in ``files`` order: what a rollout sends it.
        Tails run in the cloud only."""
        used = {ref.path for c in self.cuts for ref in (c.head, c.exit) if ref is not None}
        return tuple(ref for ref in self.files if ref.path in used)

    @property
    def tail_files(self) -> tuple[FileRef, ...]:
        """The files a tail worker runs (every cut's tail), in ``files`` order."""
        used = {c.tail.path for c in self.cuts if c.tail is not None}
        return tuple(ref for ref in self.files if ref.path in used)

    @property
    def version(self) -> str:
        """A label for people: ``extra["version"]`` when the bundle has one, else the first 8 hex of bundle_id."""
        v = self.extra.get("version")
        return str(v) if v not in (None, "") else self.bundle_id[:8]

    @property
    def metric(self) -> str:
        """What the AccuracyAtBits figures measure: "accuracy" (labels) or "agreement" (with the float model)."""
        return "accuracy" if self.labels_source is LabelsSource.LABELS else "agreement"

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "manifest") -> Manifest:
        if not isinstance(data, Mapping):
            raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{where}: schema_version {version!r} is not the one this splitedge reads ({SCHEMA_VERSION}); "
                "re-convert the model with this version (splitedge convert ... --force) or upgrade splitedge"
            )
        return _build(cls, data, where)


_ENUMS: dict[str, Any] = {"kind": CutKind, "labels_source": LabelsSource, "mode": PreprocessMode}


def _build(cls: Any, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where}: expected an object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ManifestError(
            f"{where}: unknown key(s) {unknown} in {cls.__name__}; allowed: {sorted(names)}. "
            "The bundle was written by another splitedge version: re-convert it"
        )
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is not MISSING or f.default_factory is not MISSING:
                continue
            raise ManifestError(f"{where}: missing key {f.name!r} in {cls.__name__}; re-convert the bundle")
        kwargs[f.name] = _value(f.name, str(f.type), data[f.name], f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ManifestError(f"{where}: {exc}") from exc


def _value(name: str, type_: str, value: Any, where: str) -> Any:
    sub = _nested_class(type_)
    if sub is not None and value is not None:
        if type_.startswith("tuple["):
            if not isinstance(value, list):
                raise ManifestError(f"{where}: expected a list of {sub.__name__}, got {value!r}")
            return tuple(_build(sub, v, f"{where}[{i}]") for i, v in enumerate(value))
        return _build(sub, value, where)
    if name in _ENUMS:
        try:
            return _ENUMS[name](value)
        except ValueError:
            allowed = [e.value for e in _ENUMS[name]]
            raise ManifestError(f"{where}: {value!r} is not one of {allowed}") from None
    if type_.startswith("tuple[int"):
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise ManifestError(f"{where}: expected a list of integers, got {value!r}")
        return tuple(value)
    if type_.startswith("tuple[float"):
        if not isinstance(value, list) or not all(isinstance(v, int | float) and v is not True and v is not False
                                                  for v in value):
            raise ManifestError(f"{where}: expected a list of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if type_ in ("int", "float") and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ManifestError(f"{where}: expected a number, got {value!r}")
    if type_ == "bool" and not isinstance(value, bool):
        raise ManifestError(f"{where}: expected true or false, got {value!r}")
    if type_ == "str" and not isinstance(value, str):
        raise ManifestError(f"{where}: expected a string, got {value!r}")
    if name == "output_shapes":
        return tuple(tuple(s) for s in value)
    return value


def _nested_class(type_: str) -> Any:
    """The manifest dataclass named in a field's annotation ('tuple[CutSpec, ...]', 'FileRef | None')."""
    head = type_.removeprefix("tuple[").split(",")[0].split("|")[0].strip(" ]")
    return _DATACLASSES.get(head)


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, StrEnum):
        return obj.value
    return obj


_DATACLASSES: dict[str, Any] = {
    c.__name__: c
    for c in (FileRef, TensorSpec, AccuracyAtBits, ExitPoint, ExitBudget, CutSpec, InputSpec, LayerProfile, Preprocess)
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(root: Path, files: tuple[FileRef, ...]) -> None:
    """Raise IntegrityError naming the first file that is missing, truncated or tampered."""
    for ref in files:
        path = root / ref.path
        if not path.is_file():
            raise IntegrityError(
                f"bundle {root}: file {ref.path} is missing (expected sha256 {ref.sha256}, {ref.size} bytes); "
                "copy the whole bundle folder again or re-convert it"
            )
        size = path.stat().st_size
        if size != ref.size:
            raise IntegrityError(
                f"bundle {root}: file {ref.path} has {size} bytes, the manifest says {ref.size} "
                f"(expected sha256 {ref.sha256}); it is truncated or replaced: copy the bundle again"
            )
        digest = sha256_file(path)
        if digest != ref.sha256:
            raise IntegrityError(
                f"bundle {root}: file {ref.path} has sha256 {digest}, expected {ref.sha256}; "
                "it was modified after conversion: copy the bundle again or re-convert it"
            )


def load_manifest(bundle: str | Path, *, verify: bool = True, trust: str | Path | None = None) -> Manifest:
    """Read BUNDLE/manifest.json, validate its schema and (by default) every file's sha256.

    With ``trust`` (an Ed25519 public key PEM: ``--trust``), BUNDLE/manifest.sig must first be that key's
    signature of the manifest's exact bytes (sdk/signing.py), else BundleSignatureError; the bytes checked
    are the bytes parsed. This is the one place device, cloud and verify load a bundle.
    """
    root = Path(bundle)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ManifestError(
            f"bundle {root} is not a folder; expected the folder written by 'splitedge convert --out {root}'"
        )
    if not path.is_file():
        raise ManifestError(f"bundle {root} has no {MANIFEST_NAME}; it is not a splitedge bundle (re-convert it)")
    raw = path.read_bytes()
    if trust is not None:
        from sdk.signing import verify_manifest_bytes

        verify_manifest_bytes(root, raw, trust)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc}); the file is truncated or corrupt: re-convert") from exc
    manifest = Manifest.from_dict(data, where=str(path))
    referenced = {ref.path for c in manifest.cuts for ref in (c.head, c.tail, c.exit) if ref is not None}
    listed = {ref.path for ref in manifest.files}
    if referenced - listed:
        raise ManifestError(f"{path}: files {sorted(referenced - listed)} are used by cuts but not hashed in 'files'")
    if verify:
        verify_files(root, manifest.files)
    return manifest
