"""Small control messages: results, reports, errors, telemetry, status and bundle announces (docs/WIRE.md, "Messages").

Each message is one UTF-8 JSON object with two envelope keys, ``"type"`` (which message) and
``"v"`` (schema version, 1), plus its fields. Rules a reader follows:

- ``v`` other than 1 -> UnsupportedVersionError; ``type`` not the expected one -> WireError.
- a required field missing, or a value of the wrong JSON type -> WireError naming the field.
- **unknown extra fields are ignored** (forward compatible): a newer writer may add fields at the
  same ``v``; a field whose meaning changes needs a new ``v``.
- fields with a default may be omitted (that is how they were added).
- NaN/Infinity are not JSON and are refused; an unknown value is ``null`` where the field allows it.

Every class has ``to_bytes()`` / ``from_bytes()`` and ``to_dict()`` / ``from_dict()``;
:func:`decode_message` dispatches on ``type``.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar, Self

from sdk.errors import MalformedMessageError, UnsupportedVersionError, WireError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "RESULT_SOURCES",
    "SCHEMA_VERSION",
    "AnnounceMessage",
    "AnsweredBy",
    "ErrorCode",
    "ErrorMessage",
    "Message",
    "ReportMessage",
    "ResultMessage",
    "RolloutState",
    "StatusMessage",
    "TelemetryMessage",
    "decode_message",
]

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024


class AnsweredBy(enum.StrEnum):
    """Who produced a frame's answer: the one vocabulary of results, answers files and summaries.

    A :class:`ResultMessage` carries ``cloud`` or ``device`` (:data:`RESULT_SOURCES`); ``deadline`` is the
    device runner's own: a frame answered locally as a fallback (``device_runner.answers.Answer.reason``).
    """

    DEVICE = "device"  # the early exit was confident, or the device cut ran the whole model
    CLOUD = "cloud"  # the cloud's result arrived before the deadline
    DEADLINE = "deadline"  # answered locally as a fallback (no cloud answer in time, broker away, ...)


#: what a ResultMessage may say produced it: a deadline fallback is never sent as a result
RESULT_SOURCES: tuple[AnsweredBy, ...] = (AnsweredBy.CLOUD, AnsweredBy.DEVICE)


class ErrorCode(enum.StrEnum):
    """Why the cloud refused a frame (ErrorMessage.code). Readers keep codes they do not know as str."""

    MALFORMED = "malformed"  # decode_frame raised (detail: the WireError message)
    UNKNOWN_CUT = "unknown_cut"  # this worker has no tail for the frame's cut id
    BUNDLE_MISMATCH = "bundle_mismatch"  # the frame's bundle id is not the worker's bundle
    OVERLOADED = "overloaded"  # queue full / deadline missed: answer locally
    INTERNAL = "internal"  # the tail failed


class RolloutState(enum.StrEnum):
    """Where a device is with the last bundle announced to its group (TelemetryMessage.rollout)."""

    DOWNLOADING = "downloading"  # chunks of the announced bundle are arriving
    ACTIVE = "active"  # the announced bundle verified, loaded and serves frames now
    ROLLED_BACK = "rolled_back"  # it failed to verify or load: the previous bundle still serves (rollout_detail: why)


# ---- field checkers: (value, field name) -> value, raising WireError ------------------------------

Check = Callable[[Any, str], Any]


def _bad(name: str, value: Any, expected: str) -> WireError:
    return WireError(f"field {name!r} is {value!r} ({type(value).__name__}); expected {expected}")


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, value, "an integer")
    return value


def _nonneg_int(value: Any, name: str) -> int:
    if _int(value, name) < 0:
        raise _bad(name, value, "an integer >= 0")
    return value


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, value, "a finite number")
    return float(value)


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _bad(name, value, "a string")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(name, value, "true or false")
    return value


def _optional(check: Check) -> Check:
    def run(value: Any, name: str) -> Any:
        return None if value is None else check(value, name)

    return run


def _answered_by(value: Any, name: str) -> AnsweredBy:
    text = _str(value, name)
    if text not in RESULT_SOURCES:
        raise _bad(name, value, f"one of {[a.value for a in RESULT_SOURCES]}")
    return AnsweredBy(text)


def _topk(value: Any, name: str) -> tuple[tuple[int, float], ...]:
    if not isinstance(value, list):
        raise _bad(name, value, "a list of [class, probability] pairs")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise _bad(f"{name}[{i}]", pair, "a [class, probability] pair")
        out.append((_int(pair[0], f"{name}[{i}][0]"), _float(pair[1], f"{name}[{i}][1]")))
    return tuple(out)


# ---- the envelope ----------------------------------------------------------------------------


class _Message:
    """Mixin: JSON envelope ``{"type": TYPE, "v": 1, ...fields}`` with checked decoding."""

    __slots__ = ()
    TYPE: ClassVar[str]
    CHECKS: ClassVar[Mapping[str, Check]]

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (enums as str, tuples as lists), without the envelope."""
        out = asdict(self)  # type: ignore[call-overload]
        for key, value in out.items():
            if isinstance(value, enum.Enum):
                out[key] = value.value
            elif isinstance(value, tuple):
                out[key] = json.loads(json.dumps(value))
        return out

    def to_bytes(self) -> bytes:
        body = {"type": self.TYPE, "v": SCHEMA_VERSION, **self.to_dict()}
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode(
                "utf-8"
            )
        except ValueError as exc:
            raise ValueError(
                f"{type(self).__name__} has a non-finite number ({exc}); use None or a number"
            ) from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Check and build from decoded JSON fields (envelope keys and unknown keys are ignored)."""
        kwargs = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                kwargs[f.name] = cls.CHECKS[f.name](data[f.name], f.name)
            elif f.default is MISSING and f.default_factory is MISSING:  # required
                raise MalformedMessageError(f"{cls.TYPE} message is missing field {f.name!r}; it has {sorted(data)}")
        return cls(**kwargs)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        body = _load(data)
        if body.get("type") != cls.TYPE:
            raise MalformedMessageError(f"message type is {body.get('type')!r}; expected {cls.TYPE!r}")
        return cls.from_dict(body)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _load(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(f"message is {len(data)} bytes; at most {MAX_MESSAGE_BYTES} are accepted")
    try:
        body = json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessageError(
            f"message is not UTF-8 JSON ({exc}); expected a JSON object with 'type' and 'v'"
        ) from None
    if not isinstance(body, dict):
        raise MalformedMessageError(f"message is a JSON {type(body).__name__}; expected an object with 'type' and 'v'")
    if "v" not in body:
        raise MalformedMessageError(f"message has no schema version field 'v'; it has {sorted(body)}")
    version = body["v"]
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise UnsupportedVersionError(
            f"message schema version {version!r}; this reader supports {SCHEMA_VERSION}. "
            "Upgrade splitedge on the older side"
        )
    return body


# ---- the messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultMessage(_Message):
    """The answer for one frame (cloud -> device, or the device's own early exit)."""

    TYPE: ClassVar[str] = "result"
    seq: int
    device_id: str
    cls: int
    topk: tuple[tuple[int, float], ...]
    answered_by: AnsweredBy
    cut_id: int
    worker_id: str
    tail_ms: float = 0.0  # time the tail took on the worker
    ts: float = 0.0  # when the result was sent, seconds since the epoch

    CHECKS: ClassVar[Mapping[str, Check]] = {
        "seq": _nonneg_int, "device_id": _str, "cls": _int, "topk": _topk, "answered_by": _answered_by,
        "cut_id": _nonneg_int, "worker_id": _str, "tail_ms": _float, "ts": _float,
    }  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "answered_by", AnsweredBy(self.answered_by))
        object.__setattr__(self, "topk", tuple((int(c), float(p)) for c, p in self.topk))


@dataclass(frozen=True, slots=True)
class ReportMessage(_Message):
    """What the cloud saw of one frame: bytes, arrival, queueing and tail time (feeds the planner)."""

    TYPE: ClassVar[str] = "report"
    seq: int
    device_id: str
    cut_id: int
    bytes_received: int
    recv_ts: float  # arrival time at the worker, seconds since the epoch
    queue_ms: float
    tail_ms: float
    worker_id: str
    decode_ms: float = 0.0

    CHECKS: ClassVar[Mapping[str, Check]] = {
        "seq": _nonneg_int, "device_id": _str, "cut_id": _nonneg_int, "bytes_received": _nonneg_int,
        "recv_ts": _float, "queue_ms": _float, "tail_ms": _float, "worker_id": _str, "decode_ms": _float,
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class ErrorMessage(_Message):
    """The cloud refuses a frame (see ErrorCode); the device then answers locally. seq None: unknown."""

    TYPE: ClassVar[str] = "error"
    seq: int | None
    device_id: str
    code: str
    detail: str
    worker_id: str

    CHECKS: ClassVar[Mapping[str, Check]] = {
        "seq": _optional(_nonneg_int), "device_id": _str, "code": _str, "detail": _str, "worker_id": _str,
    }  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", str(self.code))


@dataclass(frozen=True, slots=True)
class TelemetryMessage(_Message):
    """A device's periodic snapshot for the fleet view. Rates per second; None: not measured yet."""

    TYPE: ClassVar[str] = "telemetry"
    device_id: str
    ts: float
    cut: int
    fps: float
    exit_rate: float
    bytes_per_s: float
    bandwidth_estimate: float | None  # bytes/s
    p50_ms: float | None
    p95_ms: float | None
    errors: int
    queue_depth: int
    emulated: bool
    bits: int | None = None
    bundle_id: str | None = None  # the bundle serving frames: 8 hex digits, the frame header's bundle id
    bundle_version: str | None = None  # its label: Manifest.version (extra["version"], else the first 8 hex of its id)
    rollout: str | None = None  # a RolloutState value: the last announced bundle's fate (None: none announced)
    rollout_bundle: str | None = None  # which bundle ``rollout`` is about (8 hex digits)
    rollout_detail: str | None = None  # why it rolled back (the loader's one-line error)
    outbox_queued: int = 0  # results/reports/telemetry waiting for the broker (sdk/outbox.py)
    outbox_dropped: int = 0  # of those, dropped at the outbox's bound since the start (never silent)

    CHECKS: ClassVar[Mapping[str, Check]] = {
        "device_id": _str, "ts": _float, "cut": _int, "fps": _float, "exit_rate": _float,
        "bytes_per_s": _float, "bandwidth_estimate": _optional(_float), "p50_ms": _optional(_float),
        "p95_ms": _optional(_float), "errors": _nonneg_int, "queue_depth": _nonneg_int, "emulated": _bool,
        "bits": _optional(_int), "bundle_id": _optional(_str), "bundle_version": _optional(_str),
        "rollout": _optional(_str), "rollout_bundle": _optional(_str), "rollout_detail": _optional(_str),
        "outbox_queued": _nonneg_int, "outbox_dropped": _nonneg_int,
    }  # fmt: skip

    def __getitem__(self, key: str) -> Any:
        """Dict-like access to a field: ``snapshot["fps"]``."""
        if key not in self.CHECKS:
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True, slots=True)
class StatusMessage(_Message):
    """Online/offline (retained; the offline one is the MQTT last will)."""

    TYPE: ClassVar[str] = "status"
    device_id: str
    online: bool
    ts: float

    CHECKS: ClassVar[Mapping[str, Check]] = {"device_id": _str, "online": _bool, "ts": _float}


def _files(value: Any, name: str) -> tuple[tuple[str, str, int], ...]:
    if not isinstance(value, list):
        raise _bad(name, value, "a list of [path, sha256, size] triples")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 3:
            raise _bad(f"{name}[{i}]", item, "a [path, sha256, size] triple")
        out.append((_str(item[0], f"{name}[{i}][0]"), _str(item[1], f"{name}[{i}][1]"),
                    _nonneg_int(item[2], f"{name}[{i}][2]")))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class AnnounceMessage(_Message):
    """A bundle offered to a device group (retained on ``splitedge/v1/_rollout/<group>/announce``).

    It is only a transfer plan: what is trusted is ``manifest.json`` (hashing every model file) and its
    signature ``signature`` (the text of ``manifest.sig``), both checked on the device with ``--trust``.
    ``files`` are the files sent, in chunk order: ``[path, sha256, size]``, manifest.json first; file ``i``
    travels in ``ceil(size / chunk_size)`` chunks, numbered on from the previous file's (:meth:`chunk_count`).
    """

    TYPE: ClassVar[str] = "announce"
    group: str
    bundle_id: str  # the manifest's bundle_id (64 hex digits)
    version: str  # a label for people (manifest extra["version"], or --version)
    manifest_sha256: str
    signature: str | None  # manifest.sig's text; None: an unsigned bundle (a device with --trust refuses it)
    chunk_size: int
    files: tuple[tuple[str, str, int], ...]
    ts: float = 0.0

    CHECKS: ClassVar[Mapping[str, Check]] = {
        "group": _str, "bundle_id": _str, "version": _str, "manifest_sha256": _str,
        "signature": _optional(_str), "chunk_size": _nonneg_int, "files": _files, "ts": _float,
    }  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple((str(p), str(h), int(n)) for p, h, n in self.files))

    @property
    def wire_bundle_id(self) -> int:
        """The u32 the frames of this bundle carry (Manifest.wire_bundle_id)."""
        return int(self.bundle_id[:8], 16)

    def chunk_count(self, file_index: int) -> int:
        size = self.files[file_index][2]
        return -(-size // self.chunk_size) if self.chunk_size else 0

    @property
    def total_chunks(self) -> int:
        return sum(self.chunk_count(i) for i in range(len(self.files)))


Message = ResultMessage | ReportMessage | ErrorMessage | TelemetryMessage | StatusMessage | AnnounceMessage
_BY_TYPE: dict[str, type[Message]] = {
    c.TYPE: c for c in (ResultMessage, ReportMessage, ErrorMessage, TelemetryMessage, StatusMessage, AnnounceMessage)
}


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode any message by its ``type``; raises only WireError subclasses."""
    body = _load(data)
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in _BY_TYPE:
        raise MalformedMessageError(f"message type is {kind!r}; expected one of {sorted(_BY_TYPE)}")
    return _BY_TYPE[kind].from_dict(body)
