"""The per-frame loop of the camera: head, early exit, escalate or answer, deadline, telemetry.

Per frame (:meth:`DeviceRunner.process`): the policy picks (cut, bits); the head and the early exit
run; a confident exit (``confidence >= tau``) or the device cut answers at once; otherwise the
activation (or, at cut 0, the raw frame) is packed, its send time stamped and published to
``splitedge/v1/<id>/act``, and the frame waits in the bounded in-flight map for the cloud.

**Exactly one answer per frame.** A frame leaves the in-flight map exactly once, under a lock: by
the cloud's ResultMessage (``cloud``), or locally (``deadline``) when its deadline passes - or
earlier (``overdue``) once the answer is later than the policy's wait for it
(``CutPolicy.answer_within_ms``: a few times its expected time at the live estimates) - the cloud
sent an ErrorMessage, the publish failed (broker gone: ``BrokerUnavailableError``), or the
in-flight map was full. A cloud answer for a frame already answered is counted (``late_answers``)
and never written. An overdue frame whose local answer is the device cut's model *races* it: it waits
in ``_falling_back`` while the model runs, and a cloud answer arriving meanwhile answers it instead
(:meth:`DeviceRunner.expire`); either way once. The local answer is the early exit's prediction when there is one, else the
device cut's full model (run then, on the main thread - interpreters are not shared across
threads), else class ``-1``.

**Head times on start** (``RunnerOptions.measure_heads``): :meth:`start` runs each candidate cut's
head (+ exit) once on a blank frame and feeds the times to the estimator, so no plan rests on the
manifest's priors (measured at the converter's threads on the converter's host). On the replay of the
bus trace (``zero2w-offload``) the never-run cut 51 kept a prior of 7.6 board ms against 5.8 measured:
no plan preferred it and no probe tried it, and the policy sat on cut 34 for 250 frames.

**Shadow probes** (``Decision.answer_with``, device_runner/probes.py): the frame is served by the current choice
as any other frame (answered, or its payload sent), then the probed cut's head runs and its payload is
sent with the same seq: the probe's head delays the next frame if the device is still busy with it,
never this frame's answer. Its result and report are matched by (seq, cut) in a separate bounded map and only feed the
estimator (``shadow_results``); they never answer. An ErrorMessage carries no cut, so a refused shadow
payload marks the frame's own escalation (if one is in flight) as refused: it is answered locally.

Threads: transport handlers (paho's network thread) only decode messages, pop cloud answers and
mark errors; every model invocation and every local answer happens on the caller's thread in
:meth:`process` / :meth:`expire`. Memory is bounded whatever the uplink does: the in-flight map
(``max_inflight``), the report/answer join (``timing_window``), the set of recently answered seqs
(``recent_answers``) and the latency window are all capped.

**Bundle swaps** (:meth:`offer_bundle`, from sdk/update.py): a verified, loaded bundle is swapped
in at the start of the next :meth:`process` - a frame boundary - with its executor, policy, payload
encoder; the estimator carries over when the new bundle has the same cuts (its link, bandwidth and tail
samples describe the network and the workers; a fresh one with only priors made the next answers look
overdue), else a fresh one with the measured bandwidth as its prior; either way it gets the head times
measured while preparing. Frames already in flight keep their entries and get their cloud answers (the tail
workers serve both bundles); the old bundle's late measurements are dropped, not fed to the new estimator.

Per-frame cost (docs/DEVICE.md "Overhead"): :meth:`expire` runs after every frame, so it is O(1)
when nothing is due (:class:`~device_runner.inflight.InFlight`: a deadline heap and a refused queue)
instead of scanning the whole in-flight map.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from device_runner.answers import Answer, AnsweredBy, RunSummary
from device_runner.encode import PayloadEncoder, codec_for
from device_runner.estimator import Estimator, make_estimator
from device_runner.heads import CutExecutor, CutOutput, Prediction
from device_runner.inflight import InFlight, Pending
from device_runner.policy import CutPolicy
from device_runner.replies import CloudReplies, ReplyTiming
from sdk import topics
from sdk.config import DeviceConfig
from sdk.errors import BrokerUnavailableError, PayloadTooLargeError, SplitEdgeError, TransportError
from sdk.manifest import CutKind, CutSpec, Manifest
from sdk.messages import (
    RolloutState,
    StatusMessage,
    TelemetryMessage,
)
from sdk.outbox import Outbox, StoreAndForward
from sdk.topics import TopicKind
from sdk.transport import Transport
from sdk.wire import stamp_send_ts

__all__ = ["Answer", "AnsweredBy", "DeviceRunner", "RunSummary", "RunnerOptions", "codec_for", "make_estimator"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    max_inflight: int = 32
    stretch_emulated: bool = False  # sleep so wall time matches the emulated board time
    recent_answers: int = 4096
    timing_window: int = 1024
    latency_window: int = 512
    prior_bandwidth: float = 1_000_000.0  # bytes/s until the first report
    measure_heads: bool = True  # time every candidate cut's head once on start (module doc)


def _percentile(values: Iterable[float], q: float) -> float | None:
    data = list(values)
    return float(np.percentile(data, q)) if data else None


class DeviceRunner(CloudReplies):
    """The camera loop over a :class:`~sdk.transport.Transport` and a :class:`CutExecutor`."""

    def __init__(
        self,
        manifest: Manifest,
        config: DeviceConfig,
        transport: Transport,
        executor: CutExecutor,
        *,
        policy: CutPolicy | None = None,
        estimator: Estimator | None = None,
        on_answer: Callable[[Answer], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        wait: Callable[[threading.Condition, float], object] | None = None,
        options: RunnerOptions | None = None,
    ) -> None:
        self.manifest = manifest
        self.config = config
        self.settings = config.device
        self.device_id = config.device.device_id
        # telemetry waits while the broker is away (sdk/outbox.py); frames do not
        self.transport: StoreAndForward = (
            transport if isinstance(transport, StoreAndForward)
            else StoreAndForward(transport, Outbox(config.outbox, name=self.device_id))
        )  # fmt: skip
        self.executor = executor
        self.options = options or RunnerOptions()
        self.policy = policy or CutPolicy(manifest, config.device, config.policy)
        self.estimator = estimator or make_estimator(manifest, config, prior_bandwidth=self.options.prior_bandwidth)
        self.on_answer = on_answer or (lambda a: None)
        self.clock = clock
        self.sleep = sleep
        #: how the loop waits for a message or a timeout (``Condition.wait``); with ``clock`` and ``sleep`` the
        #: one seam for time: a simulated clock (benchmarks/sim_clock.py) advances instead of blocking
        self.wait = wait or (lambda cond, timeout: cond.wait(timeout=timeout))
        self.codec = codec_for(config.device.codec)
        self._encoder = self._payload_encoder(manifest)
        self.emulated = bool(getattr(executor, "emulated", False))
        self._act_topic = topics.topic(self.device_id, TopicKind.ACT)
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._inflight = InFlight()  # escalated frames waiting for the cloud (device_runner/inflight.py)
        #: overdue frames whose device-model fallback is running: the cloud's answer still wins if it comes first
        self._falling_back: dict[int, Pending] = {}
        self._timings: OrderedDict[int, ReplyTiming] = OrderedDict()
        self._shadows: OrderedDict[int, ReplyTiming] = OrderedDict()  # shadow probes in flight, by seq (their cut differs)
        self._answered: OrderedDict[int, AnsweredBy] = OrderedDict()
        self._latencies: deque[float] = deque(maxlen=self.options.latency_window)
        self._seq = 0
        self._started = False
        self._staged: tuple[object, Callable[[object], None] | None] | None = None  # offer_bundle, swapped in process
        self._bundle_seq0 = 0  # the first seq of the running bundle (older ones: measurements dropped)
        self.rollout: tuple[RolloutState | None, str | None, str | None] = (None, None, None)  # state, bundle, why
        # counters (totals)
        self.frames = 0
        self.answered: dict[str, int] = {w.value: 0 for w in AnsweredBy}
        self.late_answers = 0
        self.shadow_probes = 0  # shadow probe payloads sent (policy doc)
        self.shadow_results = 0  # their results (measurements only, never answers)
        self.duplicate_results = 0
        self.errors = 0
        self.bytes_sent = 0
        # telemetry window
        self._win_start = clock()
        self._win = {"frames": 0, "device": 0, "answers": 0, "bytes": 0}
        self._win_lat: list[float] = []
        self._next_telemetry = self._win_start + config.device.telemetry_interval_s

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Subscribe to this device's result and report topics and announce it online (retained)."""
        if self._started:
            return
        self._started = True
        self.transport.subscribe(topics.topic(self.device_id, TopicKind.RESULT), self._on_message, qos=1)
        self.transport.subscribe(topics.topic(self.device_id, TopicKind.REPORT), self._on_message, qos=0)
        self.transport.on_connection_change(self._on_connection)
        if self.options.measure_heads:
            self._measure_heads()
        self._publish_status(True)

    def _measure_heads(self) -> None:
        """Time each candidate cut's head (+ exit) once on a blank frame, so the first plans use this board's
        times instead of the manifest's priors (module doc). A head that fails here fails again, with its
        error, on the first frame that needs it."""
        frame = np.zeros(self.manifest.input.shape, dtype=np.uint8)
        for index in self.policy.cut_indices:
            cut = self.manifest.cut(index)
            if cut.kind is CutKind.RAW:
                continue
            try:
                out = self.executor.run(cut, frame)
            except SplitEdgeError as exc:
                log.warning("cut %d: its head could not be timed on start (%s)", index, exc)
                continue
            self.estimator.observe_head(index, out.device_ms)

    def _on_connection(self, up: bool) -> None:
        with self._lock:  # a lost broker is a link of zero bandwidth (Estimator.observe_unreachable)
            if up:
                self.estimator.observe_reachable()
            else:
                self.estimator.observe_unreachable()
        if up:
            self._publish_status(True)
        with self._wake:
            self._wake.notify_all()

    def _publish_status(self, online: bool) -> None:
        msg = StatusMessage(self.device_id, online, time.time())
        try:
            self.transport.publish(topics.topic(self.device_id, TopicKind.STATUS), msg.to_bytes(), qos=1, retain=True)
        except TransportError as exc:
            log.info("status %s not published (%s); it goes out on the next connect", online, exc)

    def close(self) -> None:
        """Answer anything still in flight locally, publish the offline status, close the transport."""
        self.abandon("shutdown")
        self._publish_status(False)
        self.transport.close()

    # ------------------------------------------------------------------ one frame
    def offer_bundle(self, staged: object, on_swap: Callable[[object], None] | None = None) -> None:
        """Swap to ``staged`` (sdk.update.StagedBundle) at the next frame boundary (thread-safe)."""
        with self._lock:
            self._staged = (staged, on_swap)

    def set_rollout(self, state: RolloutState, bundle: str | None, detail: str | None = None) -> None:
        """What telemetry says of the last announced bundle (sdk/update.py sets it)."""
        with self._lock:
            self.rollout = (state, bundle, detail)

    def _swap(self) -> None:
        with self._lock:
            offer, self._staged = self._staged, None
            if offer is None:
                return
            staged, on_swap = offer
            manifest = staged.manifest  # type: ignore[attr-defined]
            if [c.index for c in manifest.cuts] != [c.index for c in self.manifest.cuts]:
                self.estimator = make_estimator(manifest, self.config,
                                                prior_bandwidth=self.estimator.bandwidth or self.options.prior_bandwidth)
            self.manifest = manifest
            self.executor = staged.executor  # type: ignore[attr-defined]
            self.policy = staged.policy or CutPolicy(manifest, self.settings, self.config.policy)  # type: ignore[attr-defined]
            for cut, ms in staged.head_ms.items():  # type: ignore[attr-defined]
                self.estimator.observe_head(cut, ms)
            self._encoder = self._payload_encoder(manifest)
            self._timings.clear()
            self._shadows.clear()
            self._bundle_seq0 = self._seq
            self.rollout = (RolloutState.ACTIVE, manifest.bundle_id[:8], None)
        log.info("switched to bundle %s (%s) at frame %d", manifest.bundle_id[:8], manifest.version, self._seq)
        if on_swap is not None:
            on_swap(staged)

    def process(self, frame: np.ndarray) -> int:
        """Run one frame; returns its seq. Its answer is written now or later, exactly once."""
        if not self._started:
            self.start()
        if self._staged is not None:  # a frame boundary: swap bundles here (module doc)
            self._swap()
        capture_ts = self.clock()
        seq = self._seq
        self._seq += 1
        if not self._encoder.raw_sized and self.policy.allow_raw and self.policy.payload_bytes(0) is not None:
            # the raw cut's JPEG, once (encode.py); checked first so a frame pays one attribute read
            sized = self._encoder.size_raw(seq, frame, capture_ts)
            if sized is not None:
                self._price_raw(len(sized[0]), sized[1], sized[2])
        with self._lock:
            decision = self.policy.decide(self.estimator.snapshot())
        choice = decision.choice
        cut = self.manifest.cut(choice.cut)
        if cut.kind is CutKind.RAW and self.settings.privacy:  # the policy never does this; make sure
            raise AssertionError("privacy is on but the policy chose the raw cut")
        self.frames += 1
        self._win["frames"] += 1
        if decision.answer_with is None:
            self._serve(cut, choice.bits, decision.probe, seq, frame, capture_ts, 0.0)
        else:  # a shadow probe (policy doc): serve the frame with answer_with, then measure the probed cut
            serve = decision.answer_with
            self._serve(self.manifest.cut(serve.cut), serve.bits, False, seq, frame, capture_ts, 0.0)
            out, _ = self._run_cut(cut, frame)  # after the frame's answer or send: it keeps the device busy, not the frame
            if cut.kind is not CutKind.DEVICE:  # a probe of the device cut measures its head only
                payload, _ = self._encode(cut, choice.bits, seq, frame, out, capture_ts)
                self._send_shadow(payload, cut.index, seq)  # after the frame's own payload: never waits behind it
        self.expire()
        self.maybe_telemetry()
        return seq

    def _serve(self, cut: CutSpec, bits: int, probe: bool, seq: int, frame: np.ndarray, capture_ts: float,
               offset_ms: float) -> None:
        """Run ``cut`` on the frame and answer it: the device cut or a confident exit now, else escalate."""
        out, more_ms = self._run_cut(cut, frame)
        offset_ms += more_ms
        pred = out.prediction if out is not None else None
        base = dict(seq=seq, cut=cut.index, bits=bits, probe=probe)
        if cut.kind is CutKind.DEVICE:
            self._answer_local(pred, AnsweredBy.DEVICE, "device_cut", capture_ts, offset_ms, nbytes=0, **base)
        elif pred is not None and not probe and pred.confidence >= self.policy.tau(cut.index, bits):
            self._answer_local(pred, AnsweredBy.DEVICE, "exit", capture_ts, offset_ms, nbytes=0, **base)
        else:
            self._escalate(cut, bits, probe, seq, frame, out, pred, capture_ts, offset_ms)

    def _send_shadow(self, payload: bytes, cut: int, seq: int) -> None:
        """Publish a shadow probe's payload; its result and report only feed the estimates (matched by seq and cut)."""
        send_ts = self.clock()
        payload = stamp_send_ts(payload, send_ts)
        with self._lock:
            self._shadows[seq] = ReplyTiming(send_ts, cut, shadow=True)
            while len(self._shadows) > self.options.timing_window:
                self._shadows.popitem(last=False)
        try:
            self.transport.publish(self._act_topic, payload, qos=self.config.broker.qos_act)
        except TransportError as exc:  # nothing waits for it: no answer to give, only a measurement lost
            log.info("shadow probe of frame %d at cut %d not sent: %s", seq, cut, exc)
            with self._lock:
                self._shadows.pop(seq, None)
            return
        with self._lock:
            self.shadow_probes += 1
            self.bytes_sent += len(payload)
            self._win["bytes"] += len(payload)

    def _payload_encoder(self, manifest: Manifest) -> PayloadEncoder:
        return PayloadEncoder(manifest, self.device_id, self.codec, self.settings.raw_jpeg_quality, clock=self.clock,
                              to_board=getattr(self.executor, "raw_board_ms", None))

    def _encode(self, cut: CutSpec, bits: int, seq: int, frame: np.ndarray, out: CutOutput | None,
                capture_ts: float, offset_ms: float = 0.0) -> tuple[bytes, float]:
        """The frame's payload at ``cut`` and ``offset_ms`` plus the emulated ms not slept (the raw frame's
        JPEG encode is device work: device_runner/encode.py)."""
        payload, board_ms, host_ms = self._encoder.encode_timed(cut, bits, seq, frame, out, capture_ts)
        return payload, offset_ms + (self._price_raw(len(payload), board_ms, host_ms) if board_ms is not None else 0.0)

    def _price_raw(self, nbytes: int, board_ms: float, host_ms: float) -> float:
        """Learn a raw JPEG's encode time as cut 0's head time and its size as cut 0's bytes; returns the
        emulated ms not slept."""
        with self._lock:
            self.estimator.observe_head(0, board_ms)
            self.policy.observe_payload(0, nbytes)
        extra = max(0.0, board_ms - host_ms)
        if extra and self.options.stretch_emulated:
            self.sleep(extra / 1000.0)
            return 0.0
        return extra

    def _run_cut(self, cut: CutSpec, frame: np.ndarray) -> tuple[CutOutput | None, float]:
        """Run a cut's head (+ exit) and record its time; returns it and the emulated ms not slept
        (nothing runs on the device at the raw cut: None, 0)."""
        if cut.kind is CutKind.RAW:
            return None, 0.0
        out = self.executor.run(cut, frame)
        with self._lock:
            self.estimator.observe_head(cut.index, out.device_ms)
        if not out.emulated:
            return out, 0.0
        extra = max(0.0, out.device_ms - out.measured_ms)
        if self.options.stretch_emulated:
            self.sleep(extra / 1000.0)
            return out, 0.0
        return out, extra

    def _escalate(
        self,
        cut: CutSpec,
        bits: int,
        probe: bool,
        seq: int,
        frame: np.ndarray,
        out: CutOutput | None,
        pred: Prediction | None,
        capture_ts: float,
        offset_ms: float,
    ) -> None:
        """Send the frame's payload; the frame waits in flight for the cloud's answer (or its deadline)."""
        with self._lock:
            full = len(self._inflight) >= self.options.max_inflight
        if full:
            self._answer_fallback(pred, frame if cut.kind is CutKind.RAW else None, "inflight_full",
                                  capture_ts, offset_ms, nbytes=0, seq=seq, cut=cut.index, bits=bits, probe=probe)
            return
        payload, offset_ms = self._encode(cut, bits, seq, frame, out, capture_ts, offset_ms)
        pending = Pending(
            seq, capture_ts, capture_ts + (self.settings.deadline_ms - offset_ms) / 1000.0, cut.index, bits,
            len(payload), probe, offset_ms, pred, frame if cut.kind is CutKind.RAW and pred is None else None,
        )
        send_ts = self.clock()
        pending.send_ts = send_ts
        payload = stamp_send_ts(payload, send_ts)
        with self._lock:
            wait_ms = self.policy.answer_within_ms(self.estimator.snapshot(), cut.index, len(payload))
            if send_ts + wait_ms / 1000.0 < pending.deadline:
                pending.deadline, pending.overdue = send_ts + wait_ms / 1000.0, True
            self._inflight.add(pending)
            self._timings[seq] = ReplyTiming(send_ts, cut.index)
            while len(self._timings) > self.options.timing_window:
                self._timings.popitem(last=False)
        try:
            self.transport.publish(self._act_topic, payload, qos=self.config.broker.qos_act)
        except TransportError as exc:
            reason = (
                "broker_unavailable" if isinstance(exc, BrokerUnavailableError)
                else "payload_too_large" if isinstance(exc, PayloadTooLargeError)
                else "uplink_full"
            )  # fmt: skip
            unreachable = isinstance(exc, BrokerUnavailableError)
            with self._lock:
                mine = self._inflight.pop(seq)
                self._timings.pop(seq, None)
                if unreachable:  # a link of zero bandwidth: the next frames are planned without the cloud
                    self.estimator.observe_unreachable()
            if mine is not None:
                self._answer_fallback(mine.fallback, frame if unreachable else mine.frame, reason, capture_ts,
                                      offset_ms, nbytes=0, seq=seq, cut=cut.index, bits=bits, probe=probe,
                                      full_model=unreachable)
            return
        with self._lock:
            self.bytes_sent += len(payload)
            self._win["bytes"] += len(payload)

    # ------------------------------------------------------------------ answers
    def _emit(self, answer: Answer) -> bool:
        with self._lock:
            if answer.seq in self._answered:  # cannot happen: every path pops the in-flight entry first
                log.error("frame %d already answered; dropping a second answer (%s)", answer.seq, answer.reason)
                return False
            self._answered[answer.seq] = answer.answered_by
            while len(self._answered) > self.options.recent_answers:
                self._answered.popitem(last=False)
            self.answered[answer.answered_by.value] += 1
            self._win["answers"] += 1
            if answer.answered_by is AnsweredBy.DEVICE:
                self._win["device"] += 1
            self._latencies.append(answer.latency_ms)
            self._win_lat.append(answer.latency_ms)
            if len(self._win_lat) > self.options.latency_window:
                del self._win_lat[: len(self._win_lat) - self.options.latency_window]
            self.on_answer(answer)
        return True

    def _answer_local(
        self,
        pred: Prediction | None,
        who: AnsweredBy,
        reason: str,
        capture_ts: float,
        offset_ms: float,
        *,
        seq: int,
        cut: int,
        bits: int,
        probe: bool,
        nbytes: int,
    ) -> None:
        latency = (self.clock() - capture_ts) * 1000.0 + offset_ms
        self._emit(Answer(
            seq, pred.cls if pred is not None else -1, who, reason, cut, bits, nbytes, latency,
            pred.confidence if pred is not None else None, probe, self.emulated,
        ))  # fmt: skip

    def _answer_fallback(
        self,
        pred: Prediction | None,
        frame: np.ndarray | None,
        reason: str,
        capture_ts: float,
        offset_ms: float,
        full_model: bool = False,
        racing: bool = False,
        **base: int,
    ) -> None:
        """A local answer in place of the cloud's; runs the device cut's model when there is no exit prediction,
        or with ``full_model`` (the broker is unreachable, the frame is still fresh) when the device cut's
        expected time still fits the frame's deadline: the whole model answers, not a weak early exit.

        ``racing`` (an overdue frame, :meth:`expire`): the frame waits in ``_falling_back`` while the device
        model runs, and a cloud answer arriving meanwhile answers it (``CloudReplies._on_result``); the local
        answer is then dropped. The frame costs min(cloud, wait + device model), not wait + device model."""
        device_cut = self.manifest.device_cut
        if full_model and pred is not None and device_cut is not None and frame is not None:
            with self._lock:
                expected_ms = self.estimator.head_ms(device_cut.index)
            if (self.clock() - capture_ts) * 1000.0 + offset_ms + expected_ms > self.settings.deadline_ms:
                frame = None  # it would miss the deadline: the exit's answer now beats the full model's late
            else:
                pred = None
        if pred is None and frame is not None and device_cut is not None:
            out, extra_ms = self._run_cut(device_cut, frame)
            pred = out.prediction if out is not None else None
            offset_ms += extra_ms
        if racing:
            with self._lock:
                if self._falling_back.pop(base["seq"], None) is None:
                    return  # the cloud answered while the model ran (CloudReplies._on_result)
                self._answer_local(pred, AnsweredBy.DEADLINE, reason, capture_ts, offset_ms, **base)  # type: ignore[arg-type]
            return
        self._answer_local(pred, AnsweredBy.DEADLINE, reason, capture_ts, offset_ms, **base)  # type: ignore[arg-type]

    def expire(self, now: float | None = None) -> int:
        """Answer every in-flight frame past its deadline or refused by the cloud; return how many came due.

        O(1) when nothing is due (see the module docstring), O(k log n) for k frames due. An overdue frame
        whose fallback is the device model races it (:meth:`_answer_fallback`, ``racing``): on the bursty
        mahimahi traces 6 % of the frames sent went overdue and cost the wait plus the whole model, while the
        answers of some came during that model's run (docs/DYNAMIC.md, "Session 15").
        """
        now = self.clock() if now is None else now
        with self._lock:
            if self._inflight.nothing_due(now):
                return 0
            due = self._inflight.take_due(now)
            racing = set()
            for p in due:
                if p.error is None and not p.late_result and p.seq >= self._bundle_seq0:
                    elapsed_ms = (now - p.send_ts) * 1000.0
                    self.estimator.observe_timeout(p.cut, p.nbytes, elapsed_ms)
                if self._can_race(p):
                    self._falling_back[p.seq] = p
                    racing.add(p.seq)
        for p in due:
            reason = f"cloud_error:{p.error}" if p.error is not None else "overdue" if p.overdue else "deadline"
            base = dict(seq=p.seq, cut=p.cut, bits=p.bits, probe=p.probe, nbytes=p.nbytes)
            self._answer_fallback(p.fallback, p.frame, reason, p.capture_ts, p.offset_ms, racing=p.seq in racing, **base)
        return len(due)

    def _can_race(self, p: Pending) -> bool:
        """Whether an expired frame's cloud answer may still beat its fallback: not refused, its fallback is the
        device model (an exit's prediction answers at once), and the model's run takes board time on this clock
        (emulated times not slept are added afterwards, so a race in wall time would not be the board's)."""
        return (p.error is None and p.fallback is None and p.frame is not None and self.manifest.device_cut is not None
                and (not self.emulated or self.options.stretch_emulated))

    def abandon(self, reason: str) -> int:
        """Answer every in-flight frame locally now (shutdown); returns how many."""
        with self._lock:
            for p in self._inflight:
                self._inflight.mark_error(p, p.error or reason)
        return self.expire()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def next_deadline(self) -> float | None:
        with self._lock:
            return self._inflight.earliest()

    # ------------------------------------------------------------------ telemetry
    def telemetry(self, now: float | None = None) -> TelemetryMessage:
        """The snapshot of the window since the last one (and start a new window)."""
        now = self.clock() if now is None else now
        with self._lock:
            elapsed = max(now - self._win_start, 1e-9)
            w, lat = self._win, self._win_lat
            current = self.policy.current
            msg = TelemetryMessage(
                device_id=self.device_id, ts=time.time(), cut=current.cut if current else -1,
                fps=w["frames"] / elapsed, exit_rate=(w["device"] / w["answers"]) if w["answers"] else 0.0,
                bytes_per_s=w["bytes"] / elapsed, bandwidth_estimate=self.estimator.bandwidth,
                p50_ms=_percentile(lat, 50), p95_ms=_percentile(lat, 95), errors=self.errors,
                queue_depth=len(self._inflight), emulated=self.emulated,
                bits=(current.bits or None) if current else None,
                outbox_queued=len(self.transport.outbox), outbox_dropped=self.transport.outbox.dropped,
                bundle_id=f"{self.manifest.wire_bundle_id:08x}", bundle_version=self.manifest.version,
                rollout=self.rollout[0].value if self.rollout[0] else None, rollout_bundle=self.rollout[1],
                rollout_detail=self.rollout[2],
            )  # fmt: skip
            self._win = {"frames": 0, "device": 0, "answers": 0, "bytes": 0}
            self._win_lat = []
            self._win_start = now
        return msg

    def maybe_telemetry(self, now: float | None = None, *, force: bool = False) -> TelemetryMessage | None:
        now = self.clock() if now is None else now
        if not force and now < self._next_telemetry:
            return None
        self._next_telemetry = now + self.settings.telemetry_interval_s
        msg = self.telemetry(now)
        try:
            self.transport.publish(topics.topic(self.device_id, TopicKind.TELEMETRY), msg.to_bytes(), qos=0)
        except TransportError as exc:
            log.info("telemetry not published: %s", exc)
        return msg

    # ------------------------------------------------------------------ the loop
    def _wait_until(self, t: float, stop: Callable[[], bool] | None = None) -> None:
        """Sleep until ``t`` (clock seconds) or ``stop()``, answering expiring frames and sending telemetry."""
        while True:
            self.expire()
            self.maybe_telemetry()
            now = self.clock()
            if now >= t or (stop is not None and stop()):
                return
            wake = min(t, self._next_telemetry, self.next_deadline() or t)
            with self._wake:
                if self._inflight.has_refused or (stop is not None and stop()):
                    continue
                self.wait(self._wake, max(0.0, wake - now))

    def drain(self) -> None:
        """Wait until every in-flight frame has its answer (each is bounded by its deadline)."""
        while self.inflight:
            self._wait_until(self.next_deadline() or self.clock(), stop=lambda: not self._inflight)

    def run(self, source: Iterable[np.ndarray], frames: int | None = None) -> RunSummary:
        """Process frames from ``source`` at most ``fps_cap`` per second; stop after ``frames``."""
        self.start()
        period = 1.0 / self.settings.fps_cap
        next_slot = self.clock()
        done = 0
        iterator = iter(source)
        try:
            while frames is None or done < frames:
                self._wait_until(next_slot)
                try:
                    frame = next(iterator)
                except StopIteration:
                    break
                next_slot = max(self.clock(), next_slot) + period
                self.process(frame)
                done += 1
            self.drain()
        finally:
            self.abandon("shutdown")
            self.maybe_telemetry(force=True)
        return self.summary()

    def summary(self) -> RunSummary:
        current = self.policy.current
        return RunSummary(
            frames=self.frames, answered=dict(self.answered), late_answers=self.late_answers,
            duplicate_results=self.duplicate_results, errors=self.errors, switches=self.policy.switches,
            probes=self.policy.probes, bytes_sent=self.bytes_sent, final_cut=current.cut if current else -1,
            final_bits=current.bits if current else 0, bandwidth_estimate=self.estimator.bandwidth,
            p50_ms=_percentile(self._latencies, 50), p95_ms=_percentile(self._latencies, 95),
            emulated=self.emulated, outbox=self.transport.outbox.stats().to_dict(),
        )  # fmt: skip
