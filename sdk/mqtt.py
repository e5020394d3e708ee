"""``MqttTransport``: the :class:`~sdk.transport.Transport` over a real broker (paho-mqtt 2.x).

The only module of splitedge that imports paho. Decisions, documented in docs/TRANSPORT.md:

* MQTT v5 first; a broker that refuses v5 (CONNACK "unsupported protocol version", e.g. amqtt)
  gets 3.1.1, and :attr:`MqttTransport.lost_features` says what that costs (shared subscriptions
  become plain ones - every worker then gets every frame - and no maximum packet size).
* TCP_NODELAY on every socket (``on_socket_open``): without it a request/response through
  Mosquitto takes ~87 ms instead of ~1.2 ms (Nagle + delayed ACK).
* Publishing while disconnected raises :class:`~sdk.errors.BrokerUnavailableError`; nothing is
  queued here, so the caller decides: the device answers the frame locally, and results, reports and
  telemetry wait in the caller's outbox (:mod:`sdk.outbox`). A QoS 1/2 message paho still queued for
  such a publish is not sent later (it would arrive twice). The QoS 1/2 messages the broker had not
  acknowledged when the connection dropped are published again on reconnect *before* the reconnect
  callbacks run, so an outbox flushed from them stays behind the older messages.
* A payload whose PUBLISH packet exceeds the broker's maximum packet size (v5 CONNACK) or the
  local ``max_packet_size`` raises :class:`~sdk.errors.PayloadTooLargeError` before anything is
  sent. There is no chunking: chunks of one frame would be split across the members of a shared
  subscription, so no worker could reassemble them.
* Reconnects with exponential backoff in paho's network thread and re-subscribes on every
  connect; handler exceptions are caught, logged and counted, never allowed to kill that thread.
* A refusal that retrying cannot cure raises :class:`~sdk.errors.BrokerAuthError`, and the
  background connect (``wait_connected=False``) stops and keeps it in :attr:`MqttTransport.failure`:
  the broker's certificate not signed by the given CA (or expired, or for another host name), a
  client certificate the broker refuses (expired: said so, from its dates; else not signed by a CA it
  trusts), no client certificate where one is required, a refused user name or password. A TLS file
  that is missing or unusable raises :class:`~sdk.errors.CredentialFileError` naming it.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from sdk import topics
from sdk.errors import (
    BrokerAuthError,
    BrokerUnavailableError,
    ConfigError,
    CredentialFileError,
    MissingDependencyError,
    PayloadTooLargeError,
    TransportError,
)
from sdk.tls import client_certificate_refused, handshake_refusal
from sdk.transport import ConnectionCallback, Handler, Message, Will, check_qos

try:  # the one place paho is imported
    import paho.mqtt.client as _paho
    from paho.mqtt.enums import CallbackAPIVersion as _CallbackAPIVersion
    from paho.mqtt.enums import MQTTErrorCode as _MQTTErrorCode
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError.for_extra("paho-mqtt", "device") from _exc

__all__ = [
    "FEATURE_MAX_PACKET_SIZE",
    "FEATURE_SHARED_SUBSCRIPTIONS",
    "BrokerAddress",
    "MqttTransport",
    "TlsConfig",
    "parse_broker_url",
    "publish_packet_size",
]

log = logging.getLogger(__name__)

FEATURE_SHARED_SUBSCRIPTIONS = "shared-subscriptions"
FEATURE_MAX_PACKET_SIZE = "maximum-packet-size"
Protocol = Literal["auto", "v5", "v311"]
_UNSUPPORTED_PROTOCOL = (132, 1)  # v5 reason code 0x84; 3.1.1 CONNACK return code 1
_CLOSED_BEFORE_CONNACK = -1  # some pre-v5 brokers just hang up on a v5 CONNECT
_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}
#: CONNACK codes of a refused identity: 3.1.1 bad user name or password / not authorized; v5 bad user
#: name or password, not authorized, banned, bad authentication method.
_AUTH_REFUSED = (4, 5, 134, 135, 138, 140)

@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS for the broker connection: a CA to trust and, for client-certificate auth, cert + key."""

    ca: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user[:pass]@]host[:port]`` (1883) or ``mqtts://...`` (TLS, 8883) -> :class:`BrokerAddress`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(
            f"broker URL {url!r} is not understood; expected mqtt://[user:pass@]host[:port] "
            "or mqtts://... for TLS, e.g. mqtt://127.0.0.1:1883"
        )
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConfigError(f"broker URL {url!r} has an invalid port; expected 1..65535") from None
    if parts.path not in ("", "/"):
        raise ConfigError(f"broker URL {url!r} has a path {parts.path!r}; MQTT URLs have none: remove it")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=scheme in ("mqtts", "ssl"),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n //= 128
        size += 1
    return size


def publish_packet_size(topic: str, payload_len: int, qos: int, *, v5: bool) -> int:
    """Bytes of the PUBLISH packet carrying ``payload_len`` bytes (no properties), as the broker counts."""
    remaining = 2 + len(topic.encode("utf-8")) + (2 if qos > 0 else 0) + (1 if v5 else 0) + payload_len
    return 1 + _varint_len(remaining) + remaining


@dataclass(frozen=True, slots=True)
class _Subscription:
    topic_filter: str
    handler: Handler
    qos: int


class MqttTransport:
    """A :class:`~sdk.transport.Transport` on an MQTT broker; connects in the constructor.

    With ``wait_connected=True`` (default) the constructor blocks until the broker accepts the
    connection and raises ``BrokerUnavailableError`` if it cannot (naming host:port). With
    ``False`` it returns at once and keeps trying in the background; :attr:`connected` and
    :meth:`on_connection_change` tell when it is up.
    """

    def __init__(
        self,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TlsConfig | None = None,
        will: Will | tuple[str, bytes, int, bool] | None = None,
        protocol: Protocol = "auto",
        keepalive: int = 30,
        reconnect_min_delay: float = 0.25,
        reconnect_max_delay: float = 30.0,
        connect_timeout: float = 5.0,
        max_packet_size: int | None = None,
        tcp_nodelay: bool = True,
        wait_connected: bool = True,
    ) -> None:
        if protocol not in ("auto", "v5", "v311"):
            raise ValueError(f"protocol must be 'auto', 'v5' or 'v311', got {protocol!r}")
        if max_packet_size is not None and max_packet_size < 16:
            raise ValueError(f"max_packet_size must be >= 16 bytes, got {max_packet_size}")
        self.address = parse_broker_url(url)
        self.url = url
        self.client_id = client_id or f"splitedge-{os.getpid()}-{os.urandom(4).hex()}"
        self._username = username if username is not None else self.address.username
        self._password = password if password is not None else self.address.password
        self._tls = tls if tls is not None else (TlsConfig() if self.address.tls else None)
        self._will = Will(*will) if will is not None else None
        self._protocol_choice: Protocol = protocol
        self._keepalive = keepalive
        self._reconnect = (reconnect_min_delay, reconnect_max_delay)
        self._connect_timeout = connect_timeout
        self._local_max_packet = max_packet_size
        self._tcp_nodelay = tcp_nodelay

        self._lock = threading.RLock()
        self._subs: dict[str, _Subscription] = {}
        self._callbacks: list[ConnectionCallback] = []
        self._client: Any = None
        self._v5 = protocol != "v311"
        self._broker_max_packet: int | None = None
        self._shared_ok = True
        self._connected = False
        self._closed = False
        self._handler_errors = 0
        self._network_thread: int | None = None
        self._suback: dict[int, threading.Event] = {}
        self._suback_codes: dict[int, list[int]] = {}
        self._warned_shared: set[str] = set()
        self._attempt: dict[str, Any] = {}
        self._failure: BrokerAuthError | CredentialFileError | None = None
        self._refused_mids: set[int] = set()  # QoS>0 publishes paho queued although we raised (not resent)

        if wait_connected:
            self._open()
        else:
            threading.Thread(target=self._open_in_background, name=f"splitedge-connect-{self.client_id}",
                             daemon=True).start()

    # ------------------------------------------------------------------ public state
    @property
    def connected(self) -> bool:
        client = self._client
        return self._connected and not self._closed and client is not None and client.is_connected()

    @property
    def protocol_version(self) -> str:
        """``'v5'`` or ``'v311'``: what the broker accepted (the request, before the first connect)."""
        return "v5" if self._v5 else "v311"

    @property
    def lost_features(self) -> tuple[str, ...]:
        """Features unavailable on this connection (empty on MQTT v5 with a full broker)."""
        lost = []
        if not self._v5 or not self._shared_ok:
            lost.append(FEATURE_SHARED_SUBSCRIPTIONS)
        if not self._v5:
            lost.append(FEATURE_MAX_PACKET_SIZE)
        return tuple(lost)

    @property
    def max_packet_size(self) -> int | None:
        """The largest PUBLISH packet allowed: the broker's (v5 CONNACK) and the local limit, whichever is lower."""
        limits = [x for x in (self._broker_max_packet, self._local_max_packet) if x is not None]
        return min(limits) if limits else None

    @property
    def failure(self) -> BrokerAuthError | CredentialFileError | None:
        """Why the background connect gave up for good (TLS or credentials refused); None while it may succeed."""
        return self._failure

    @property
    def handler_errors(self) -> int:
        """How many times a subscription handler raised (each logged with its traceback)."""
        return self._handler_errors

    def on_connection_change(self, callback: ConnectionCallback) -> None:
        self._callbacks.append(callback)

    # ------------------------------------------------------------------ connecting
    def _make_client(self, v5: bool) -> Any:
        client = _paho.Client(
            _CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=_paho.MQTTv5 if v5 else _paho.MQTTv311,
            **({} if v5 else {"clean_session": True}),
        )
        client.connect_timeout = self._connect_timeout
        client.reconnect_delay_set(*self._reconnect)  # type: ignore[arg-type]
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self._tls is not None:
            self._set_tls(client, self._tls)
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, bytes(w.payload), check_qos(w.qos), w.retain)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    @staticmethod
    def _set_tls(client: Any, tls: TlsConfig) -> None:
        """``tls_set``, with a missing or unusable file named (paho's FileNotFoundError names none)."""
        for what, path in (("CA file", tls.ca), ("client certificate", tls.certfile), ("client key", tls.keyfile)):
            if path is not None and not os.access(path, os.R_OK):
                why = "no such file" if not os.path.exists(path) else "not readable by this user"
                raise CredentialFileError(f"TLS {what} {path}: {why}; fix the path (or the file's permissions)")
        try:
            client.tls_set(ca_certs=tls.ca, certfile=tls.certfile, keyfile=tls.keyfile)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise CredentialFileError(
                f"cannot use the TLS files (CA {tls.ca}, certificate {tls.certfile}, key {tls.keyfile}): "
                f"{getattr(exc, 'reason', None) or exc}; expected PEM files, the key unencrypted and matching "
                "the certificate"
            ) from exc

    def _tls_refusal(self, exc: ssl.SSLError) -> BrokerAuthError | None:
        """The BrokerAuthError for a failed handshake, or None when it is no certificate matter."""
        explained = handshake_refusal(exc, self._tls or TlsConfig(), self.address.host)
        return BrokerAuthError(self._unreachable(*explained)) if explained else None

    def _open(self) -> None:
        """Connect (v5, then 3.1.1 if refused and ``protocol='auto'``); raise ``BrokerUnavailableError``."""
        versions = {"auto": [True, False], "v5": [True], "v311": [False]}[self._protocol_choice]
        for v5 in versions:
            client = self._make_client(v5)
            self._attempt = {"event": threading.Event(), "code": None, "reason": ""}
            self._v5 = v5
            self._client = client
            try:
                client.connect(self.address.host, self.address.port, self._keepalive)
            except ssl.SSLError as exc:
                self._client = None
                refusal = self._tls_refusal(exc)
                if refusal is not None:
                    raise refusal from exc
                raise BrokerUnavailableError(self._unreachable(
                    f"TLS handshake failed: {exc}", "is it the broker's TLS port (8883)?")) from exc
            except (OSError, ValueError) as exc:
                self._client = None
                raise BrokerUnavailableError(self._unreachable(f"{type(exc).__name__}: {exc}")) from exc
            client.loop_start()
            if not self._attempt["event"].wait(self._connect_timeout):
                self._abandon(client)
                raise BrokerUnavailableError(self._unreachable(
                    f"no CONNACK within {self._connect_timeout:g} s", "is it an MQTT port? Does it expect TLS?"))
            code = self._attempt["code"]
            if code == 0:
                if not v5:
                    log.warning(
                        "broker %s refused MQTT v5; connected with 3.1.1 and lost: %s. Shared subscriptions "
                        "become plain ones: every cloud worker then receives every frame.",
                        self.address.hostport, ", ".join(self.lost_features))
                return
            self._abandon(client)
            if code in (*_UNSUPPORTED_PROTOCOL, _CLOSED_BEFORE_CONNACK) and v5 and len(versions) > 1:
                log.info("broker %s refused MQTT v5 (%s); retrying with 3.1.1",
                         self.address.hostport, self._attempt["reason"])
                continue
            if code == _CLOSED_BEFORE_CONNACK and self._tls is not None:
                # After a TLS 1.3 handshake the broker checks the client certificate and just hangs up.
                why = client_certificate_refused(self._tls, self._attempt["reason"])
                raise BrokerAuthError(self._unreachable(*why))
            if code in _AUTH_REFUSED:
                who = f"user {self._username!r}" if self._username else "this client (no user name)"
                raise BrokerAuthError(self._unreachable(
                    f"the broker refused {who}: {self._attempt['reason']} (code {code})",
                    "check --username/--password-file (or [broker] username/password_file), the client "
                    "certificate and the broker's ACL; not retrying"))
            if code == _CLOSED_BEFORE_CONNACK:
                raise BrokerUnavailableError(self._unreachable(
                    f"{self._attempt['reason']}", "a TLS client certificate the broker rejected, a TLS "
                    "listener reached without TLS, or not an MQTT port? Check the broker's log"))
            raise BrokerUnavailableError(self._unreachable(
                f"the broker refused the connection: {self._attempt['reason']} (code {code})",
                "check the broker's log"))
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_in_background(self) -> None:
        delay = self._reconnect[0]
        while not self._closed:
            try:
                self._open()
                if self._closed:  # close() raced with the connect
                    self._abandon(self._client)
                return
            except (BrokerAuthError, CredentialFileError) as exc:  # retrying cannot help
                self._failure = exc
                log.error("%s", exc)
                return
            except BrokerUnavailableError as exc:
                log.info("%s; retrying in %.2f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, self._reconnect[1])

    def _unreachable(self, why: str, todo: str = "") -> str:
        scheme = "mqtts" if self._tls is not None else "mqtt"
        todo = todo or "start one (e.g. `splitedge broker`) or pass the right URL (mqtt://host:port)"
        return f"cannot connect to the MQTT broker at {scheme}://{self.address.hostport}: {why}; {todo}"

    def _abandon(self, client: Any) -> None:
        if client is None:
            return
        try:
            client.disconnect()
        finally:
            client.loop_stop()
            self._connected = False

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_socket_open(self, client: Any, userdata: object, sock: Any) -> None:
        if self._tcp_nodelay:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):  # not a TCP socket (e.g. a websocket wrapper)
                log.debug("could not set TCP_NODELAY on %r", sock)

    def _on_connect(self, client: Any, userdata: object, flags: Any, reason: Any, props: Any) -> None:
        self._network_thread = threading.get_ident()
        code = int(getattr(reason, "value", reason))
        first = not self._attempt["event"].is_set()
        self._attempt.update(code=code, reason=str(reason))
        if code != 0:
            self._attempt["event"].set()
            if not first:
                log.warning("reconnect to %s refused: %s", self.address.hostport, reason)
            return
        if self._v5 and props is not None:
            self._broker_max_packet = getattr(props, "MaximumPacketSize", None)
            self._shared_ok = bool(getattr(props, "SharedSubscriptionAvailable", 1))
        self._connected = True
        with self._lock:
            subs = list(self._subs.values())
        for sub in subs:  # clean start: the broker forgot them
            client.subscribe(self._effective_filter(sub.topic_filter), sub.qos)
        self._resend_unacknowledged(client)
        self._attempt["event"].set()
        if not first:
            log.info("reconnected to %s; %d subscription(s) restored", self.address.hostport, len(subs))
        self._notify(True)

    def _resend_unacknowledged(self, client: Any) -> None:
        """Publish again, in order, what the broker had not acknowledged, now rather than after the callbacks.

        paho would resend them itself, but only after ``on_connect`` returns, i.e. behind whatever the
        reconnect callbacks publish (an outbox flush): older messages would arrive after newer ones. Those
        we reported as failed (``BrokerUnavailableError``) are dropped here: their callers kept them.
        """
        with self._lock:
            refused, self._refused_mids = self._refused_mids, set()
        held = [m for m in client.drop_out_messages() if m.mid not in refused]
        for m in held:
            client.publish(m.topic, m.payload, m.qos, m.retain)
        if held:
            log.info("%d unacknowledged message(s) published again after the reconnect", len(held))

    def _on_disconnect(self, client: Any, userdata: object, flags: Any, reason: Any, props: Any) -> None:
        attempt = self._attempt
        if not attempt["event"].is_set():  # closed before any CONNACK: fail the attempt now, not at timeout
            attempt.update(code=_CLOSED_BEFORE_CONNACK, reason=f"the connection was closed before CONNACK ({reason})")
            attempt["event"].set()
        was = self._connected
        self._connected = False
        if was and not self._closed:
            log.warning("lost the broker at %s (%s); reconnecting with backoff", self.address.hostport, reason)
        if was:
            self._notify(False)

    def _on_subscribe(self, client: Any, userdata: object, mid: int, codes: Any, props: Any) -> None:
        with self._lock:  # subscribe() registers its waiter under this lock, before the SUBACK can land
            event = self._suback.pop(mid, None)
            if event is not None:
                self._suback_codes[mid] = [int(getattr(c, "value", c)) for c in codes]
                event.set()

    def _on_message(self, client: Any, userdata: object, msg: Any) -> None:
        self._network_thread = threading.get_ident()
        message = Message(msg.topic, bytes(msg.payload), int(msg.qos), bool(msg.retain), time.time())
        with self._lock:
            subs = [s for s in self._subs.values() if topics.matches(s.topic_filter, message.topic)]
        for sub in subs:
            try:
                sub.handler(message)
            except Exception:
                self._handler_errors += 1
                log.exception("handler for %r raised on a message on %r", sub.topic_filter, message.topic)

    def _notify(self, connected: bool) -> None:
        for cb in list(self._callbacks):
            try:
                cb(connected)
            except Exception:
                log.exception("connection-change callback raised")

    # ------------------------------------------------------------------ Transport
    def _effective_filter(self, topic_filter: str) -> str:
        group, inner = topics.split_shared(topic_filter)
        if group is None or (self._v5 and self._shared_ok):
            return topic_filter
        if topic_filter not in self._warned_shared:
            self._warned_shared.add(topic_filter)
            log.warning(
                "broker %s has no shared subscriptions (%s); subscribing to %r instead: every worker "
                "of group %r now receives every frame", self.address.hostport, self.protocol_version, inner, group)
        return inner

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        check_qos(qos)
        limit = self.max_packet_size
        if limit is not None:
            size = publish_packet_size(topic, len(payload), qos, v5=self._v5)
            if size > limit:
                raise PayloadTooLargeError(
                    f"a {len(payload)}-byte payload on {topic!r} makes a {size}-byte PUBLISH packet; the "
                    f"broker at {self.address.hostport} accepts at most {limit} bytes. Raise the broker's "
                    "max_packet_size, or send less (a later cut, fewer bits, compression)"
                )
        if not self.connected:
            raise BrokerUnavailableError(self._not_connected(f"publish to {topic!r}"))
        info = self._client.publish(topic, bytes(payload), qos, retain)
        if info.rc in (_MQTTErrorCode.MQTT_ERR_NO_CONN, _MQTTErrorCode.MQTT_ERR_CONN_LOST):
            if qos > 0:  # paho keeps it for the next connection: the caller keeps it instead (no duplicate)
                with self._lock:
                    self._refused_mids.add(info.mid)
            raise BrokerUnavailableError(self._not_connected(f"publish to {topic!r}"))
        if info.rc != _MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"publish to {topic!r} failed: {_paho.error_string(info.rc)}")

    def _not_connected(self, what: str) -> str:
        state = "closed" if self._closed else "not connected (reconnecting in the background)"
        return f"cannot {what}: the transport to {self.address.hostport} is {state}; answer locally or retry"

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 0, timeout: float = 5.0) -> None:
        """Subscribe; when connected, wait for the SUBACK (not inside a handler) and raise if refused."""
        if self._closed:
            raise BrokerUnavailableError(self._not_connected(f"subscribe to {topic_filter!r}"))
        topics.validate_filter(topic_filter)
        with self._lock:
            self._subs[topic_filter] = _Subscription(topic_filter, handler, check_qos(qos))
        if not self.connected:
            return  # sent by _on_connect when the connection comes up
        event = threading.Event()
        with self._lock:
            rc, mid = self._client.subscribe(self._effective_filter(topic_filter), qos)
            if rc != _MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                return  # lost the connection meanwhile: _on_connect re-subscribes
            self._suback[mid] = event
        if threading.get_ident() == self._network_thread:
            return  # inside a handler: waiting would block the thread that reads the SUBACK
        if not event.wait(timeout):
            with self._lock:
                self._suback.pop(mid, None)
            return  # a reconnect re-subscribes; nothing more to do here
        with self._lock:
            codes = self._suback_codes.pop(mid, [])
        if any(c >= 128 for c in codes):
            with self._lock:
                self._subs.pop(topic_filter, None)
            raise TransportError(
                f"the broker at {self.address.hostport} refused the subscription {topic_filter!r} "
                f"(reason code {codes[0]}); check its ACL and that the filter is valid"
            )

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            sub = self._subs.pop(topic_filter, None)
        if sub is not None and self.connected:
            self._client.unsubscribe(self._effective_filter(topic_filter))

    def close(self) -> None:
        """Disconnect cleanly (the broker discards the last will); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._abandon(self._client)

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crash would: the broker sends the last will."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is None:
            return
        sock = client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # paho's thread sees EOF; no DISCONNECT is sent
            except OSError:
                pass
        client.loop_stop()  # _closed is set, so the reconnect it might start is cut short
        if sock is not None:
            sock.close()
        self._connected = False

    def __enter__(self) -> MqttTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.connected else ("closed" if self._closed else "disconnected")
        return f"MqttTransport({self.address.hostport!r}, {self.protocol_version}, {state})"
