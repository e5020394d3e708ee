"""The narrow seam between splitedge and a message broker: ``Transport``, plus an in-memory one.

Everything past this seam sees :class:`Message` (a frozen value with ``bytes``), never paho types.
Two implementations:

* :class:`sdk.mqtt.MqttTransport` - the real one (paho-mqtt, MQTT v5 with a 3.1.1 fallback);
* :class:`InMemoryTransport` on an :class:`InMemoryHub` - a tiny broker in the process, for tests of
  device and cloud loops: topic matching, retained messages, ``$share`` groups (round-robin, one
  member each), last wills on :meth:`InMemoryTransport.kill`, broker outages, and either
  synchronous delivery or a queue drained by :meth:`InMemoryHub.pump`.

Both behave the same on the points the rest of the SDK relies on: publishing while disconnected
raises :class:`~sdk.errors.BrokerUnavailableError` (nothing is dropped silently), and an exception
in a handler is logged and counted, never propagated into the delivery machinery.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple, Protocol, runtime_checkable

from sdk import topics
from sdk.errors import BrokerUnavailableError, ConfigError
from sdk.topics import TopicKind

__all__ = [
    "ConnectionCallback",
    "Handler",
    "InMemoryHub",
    "InMemoryTransport",
    "Message",
    "QosPolicy",
    "Transport",
    "Will",
    "status_will",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """One received message. ``received_at`` is ``time.time()`` (wall clock, s) on arrival."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    received_at: float = 0.0


Handler = Callable[[Message], None]
#: Called with ``True`` when the transport (re)connects and ``False`` when it loses the broker.
ConnectionCallback = Callable[[bool], None]


class Will(NamedTuple):
    """A last will: published by the broker when the client vanishes without a clean close."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def status_will(device_id: str, payload: bytes, *, qos: int = 1) -> Will:
    """A device's last will: ``payload`` retained on its ``status`` topic.

    The payload is opaque here; devices pass the encoded offline status message of docs/WIRE.md
    (``StatusMessage(device_id, online=False, ts=...).to_bytes()``).
    """
    return Will(topics.topic(device_id, TopicKind.STATUS), bytes(payload), check_qos(qos), True)


def check_qos(qos: int) -> int:
    if qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
    return qos


@dataclass(frozen=True, slots=True)
class QosPolicy:
    """The MQTT QoS used for each message kind.

    Activations and results are QoS 1 (at least once: a lost frame is a lost answer); reports and
    telemetry are QoS 0 (the next one supersedes it); status is QoS 1 and retained.
    """

    act: int = 1
    result: int = 1
    report: int = 0
    telemetry: int = 0
    status: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            check_qos(getattr(self, f.name))

    def for_kind(self, kind: TopicKind | str) -> int:
        return int(getattr(self, TopicKind(kind).value))

    def for_topic(self, topic_name: str, default: int = 0) -> int:
        """The QoS for a splitedge topic; ``default`` for any other topic."""
        try:
            _, kind = topics.parse(topic_name)
        except ValueError:
            return check_qos(default)
        return self.for_kind(kind)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> QosPolicy:
        """Build from a config table; unknown keys and values other than 0/1/2 raise ``ConfigError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown QoS key(s) {unknown}; expected some of {sorted(known)}: fix the [qos] table"
            )
        for key, value in data.items():
            if isinstance(value, bool) or value not in (0, 1, 2):
                raise ConfigError(f"qos.{key} = {value!r}; expected 0, 1 or 2")
        return cls(**{k: int(v) for k, v in data.items()})  # type: ignore[call-overload]


@runtime_checkable
class Transport(Protocol):
    """Publish/subscribe of opaque ``bytes``; the only thing the device and cloud loops need."""

    @property
    def connected(self) -> bool:
        """True while the broker is reachable and publishing can succeed."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Send ``payload``; raises ``BrokerUnavailableError`` when disconnected (never drops silently)."""
        ...

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 0) -> None:
        """Call ``handler(Message)`` for every message matching ``topic_filter`` (kept across reconnects)."""
        ...

    def unsubscribe(self, topic_filter: str) -> None: ...

    def close(self) -> None:
        """Disconnect cleanly (no last will); idempotent."""
        ...

    def on_connection_change(self, callback: ConnectionCallback) -> None:
        """Register ``callback(connected: bool)``, called on every connect and disconnect."""
        ...


# --------------------------------------------------------------------------------------- in memory


@dataclass(frozen=True, slots=True)
class _Subscription:
    transport: InMemoryTransport
    topic_filter: str
    group: str | None
    inner: str
    handler: Handler
    qos: int


class InMemoryHub:
    """A broker in the process: several :class:`InMemoryTransport` on one hub exchange messages.

    ``synchronous=True`` (default) runs handlers inside ``publish``; ``False`` queues deliveries
    until :meth:`pump`, so a test can step a loop one message at a time. ``clock`` stamps
    ``Message.received_at`` (pass a fake clock for deterministic timings). Handler exceptions are
    logged and counted in :attr:`handler_errors`; ``raise_handler_errors=True`` re-raises them.
    """

    def __init__(
        self,
        *,
        synchronous: bool = True,
        clock: Callable[[], float] = time.time,
        raise_handler_errors: bool = False,
    ) -> None:
        self.synchronous = synchronous
        self.clock = clock
        self.raise_handler_errors = raise_handler_errors
        self.handler_errors = 0
        self._lock = threading.RLock()
        self._subs: list[_Subscription] = []
        self._retained: dict[str, Message] = {}
        self._round_robin: dict[tuple[str, str], int] = {}
        self._queue: deque[tuple[_Subscription, Message]] = deque()
        self._transports: list[InMemoryTransport] = []
        self._broker_up = True
        self._ids = itertools.count(1)

    # -- clients
    def transport(self, client_id: str | None = None, *, will: Will | None = None) -> InMemoryTransport:
        """A new connected transport on this hub."""
        return InMemoryTransport(self, client_id=client_id, will=will)

    def _attach(self, transport: InMemoryTransport) -> str:
        with self._lock:
            self._transports.append(transport)
            return f"mem-{next(self._ids)}"

    @property
    def broker_up(self) -> bool:
        return self._broker_up

    def set_broker_up(self, up: bool) -> None:
        """Simulate a broker outage (``False``) and recovery (``True``) for every attached transport.

        While down, publishing raises ``BrokerUnavailableError`` and nothing is delivered; the
        subscriptions survive (as ``MqttTransport`` re-subscribes on reconnect). No wills are sent.
        """
        with self._lock:
            if up == self._broker_up:
                return
            self._broker_up = up
            if not up:
                self._queue.clear()
            affected = [t for t in self._transports if not t._closed]
        for t in affected:
            t._notify(up)

    # -- state a test may look at
    def retained(self, topic_name: str) -> Message | None:
        """The retained message on ``topic_name``, if any."""
        with self._lock:
            return self._retained.get(topic_name)

    @property
    def pending(self) -> int:
        """Deliveries queued for :meth:`pump` (always 0 when synchronous)."""
        return len(self._queue)

    def pump(self, max_messages: int | None = None) -> int:
        """Deliver up to ``max_messages`` queued messages (all if ``None``); return how many."""
        done = 0
        while max_messages is None or done < max_messages:
            with self._lock:
                if not self._queue:
                    break
                sub, msg = self._queue.popleft()
            self._call(sub, msg)
            done += 1
        return done

    # -- routing
    def _publish(self, msg: Message) -> None:
        with self._lock:
            if not self._broker_up:
                raise BrokerUnavailableError(
                    "in-memory broker is down (set_broker_up(False)); cannot publish to "
                    f"{msg.topic!r}: answer locally or retry once it is back"
                )
            if msg.retain:
                if msg.payload:
                    self._retained[msg.topic] = msg
                else:
                    self._retained.pop(msg.topic, None)
            deliveries: list[tuple[_Subscription, Message]] = []
            groups: dict[tuple[str, str], list[_Subscription]] = {}
            for sub in self._subs:
                if not topics.matches(sub.inner, msg.topic):
                    continue
                if sub.group is None:
                    deliveries.append((sub, msg))
                else:
                    groups.setdefault((sub.group, sub.inner), []).append(sub)
            for key, members in groups.items():
                turn = self._round_robin.get(key, 0)
                self._round_robin[key] = turn + 1
                deliveries.append((members[turn % len(members)], msg))
            self._dispatch(deliveries, retain=False)

    def _dispatch(self, deliveries: list[tuple[_Subscription, Message]], *, retain: bool) -> None:
        stamped = [
            (sub, Message(m.topic, m.payload, min(m.qos, sub.qos), retain, 0.0)) for sub, m in deliveries
        ]
        if self.synchronous:
            # Called with the lock held: an RLock, so handlers may publish from inside a handler.
            for sub, m in stamped:
                self._call(sub, m)
        else:
            self._queue.extend(stamped)

    def _call(self, sub: _Subscription, msg: Message) -> None:
        if sub.transport._closed or not self._broker_up:
            return
        msg = Message(msg.topic, msg.payload, msg.qos, msg.retain, self.clock())
        try:
            sub.handler(msg)
        except Exception:
            self.handler_errors += 1
            log.exception("handler for %r raised on a message on %r", sub.topic_filter, msg.topic)
            if self.raise_handler_errors:
                raise

    def _subscribe(self, sub: _Subscription) -> None:
        with self._lock:
            self._subs = [
                s for s in self._subs if not (s.transport is sub.transport and s.topic_filter == sub.topic_filter)
            ]
            self._subs.append(sub)
            if sub.group is None and self._broker_up:  # MQTT v5: no retained messages on shared subs
                hits = [(sub, m) for t, m in self._retained.items() if topics.matches(sub.inner, t)]
                self._dispatch(hits, retain=True)

    def _unsubscribe(self, transport: InMemoryTransport, topic_filter: str) -> None:
        with self._lock:
            self._subs = [
                s for s in self._subs if not (s.transport is transport and s.topic_filter == topic_filter)
            ]

    def _detach(self, transport: InMemoryTransport, *, send_will: bool) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s.transport is not transport]
            self._queue = deque((s, m) for s, m in self._queue if s.transport is not transport)
            if transport in self._transports:
                self._transports.remove(transport)
            will = transport.will
            if send_will and will is not None and self._broker_up:
                self._publish(Message(will.topic, bytes(will.payload), will.qos, will.retain))


class InMemoryTransport:
    """A :class:`Transport` on an :class:`InMemoryHub`; connected from construction until closed."""

    def __init__(self, hub: InMemoryHub, *, client_id: str | None = None, will: Will | None = None) -> None:
        self.hub = hub
        self.will = Will(*will) if will is not None else None
        self._closed = False
        self._callbacks: list[ConnectionCallback] = []
        generated = hub._attach(self)
        self.client_id = client_id or generated

    @property
    def connected(self) -> bool:
        return not self._closed and self.hub.broker_up

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise BrokerUnavailableError(
                f"transport {self.client_id!r} is closed; cannot {what}: create a new transport"
            )

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self._check_open(f"publish to {topic!r}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if any(c in topic for c in "+#") or not topic:
            raise ValueError(f"cannot publish to {topic!r}: a topic name has no wildcards and is not empty")
        self.hub._publish(Message(topic, bytes(payload), check_qos(qos), retain))

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 0) -> None:
        self._check_open(f"subscribe to {topic_filter!r}")
        topics.validate_filter(topic_filter)
        group, inner = topics.split_shared(topic_filter)
        self.hub._subscribe(_Subscription(self, topic_filter, group, inner, handler, check_qos(qos)))

    def unsubscribe(self, topic_filter: str) -> None:
        self.hub._unsubscribe(self, topic_filter)

    def on_connection_change(self, callback: ConnectionCallback) -> None:
        self._callbacks.append(callback)

    def _notify(self, connected: bool) -> None:
        for cb in list(self._callbacks):
            try:
                cb(connected)
            except Exception:
                log.exception("connection-change callback of %r raised", self.client_id)

    def close(self) -> None:
        """Clean disconnect: the last will is discarded, as with an MQTT DISCONNECT."""
        self._shutdown(send_will=False)

    def kill(self) -> None:
        """Vanish without a clean disconnect: the hub publishes the last will, if any."""
        self._shutdown(send_will=True)

    def _shutdown(self, *, send_will: bool) -> None:
        if self._closed:
            return
        was_connected = self.connected
        self._closed = True
        self.hub._detach(self, send_will=send_will)
        if was_connected:
            self._notify(False)

    def __enter__(self) -> InMemoryTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
