"""What the cloud sends back to a camera: answers, latency reports and errors (``DeviceRunner``'s replies).

A mixin of :class:`~device_runner.runner.DeviceRunner`; its handlers run on the transport's thread (paho's network
thread) and only decode, pop and mark under the runner's lock (the runner's module doc, "Threads"):

* a :class:`~sdk.messages.ResultMessage` answers its frame if the frame is still in flight and before its deadline,
  or overdue while its device-model fallback runs (the runner's ``expire``), else it counts as a late or duplicate
  answer; a shadow probe's result only measures (matched by seq and cut);
* a :class:`~sdk.messages.ReportMessage` (the worker's decode, queue and tail times) is joined with the result's
  arrival into one network sample and one tail sample for the estimator (:meth:`CloudReplies._join`);
* an :class:`~sdk.messages.ErrorMessage` marks its frame refused: the loop answers it locally at once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device_runner.answers import Answer, AnsweredBy
from sdk.errors import WireError
from sdk.messages import ErrorMessage, ReportMessage, ResultMessage, decode_message
from sdk.transport import Message

if TYPE_CHECKING:
    from device_runner.estimator import Estimator
    from device_runner.inflight import InFlight, Pending

log = logging.getLogger("device_runner.runner")

__all__ = ["CloudReplies", "ReplyTiming"]


@dataclass(slots=True)
class ReplyTiming:
    """A sent payload waiting for its result's arrival and its report (both are needed for one sample)."""

    send_ts: float
    cut: int
    arrival: float | None = None
    report: ReportMessage | None = None
    shadow: bool = False  # a shadow probe's: its result answers nothing (the device already did)


class CloudReplies:
    """The reply handlers; the state they touch is the runner's (set in ``DeviceRunner.__init__``)."""

    device_id: str
    clock: Any
    estimator: Estimator
    emulated: bool
    errors: int
    late_answers: int
    duplicate_results: int
    shadow_results: int
    _lock: threading.RLock
    _wake: threading.Condition
    _inflight: InFlight
    _falling_back: dict[int, Pending]
    _timings: OrderedDict[int, ReplyTiming]
    _shadows: OrderedDict[int, ReplyTiming]
    _answered: OrderedDict[int, AnsweredBy]
    _emit: Callable[[Answer], bool]  # DeviceRunner's: the one path an answer leaves by

    def _on_message(self, msg: Message) -> None:
        try:
            m = decode_message(msg.payload)
        except WireError as exc:
            with self._lock:
                self.errors += 1
            log.warning("undecodable message on %s: %s", msg.topic, exc)
            return
        if getattr(m, "device_id", self.device_id) != self.device_id:
            return
        arrival = self.clock()
        if isinstance(m, ResultMessage):
            self._on_result(m, arrival)
        elif isinstance(m, ReportMessage):
            with self._lock:
                shadow = self._shadows.get(m.seq)
                t = shadow if shadow is not None and shadow.cut == m.cut_id else self._timings.get(m.seq)
                if t is not None:
                    t.report = m
                    self._join(m.seq, t)
        elif isinstance(m, ErrorMessage):
            with self._wake:
                self.errors += 1
                p = self._inflight.get(m.seq) if m.seq is not None else None
                if p is not None:
                    self._inflight.mark_error(p, m.code)
                    self._wake.notify_all()
                if m.seq is not None:
                    self._timings.pop(m.seq, None)
            log.info("cloud error for frame %s: %s (%s)", m.seq, m.code, m.detail)

    def _on_result(self, m: ResultMessage, arrival: float) -> None:
        with self._wake:
            shadow = self._shadows.get(m.seq)
            if shadow is not None and shadow.cut == m.cut_id:  # a shadow probe's result: a measurement only
                if shadow.arrival is None:
                    shadow.arrival = arrival
                    self.shadow_results += 1
                    self._join(m.seq, shadow)
                return
            p = self._inflight.get(m.seq)
            racing = self._falling_back.pop(m.seq, None) if p is None else None  # its fallback model is running
            t = self._timings.get(m.seq)
            if t is not None and t.arrival is None:
                t.arrival = arrival
                self._join(m.seq, t)
            if p is not None and arrival >= p.deadline:
                # Past its deadline but not yet expired: the deadline answers it (in expire), not the cloud.
                self.late_answers += 1
                p.late_result = True
                self._wake.notify_all()
                return
            if p is not None:
                self._inflight.pop(m.seq)
            elif racing is not None:
                p = racing  # it beat the device model: the cloud answers (DeviceRunner._answer_fallback)
            else:
                previous = self._answered.get(m.seq)
                if previous is AnsweredBy.CLOUD:
                    self.duplicate_results += 1
                else:
                    self.late_answers += 1
                return
            latency = (arrival - p.capture_ts) * 1000.0 + p.offset_ms
            conf = next((pr for c, pr in m.topk if c == m.cls), None)
            self._emit(Answer(m.seq, m.cls, AnsweredBy.CLOUD, "cloud", p.cut, p.bits, p.nbytes, latency,
                              conf, p.probe, self.emulated))
            self._wake.notify_all()

    def _join(self, seq: int, t: ReplyTiming) -> None:
        """Both the answer's arrival and the report are known: one network sample (module estimator doc)."""
        if t.arrival is None or t.report is None:
            return
        r = t.report
        cloud_ms = r.decode_ms + r.queue_ms + r.tail_ms
        net_ms = (t.arrival - t.send_ts) * 1000.0 - cloud_ms
        self.estimator.observe_tail(t.cut, cloud_ms)
        self.estimator.observe_network(t.cut, r.bytes_received, net_ms)
        (self._shadows if t.shadow else self._timings).pop(seq, None)
