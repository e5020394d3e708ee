"""sdk.topics: the topic layout and MQTT filter matching, as tables."""

from __future__ import annotations

import pytest

from sdk import topics
from sdk.topics import TopicKind

# The layout is a contract with deployed devices: spelled out literally.
LAYOUT = [
    ("cam-01", TopicKind.ACT, "splitedge/v1/cam-01/act"),
    ("cam-01", TopicKind.RESULT, "splitedge/v1/cam-01/result"),
    ("cam-01", TopicKind.REPORT, "splitedge/v1/cam-01/report"),
    ("cam-01", TopicKind.TELEMETRY, "splitedge/v1/cam-01/telemetry"),
    ("cam-01", TopicKind.STATUS, "splitedge/v1/cam-01/status"),
    ("a.b_c-9", "act", "splitedge/v1/a.b_c-9/act"),
]


@pytest.mark.parametrize(("device_id", "kind", "expected"), LAYOUT)
def test_topic_layout_and_parse_round_trip(device_id, kind, expected):
    assert topics.topic(device_id, kind) == expected
    assert topics.parse(expected) == (device_id, TopicKind(kind))


def test_shared_filter_literal():
    assert topics.shared_filter("tails") == "$share/tails/splitedge/v1/+/act"
    assert topics.shared_filter("g", TopicKind.REPORT) == "$share/g/splitedge/v1/+/report"
    assert topics.filter_for(TopicKind.STATUS) == "splitedge/v1/+/status"
    assert topics.filter_for("result", "cam") == "splitedge/v1/cam/result"


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_shared_filter_rejects_bad_group(group):
    with pytest.raises(ValueError, match="share group"):
        topics.shared_filter(group)


@pytest.mark.parametrize(
    ("device_id", "fragment"),
    [
        ("", "empty"),
        ("a/b", "'/'"),
        ("a+b", "'\\+'"),
        ("a#", "'#'"),
        ("x" * 65, "at most 64"),
        ("$SYS", "starts with"),
    ],
)
def test_invalid_device_ids(device_id, fragment):
    with pytest.raises(ValueError, match=fragment):
        topics.topic(device_id, TopicKind.ACT)


def test_device_id_of_64_chars_is_fine():
    assert topics.parse(topics.topic("x" * 64, "act")) == ("x" * 64, TopicKind.ACT)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("other/v1/cam/act", "not a splitedge topic"),
        ("splitedge/v2/cam/act", "not a splitedge topic"),
        ("splitedge/v1/cam", "not a splitedge topic"),
        ("splitedge/v1/cam/act/extra", "not a splitedge topic"),
        ("splitedge/v1/cam/video", "not a known message kind"),
        ("splitedge/v1//act", "invalid device id"),
    ],
)
def test_parse_rejects_foreign_topics(name, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        topics.parse(name)
    assert repr(name) in str(info.value)  # names what it received


# (filter, topic, matches) - MQTT 5.0 s4.7 examples and the edge cases around them.
MATCH_TABLE = [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/b", "a/b/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+", "a", False),
    ("a/+", "a/", True),  # empty level is a level
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("a/#", "a", True),  # '#' also matches the parent
    ("a/#", "a/b/c", True),
    ("a/#", "b/c", False),
    ("#", "a/b", True),
    ("#", "$SYS/broker", False),  # wildcards never match '$' topics at the first level
    ("+/broker", "$SYS/broker", False),
    ("$SYS/#", "$SYS/broker", True),
    ("$SYS/+", "$SYS/broker", True),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a/b/d", False),
    ("splitedge/v1/+/act", "splitedge/v1/cam-1/act", True),
    ("splitedge/v1/+/act", "splitedge/v1/cam-1/result", False),
    ("$share/tails/splitedge/v1/+/act", "splitedge/v1/cam-1/act", True),
    ("$share/tails/splitedge/v1/+/act", "splitedge/v1/cam-1/report", False),
    ("$share/g/#", "x/y", True),
    ("A/b", "a/b", False),  # case-sensitive
]


@pytest.mark.parametrize(("topic_filter", "name", "expected"), MATCH_TABLE)
def test_matches(topic_filter, name, expected):
    assert topics.matches(topic_filter, name) is expected


@pytest.mark.parametrize(
    ("topic_filter", "shared"),
    [("$share/g/a/+", ("g", "a/+")), ("a/+", (None, "a/+")), ("$share/g/#", ("g", "#"))],
)
def test_split_shared(topic_filter, shared):
    assert topics.split_shared(topic_filter) == shared
    assert topics.is_shared(topic_filter) is (shared[0] is not None)


@pytest.mark.parametrize("bad", ["$share/g", "$share//a", "a/#/b", "a/b#", "a/+b", ""])
def test_invalid_filters(bad):
    with pytest.raises(ValueError):
        topics.validate_filter(bad)


@pytest.mark.parametrize("good", ["#", "+", "a/+/c/#", "$share/g/a/#", "/", "a//b"])
def test_valid_filters(good):
    assert topics.validate_filter(good) == good


def test_public_api_is_pinned():
    assert sorted(topics.__all__) == sorted([
        "MAX_DEVICE_ID_LENGTH", "PREFIX", "ROLLOUT_SEGMENT", "TopicKind", "announce_topic", "chunk_filter",
        "chunk_topic", "filter_for", "is_shared", "matches", "parse", "shared_filter", "split_shared", "topic",
        "validate_device_id", "validate_filter", "validate_group",
    ])


BUNDLE = "1a2b3c4d5e6f7a8b" + "0" * 48


def test_rollout_topics_live_in_their_own_subtree():
    assert topics.announce_topic("lobby") == "splitedge/v1/_rollout/lobby/announce"
    assert topics.chunk_topic("lobby", BUNDLE, 7) == "splitedge/v1/_rollout/lobby/chunk/1a2b3c4d5e6f7a8b/7"
    assert topics.matches(topics.chunk_filter("lobby", BUNDLE), topics.chunk_topic("lobby", BUNDLE, 7))
    assert not topics.matches(topics.chunk_filter("hall", BUNDLE), topics.chunk_topic("lobby", BUNDLE, 7))
    for kind in topics.TopicKind:  # no device filter of the cloud or the fleet reaches them
        assert not topics.matches(topics.filter_for(kind), topics.announce_topic("lobby"))
        assert not topics.matches(topics.filter_for(kind), topics.chunk_topic("lobby", BUNDLE, 0))


@pytest.mark.parametrize(("bad", "why"), [("_rollout", "reserved"), ("a/b", "'/'"), ("", "empty")])
def test_the_rollout_segment_and_bad_groups_are_refused(bad, why):
    with pytest.raises(ValueError, match=why):
        topics.validate_group(bad)
    with pytest.raises(ValueError, match=why):
        topics.validate_device_id(bad)


def test_a_chunk_topic_needs_a_hex_bundle_id():
    with pytest.raises(ValueError, match="hex bundle_id"):
        topics.chunk_topic("lobby", "v2", 0)
