"""Store-and-forward through a real Mosquitto running the shipped cloud-tls.conf and ACL (mutual TLS, sdk.pki).

A device (``DeviceRunner``, real LiteRT heads of the reference bundle, telemetry every 0.1 s) sends frames to a
tail worker (``TailWorker``, real LiteRT tails) whose inference is stepped by the test. With frames queued in the
worker, the broker is SIGKILLed; the worker answers them during the outage and the device keeps producing
telemetry; the broker restarts. Every result, report and telemetry message produced during the outage must
arrive after the reconnect, in order, exactly once, at the fleet (``splitedge-fleet``: telemetry, reports) and at
the device's own result topic.

The receivers reconnect every 0.05 s and the producers every 1.5 s, so the receivers have re-subscribed (a
broker without persistence forgets subscriptions) before the producers flush; the test checks that it was so.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_tail.tails import BundleTails
from cloud_tail.worker import TailWorker, WorkerConfig
from device_runner.heads import LiteRTHeads
from device_runner.policy import CutPolicy
from device_runner.runner import DeviceRunner, RunnerOptions
from device_runner.sources import SyntheticSource
from sdk import topics
from sdk.broker import EmbeddedBroker
from sdk.config import parse_config
from sdk.manifest import CutKind, load_manifest
from sdk.messages import ReportMessage, ResultMessage, TelemetryMessage, decode_message
from sdk.mqtt import MqttTransport
from sdk.outbox import Outbox, StoreAndForward
from sdk.topics import TopicKind
from sdk.transport import Message
from tests.tls_rig import cloud_tls_broker, make_pki, tls_client

pytest.importorskip("cryptography")
pytestmark = pytest.mark.broker

DEVICE = "pi4-01"


class RecordingOutbox(Outbox):
    """The real outbox, remembering what it had to keep (the messages produced while the broker was away)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.kept: list[tuple[str, bytes]] = []

    def put(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> bool:
        self.kept.append((topic, bytes(payload)))
        return super().put(topic, payload, qos=qos, retain=retain)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"), [DEVICE])


@pytest.fixture
def broker(pki: Path) -> Iterator[EmbeddedBroker]:
    with cloud_tls_broker(pki) as b:
        yield b


def connect(broker: EmbeddedBroker, pki: Path, identity: str, client_id: str, delay: float) -> MqttTransport:
    return tls_client(broker, pki, identity, client_id=f"{client_id}-{os.getpid()}", reconnect_min_delay=delay,
                      reconnect_max_delay=delay)


def wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_answers_and_telemetry_of_an_outage_arrive_after_the_restart_in_order_exactly_once(
    reference_bundle: Path, broker: EmbeddedBroker, pki: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(reference_bundle)
    ups: dict[str, list[float]] = {}

    def track(name: str, t: MqttTransport) -> MqttTransport:
        t.on_connection_change(lambda up: up and ups.setdefault(name, []).append(time.monotonic()))
        return t

    # receivers: the fleet (telemetry, reports) and the device's result topic (the ACL lets only it read there)
    got: dict[str, list[Message]] = {"telemetry": [], "report": [], "result": []}
    fleet = track("fleet", connect(broker, pki, "splitedge-fleet", "fleet", 0.05))
    fleet.subscribe(topics.filter_for(TopicKind.TELEMETRY), got["telemetry"].append, qos=1)
    fleet.subscribe(topics.filter_for(TopicKind.REPORT), got["report"].append, qos=1)
    inbox = track("inbox", connect(broker, pki, DEVICE, "inbox", 0.05))
    inbox.subscribe(topics.topic(DEVICE, TopicKind.RESULT), got["result"].append, qos=1)

    # producers: the worker (stepped by the test) and the device
    worker_box = RecordingOutbox(name="w1")
    worker_link = track("worker", connect(broker, pki, "splitedge-tail", "worker", 1.5))
    worker = TailWorker(StoreAndForward(worker_link, worker_box), BundleTails([reference_bundle]), WorkerConfig("w1"))
    worker.start(thread=False)
    cfg = parse_config({
        "board": {"name": "host", "cpu": "x86-64", "threads": 1, "memory_budget_mb": 256, "speed_factor": 1.0,
                  "speed_factor_source": "test"},
        "device": {"device_id": DEVICE, "fps_cap": 20, "deadline_ms": 300, "target_accuracy": 0.5, "bits": [8],
                   "telemetry_interval_s": 0.1},
        "broker": {"url": broker.url, "ca_file": str(pki / "ca.crt"), "cert_file": str(pki / f"{DEVICE}.crt"),
                   "key_file": str(pki / f"{DEVICE}.key")},
    })  # fmt: skip
    device_box = RecordingOutbox(name=DEVICE)
    device_link = track("device", connect(broker, pki, DEVICE, DEVICE, 1.5))
    splits = [c.index for c in manifest.cuts if c.kind is CutKind.SPLIT]
    policy = CutPolicy(manifest, cfg.device, tau_override=2.0, probe_every=0, allowed_cuts=splits)  # always escalate
    runner = DeviceRunner(manifest, cfg, StoreAndForward(device_link, device_box),
                          LiteRTHeads(reference_bundle, manifest, cfg.board), policy=policy,
                          options=RunnerOptions(max_inflight=64))  # fmt: skip
    done = threading.Event()

    def run_device() -> None:
        try:
            runner.run(SyntheticSource(tuple(manifest.input.shape), seed=5), frames=80)  # 4 s at 20 fps
        finally:
            done.set()

    thread = threading.Thread(target=run_device)
    thread.start()
    try:
        wait_for(lambda: worker.pending() >= 5, 10, "frames queued at the worker")
        broker.kill()
        wait_for(lambda: not worker_link.connected and not device_link.connected, 5, "both producers to notice")
        killed = time.monotonic()
        outage_answers = worker.drain()  # answered while the broker is away: results and reports wait
        assert outage_answers >= 5 and len(worker_box) == 2 * outage_answers
        time.sleep(max(0.0, killed + 1.9 - time.monotonic()))  # ~19 telemetry snapshots wait on the device
        broker.restart()
        while not done.is_set():  # the frames after the restart are answered as they come
            worker.drain()
            time.sleep(0.02)
        wait_for(lambda: not len(worker_box) and not len(device_box), 5, "the outboxes to empty")
        time.sleep(0.5)  # the last deliveries
    finally:
        thread.join()
        runner.close()
        worker.stop()
        worker.transport.close()
        fleet.close()
        inbox.close()

    # the receivers were back (and subscribed) before either producer flushed
    assert max(ups["fleet"][-1], ups["inbox"][-1]) < min(ups["worker"][-1], ups["device"][-1]), ups

    def kept(box: RecordingOutbox, kind: TopicKind) -> list[bytes]:
        return [p for t, p in box.kept if topics.parse(t)[1] is kind]

    for kind in (TopicKind.RESULT, TopicKind.REPORT):
        payloads = [m.payload for m in got[kind.value]]
        during = kept(worker_box, kind)
        assert len(during) == outage_answers
        assert all(payloads.count(p) == 1 for p in during), f"{kind}: a message of the outage lost or doubled"
        where = [payloads.index(p) for p in during]
        assert where == sorted(where), f"{kind}: out of order"
        seqs = [decode_message(p).seq for p in payloads]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs  # everything: in order, once
        assert all(isinstance(decode_message(p), ResultMessage if kind is TopicKind.RESULT else ReportMessage)
                   for p in payloads)  # fmt: skip

    telemetry = [m.payload for m in got["telemetry"]]
    during = kept(device_box, TopicKind.TELEMETRY)
    assert len(during) >= 10, len(during)  # 0.1 s apart over a ~2 s outage
    assert all(telemetry.count(p) == 1 for p in during), "a telemetry message of the outage lost or doubled"
    where = [telemetry.index(p) for p in during]
    assert where == sorted(where) and where == list(range(where[0], where[0] + len(where)))  # in order, no gap
    snapshots = [decode_message(p) for p in telemetry]
    assert all(isinstance(t, TelemetryMessage) for t in snapshots)
    stamps = [t.ts for t in snapshots]
    assert stamps == sorted(stamps)  # produced order kept across the outage
    # at the bound nothing was dropped; everything kept went out
    for box in (worker_box, device_box):
        s = box.stats()
        assert (s.dropped, s.queued, s.forwarded) == (0, 0, s.stored), s
    assert snapshots[-1].outbox_dropped == 0
    assert runner.summary().outbox["forwarded"] == len(during)


def test_unacknowledged_qos1_messages_go_before_the_outbox_flush(fresh_mosquitto: EmbeddedBroker) -> None:
    """The broker is frozen (SIGSTOP) while three results are published: paho holds them unacknowledged. It is
    then killed, three more are produced during the outage (the outbox), and it restarts: the first three are
    published again *before* the reconnect callbacks flush the outbox, so all six arrive in order, once."""
    import signal

    got: list[bytes] = []
    receiver = MqttTransport(fresh_mosquitto.url, client_id=f"rx-{os.getpid()}", reconnect_min_delay=0.05,
                             reconnect_max_delay=0.05)  # fmt: skip
    receiver.subscribe(topics.filter_for(TopicKind.RESULT), lambda m: got.append(m.payload), qos=1)
    link = MqttTransport(fresh_mosquitto.url, client_id=f"tx-{os.getpid()}", reconnect_min_delay=1.0,
                         reconnect_max_delay=1.0)  # fmt: skip
    producer = StoreAndForward(link, Outbox(name="tx"))
    result = topics.topic("cam-01", TopicKind.RESULT)
    try:
        assert fresh_mosquitto.pid is not None
        os.kill(fresh_mosquitto.pid, signal.SIGSTOP)
        for i in range(3):
            producer.publish(result, b"r%d" % i, qos=1)  # written to the socket; no PUBACK comes
        assert len(producer.outbox) == 0 and producer.sent_direct == 3
        fresh_mosquitto.kill()
        wait_for(lambda: not link.connected, 5, "the producer to notice")
        for i in range(3, 6):
            producer.publish(result, b"r%d" % i, qos=1)  # kept
        assert len(producer.outbox) == 3
        fresh_mosquitto.restart()
        wait_for(lambda: len(got) >= 6, 10, "six results")
        time.sleep(0.3)  # nothing more comes
    finally:
        producer.close()
        receiver.close()
    assert got == [b"r%d" % i for i in range(6)], got
