"""The simulated uplink and cloud tail the replay's real ``DeviceRunner`` talks to (no broker, no sleeping).

:class:`SimUplink` is ``device_runner.link.ShapedTransport`` - the live run's trace shaper - on an
``sdk.transport.InMemoryHub`` and a :class:`~benchmarks.sim_clock.SimClock`: each ``act`` payload is held
for what :class:`~device_runner.link.TraceShaper` says (FIFO behind the earlier payloads, its bytes at the
trace's rate, plus the fixed round trip), and its delivery is an event on the simulated clock. The same
bounded queue (``max_pending``) refuses a payload when the link falls behind, as live.

:class:`SimTail` answers every ``act`` payload on the hub like a ``cloud_tail`` worker: one tail at a
time (FIFO), each taking its measured ``tail_ms``, then a ``ResultMessage`` with the recorded answer of
that frame at that route and a ``ReportMessage`` (bytes received, queueing and tail time) - what the
device's estimator learns from. Answers come back at once (the downlink is not shaped, as live).
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.sim_clock import SimClock
from device_runner.link import ShapedTransport, TraceShaper
from sdk import topics
from sdk.messages import AnsweredBy, ReportMessage, ResultMessage
from sdk.topics import TopicKind
from sdk.transport import Message, Transport
from sdk.wire import FrameHeader, decode_frame

__all__ = ["AnswerFor", "SimTail", "SimUplink"]

#: (cut, bits, seq) -> (class, top-k) the tail answers for that frame's payload; bits 0 at the raw cut
AnswerFor = Callable[[int, int, int], tuple[int, tuple[tuple[int, float], ...]]]


class SimUplink(ShapedTransport):
    """The live run's shaped uplink, released by events on a :class:`SimClock` instead of a thread."""

    def __init__(self, inner: Transport, shaper: TraceShaper, clock: SimClock, *, max_pending: int = 64) -> None:
        super().__init__(inner, shaper, clock=clock, threaded=False, max_pending=max_pending)
        self.sim = clock

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        held = self.pending
        super().publish(topic, payload, qos=qos, retain=retain)
        if self.pending > held:  # shaped and held: release it when the shaper says
            due = max(item[0] for item in self._heap)  # FIFO: the newest payload is due last
            self.sim.at(due, self.pump)


class SimTail:
    """A cloud worker in simulated time: FIFO tails of ``tail_ms(cut)`` answering recorded outputs."""

    def __init__(self, transport: Transport, clock: SimClock, answer: AnswerFor, tail_ms: Callable[[int], float],
                 *, worker_id: str = "sim-tail") -> None:
        self.transport, self.clock, self.answer, self.tail_ms = transport, clock, answer, tail_ms
        self.worker_id = worker_id
        self.free_at = float("-inf")
        self.received = 0
        transport.subscribe(topics.filter_for(TopicKind.ACT), self._on_act, qos=1)

    def _on_act(self, msg: Message) -> None:
        header = FrameHeader.from_bytes(msg.payload)
        bits = 0 if header.is_raw else decode_frame(msg.payload).tensors[0].bits
        now = self.clock()
        start = max(now, self.free_at)
        tail_ms = float(self.tail_ms(header.cut_id))
        self.free_at = done = start + tail_ms / 1000.0
        self.received += 1
        cls, topk = self.answer(header.cut_id, bits, header.seq)
        result = ResultMessage(seq=header.seq, device_id=header.device_id, cls=cls, topk=topk,
                               answered_by=AnsweredBy.CLOUD, cut_id=header.cut_id, worker_id=self.worker_id,
                               tail_ms=tail_ms, ts=done)
        report = ReportMessage(seq=header.seq, device_id=header.device_id, cut_id=header.cut_id,
                               bytes_received=len(msg.payload), recv_ts=now, queue_ms=(start - now) * 1000.0,
                               tail_ms=tail_ms, worker_id=self.worker_id)

        def reply() -> None:
            self.transport.publish(topics.topic(header.device_id, TopicKind.RESULT), result.to_bytes(), qos=1)
            self.transport.publish(topics.topic(header.device_id, TopicKind.REPORT), report.to_bytes(), qos=0)

        self.clock.at(done, reply)
