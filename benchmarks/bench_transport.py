"""Transport latency: request -> trivial responder -> reply through a local Mosquitto.

Run: ``python -m benchmarks.bench_transport``. Prints Markdown tables, each headed by that command.

* ``MqttTransport`` vs bare paho publish/subscribe of the same bytes, in the same run (both MQTT v5,
  QoS 1, TCP_NODELAY on both), for 1 KB and 64 KB payloads: what the seam costs.
* ``MqttTransport`` with vs without TCP_NODELAY on the clients (the broker keeps ``set_tcp_nodelay``).

A round trip is two PUBLISHes through the broker (request and reply) and their PUBACKs.
"""

from __future__ import annotations

import platform
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from sdk.broker import EmbeddedBroker
from sdk.mqtt import MqttTransport
from sdk.transport import Message

COMMAND = "python -m benchmarks.bench_transport"
REQ, REP = "bench/req", "bench/rep"


@dataclass(frozen=True, slots=True)
class Timing:
    median_ms: float
    p90_ms: float
    mb_per_s: float  # payload bytes moved (request + reply) per second, at the median

    @classmethod
    def of(cls, samples: list[float], payload: int) -> Timing:
        samples = sorted(samples)
        med = statistics.median(samples)
        return cls(med * 1e3, samples[int(0.9 * (len(samples) - 1))] * 1e3, 2 * payload / med / 1e6)


class _Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, *_: object) -> None:
        self.event.set()


def _measure(send: Callable[[bytes], None], waiter: _Waiter, payload: bytes, rounds: int) -> list[float]:
    for _ in range(min(20, rounds)):  # warm-up
        waiter.event.clear()
        send(payload)
        if not waiter.event.wait(5):
            raise RuntimeError("no reply within 5 s")
    samples = []
    for _ in range(rounds):
        waiter.event.clear()
        t0 = time.perf_counter()
        send(payload)
        if not waiter.event.wait(5):
            raise RuntimeError("no reply within 5 s")
        samples.append(time.perf_counter() - t0)
    return samples


def bench_transport(url: str, payload: bytes, rounds: int, *, tcp_nodelay: bool = True) -> Timing:
    responder = MqttTransport(url, client_id="bench-resp", tcp_nodelay=tcp_nodelay)
    requester = MqttTransport(url, client_id="bench-req", tcp_nodelay=tcp_nodelay)
    try:
        responder.subscribe(REQ, lambda m: responder.publish(REP, m.payload, qos=1), qos=1)
        waiter = _Waiter()
        requester.subscribe(REP, lambda m: waiter(m) if isinstance(m, Message) else None, qos=1)
        samples = _measure(lambda p: requester.publish(REQ, p, qos=1), waiter, payload, rounds)
    finally:
        requester.close()
        responder.close()
    return Timing.of(samples, len(payload))


def _paho_client(host: str, port: int, client_id: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(host, port)
    c.loop_start()
    if not connected.wait(5):
        raise RuntimeError(f"paho could not connect to {host}:{port}")
    return c


def bench_bare_paho(host: str, port: int, payload: bytes, rounds: int) -> Timing:
    responder = _paho_client(host, port, "bench-paho-resp")
    requester = _paho_client(host, port, "bench-paho-req")
    try:
        responder.on_message = lambda client, userdata, msg: client.publish(REP, msg.payload, 1)
        subscribed = threading.Event()
        responder.on_subscribe = lambda *a: subscribed.set()
        responder.subscribe(REQ, 1)
        subscribed.wait(5)
        waiter = _Waiter()
        requester.on_message = waiter
        subscribed.clear()
        requester.on_subscribe = lambda *a: subscribed.set()
        requester.subscribe(REP, 1)
        subscribed.wait(5)
        samples = _measure(lambda p: requester.publish(REQ, p, 1), waiter, payload, rounds)
    finally:
        for c in (requester, responder):
            c.disconnect()
            c.loop_stop()
    return Timing.of(samples, len(payload))


def _row(*labels: str, t: Timing, extra: str = "") -> str:
    cells = [*labels, f"{t.median_ms:.3f}", f"{t.p90_ms:.3f}", f"{t.mb_per_s:.3g}", *([extra] if extra else [])]
    return "| " + " | ".join(cells) + " |"


def run(rounds: int = 400, nagle_rounds: int = 20) -> str:
    """Run every measurement against a fresh Mosquitto; return Markdown."""
    out: list[str] = []
    with EmbeddedBroker(impl="mosquitto") as broker:
        host, port = broker.host, broker.port
        out += [
            f"### MqttTransport vs bare paho: request -> responder -> reply (`{COMMAND}`)",
            "",
            f"Mosquitto on loopback (`set_tcp_nodelay true`), MQTT v5, QoS 1 both ways, TCP_NODELAY on the "
            f"clients; {rounds} round trips after 20 warm-up; Python {platform.python_version()}, "
            f"{platform.machine()}. MB/s counts request + reply payload bytes at the median.",
            "",
            "| payload | path | median ms | p90 ms | MB/s | transport / paho (median) |",
            "|---|---|---|---|---|---|",
        ]
        for size, label in ((1024, "1 KB"), (64 * 1024, "64 KB")):
            payload = bytes(range(256)) * (size // 256)
            bare = bench_bare_paho(host, port, payload, rounds)
            ours = bench_transport(broker.url, payload, rounds)
            ratio = ours.median_ms / bare.median_ms
            out.append(_row(label, "bare paho", t=bare, extra="1.00"))
            out.append(_row(label, "MqttTransport", t=ours, extra=f"{ratio:.2f}"))
        out += [
            "",
            f"### TCP_NODELAY on the clients, 1 KB (`{COMMAND}`)",
            "",
            f"The broker keeps `set_tcp_nodelay true`; only the clients' sockets change. "
            f"{nagle_rounds} round trips without it (each can wait for a delayed ACK), {rounds} with it.",
            "",
            "| client TCP_NODELAY | median ms | p90 ms | MB/s |",
            "|---|---|---|---|",
        ]
        payload = bytes(range(256)) * 4
        on = bench_transport(broker.url, payload, rounds, tcp_nodelay=True)
        off = bench_transport(broker.url, payload, nagle_rounds, tcp_nodelay=False)
        out.append(_row("on (default)", t=on))
        out.append(_row("off", t=off))
        out.append("")
        out.append(f"Without TCP_NODELAY the median round trip is {off.median_ms / on.median_ms:.0f}x slower.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(run())
