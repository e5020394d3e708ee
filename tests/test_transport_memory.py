"""sdk.transport: Message, QosPolicy and the in-memory hub the device/cloud loop tests rely on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sdk import topics, transport
from sdk.errors import BrokerUnavailableError, ConfigError
from sdk.topics import TopicKind
from sdk.transport import InMemoryHub, InMemoryTransport, Message, QosPolicy, Transport, Will, status_will


def collector() -> tuple[list[Message], transport.Handler]:
    got: list[Message] = []
    return got, got.append


def test_public_api_is_pinned():
    assert sorted(transport.__all__) == sorted([
        "ConnectionCallback", "Handler", "InMemoryHub", "InMemoryTransport", "Message", "QosPolicy",
        "Transport", "Will", "status_will",
    ])


def test_message_is_frozen_and_slotted():
    m = Message("t", b"x", 1, False, 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.payload = b"y"  # type: ignore[misc]
    assert not hasattr(m, "__dict__")


def test_in_memory_transport_satisfies_protocol():
    assert isinstance(InMemoryHub().transport(), Transport)


def test_round_trip_with_fake_clock_and_qos_downgrade():
    hub = InMemoryHub(clock=lambda: 123.5)
    a, b = hub.transport("a"), hub.transport("b")
    got, handler = collector()
    b.subscribe("splitedge/v1/+/act", handler, qos=0)
    a.publish("splitedge/v1/cam/act", b"\x00\x01", qos=1)
    a.publish("splitedge/v1/cam/result", b"no")
    assert got == [Message("splitedge/v1/cam/act", b"\x00\x01", 0, False, 123.5)]


def test_unsubscribe_stops_delivery():
    hub = InMemoryHub()
    t = hub.transport()
    got, handler = collector()
    t.subscribe("x", handler)
    t.publish("x", b"1")
    t.unsubscribe("x")
    t.publish("x", b"2")
    assert [m.payload for m in got] == [b"1"]


def test_retained_delivered_on_subscribe_and_cleared_by_empty_payload():
    hub = InMemoryHub()
    dev = hub.transport("dev")
    dev.publish("splitedge/v1/cam/status", b"online", qos=1, retain=True)
    got, handler = collector()
    fleet = hub.transport("fleet")
    fleet.subscribe("splitedge/v1/+/status", handler, qos=1)
    assert got == [Message("splitedge/v1/cam/status", b"online", 1, True, got[0].received_at)]
    dev.publish("splitedge/v1/cam/status", b"", retain=True)  # MQTT: empty retained payload deletes
    assert hub.retained("splitedge/v1/cam/status") is None
    assert got[1].retain is False  # live delivery is not flagged retained


def test_shared_group_round_robin_exactly_one_member():
    hub = InMemoryHub()
    w1, w2, plain, dev = hub.transport("w1"), hub.transport("w2"), hub.transport("p"), hub.transport("d")
    g1, h1 = collector()
    g2, h2 = collector()
    gp, hp = collector()
    w1.subscribe(topics.shared_filter("tails"), h1, qos=1)
    w2.subscribe(topics.shared_filter("tails"), h2, qos=1)
    plain.subscribe(topics.filter_for(TopicKind.ACT), hp)
    for i in range(6):
        dev.publish(topics.topic("cam", "act"), bytes([i]), qos=1)
    assert [m.payload[0] for m in g1] == [0, 2, 4]
    assert [m.payload[0] for m in g2] == [1, 3, 5]
    assert len(gp) == 6  # a plain subscriber still sees everything
    w1.close()
    dev.publish(topics.topic("cam", "act"), b"\x09")
    assert [m.payload for m in g2][-1] == b"\x09"


def test_kill_sends_last_will_close_does_not():
    hub = InMemoryHub()
    got, handler = collector()
    hub.transport("fleet").subscribe(topics.filter_for(TopicKind.STATUS), handler)
    clean = hub.transport("clean", will=status_will("cam-a", b"offline-a"))
    crashed = hub.transport("crash", will=status_will("cam-b", b"offline"))
    clean.close()
    crashed.kill()
    assert [(m.topic, m.payload) for m in got] == [("splitedge/v1/cam-b/status", b"offline")]
    assert hub.retained("splitedge/v1/cam-b/status").payload == b"offline"
    assert status_will("cam-b", b"x") == Will("splitedge/v1/cam-b/status", b"x", 1, True)


def test_closed_transport_refuses_publish_with_clear_error():
    t = InMemoryHub().transport("dev")
    t.close()
    assert not t.connected
    with pytest.raises(BrokerUnavailableError, match="'dev' is closed"):
        t.publish("x", b"")


def test_broker_outage_raises_and_notifies_and_keeps_subscriptions():
    hub = InMemoryHub()
    a, b = hub.transport("a"), hub.transport("b")
    changes: list[bool] = []
    a.on_connection_change(changes.append)
    got, handler = collector()
    b.subscribe("x", handler)
    hub.set_broker_up(False)
    assert not a.connected
    with pytest.raises(BrokerUnavailableError, match="down"):
        a.publish("x", b"lost?")
    hub.set_broker_up(True)
    a.publish("x", b"after")
    assert changes == [False, True]
    assert [m.payload for m in got] == [b"after"]


def test_queued_mode_delivers_only_when_pumped():
    hub = InMemoryHub(synchronous=False)
    t = hub.transport()
    got, handler = collector()
    t.subscribe("x", handler)
    for i in range(3):
        t.publish("x", bytes([i]))
    assert got == [] and hub.pending == 3
    assert hub.pump(max_messages=2) == 2
    assert [m.payload for m in got] == [b"\x00", b"\x01"]
    assert hub.pump() == 1 and hub.pending == 0


def test_handler_publishing_from_inside_a_handler():
    hub = InMemoryHub()
    cloud, dev = hub.transport("cloud"), hub.transport("dev")
    cloud.subscribe("req", lambda m: cloud.publish("rep", m.payload[::-1]))
    got, handler = collector()
    dev.subscribe("rep", handler)
    dev.publish("req", b"abc")
    assert [m.payload for m in got] == [b"cba"]


def test_handler_exception_is_counted_and_delivery_continues():
    hub = InMemoryHub()
    t = hub.transport()
    got, handler = collector()

    def boom(m: Message) -> None:
        raise RuntimeError("handler bug")

    t.subscribe("x", boom)
    t.subscribe("#", handler)
    t.publish("x", b"1")
    t.publish("x", b"2")
    assert hub.handler_errors == 2
    assert len(got) == 2
    strict = InMemoryHub(raise_handler_errors=True)
    s = strict.transport()
    s.subscribe("x", boom)
    with pytest.raises(RuntimeError, match="handler bug"):
        s.publish("x", b"")


@pytest.mark.parametrize(("call", "exc"), [
    (lambda t: t.publish("a/+", b""), ValueError),
    (lambda t: t.publish("a", "text"), TypeError),
    (lambda t: t.publish("a", b"", qos=3), ValueError),
    (lambda t: t.subscribe("a/#/b", print), ValueError),
])
def test_misuse_is_value_or_type_error(call, exc):
    with pytest.raises(exc):
        call(InMemoryTransport(InMemoryHub()))


def test_qos_policy_defaults_and_lookup():
    p = QosPolicy()
    assert p.to_dict() == {"act": 1, "result": 1, "report": 0, "telemetry": 0, "status": 1}
    assert p.for_kind(TopicKind.ACT) == 1
    assert p.for_topic("splitedge/v1/cam/telemetry") == 0
    assert p.for_topic("elsewhere/x", default=2) == 2
    assert QosPolicy.from_dict({"report": 1}).report == 1
    assert QosPolicy.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(("data", "fragment"), [
    ({"frames": 1}, "unknown QoS key"),
    ({"act": 3}, "expected 0, 1 or 2"),
    ({"act": True}, "expected 0, 1 or 2"),
])
def test_qos_policy_rejects_bad_config(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        QosPolicy.from_dict(data)


def test_qos_policy_misuse_is_value_error():
    with pytest.raises(ValueError):
        QosPolicy(act=5)


def test_only_the_adapter_imports_paho():
    import subprocess
    import sys

    code = (
        "import sys, sdk.topics, sdk.transport, sdk.broker; "
        "assert not [m for m in sys.modules if m.startswith('paho')], 'paho imported'"
    )
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)
