"""The MQTT topic layout of splitedge, and MQTT topic-filter matching, as pure functions.

Every device owns one subtree::

    splitedge/v1/<device_id>/act         activations and raw frames, device -> cloud workers
    splitedge/v1/<device_id>/result      the cloud's answer, cloud -> device
    splitedge/v1/<device_id>/report      per-frame worker reports (queue/tail times), cloud -> device, fleet
    splitedge/v1/<device_id>/telemetry   periodic telemetry, device -> fleet
    splitedge/v1/<device_id>/status      online/offline (a status message, docs/WIRE.md), retained;
                                         the offline one is also the device's last will

Bundle rollouts (``splitedge rollout``, docs/CLOUD.md "Rolling out a bundle") use one subtree per device
group, under a segment no device id can take (:data:`ROLLOUT_SEGMENT`, refused by :func:`validate_device_id`)::

    splitedge/v1/_rollout/<group>/announce                  the bundle offered (AnnounceMessage), retained
    splitedge/v1/_rollout/<group>/chunk/<bundle>/<n>        chunk n of its files (sdk.chunks), retained;
                                                            <bundle> = the first 16 hex digits of its bundle_id

Cloud workers share the load with an MQTT v5 shared subscription
``$share/<group>/splitedge/v1/+/act`` (:func:`shared_filter`): the broker hands each frame to exactly
one member of the group.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "MAX_DEVICE_ID_LENGTH",
    "PREFIX",
    "ROLLOUT_SEGMENT",
    "TopicKind",
    "announce_topic",
    "chunk_filter",
    "chunk_topic",
    "filter_for",
    "is_shared",
    "matches",
    "parse",
    "shared_filter",
    "split_shared",
    "topic",
    "validate_device_id",
    "validate_filter",
    "validate_group",
]

#: Every splitedge topic starts with this; the version segment changes only with an incompatible layout.
PREFIX = "splitedge/v1"
MAX_DEVICE_ID_LENGTH = 64
#: the topic level under PREFIX that holds the rollout subtrees; a device may not take it as its id.
ROLLOUT_SEGMENT = "_rollout"
_FORBIDDEN_ID_CHARS = ("/", "+", "#", "\x00")


class TopicKind(StrEnum):
    """The last segment of a splitedge topic: what the messages on it are."""

    ACT = "act"
    RESULT = "result"
    REPORT = "report"
    TELEMETRY = "telemetry"
    STATUS = "status"


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it can be a topic segment; raise ``ValueError`` saying why not."""
    if not isinstance(device_id, str):
        raise TypeError(f"device_id must be a str, got {type(device_id).__name__}")
    if not device_id:
        raise ValueError("device_id is empty; expected 1..64 characters without '/', '+', '#'")
    if len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise ValueError(
            f"device_id {device_id[:20]!r}... has {len(device_id)} characters; "
            f"expected at most {MAX_DEVICE_ID_LENGTH}: pick a shorter id"
        )
    bad = [c for c in _FORBIDDEN_ID_CHARS if c in device_id]
    if bad:
        raise ValueError(
            f"device_id {device_id!r} contains {', '.join(repr(c) for c in bad)}; "
            "MQTT reserves '/', '+', '#' (and NUL) in topics: use letters, digits, '-', '_' or '.'"
        )
    if device_id.startswith("$"):
        raise ValueError(f"device_id {device_id!r} starts with '$', which MQTT reserves for broker topics")
    if device_id == ROLLOUT_SEGMENT:
        raise ValueError(f"device_id {device_id!r} is reserved for the bundle rollout topics; pick another id")
    return device_id


def topic(device_id: str, kind: TopicKind | str) -> str:
    """The topic of ``kind`` messages for ``device_id``: ``splitedge/v1/<device_id>/<kind>``."""
    return f"{PREFIX}/{validate_device_id(device_id)}/{TopicKind(kind).value}"


def filter_for(kind: TopicKind | str, device_id: str | None = None) -> str:
    """A subscription filter for ``kind`` messages of one device, or of every device (``+``)."""
    segment = "+" if device_id is None else validate_device_id(device_id)
    return f"{PREFIX}/{segment}/{TopicKind(kind).value}"


def parse(topic_name: str) -> tuple[str, TopicKind]:
    """Split a splitedge topic into ``(device_id, kind)``; ``ValueError`` for any other topic."""
    parts = topic_name.split("/")
    expected = f"'{PREFIX}/<device_id>/<{'|'.join(k.value for k in TopicKind)}>'"
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise ValueError(f"topic {topic_name!r} is not a splitedge topic; expected {expected}")
    device_id, kind = parts[2], parts[3]
    try:
        parsed_kind = TopicKind(kind)
    except ValueError:
        raise ValueError(
            f"topic {topic_name!r} ends in {kind!r}, not a known message kind; expected {expected}"
        ) from None
    try:
        validate_device_id(device_id)
    except ValueError as exc:
        raise ValueError(f"topic {topic_name!r} has an invalid device id: {exc}") from None
    return device_id, parsed_kind


def shared_filter(group: str, kind: TopicKind | str = TopicKind.ACT) -> str:
    """The MQTT v5 shared subscription ``$share/<group>/splitedge/v1/+/<kind>``."""
    if not group or any(c in group for c in _FORBIDDEN_ID_CHARS):
        raise ValueError(f"share group {group!r} must be non-empty and contain no '/', '+', '#'")
    return f"$share/{group}/{filter_for(kind)}"


def is_shared(topic_filter: str) -> bool:
    """True for an MQTT v5 shared subscription filter ``$share/<group>/<filter>``."""
    return topic_filter.startswith("$share/")


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """``'$share/g/a/b'`` -> ``('g', 'a/b')``; a plain filter -> ``(None, filter)``."""
    if not is_shared(topic_filter):
        return None, topic_filter
    parts = topic_filter.split("/", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ValueError(
            f"shared subscription {topic_filter!r} is malformed; expected '$share/<group>/<filter>'"
        )
    return parts[1], parts[2]


def validate_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid MQTT filter (``#`` last and alone, ``+`` alone)."""
    _, inner = split_shared(topic_filter)
    if not inner:
        raise ValueError("topic filter is empty")
    levels = inner.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic filter {topic_filter!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {topic_filter!r}: '+' must be a whole level")
    return topic_filter


def matches(topic_filter: str, topic_name: str) -> bool:
    """MQTT topic-filter matching (MQTT 3.1.1 s4.7 / 5.0 s4.7), ``$share/<group>/`` stripped first.

    ``+`` matches exactly one level, ``#`` (last) matches the parent and any number of levels, and
    wildcards in the first level never match a topic that starts with ``$`` (``$SYS/...``).
    """
    _, inner = split_shared(topic_filter)
    f_levels = inner.split("/")
    t_levels = topic_name.split("/")
    if topic_name.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def validate_group(group: str) -> str:
    """Return ``group`` if it can name a device group (the same rule as a device id); else ``ValueError``."""
    try:
        return validate_device_id(group)
    except ValueError as exc:
        raise ValueError(f"device group: {exc}".replace("device_id", "group")) from None


def announce_topic(group: str) -> str:
    """``splitedge/v1/_rollout/<group>/announce``: the retained AnnounceMessage of the group's bundle."""
    return f"{PREFIX}/{ROLLOUT_SEGMENT}/{validate_group(group)}/announce"


def _bundle_segment(bundle_id: str) -> str:
    seg = bundle_id[:16].lower()
    if len(seg) != 16 or any(c not in "0123456789abcdef" for c in seg):
        raise ValueError(f"bundle id {bundle_id!r}: expected the manifest's hex bundle_id (at least 16 hex digits)")
    return seg


def chunk_topic(group: str, bundle_id: str, n: int) -> str:
    """``splitedge/v1/_rollout/<group>/chunk/<first 16 hex of bundle_id>/<n>``."""
    if n < 0:
        raise ValueError(f"chunk number {n}: expected >= 0")
    return f"{PREFIX}/{ROLLOUT_SEGMENT}/{validate_group(group)}/chunk/{_bundle_segment(bundle_id)}/{n}"


def chunk_filter(group: str, bundle_id: str) -> str:
    """Every chunk of one bundle of one group: ``.../chunk/<bundle>/+``."""
    return f"{PREFIX}/{ROLLOUT_SEGMENT}/{validate_group(group)}/chunk/{_bundle_segment(bundle_id)}/+"
