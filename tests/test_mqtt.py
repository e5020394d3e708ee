"""sdk.mqtt.MqttTransport against real brokers (Mosquitto; amqtt for the 3.1.1 fallback)."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from sdk import topics
from sdk.broker import BrokerTls, EmbeddedBroker, free_port
from sdk.errors import BrokerUnavailableError, ConfigError, PayloadTooLargeError
from sdk.mqtt import (
    FEATURE_MAX_PACKET_SIZE,
    FEATURE_SHARED_SUBSCRIPTIONS,
    BrokerAddress,
    MqttTransport,
    TlsConfig,
    parse_broker_url,
    publish_packet_size,
)
from sdk.topics import TopicKind
from sdk.transport import Message, Transport, status_will

pytestmark = pytest.mark.broker


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Inbox:
    """A thread-safe handler that records messages and lets the test wait for N of them."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> list[Message]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(f"got {len(self.messages)} message(s), expected {n}")
            return list(self.messages)

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]


@pytest.fixture
def connect():
    """``connect(url, **kw)`` -> a MqttTransport closed at teardown."""
    made: list[MqttTransport] = []

    def factory(url: str, **kw: object) -> MqttTransport:
        t = MqttTransport(url, **kw)  # type: ignore[arg-type]
        made.append(t)
        return t

    yield factory
    for t in made:
        t.close()


# ------------------------------------------------------------------------------------------ pure


def test_public_api_is_pinned():
    import sdk.mqtt

    assert sorted(sdk.mqtt.__all__) == sorted([
        "FEATURE_MAX_PACKET_SIZE", "FEATURE_SHARED_SUBSCRIPTIONS", "BrokerAddress", "MqttTransport",
        "TlsConfig", "parse_broker_url", "publish_packet_size",
    ])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883)),
        ("mqtt://broker.local", BrokerAddress("broker.local", 1883)),
        ("mqtts://broker.local", BrokerAddress("broker.local", 8883, tls=True)),
        ("mqtts://u:p%40ss@h:9000", BrokerAddress("h", 9000, True, "u", "p@ss")),
        ("mqtt://dev@h:1", BrokerAddress("h", 1, False, "dev", None)),
        ("mqtt://h:1/", BrokerAddress("h", 1)),
    ],
)
def test_parse_broker_url(url, expected):
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["http://h:1", "127.0.0.1:1883", "mqtt://", "mqtt://h:99999", "mqtt://h/x"])
def test_parse_broker_url_rejects(url):
    with pytest.raises(ConfigError, match="mqtt://"):
        parse_broker_url(url)


def test_publish_packet_size_literal():
    # fixed header 1 + remaining-length varint; topic length prefix 2 + "ab" 2; packet id 2 (qos>0);
    # v5 property length 1; payload.
    assert publish_packet_size("ab", 10, 0, v5=False) == 1 + 1 + 2 + 2 + 10
    assert publish_packet_size("ab", 10, 1, v5=True) == 1 + 1 + 2 + 2 + 2 + 1 + 10
    assert publish_packet_size("ab", 200, 0, v5=True) == 1 + 2 + 2 + 2 + 1 + 200  # 2-byte varint


# ------------------------------------------------------------------------------------------ failures


def test_connect_failure_names_host_port_and_what_to_do():
    port = free_port()
    with pytest.raises(BrokerUnavailableError, match=rf"127\.0\.0\.1:{port}.*splitedge broker"):
        MqttTransport(f"mqtt://127.0.0.1:{port}", connect_timeout=1.0)


# ------------------------------------------------------------------------------------------ Mosquitto


def test_round_trip_is_fast_and_satisfies_protocol(mosquitto, connect):
    dev = connect(mosquitto.url, client_id="rt-dev")
    cloud = connect(mosquitto.url, client_id="rt-cloud")
    assert isinstance(dev, Transport) and dev.connected
    assert dev.protocol_version == "v5" and dev.lost_features == ()
    cloud.subscribe("rt/req", lambda m: cloud.publish("rt/rep", m.payload[::-1], qos=1), qos=1)
    inbox = Inbox()
    dev.subscribe("rt/rep", inbox, qos=1)
    times = []
    for i in range(20):
        t0 = time.perf_counter()
        dev.publish("rt/req", bytes([i, 1, 2]), qos=1)
        inbox.wait(i + 1)
        times.append(time.perf_counter() - t0)
    assert inbox.messages[0] == Message("rt/rep", bytes([2, 1, 0]), 1, False, inbox.messages[0].received_at)
    # Nagle + delayed ACK would make this ~40-90 ms; TCP_NODELAY on both sides keeps it ~1 ms.
    assert statistics.median(times) < 0.02, f"median round trip {statistics.median(times) * 1e3:.1f} ms"


def test_shared_subscription_splits_between_workers(mosquitto, connect):
    w1, w2 = connect(mosquitto.url, client_id="w1"), connect(mosquitto.url, client_id="w2")
    dev = connect(mosquitto.url, client_id="share-dev")
    in1, in2 = Inbox(), Inbox()
    w1.subscribe(topics.shared_filter("tails-split"), in1, qos=1)
    w2.subscribe(topics.shared_filter("tails-split"), in2, qos=1)
    n = 20
    for i in range(n):
        dev.publish(topics.topic("cam-share", TopicKind.ACT), i.to_bytes(2, "big"), qos=1)
    wait_until(lambda: len(in1.messages) + len(in2.messages) >= n, what="all frames")
    time.sleep(0.05)
    seen = sorted(in1.payloads + in2.payloads)
    assert seen == [i.to_bytes(2, "big") for i in range(n)]  # each frame to exactly one worker
    assert in1.messages and in2.messages  # and both workers got some


def test_handler_exception_does_not_stop_delivery(mosquitto, connect):
    t = connect(mosquitto.url)
    inbox = Inbox()

    def flaky(m: Message) -> None:
        if m.payload == b"bad":
            raise ValueError("a bug in a handler")
        inbox(m)

    t.subscribe("flaky/x", flaky)
    for payload in (b"bad", b"ok1", b"bad", b"ok2"):
        t.publish("flaky/x", payload)
    inbox.wait(2)
    assert inbox.payloads == [b"ok1", b"ok2"]
    assert t.handler_errors == 2 and t.connected


def test_last_will_marks_device_offline_when_killed(mosquitto, connect):
    status = topics.topic("cam-will", TopicKind.STATUS)
    # The payloads are opaque to the transport (devices send the status messages of docs/WIRE.md).
    dev = MqttTransport(mosquitto.url, client_id="will-dev", will=status_will("cam-will", b"offline"))
    dev.publish(status, b"online", qos=1, retain=True)
    # The broker handles one connection's packets in order: once this SUBACK is back, the retained PUBLISH
    # before it is stored, and the fleet's subscription below gets it as retained (not live, retain=False).
    dev.subscribe(status, Inbox(), qos=1)
    fleet = connect(mosquitto.url, client_id="will-fleet")
    inbox = Inbox()
    fleet.subscribe(topics.filter_for(TopicKind.STATUS), inbox, qos=1)
    assert inbox.wait(1)[0].payload == b"online" and inbox.messages[0].retain
    dev.kill()  # socket closed without DISCONNECT
    assert inbox.wait(2)[1].payload == b"offline"
    late = Inbox()
    connect(mosquitto.url).subscribe(status, late, qos=1)
    assert late.wait(1)[0].payload == b"offline" and late.messages[0].retain
    with pytest.raises(BrokerUnavailableError, match="closed"):
        dev.publish(status, b"x")


def test_clean_close_does_not_send_last_will(mosquitto, connect):
    status = topics.topic("cam-clean", TopicKind.STATUS)
    fleet = connect(mosquitto.url)
    inbox = Inbox()
    fleet.subscribe(status, inbox, qos=1)
    dev = MqttTransport(mosquitto.url, will=status_will("cam-clean", b"offline"))
    dev.close()
    fleet.publish(status, b"marker", qos=1)  # ordered after any will the broker would have sent
    assert inbox.wait(1)[0].payload == b"marker"


def test_reconnect_after_broker_restart_resumes_subscriptions(fresh_mosquitto, connect):
    sub = connect(fresh_mosquitto.url, client_id="rc-sub", reconnect_min_delay=0.05)
    pub = connect(fresh_mosquitto.url, client_id="rc-pub", reconnect_min_delay=0.05)
    changes: list[bool] = []
    sub.on_connection_change(changes.append)
    inbox = Inbox()
    sub.subscribe("rc/#", inbox, qos=1)
    pub.publish("rc/a", b"before", qos=1)
    inbox.wait(1)
    fresh_mosquitto.stop()
    wait_until(lambda: not sub.connected and not pub.connected, what="disconnect to be noticed")
    with pytest.raises(BrokerUnavailableError, match=str(fresh_mosquitto.port)):
        pub.publish("rc/a", b"during")  # raised, not silently dropped
    fresh_mosquitto.start()
    wait_until(lambda: sub.connected and pub.connected, timeout=10, what="reconnect")
    wait_until(lambda: changes == [False, True], what="connection callbacks")
    time.sleep(0.1)  # the re-SUBSCRIBE is sent from on_connect; let the SUBACK land
    pub.publish("rc/b", b"after", qos=1)
    inbox.wait(2)
    assert inbox.payloads == [b"before", b"after"]


def test_background_connect_waits_for_a_broker_that_starts_later(mosquitto_bin, connect):
    port = free_port()
    t = connect(f"mqtt://127.0.0.1:{port}", wait_connected=False, reconnect_min_delay=0.05,
                reconnect_max_delay=0.2)
    inbox = Inbox()
    t.subscribe("bg/x", inbox)  # registered now, sent on connect
    assert not t.connected
    with EmbeddedBroker(impl="mosquitto", port=port):
        wait_until(lambda: t.connected, what="background connect")
        time.sleep(0.1)
        t.publish("bg/x", b"hi")
        assert inbox.wait(1)[0].payload == b"hi"


def test_max_packet_size_refusal_at_the_exact_limit(mosquitto_bin, connect):
    limit = 2048
    with EmbeddedBroker(impl="mosquitto", max_packet_size=limit) as broker:
        t = connect(broker.url)
        assert t.max_packet_size == limit  # from the v5 CONNACK
        inbox = Inbox()
        t.subscribe("big/x", inbox, qos=1)
        fits = max(n for n in range(limit) if publish_packet_size("big/x", n, 1, v5=True) <= limit)
        assert publish_packet_size("big/x", fits, 1, v5=True) == limit
        t.publish("big/x", b"\x01" * fits, qos=1)  # exactly the limit: accepted by Mosquitto
        assert len(inbox.wait(1)[0].payload) == fits
        with pytest.raises(PayloadTooLargeError, match=rf"{fits + 1}-byte payload.*at most {limit}"):
            t.publish("big/x", b"\x01" * (fits + 1), qos=1)
        t.publish("big/x", b"still connected", qos=1)
        assert inbox.wait(2)[1].payload == b"still connected"


def test_local_max_packet_size_applies_without_broker_limit(mosquitto, connect):
    t = connect(mosquitto.url, max_packet_size=100)
    assert t.max_packet_size == 100
    with pytest.raises(PayloadTooLargeError):
        t.publish("x", b"\x00" * 100)


def test_tls_with_client_cert_and_password(mosquitto_bin, tls_certs, tmp_path, connect):
    pw = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "cam", "s3cret"], check=True, capture_output=True)
    tls = BrokerTls(tls_certs.ca, tls_certs.server_cert, tls_certs.server_key, require_certificate=True)
    client_tls = TlsConfig(str(tls_certs.ca), str(tls_certs.client_cert), str(tls_certs.client_key))
    with EmbeddedBroker(impl="mosquitto", tls=tls, password_file=pw) as broker:
        assert broker.tls_url is not None and broker.tls_url.startswith("mqtts://")
        t = connect(broker.tls_url.replace("mqtts://", "mqtts://cam:s3cret@"), tls=client_tls)
        inbox = Inbox()
        t.subscribe("tls/x", inbox, qos=1)
        t.publish("tls/x", b"secret frame", qos=1)
        assert inbox.wait(1)[0].payload == b"secret frame"
        with pytest.raises(BrokerUnavailableError, match="refused.*username/password"):
            MqttTransport(broker.tls_url, username="cam", password="wrong", tls=client_tls)
        with pytest.raises(BrokerUnavailableError):  # no client certificate: TLS handshake fails
            MqttTransport(broker.tls_url, username="cam", password="s3cret", tls=TlsConfig(str(tls_certs.ca)),
                          connect_timeout=2.0)
        with pytest.raises(BrokerUnavailableError, match="refused"):  # plain listener, no password
            MqttTransport(broker.url)


# ------------------------------------------------------------------------------------------ amqtt


def test_v5_refused_falls_back_to_311_and_says_what_is_lost(amqtt_broker, connect, caplog):
    with caplog.at_level("WARNING", logger="sdk.mqtt"):
        w1 = connect(amqtt_broker.url, client_id="aq-w1")
    assert w1.protocol_version == "v311"
    assert set(w1.lost_features) == {FEATURE_SHARED_SUBSCRIPTIONS, FEATURE_MAX_PACKET_SIZE}
    assert "every cloud worker then receives every frame" in caplog.text
    w2 = connect(amqtt_broker.url, client_id="aq-w2")
    dev = connect(amqtt_broker.url, client_id="aq-dev")
    in1, in2 = Inbox(), Inbox()
    w1.subscribe(topics.shared_filter("aq"), in1, qos=1)  # becomes a plain subscription
    w2.subscribe(topics.shared_filter("aq"), in2, qos=1)
    dev.publish(topics.topic("cam-aq", "act"), b"frame", qos=1)
    assert in1.wait(1)[0].payload == b"frame" and in2.wait(1)[0].payload == b"frame"


def test_forced_v5_against_311_broker_fails_clearly(amqtt_broker):
    with pytest.raises(BrokerUnavailableError, match="refused.*Unsupported protocol version"):
        MqttTransport(amqtt_broker.url, protocol="v5")
