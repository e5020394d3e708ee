"""Step 1 and 3 of the cloud worker: take frames off the broker, batch them, reply (docs/CLOUD.md).

Two threads meet at one bounded queue:

* the **transport thread** (paho's network thread, or the caller with ``InMemoryHub``) runs
  :meth:`TailWorker.handle`: it reads the 60-byte header only (cheap), and either queues the frame
  or — the queue being full — answers ``overloaded`` at once (shedding rule 1);
* the **inference thread** (:meth:`TailWorker.step` in a loop) decodes, admits (bundle id, cut,
  tensor shapes), groups frames of the same cut into a micro-batch (at most ``max_batch`` frames,
  waiting at most ``max_wait_ms`` after the oldest one arrived - and not at all while frames arrive
  further apart than that: see "Batching wait"), runs the tail and publishes a
  ResultMessage (``splitedge/v1/<device>/result``) and a ReportMessage (``.../report``) per frame.
  A frame that waited longer than ``max_queue_ms`` by the time its batch runs is answered
  ``overloaded`` instead of being run (shedding rule 2): its device has given up on it already.

**Batching wait.** A batch waits for company only while company is coming: the transport thread keeps
an EWMA (1/4) of the gaps between arrivals, and while it is above ``max_wait_ms`` a pending frame runs
at once. One Zero 2 W at 2 fps had waited the whole 2 ms for a partner 500 ms away, on every frame
(live on ``zero2w-offload``, docs/DYNAMIC.md "Replay vs live"); a busy fleet (gaps under the wait)
batches as before.

Every frame ends in exactly one reply — a result or an ErrorMessage on the device's result topic —
and one counter (see :mod:`cloud_tail.counters`). Nothing past :meth:`handle` raises: a malformed
frame, an unknown cut, a foreign bundle, a failing tail or a broker that went away are replies and
counters, never a crash. Results and reports produced while the broker is away wait in the worker's
outbox (:mod:`sdk.outbox`, ``WorkerConfig.outbox``) and are sent, in order, after the reconnect; what the
outbox's bound drops is counted there (``TailWorker.outbox.stats()``). A reply that cannot be published
for another reason is counted in ``publish_failed``; the device times out and answers locally.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud_tail.counters import Counters
from cloud_tail.tails import Tails, softmax, topk
from sdk.config import OutboxSettings
from sdk.errors import TransportError, WireError
from sdk.messages import AnsweredBy, ErrorCode, ErrorMessage, ReportMessage, ResultMessage
from sdk.outbox import Outbox, StoreAndForward
from sdk.topics import TopicKind, parse, shared_filter, topic
from sdk.transport import Message, QosPolicy, Transport
from sdk.wire import Frame, FrameHeader, decode_frame

__all__ = ["UNKNOWN_DEVICE", "TailWorker", "WorkerConfig"]

log = logging.getLogger(__name__)

#: the counters' key for frames whose topic does not name a device (they cannot be answered).
UNKNOWN_DEVICE = "?"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker batches and sheds. Defaults are what ``splitedge cloud`` uses."""

    worker_id: str
    group: str = "tails"
    max_batch: int = 8
    max_wait_ms: float = 2.0
    queue_size: int = 256
    max_queue_ms: float = 1000.0
    topk: int = 5
    qos: QosPolicy = field(default_factory=QosPolicy)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)  # replies kept while the broker is away

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.queue_size < 1:
            raise ValueError(f"max_batch ({self.max_batch}) and queue_size ({self.queue_size}) must be >= 1")
        if self.max_wait_ms < 0 or self.max_queue_ms <= 0:
            raise ValueError(
                f"max_wait_ms ({self.max_wait_ms}) must be >= 0 and max_queue_ms ({self.max_queue_ms}) > 0"
            )


@dataclass(slots=True)
class _Job:
    device_id: str
    payload: bytes
    recv_ts: float
    header: FrameHeader | None = None  # None: not even the header could be read
    frame: Frame | None = None
    decode_ms: float = 0.0


class TailWorker:
    """One cloud worker: subscribe, queue, batch, infer, reply. Thread-safe start/stop."""

    def __init__(
        self,
        transport: Transport,
        tails: Tails,
        config: WorkerConfig,
        *,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport: StoreAndForward = (
            transport if isinstance(transport, StoreAndForward)
            else StoreAndForward(transport, Outbox(config.outbox, name=config.worker_id))
        )  # fmt: skip
        self.outbox = self.transport.outbox
        self.tails = tails
        self.config = config
        self.clock = clock
        self.counters = counters if counters is not None else Counters(config.worker_id, clock=clock)
        self.counters.outbox = lambda: self.outbox.stats().to_dict()  # in the snapshot (--metrics-json)
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=config.queue_size)
        # (bundle id, cut id) -> admitted jobs (inference thread only): a batch never mixes bundles (tails.BundleTails)
        self._pending: dict[tuple[int, int], list[_Job]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._filter = shared_filter(config.group)
        self._last_recv: float | None = None  # transport thread: arrival of the previous frame
        self._gap_ms: float | None = None  # EWMA of the gaps between arrivals (module doc, "Batching wait")

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, *, thread: bool = True) -> None:
        """Subscribe to the shared activation filter; with ``thread``, start the inference thread."""
        self.transport.on_connection_change(self.counters.connection)
        self.counters.connection(self.transport.connected)
        self.transport.subscribe(self._filter, self.handle, qos=self.config.qos.for_kind(TopicKind.ACT))
        if thread:
            self._thread = threading.Thread(
                target=self._loop, name=f"tail-{self.config.worker_id}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Unsubscribe, stop the inference thread, and answer what is still queued ``overloaded``."""
        try:
            self.transport.unsubscribe(self._filter)
        except TransportError as exc:
            log.warning("could not unsubscribe %s: %s", self._filter, exc)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        leftovers = [job for jobs in self._pending.values() for job in jobs]
        self._pending.clear()
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for job in leftovers:
            self._shed(job, "the worker is stopping; answer this frame locally")
        self._update_depth()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(timeout=0.05)
            except Exception:  # noqa: BLE001 - the loop must survive anything; step answers its frames
                log.exception("inference loop error")

    # ---- transport thread ----------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        """Subscription handler: queue the frame, or answer ``overloaded`` when the queue is full."""
        recv_ts = msg.received_at or self.clock()
        last, self._last_recv = self._last_recv, recv_ts
        if last is not None:
            gap = max(0.0, (recv_ts - last) * 1000.0)
            self._gap_ms = gap if self._gap_ms is None else 0.75 * self._gap_ms + 0.25 * gap
        try:
            device_id, _ = parse(msg.topic)
        except ValueError:
            device_id = UNKNOWN_DEVICE
        job = _Job(device_id, bytes(msg.payload), recv_ts)
        try:
            header = FrameHeader.from_bytes(job.payload)
            header.validate()
            job.header = header
        except WireError:
            pass  # the inference thread decodes it again and answers 'malformed'
        self.counters.received(device_id, job.header.cut_id if job.header else None, len(job.payload))
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._shed(job, f"the worker's queue is full ({self.config.queue_size} frames); answer locally")
        self._update_depth()

    # ---- inference thread --------------------------------------------------------------------

    def step(self, timeout: float = 0.0) -> int:
        """One round: take queued frames (waiting up to ``timeout`` s), run at most one ready batch.

        Returns the number of frames that got a reply (results and errors) in this round.
        """
        replied = self._fill(timeout)
        cut = self._ready_cut()
        if cut is not None:
            replied += self._run(cut)
        self._update_depth()
        return replied

    def drain(self) -> int:
        """Reply to everything queued now, without waiting for batches to fill (for tests)."""
        total = 0
        while self._queue.qsize() or self._pending:
            total += self._fill(0.0)
            for key in list(self._pending):
                total += self._run(key)
        self._update_depth()
        return total

    def pending(self) -> int:
        """Frames received but not yet answered (queued and waiting in a batch)."""
        return self._queue.qsize() + sum(len(j) for j in self._pending.values())

    def _update_depth(self) -> None:
        self.counters.set_queue_depth(self.pending())

    def _pending_count(self) -> int:
        return sum(len(j) for j in self._pending.values())

    def _fill(self, timeout: float) -> int:
        """Move queued jobs into per-cut batches (at most max_batch pending); answer refusals."""
        replied = 0
        block: float | None = timeout
        if self._pending:  # wait no longer than the oldest pending frame may still wait
            oldest = min(jobs[0].recv_ts for jobs in self._pending.values())
            block = max(0.0, min(timeout, oldest + self.config.max_wait_ms / 1000.0 - self.clock()))
        while self._pending_count() < self.config.max_batch:
            try:
                job = self._queue.get(timeout=block) if block else self._queue.get_nowait()
            except queue.Empty:
                break
            block = None
            replied += self._admit(job)
        return replied

    def _admit(self, job: _Job) -> int:
        """Decode and check one job; park it in its cut's batch (0) or answer the refusal (1)."""
        t0 = time.perf_counter()
        try:
            frame = decode_frame(job.payload)
        except WireError as exc:
            self._refuse(job, ErrorCode.MALFORMED, f"{type(exc).__name__}: {exc}")
            return 1
        except Exception as exc:  # noqa: BLE001 - e.g. a zstd frame without zstandard installed
            self._refuse(job, ErrorCode.INTERNAL, f"cannot decode the frame here: {exc}")
            return 1
        job.decode_ms = (time.perf_counter() - t0) * 1000.0
        job.frame, job.header = frame, frame.header
        if job.device_id != UNKNOWN_DEVICE and frame.header.device_id != job.device_id:
            self._refuse(
                job, ErrorCode.MALFORMED,
                f"frame header names device {frame.header.device_id!r} but arrived on {job.device_id!r}'s "
                "topic; a device publishes only its own frames",
            )  # fmt: skip
            return 1
        refusal = self.tails.admit(frame)
        if refusal is not None:
            self._refuse(job, refusal.code, refusal.detail)
            return 1
        self._pending.setdefault((frame.header.bundle_id, frame.header.cut_id), []).append(job)
        return 0

    def _ready_cut(self) -> tuple[int, int] | None:
        """The (bundle, cut) whose batch should run now: full, waited max_wait_ms, the pending area is full, or no
        other frame is expected within the wait (module doc, "Batching wait")."""
        if not self._pending:
            return None
        cut, jobs = min(self._pending.items(), key=lambda kv: kv[1][0].recv_ts)
        full = any(len(j) >= self.config.max_batch for j in self._pending.values())
        if full:
            return max(self._pending.items(), key=lambda kv: len(kv[1]))[0]
        waited = (self.clock() - jobs[0].recv_ts) * 1000.0
        if waited >= self.config.max_wait_ms or self._pending_count() >= self.config.max_batch:
            return cut
        gap = self._gap_ms
        if gap is not None and gap > self.config.max_wait_ms:
            return cut
        return None

    def _run(self, key: tuple[int, int]) -> int:
        jobs = self._pending.pop(key, [])
        cut = key[1]
        batch, rest = jobs[: self.config.max_batch], jobs[self.config.max_batch :]
        if rest:
            self._pending[key] = rest
        start = self.clock()
        live = []
        for job in batch:  # shedding rule 2: the device has given up on a frame this old
            if (start - job.recv_ts) * 1000.0 > self.config.max_queue_ms:
                self._shed(
                    job,
                    f"frame waited {(start - job.recv_ts) * 1000.0:.0f} ms in the worker's queue "
                    f"(limit {self.config.max_queue_ms:.0f} ms); answer locally",
                )
            else:
                live.append(job)
        if not live:
            return len(batch)
        t0 = time.perf_counter()
        try:
            logits = self.tails.run(cut, [j.frame for j in live if j.frame is not None])
        except Exception as exc:  # noqa: BLE001 - a failing tail is an 'internal' reply, not a crash
            log.exception("tail of cut %d failed on a batch of %d", cut, len(live))
            for job in live:
                self._refuse(job, ErrorCode.INTERNAL, f"the tail of cut {cut} failed: {exc}")
            return len(batch)
        tail_ms = (time.perf_counter() - t0) * 1000.0
        self.counters.batch(len(live))
        probs = softmax(logits)
        for job, p in zip(live, probs, strict=True):
            self._answer(job, cut, p, tail_ms, queue_ms=(start - job.recv_ts) * 1000.0)
        return len(batch)

    # ---- replies -------------------------------------------------------------------------------

    def _publish(self, device_id: str, kind: TopicKind, payload: bytes) -> None:
        if device_id == UNKNOWN_DEVICE:
            return
        try:
            self.transport.publish(topic(device_id, kind), payload, qos=self.config.qos.for_kind(kind))
        except TransportError as exc:
            self.counters.failed_publish()
            log.warning("could not publish %s to %s: %s", kind.value, device_id, exc)

    def _answer(self, job: _Job, cut: int, probs: object, tail_ms: float, queue_ms: float) -> None:
        assert job.header is not None
        best = topk(probs, self.config.topk)  # type: ignore[arg-type]
        wid = self.config.worker_id
        result = ResultMessage(
            seq=job.header.seq,
            device_id=job.device_id,
            cls=best[0][0],
            topk=best,
            answered_by=AnsweredBy.CLOUD,
            cut_id=cut,
            worker_id=wid,
            tail_ms=tail_ms,
            ts=self.clock(),
        )
        report = ReportMessage(
            seq=job.header.seq,
            device_id=job.device_id,
            cut_id=cut,
            bytes_received=len(job.payload),
            recv_ts=job.recv_ts,
            queue_ms=queue_ms,
            tail_ms=tail_ms,
            worker_id=wid,
            decode_ms=job.decode_ms,
        )
        self.counters.answered(job.device_id, cut, tail_ms, queue_ms=queue_ms)
        self._publish(job.device_id, TopicKind.RESULT, result.to_bytes())
        self._publish(job.device_id, TopicKind.REPORT, report.to_bytes())

    def _error(self, job: _Job, code: ErrorCode, detail: str) -> None:
        seq = job.header.seq if job.header is not None else None
        msg = ErrorMessage(
            seq=seq, device_id=job.device_id, code=code, detail=detail[:2000], worker_id=self.config.worker_id
        )
        self._publish(job.device_id, TopicKind.RESULT, msg.to_bytes())

    def _refuse(self, job: _Job, code: ErrorCode, detail: str) -> None:
        log.info("refused a frame from %s: %s: %s", job.device_id, code.value, detail)
        self.counters.error(job.device_id, job.header.cut_id if job.header else None, code.value)
        self._error(job, code, detail)

    def _shed(self, job: _Job, detail: str) -> None:
        self.counters.shed(job.device_id, job.header.cut_id if job.header else None)
        self._error(job, ErrorCode.OVERLOADED, detail)
