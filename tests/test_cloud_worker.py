"""The worker's batching, shedding, refusals and counters, on InMemoryHub with a fake clock and fake tails."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence

import numpy as np
import pytest

from cloud_tail.metrics import serve_registry, worker_registry
from cloud_tail.tails import Refusal
from cloud_tail.worker import TailWorker, WorkerConfig
from sdk.messages import ErrorCode, ErrorMessage, ReportMessage, ResultMessage, decode_message
from sdk.topics import TopicKind, filter_for, topic
from sdk.transport import InMemoryHub, Message
from sdk.wire import Frame, encode_activation

BUNDLE = 0x1A2B3C4D
CLASSES = 4


class FakeTails:
    """Cuts 1 and 2 exist; the logits put all mass on class (first activation value % CLASSES)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []  # (cut, batch size)
        self.fail = False

    def admit(self, frame: Frame) -> Refusal | None:
        if frame.header.bundle_id != BUNDLE:
            return Refusal(ErrorCode.BUNDLE_MISMATCH, "bundle")
        if frame.header.cut_id not in (1, 2):
            return Refusal(ErrorCode.UNKNOWN_CUT, "cut")
        return None

    def run(self, cut_id: int, frames: Sequence[Frame]) -> np.ndarray:
        if self.fail:
            raise RuntimeError("boom")
        self.batches.append((cut_id, len(frames)))
        out = np.full((len(frames), CLASSES), -10.0, dtype=np.float32)
        for i, f in enumerate(frames):
            out[i, int(f.tensors[0].data.flat[0]) % CLASSES] = 10.0
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(device: str, seq: int, cut: int = 1, bundle: int = BUNDLE, value: int = 0) -> bytes:
    act = np.full((2, 3), value, dtype=np.int8)
    return encode_activation(device_id=device, seq=seq, cut_id=cut, bundle_id=bundle, activations={"a": act},
                             quant={"a": (0.1, 0)}, bits=8, capture_ts=1.0)  # fmt: skip


@pytest.fixture
def setup():
    clock = Clock()
    hub = InMemoryHub(synchronous=True, clock=clock, raise_handler_errors=True)
    tails = FakeTails()
    replies: dict[str, list] = {}

    def make(**kw) -> TailWorker:
        w = TailWorker(hub.transport("worker"), tails, WorkerConfig("w1", **kw), clock=clock)
        w.start(thread=False)
        return w

    def collect(msg: Message) -> None:
        replies.setdefault(msg.topic.split("/")[2], []).append(decode_message(msg.payload))

    listener = hub.transport("listener")
    listener.subscribe(filter_for(TopicKind.RESULT), collect)
    listener.subscribe(filter_for(TopicKind.REPORT), collect)
    return hub, clock, tails, make, replies


def publish(hub: InMemoryHub, device: str, payload: bytes) -> None:
    hub.transport(f"dev-{device}-{len(payload)}").publish(topic(device, TopicKind.ACT), payload, qos=1)


def results(replies: dict, device: str, kind: type) -> list:
    return [m for m in replies.get(device, []) if isinstance(m, kind)]


def test_frames_of_one_cut_from_several_devices_share_a_batch(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make(max_batch=8, max_wait_ms=5)
    for d in ("a", "b", "c"):
        publish(hub, d, frame(d, 1, value=ord(d)))
    assert w.step() == 0  # 0 ms waited: the batch is not full, keep waiting
    clock.now += 0.006
    assert w.step() == 3
    assert tails.batches == [(1, 3)]
    for d in ("a", "b", "c"):
        [r] = results(replies, d, ResultMessage)
        assert (r.seq, r.cls, r.cut_id, r.worker_id) == (1, ord(d) % CLASSES, 1, "w1")
        [rep] = results(replies, d, ReportMessage)
        assert rep.queue_ms == pytest.approx(6.0) and rep.bytes_received == len(frame(d, 1))


def test_a_full_batch_runs_at_once_and_cuts_are_not_mixed(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make(max_batch=2, max_wait_ms=1000)
    publish(hub, "a", frame("a", 1, cut=1))
    publish(hub, "a", frame("a", 2, cut=2))
    publish(hub, "b", frame("b", 1, cut=1))
    w.step()  # the pending area (max_batch frames) is full, one frame per cut: the oldest cut runs
    w.step()  # b's frame joins; cut 2's frame is now the oldest
    assert w.step() == 0  # cut 1's frame alone waits for its batch to fill
    w.drain()
    assert tails.batches == [(1, 1), (2, 1), (1, 1)]
    assert sorted((d, r.seq) for d in "ab" for r in results(replies, d, ResultMessage)) == [
        ("a", 1), ("a", 2), ("b", 1),
    ]  # fmt: skip


def test_batch_never_exceeds_max_batch(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make(max_batch=4, max_wait_ms=1000, queue_size=100)
    for s in range(10):
        publish(hub, "a", frame("a", s))
    w.step()
    w.step()
    assert w.step() == 0 and w.pending() == 2  # the last two wait for max_wait_ms
    clock.now += 1.0
    w.step()
    assert tails.batches == [(1, 4), (1, 4), (1, 2)]
    assert w.counters.snapshot()["batches"] == {"4": 2, "2": 1}
    assert sorted(r.seq for r in results(replies, "a", ResultMessage)) == list(range(10))


def test_full_queue_sheds_at_once_with_overloaded(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make(queue_size=2)
    for s in range(5):
        publish(hub, "a", frame("a", s))
    errors = results(replies, "a", ErrorMessage)  # answered from the transport thread, before any inference
    assert [(e.seq, e.code) for e in errors] == [(2, "overloaded"), (3, "overloaded"), (4, "overloaded")]
    assert "queue is full" in errors[0].detail
    w.drain()
    assert sorted(r.seq for r in results(replies, "a", ResultMessage)) == [0, 1]
    snap = w.counters.snapshot()
    assert snap["devices"]["a"] | {"tail_ms_p50": None, "tail_ms_p95": None} == {
        "received": 5, "answered": 2, "shed": 3, "errors": {}, "tail_ms_p50": None, "tail_ms_p95": None,
        "bytes_received": 5 * len(frame("a", 0)),
    }  # fmt: skip
    assert snap["max_queue_depth"] == 2 and snap["queue_depth"] == 0


def test_frames_older_than_max_queue_ms_are_shed_not_run(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make(max_queue_ms=100, max_wait_ms=0)
    publish(hub, "a", frame("a", 1))
    clock.now += 0.5
    publish(hub, "a", frame("a", 2))
    w.drain()
    [e] = results(replies, "a", ErrorMessage)
    assert (e.seq, e.code) == (1, "overloaded") and "500 ms" in e.detail
    assert [r.seq for r in results(replies, "a", ResultMessage)] == [2]
    assert tails.batches == [(1, 1)]


@pytest.mark.parametrize(
    ("payload", "code", "seq"),
    [
        (b"garbage", "malformed", None),
        (frame("a", 5)[:-3], "malformed", 5),
        (frame("a", 6, cut=9), "unknown_cut", 6),
        (frame("a", 7, bundle=0xDEAD), "bundle_mismatch", 7),
        (frame("someone-else", 8), "malformed", 8),
    ],
)
def test_refused_frames_get_an_error_reply_and_a_counter(
    setup, payload: bytes, code: str, seq: int | None
) -> None:
    hub, clock, tails, make, replies = setup
    w = make()
    publish(hub, "a", payload)
    w.drain()
    [e] = replies["a"]
    assert isinstance(e, ErrorMessage) and (e.code, e.seq, e.worker_id) == (code, seq, "w1")
    assert e.detail
    assert w.counters.snapshot()["devices"]["a"]["errors"] == {code: 1}
    publish(hub, "a", frame("a", 10))  # and the worker carries on
    w.drain()
    assert [r.seq for r in results(replies, "a", ResultMessage)] == [10]


def test_a_failing_tail_answers_internal(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make()
    tails.fail = True
    publish(hub, "a", frame("a", 1))
    w.drain()
    [e] = replies["a"]
    assert e.code == "internal" and "boom" in e.detail


def test_broker_outage_is_counted_not_raised_and_the_replies_wait_in_the_outbox(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make()
    publish(hub, "a", frame("a", 1))
    hub.set_broker_up(False)
    w.drain()  # the reply cannot be published now: result and report wait in the outbox (sdk/outbox.py)
    assert w.outbox.stats().queued == 2 and "a" not in replies
    hub.set_broker_up(True)  # ... and go out on the reconnect
    snap = w.counters.snapshot()
    assert snap["publish_failed"] == 0 and snap["disconnects"] == 1 and snap["connected"] is True
    publish(hub, "a", frame("a", 2))
    w.drain()
    assert [r.seq for r in results(replies, "a", ResultMessage)] == [1, 2]
    assert w.outbox.stats().forwarded == 2 and w.outbox.stats().dropped == 0
    assert w.counters.snapshot()["outbox"]["forwarded"] == 2  # in --metrics-json too


def test_stop_answers_queued_frames_overloaded(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make()
    publish(hub, "a", frame("a", 1))
    w.stop()
    [e] = replies["a"]
    assert e.code == "overloaded" and "stopping" in e.detail


def test_threaded_worker_answers_and_metrics_are_served(setup) -> None:
    hub, clock, tails, make, replies = setup
    hub_t = InMemoryHub(synchronous=True)
    got: list = []
    hub_t.transport("l").subscribe(
        filter_for(TopicKind.RESULT), lambda m: got.append(decode_message(m.payload))
    )
    w = TailWorker(hub_t.transport("w"), tails, WorkerConfig("wt", max_wait_ms=1))
    w.start()
    server = serve_registry(worker_registry(w.counters), 0, json_snapshot=w.counters.snapshot)
    try:
        for s in range(5):
            hub_t.transport(f"d{s}").publish(topic("a", TopicKind.ACT), frame("a", s))
        import time

        end = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < end:
            time.sleep(0.01)
        assert sorted(r.seq for r in got) == list(range(5))
        base = f"http://127.0.0.1:{server.server_port}"
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert 'splitedge_cloud_frames_answered_total{cut="1",device="a",worker="wt"} 5.0' in text
        assert 'splitedge_cloud_tail_seconds_count{cut="1",device="a",worker="wt"} 5.0' in text
        snap = json.loads(urllib.request.urlopen(f"{base}/metrics.json", timeout=5).read())
        assert snap["totals"]["answered"] == 5 and snap["cuts"]["1"]["tail_ms_p50"] is not None
    finally:
        server.shutdown()
        server.server_close()
        w.stop()


def test_a_frame_runs_at_once_when_frames_arrive_further_apart_than_the_wait(setup) -> None:
    hub, clock, tails, make, replies = setup
    w = make(max_batch=8, max_wait_ms=5)
    publish(hub, "a", frame("a", 0))  # no gap known yet: it waits for company, as before
    assert w.step() == 0
    clock.now += 0.5
    assert w.step() == 1  # (its wait is over)
    for s in range(1, 4):  # one device at 2 fps: a partner is 500 ms away, not within 5 ms
        clock.now += 0.5
        publish(hub, "a", frame("a", s))
        assert w.step() == 1  # no 5 ms wait
    [rep] = [m for m in results(replies, "a", ReportMessage) if m.seq == 3]
    assert rep.queue_ms == pytest.approx(0.0)
    for s in range(4, 40):  # a busy fleet: frames back to back, the gap EWMA falls under the wait
        publish(hub, "b", frame("b", s))
    w.drain()
    publish(hub, "b", frame("b", 99))
    assert w.step() == 0  # it waits for company again
