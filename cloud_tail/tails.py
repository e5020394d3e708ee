"""Step 2 of the cloud worker: finish inference. Every cut's float tail, loaded lazily with LiteRT.

A frame is *admitted* (:meth:`TailSet.admit`) before it is queued for a batch: its bundle id must be
this bundle's, its cut must be one with a tail (a RAW or SPLIT cut: a DEVICE cut sends nothing), and
its tensors must be the ones the cut's tail reads, with the shapes the manifest records. A refusal is
a :class:`Refusal` carrying the ErrorCode the device gets back; it is a value, not an exception,
because the worker answers it and carries on.

Raw frames (cut 0) run the raw cut's *float* model (the whole network, uint8 frame in); split cuts
run their tail on the dequantized activation (``Frame.dequantized()``). :meth:`TailSet.run` takes a
batch of admitted frames of one cut and returns their logits (the LiteRT signature runner resizes
the batch dimension).

**Several bundles at once** (:class:`BundleTails`, ``splitedge cloud --bundle A --bundle B``): during a
rollout (docs/CLOUD.md, "Rolling out a bundle") devices switch bundles one by one, and a frame sent just
before its device switched still arrives after; each frame's header names its bundle, so the worker
routes it by that id to that bundle's :class:`TailSet`. An id no loaded bundle has is refused
(``bundle_mismatch``, naming the ids served), never a crash. Batches never mix bundles: the worker keys
them by (bundle id, cut), and :meth:`BundleTails.run` takes frames of one bundle.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sdk.errors import ConfigError
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, CutSpec, Manifest, load_manifest
from sdk.messages import ErrorCode
from sdk.wire import Frame

__all__ = ["BundleTails", "Refusal", "Tails", "TailSet", "softmax", "topk"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a frame cannot be run: the error code the device receives and a human-readable detail."""

    code: ErrorCode
    detail: str


class Tails(Protocol):
    """What the worker needs of a set of tails (a fake one stands in for it in the batching tests)."""

    def admit(self, frame: Frame) -> Refusal | None: ...

    def run(self, cut_id: int, frames: Sequence[Frame]) -> np.ndarray: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(probs: np.ndarray, k: int) -> tuple[tuple[int, float], ...]:
    """The k best ``(class, probability)`` pairs of one row, best first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return tuple((int(i), float(probs[i])) for i in order)


def _fits(got: Sequence[int], spec: Sequence[int]) -> bool:
    """A tensor matches its spec with or without a leading batch dimension of 1 (devices send (1, H, W, C))."""
    got, spec = tuple(int(d) for d in got), tuple(int(d) for d in spec)
    return got == spec or got == (1, *spec)


class TailSet:
    """Every tail of one bundle; a cut's model is loaded on its first frame (thread-safe).

    ``trust`` (an Ed25519 public key PEM, ``splitedge cloud --trust``) is checked when the manifest is loaded
    here (sdk.manifest.load_manifest); a ``manifest`` passed in was loaded, and checked or not, by the caller.
    """

    def __init__(self, bundle: str | Path, *, threads: int = 1, manifest: Manifest | None = None,
                 trust: str | Path | None = None) -> None:
        self.bundle = Path(bundle)
        self.manifest = manifest if manifest is not None else load_manifest(self.bundle, trust=trust)
        self.threads = threads
        self.bundle_id = self.manifest.wire_bundle_id
        self._cuts: dict[int, CutSpec] = {
            c.index: c for c in self.manifest.cuts if c.kind in (CutKind.RAW, CutKind.SPLIT) and c.tail
        }
        self._models: dict[int, LiteRTModel] = {}
        self._lock = threading.Lock()

    @property
    def cut_ids(self) -> tuple[int, ...]:
        """The cuts this worker can finish (RAW and SPLIT cuts with a tail)."""
        return tuple(sorted(self._cuts))

    def model(self, cut_id: int) -> LiteRTModel:
        """The LiteRT model of a cut's tail, loaded on first use."""
        with self._lock:
            model = self._models.get(cut_id)
            if model is None:
                ref = self._cuts[cut_id].tail
                assert ref is not None
                model = LiteRTModel(self.bundle / ref.path, threads=self.threads)
                model.warm_up()  # a fresh interpreter's first invoke is several times slower
                self._models[cut_id] = model
            return model

    def load_all(self) -> None:
        """Load and warm up every tail now (a worker does this before it says it is ready): otherwise the
        first frames of each cut wait for the load, and a device reads that wait as a slow uplink."""
        for cut_id in self.cut_ids:
            self.model(cut_id)

    def admit(self, frame: Frame) -> Refusal | None:
        """None if ``frame`` can run here; else the refusal to send back."""
        h = frame.header
        if h.bundle_id != self.bundle_id:
            return Refusal(
                ErrorCode.BUNDLE_MISMATCH,
                f"frame bundle id 0x{h.bundle_id:08x}; this worker serves bundle 0x{self.bundle_id:08x} "
                f"({self.manifest.model_name}): deploy the same bundle on the device and the workers",
            )
        cut = self._cuts.get(h.cut_id)
        if cut is None:
            return Refusal(
                ErrorCode.UNKNOWN_CUT,
                f"frame cut id {h.cut_id}; this worker has tails for cuts {list(self.cut_ids)} "
                "(a device cut sends nothing): pick one of those cuts",
            )
        if cut.kind is CutKind.RAW:
            spec = cut.tensors[0]
            if len(frame.tensors) != 1 or not h.is_raw:
                return Refusal(
                    ErrorCode.MALFORMED,
                    f"cut {h.cut_id} is the raw cut; expected one raw uint8 tensor with the raw flag, got "
                    f"{len(frame.tensors)} tensor(s), raw flag {h.is_raw}",
                )
            got = tuple(frame.tensors[0].shape)
            if not _fits(got, spec.shape) or frame.tensors[0].data.dtype != np.uint8:
                return Refusal(
                    ErrorCode.MALFORMED,
                    f"raw frame of shape {tuple(got)} {frame.tensors[0].data.dtype}; cut {h.cut_id} expects "
                    f"uint8 {tuple(spec.shape)}",
                )
            return None
        expected = {t.name: tuple(t.shape) for t in cut.tensors}
        got_shapes = {t.name: tuple(t.shape) for t in frame.tensors}
        if got_shapes.keys() != expected.keys() or not all(_fits(got_shapes[k], v) for k, v in expected.items()):
            return Refusal(
                ErrorCode.MALFORMED,
                f"frame tensors {got_shapes}; cut {h.cut_id} ({cut.name}) expects {expected}",
            )
        return None

    def feeds(self, cut_id: int, frames: Sequence[Frame]) -> dict[str, np.ndarray]:
        """The batched inputs of a cut's tail for admitted frames."""
        cut = self._cuts[cut_id]
        if cut.kind is CutKind.RAW:
            spec = cut.tensors[0]
            return {spec.name: np.stack([f.tensors[0].data.reshape(spec.shape) for f in frames])}
        per_frame = [f.dequantized() for f in frames]
        return {t.name: np.stack([d[t.name].reshape(t.shape) for d in per_frame]) for t in cut.tensors}

    def run(self, cut_id: int, frames: Sequence[Frame]) -> np.ndarray:
        """Logits ``(len(frames), classes)`` of admitted frames that all use ``cut_id``."""
        model = self.model(cut_id)
        out = model.run(self.feeds(cut_id, frames))
        return np.asarray(next(iter(out.values())), dtype=np.float32).reshape(len(frames), -1)


class BundleTails:
    """The tails of several bundles, each frame routed by its header's bundle id (module doc).

    ``bundles``: the folders (each loaded and, with ``trust``, signature-checked as :class:`TailSet` does).
    Two folders of one bundle id are refused (:class:`~sdk.errors.ConfigError` naming both): the frames
    could not tell them apart. :meth:`add` loads one more while frames are served (thread-safe).
    """

    def __init__(self, bundles: Sequence[str | Path] = (), *, threads: int = 1,
                 trust: str | Path | None = None) -> None:
        self.threads = threads
        self.trust = trust
        self._sets: dict[int, TailSet] = {}
        self._lock = threading.Lock()
        for b in bundles:
            self.add(b)

    def add(self, bundle: str | Path | TailSet) -> TailSet:
        """Serve one more bundle (a folder, or a TailSet already loaded); returns its TailSet."""
        tails = bundle if isinstance(bundle, TailSet) else TailSet(bundle, threads=self.threads, trust=self.trust)
        with self._lock:
            known = self._sets.get(tails.bundle_id)
            if known is not None and known.manifest.bundle_id != tails.manifest.bundle_id:
                raise ConfigError(
                    f"bundles {known.bundle} and {tails.bundle} share the wire bundle id 0x{tails.bundle_id:08x} "
                    "(the first 8 hex digits of their bundle_id) but differ: frames could not tell them apart; "
                    "serve one of them only"
                )
            if known is not None:
                return known
            self._sets = {**self._sets, tails.bundle_id: tails}  # copy on write: admit/run read without the lock
        return tails

    @property
    def bundle_ids(self) -> tuple[int, ...]:
        return tuple(self._sets)

    @property
    def cut_ids(self) -> tuple[int, ...]:
        """Every cut some served bundle has a tail for."""
        return tuple(sorted({c for t in self._sets.values() for c in t.cut_ids}))

    def has_bundle(self, bundle_id: str) -> bool:
        """Whether the bundle of this manifest ``bundle_id`` (64 hex digits) is served."""
        return any(t.manifest.bundle_id == bundle_id for t in self._sets.values())

    def get(self, bundle_id: int) -> TailSet | None:
        return self._sets.get(bundle_id)

    def load_all(self) -> None:
        for tails in self._sets.values():
            tails.load_all()

    def describe(self) -> str:
        """``0x1a2b3c4d,0x99aa00ff``: the bundle ids served, in the order they were added."""
        return ",".join(f"0x{b:08x}" for b in self._sets)

    def admit(self, frame: Frame) -> Refusal | None:
        tails = self._sets.get(frame.header.bundle_id)
        if tails is None:
            served = ", ".join(f"0x{b:08x} ({t.manifest.model_name} {t.manifest.extra.get('version', '')})".rstrip()
                               for b, t in self._sets.items())
            return Refusal(
                ErrorCode.BUNDLE_MISMATCH,
                f"frame bundle id 0x{frame.header.bundle_id:08x}; this worker serves bundles {served or 'none'}: "
                "start the workers with every bundle a device may run (splitedge cloud --bundle OLD --bundle NEW) "
                "before rolling a new one out",
            )
        return tails.admit(frame)

    def run(self, cut_id: int, frames: Sequence[Frame]) -> np.ndarray:
        """Logits of admitted frames of one bundle and one cut (the worker batches by both)."""
        tails = self._sets[frames[0].header.bundle_id]
        return tails.run(cut_id, frames)
