"""The device loop on an in-memory broker with a fake clock, a fake head executor and a test-side responder.

No models and no broker: a hand-built manifest (4 cuts: raw, two splits, device) whose costs make the
planner's choice predictable, an executor whose confidence the test sets, and a responder that decodes
frames with ``sdk.wire.decode_frame`` and answers with Result/Report/Error messages.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from fakes import fake_manifest

from device_runner.estimator import Estimates, Estimator
from device_runner.heads import CutOutput, Prediction, softmax_prediction
from device_runner.link import ConstantRateShaper, ShapedTransport
from device_runner.policy import Choice, CutPolicy, tau_for
from device_runner.runner import Answer, AnsweredBy, DeviceRunner, RunnerOptions
from device_runner.sources import FpsLimiter, NpzSource, SyntheticSource
from sdk import topics
from sdk.config import TauTarget, parse_config
from sdk.errors import BrokerUnavailableError
from sdk.manifest import (
    CutKind,
    CutSpec,
)
from sdk.messages import (
    ErrorMessage,
    ReportMessage,
    ResultMessage,
    StatusMessage,
    TelemetryMessage,
    decode_message,
)
from sdk.topics import TopicKind
from sdk.transport import InMemoryHub, Message
from sdk.wire import decode_frame

DEVICE = "cam-01"


MANIFEST = fake_manifest()


def make_config(**device: object):
    data = {
        "board": {"name": "host", "cpu": "x", "threads": 1, "memory_budget_mb": 64, "speed_factor": 1.0,
                  "speed_factor_source": "test"},
        "device": {"device_id": DEVICE, "fps_cap": 10, "deadline_ms": 100,
                   **({} if "target_escalation_rate" in device else {"target_accuracy": 0.9}),
                   "bits": [8, 4, 2], "codec": "none", "accuracy_drop_budget": 0.01, "telemetry_interval_s": 1.0,
                   "overdue_factor": 0,  # the deadline alone, unless a test turns the overdue wait on
                   **{k: v for k, v in device.items() if v is not None}},
        "broker": {"url": "mqtt://127.0.0.1:1883"},
    }  # fmt: skip
    return parse_config(data)


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class FakeExecutor:
    """Zero activations of the manifest's shapes; prediction class 3 with the confidence the test sets."""

    emulated = False

    def __init__(self, confidence: float = 0.1) -> None:
        self.confidence = confidence
        self.calls: list[int] = []

    def run(self, cut: CutSpec, frame: np.ndarray) -> CutOutput:
        self.calls.append(cut.index)
        acts = {t.name: np.full((1, *t.shape), 5, dtype=np.int8) for t in cut.tensors} if cut.kind is CutKind.SPLIT else {}
        pred = Prediction(3, 1.0 if cut.kind is CutKind.DEVICE else self.confidence, ((3, self.confidence),))
        return CutOutput(cut.index, acts, pred, cut.head_ms, 0.0, cut.head_ms, False)


class Responder:
    """The cloud side of the tests: decodes each frame and answers (mode: answer, hold, silent, error)."""

    def __init__(self, hub: InMemoryHub, clock: FakeClock, mode: str = "answer", tail_ms: float | None = None) -> None:
        self.transport = hub.transport("cloud")
        self.transport.subscribe(topics.shared_filter("tails"), self.on_frame, qos=1)
        self.clock = clock
        self.mode = mode
        self.tail_ms = tail_ms
        self.frames: list = []
        self.held: list[tuple[str, bytes]] = []

    def on_frame(self, msg: Message) -> None:
        frame = decode_frame(msg.payload)
        h = frame.header
        self.frames.append(frame)
        if self.mode == "silent":
            return
        if self.mode == "error":
            err = ErrorMessage(h.seq, h.device_id, "overloaded", "queue full", "w1")
            self.transport.publish(topics.topic(h.device_id, TopicKind.RESULT), err.to_bytes(), qos=1)
            return
        tail_ms = self.tail_ms if self.tail_ms is not None else MANIFEST.cut(h.cut_id).tail_ms
        if self.mode == "answer":
            self.clock.advance(tail_ms / 1000.0)  # the tail takes its time
        result = ResultMessage(h.seq, h.device_id, 7, ((7, 0.9),), "cloud", h.cut_id, "w1", tail_ms)
        report = ReportMessage(h.seq, h.device_id, h.cut_id, len(msg.payload), self.clock(), 0.0, tail_ms, "w1")
        out = [(topics.topic(h.device_id, TopicKind.REPORT), report.to_bytes()),
               (topics.topic(h.device_id, TopicKind.RESULT), result.to_bytes())]
        if self.mode == "hold":
            self.held.extend(out)
            return
        for topic, payload in out:
            self.transport.publish(topic, payload, qos=1)

    def release(self) -> None:
        for topic, payload in self.held:
            self.transport.publish(topic, payload, qos=1)
        self.held.clear()


def make_runner(*, hub=None, clock=None, confidence=0.1, tau=0.5, transport=None, options=None,
                initial=None, probe_every=0, **device):
    clock = clock or FakeClock()
    hub = hub or InMemoryHub(clock=clock)
    cfg = make_config(**device)
    manifest = fake_manifest()
    answers: list[Answer] = []
    policy = CutPolicy(manifest, cfg.device, tau_override=tau, probe_every=probe_every, initial=initial)
    runner = DeviceRunner(
        manifest, cfg, transport or hub.transport(DEVICE), FakeExecutor(confidence), policy=policy,
        on_answer=answers.append, clock=clock, sleep=clock.advance, options=options or RunnerOptions(),
    )  # fmt: skip
    runner.start()
    return runner, answers, hub, clock


FRAME = np.full((32, 32, 3), 9, dtype=np.uint8)


def assert_exactly_once(answers: list[Answer], n: int) -> None:
    counts = Counter(a.seq for a in answers)
    assert sorted(counts) == list(range(n)), counts
    assert set(counts.values()) == {1}, counts


# ------------------------------------------------------------------------------------------ loop


def test_confident_exit_answers_locally_and_sends_nothing() -> None:
    runner, answers, hub, clock = make_runner(confidence=0.95, initial=Choice(1, 4))
    cloud = Responder(hub, clock)
    for _ in range(5):
        runner.process(FRAME)
    assert [a.answered_by for a in answers] == [AnsweredBy.DEVICE] * 5
    assert {a.reason for a in answers} == {"exit"}
    assert cloud.frames == [] and runner.bytes_sent == 0


def test_unconfident_exit_escalates_and_the_cloud_answers() -> None:
    runner, answers, hub, clock = make_runner(confidence=0.1, initial=Choice(1, 4))
    cloud = Responder(hub, clock)
    runner.process(FRAME)
    assert len(answers) == 1
    a = answers[0]
    assert (a.answered_by, a.cls, a.cut, a.bits, a.reason) == (AnsweredBy.CLOUD, 7, 1, 4, "cloud")
    frame = cloud.frames[0]
    assert frame.header.device_id == DEVICE and frame.header.seq == 0 and frame.header.cut_id == 1
    assert frame.header.send_ts is not None and frame.tensors[0].bits == 4
    assert a.bytes == len(frame.header.to_bytes()) + 28 + 16 + 2 + 1024  # header, descriptor, 4 dims, name, payload
    assert runner.inflight == 0 and runner.estimator.tail_ms(1) == pytest.approx(2.0)  # from the report
    assert a.latency_ms == pytest.approx(2.0, abs=1e-3)  # the fake clock moved only by the tail


def test_device_cut_answers_on_the_device() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(3, 0))
    runner.process(FRAME)
    assert answers[0].answered_by is AnsweredBy.DEVICE and answers[0].reason == "device_cut"


def test_deadline_answers_locally_and_a_late_cloud_answer_is_counted_not_doubled() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(1, 4))
    cloud = Responder(hub, clock, mode="hold")
    runner.process(FRAME)
    assert answers == [] and runner.inflight == 1
    clock.advance(0.099)
    assert runner.expire() == 0
    clock.advance(0.002)
    assert runner.expire() == 1
    assert answers[0].answered_by is AnsweredBy.DEADLINE and answers[0].cls == 3  # the exit's prediction
    assert answers[0].latency_ms == pytest.approx(101, abs=0.01)
    cloud.release()
    assert len(answers) == 1 and runner.late_answers == 1
    assert_exactly_once(answers, 1)


def test_an_overdue_answer_is_answered_locally_before_the_deadline_and_caps_the_bandwidth() -> None:
    # prior 1 MB/s, link 0: a 4-bit frame of cut 1 is expected in well under 1 ms, so the wait is
    # 3 x that (+ the tail) + 20 ms of slack, well before the 100 ms deadline
    runner, answers, hub, clock = make_runner(initial=Choice(1, 4), overdue_factor=3, overdue_slack_ms=20)
    cloud = Responder(hub, clock, mode="hold")
    runner.process(FRAME)
    nbytes = runner.bytes_sent
    wait_ms = runner.policy.answer_within_ms(runner.estimator.snapshot(), 1, nbytes)
    assert 20 < wait_ms < 50  # (the fake manifest's tail prior is a few ms)
    clock.advance(wait_ms / 1000 - 0.001)
    assert runner.expire() == 0
    clock.advance(0.002)
    assert runner.expire() == 1
    assert answers[0].answered_by is AnsweredBy.DEADLINE and answers[0].reason == "overdue"
    assert answers[0].cls == 3 and answers[0].latency_ms == pytest.approx(wait_ms + 1, abs=0.01)
    assert runner.estimator.bandwidth is not None and runner.estimator.bandwidth < nbytes / 0.020  # censored
    cloud.release()  # the late answer is counted, never written
    assert len(answers) == 1 and runner.late_answers == 1
    assert_exactly_once(answers, 1)
    # the wait never exceeds the deadline, and factor 0 means the deadline alone
    slow = make_runner(overdue_factor=1000, overdue_slack_ms=0)[0]
    assert slow.policy.answer_within_ms(slow.estimator.snapshot(), 1, 10**9) == 100
    off = make_runner(overdue_factor=0)[0]
    assert off.policy.answer_within_ms(off.estimator.snapshot(), 1, 1) == 100


class ReleasingExecutor(FakeExecutor):
    """A FakeExecutor whose device-cut run takes its head time on the clock and, with ``cloud`` set, lets the
    held cloud answers through halfway (an answer arriving while the fallback model runs)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock, self.cloud = clock, None

    def run(self, cut: CutSpec, frame: np.ndarray) -> CutOutput:
        if cut.kind is CutKind.DEVICE:
            self.clock.advance(cut.head_ms / 2000.0)
            if self.cloud is not None:
                self.cloud.release()
            self.clock.advance(cut.head_ms / 2000.0)
        return super().run(cut, frame)


@pytest.mark.parametrize("arrives", [True, False])
def test_an_overdue_frame_races_its_device_model_and_the_first_answer_counts(arrives: bool) -> None:
    # the raw cut's fallback is the whole model (20 ms): the cloud's answer coming during it answers the frame
    clock = FakeClock()
    runner, answers, hub, clock = make_runner(clock=clock, initial=Choice(0, 0), overdue_factor=2,
                                              overdue_slack_ms=10, deadline_ms=500)
    executor = ReleasingExecutor(clock)
    runner.executor = executor
    cloud = Responder(hub, clock, mode="hold")
    executor.cloud = cloud if arrives else None
    runner.process(FRAME)
    wait_ms = runner.policy.answer_within_ms(runner.estimator.snapshot(), 0, runner.bytes_sent)
    clock.advance(wait_ms / 1000 + 0.001)
    assert runner.expire() == 1
    (a,) = answers
    if arrives:
        assert (a.answered_by, a.cls, a.reason) == (AnsweredBy.CLOUD, 7, "cloud")
        assert a.latency_ms == pytest.approx(wait_ms + 1 + 10, abs=0.01)  # halfway through the 20 ms model
        assert runner.late_answers == 0
    else:
        assert (a.answered_by, a.cls, a.reason) == (AnsweredBy.DEADLINE, 3, "overdue")  # the device model's
        assert a.latency_ms == pytest.approx(wait_ms + 1 + 20, abs=0.01)
        cloud.release()  # after the local answer: counted, never written
        assert runner.late_answers == 1 and len(answers) == 1
    assert runner.inflight == 0 and runner._falling_back == {}
    assert_exactly_once(answers, 1)


def test_a_refused_frame_does_not_race_its_fallback() -> None:
    # a cloud ErrorMessage: the cloud will not answer, so the fallback answers without waiting for it
    runner, answers, hub, clock = make_runner(initial=Choice(0, 0))
    Responder(hub, clock, mode="error")
    runner.process(FRAME)
    runner.expire()
    assert [(a.answered_by, a.reason) for a in answers] == [(AnsweredBy.DEADLINE, "cloud_error:overloaded")]
    assert runner._falling_back == {}


class RefusingTransport:
    """The hub's transport, except that ``act`` publishes raise BrokerUnavailableError while ``refuse`` is set,
    with no disconnect notice first (a publish racing the connection's loss)."""

    def __init__(self, inner: object) -> None:
        self.inner, self.refuse = inner, False

    def publish(self, topic: str, payload: bytes, **kw: object) -> None:
        if self.refuse and topic.endswith("/act"):
            raise BrokerUnavailableError("broker gone (test)")
        self.inner.publish(topic, payload, **kw)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_refused_publish_is_answered_by_the_whole_model_and_the_link_counts_as_down() -> None:
    clock = FakeClock()
    hub = InMemoryHub(clock=clock)
    transport = RefusingTransport(hub.transport(DEVICE))
    runner, answers, hub, clock = make_runner(hub=hub, clock=clock, transport=transport, initial=Choice(1, 4))
    Responder(hub, clock)
    runner.process(FRAME)
    assert answers[-1].answered_by is AnsweredBy.CLOUD
    transport.refuse = True
    runner.executor.calls.clear()
    runner.process(FRAME)
    refused = answers[-1]
    # still fresh: the whole model answers it (confidence 1.0), not cut 1's unsure exit (0.1); nothing in flight
    assert refused.answered_by is AnsweredBy.DEADLINE and refused.reason == "broker_unavailable"
    assert refused.confidence == 1.0 and runner.executor.calls == [1, 3] and runner.inflight == 0
    assert runner.estimator.unreachable_samples == 1 and runner.estimator.bandwidth == pytest.approx(1.0)
    runner.process(FRAME)  # planned without the cloud: the device cut, at once
    assert answers[-1].reason == "device_cut" and runner.policy.current.cut == 3
    assert_exactly_once(answers, 3)


def test_a_lost_broker_is_a_link_of_zero_bandwidth_until_it_is_back() -> None:
    # Exits never confident: every frame of cut 1 escalates while the broker is there.
    runner, answers, hub, clock = make_runner(initial=Choice(1, 4))
    Responder(hub, clock)
    runner.process(FRAME)
    assert answers[-1].answered_by is AnsweredBy.CLOUD
    hub.set_broker_up(False)  # the transport reports the loss: the next frames are planned without the cloud
    for _ in range(6):
        runner.process(FRAME)
        clock.advance(0.1)
    outage = answers[1:]
    # the policy left cut 1 at once: the device cut serves, no frame is bet on the link (nor lost to it)
    assert runner.policy.current.cut == 3 and {a.reason for a in outage} == {"device_cut"}
    assert runner.estimator.snapshot().unreachable
    hub.set_broker_up(True)  # connected again: the cap is lifted, the split resumes (probing off here)
    for _ in range(4):
        runner.process(FRAME)
        clock.advance(0.1)
    assert answers[-1].answered_by is AnsweredBy.CLOUD and runner.policy.current.cut == 1
    assert not runner.estimator.snapshot().unreachable
    assert_exactly_once(answers, 11)


def test_cloud_error_answers_locally_at_once() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(1, 4))
    Responder(hub, clock, mode="error")
    runner.process(FRAME)
    assert answers[0].reason == "cloud_error:overloaded" and answers[0].answered_by is AnsweredBy.DEADLINE
    assert runner.errors == 1 and runner.inflight == 0


def test_start_times_every_candidate_head_once_so_plans_use_measured_times() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(1, 4))
    heads = [c.index for c in runner.manifest.cuts if c.kind is not CutKind.RAW]
    assert sorted(runner.executor.calls) == heads  # type: ignore[attr-defined]  # the raw cut has no head
    est = runner.estimator.snapshot()
    assert set(est.head_min_ms) == set(heads) and not answers  # measured, not priors; nothing answered
    off = make_runner(initial=Choice(1, 4), options=RunnerOptions(measure_heads=False))[0]
    assert off.executor.calls == [] and off.estimator.snapshot().head_min_ms == {}  # type: ignore[attr-defined]


def test_raw_cut_fallback_runs_the_device_model() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(0, 0), tau=0.5)
    cloud = Responder(hub, clock, mode="silent")
    runner.executor.calls.clear()  # type: ignore[attr-defined]  # (start timed every head once)
    runner.process(FRAME)
    assert cloud.frames[0].header.is_raw and cloud.frames[0].tensors[0].data.shape == (1, 32, 32, 3)
    clock.advance(0.2)
    runner.expire()
    assert answers[0].answered_by is AnsweredBy.DEADLINE and answers[0].confidence == 1.0
    assert runner.executor.calls == [3]  # the raw cut runs no head; the fallback ran the device cut


def test_inflight_map_is_bounded_and_every_frame_answered_once() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(1, 4), options=RunnerOptions(max_inflight=4))
    Responder(hub, clock, mode="silent")
    for _ in range(10):
        runner.process(FRAME)
        assert runner.inflight <= 4
    assert sum(a.reason == "inflight_full" for a in answers) == 6
    clock.advance(1.0)
    runner.expire()
    assert_exactly_once(answers, 10)


def test_shaped_uplink_queue_is_bounded() -> None:
    clock = FakeClock()
    hub = InMemoryHub(clock=clock)
    shaped = ShapedTransport(hub.transport(DEVICE), ConstantRateShaper(1000.0), clock=clock, threaded=False,
                             max_pending=3)
    runner, answers, hub, clock = make_runner(hub=hub, clock=clock, transport=shaped, initial=Choice(1, 4))
    Responder(hub, clock, mode="answer")
    for _ in range(6):
        runner.process(FRAME)
    assert shaped.pending == 3
    assert [a.reason for a in answers] == ["uplink_full"] * 3
    clock.advance(10.0)
    shaped.pump()
    runner.expire()
    assert_exactly_once(answers, 6)
    assert runner.late_answers == 3  # sent, answered by the deadline first, the cloud's answer counted


def test_status_online_retained_and_telemetry() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(1, 4))
    Responder(hub, clock)
    status = hub.retained(topics.topic(DEVICE, TopicKind.STATUS))
    assert status is not None and decode_message(status.payload) == StatusMessage(DEVICE, True, decode_message(status.payload).ts)
    seen: list[TelemetryMessage] = []
    fleet = hub.transport("fleet")
    fleet.subscribe(topics.topic(DEVICE, TopicKind.TELEMETRY), lambda m: seen.append(decode_message(m.payload)))
    for _ in range(12):
        runner.process(FRAME)
        clock.advance(0.1 - 0.001)  # the responder's tail takes 1 ms
    assert len(seen) == 1
    t = seen[0]
    assert t.cut == 1 and t.bits == 4 and t.fps == pytest.approx(10, rel=0.15) and t.exit_rate == 0.0
    assert t.bytes_per_s > 0 and t.queue_depth == 0 and not t.emulated
    assert t.bandwidth_estimate is None  # an instant in-memory link teaches latency only (see estimator)
    runner.close()
    assert decode_message(hub.retained(topics.topic(DEVICE, TopicKind.STATUS)).payload).online is False


# ------------------------------------------------------------------------------------------ policy


def est(bandwidth: float, link_ms: float = 0.0, **head: float) -> Estimates:
    m = fake_manifest()
    return Estimates(bandwidth, link_ms, {c.index: c.head_ms for c in m.cuts}, {c.index: c.tail_ms for c in m.cuts}, {}, True)


def test_policy_picks_the_planners_argmin_within_the_accuracy_budget() -> None:
    m, cfg = fake_manifest(), make_config()
    policy = CutPolicy(m, cfg.device, probe_every=0)
    d = policy.decide(est(10e6))
    assert d.choice == Choice(1, 4)  # 2 bits would be smaller but drops accuracy by 0.1 > 0.01
    assert not d.plan.option(1, 2).feasible
    assert CutPolicy(m, cfg.device, probe_every=0).decide(est(50e3)).choice == Choice(2, 4)


def test_policy_hysteresis_does_not_flap_on_a_steady_noisy_link() -> None:
    m, cfg = fake_manifest(), make_config()
    policy = CutPolicy(m, cfg.device, probe_every=0, margin=0.15, patience=3)
    # Around 880 kB/s cut 1 @4 bits and cut 2 cost about the same; the estimate wobbles +-10 %.
    rng = np.random.default_rng(0)
    choices = [policy.decide(est(880e3 * (1 + rng.uniform(-0.1, 0.1)))).choice for _ in range(200)]
    assert policy.switches == 0 and len(set(choices)) == 1


def test_policy_switches_after_patience_decisions_when_clearly_better() -> None:
    m, cfg = fake_manifest(), make_config()
    policy = CutPolicy(m, cfg.device, probe_every=0, margin=0.15, patience=3, initial=Choice(1, 4))
    seq = [policy.decide(est(20e3)).choice for _ in range(4)]
    assert seq == [Choice(1, 4), Choice(1, 4), Choice(2, 4), Choice(2, 4)] and policy.switches == 1


def test_policy_probes_other_cuts_stalest_first() -> None:
    m, cfg = fake_manifest(), make_config()
    policy = CutPolicy(m, cfg.device, probe_every=5)
    decisions = [policy.decide(est(10e6)) for _ in range(20)]
    probes = [d.choice for d in decisions if d.probe]
    assert len(probes) == 4 and all(p.cut != 1 for p in probes)
    assert len({p.cut for p in probes[:3]}) == 3  # never-sampled cuts first, each once


def test_privacy_never_sends_the_raw_frame() -> None:
    m = fake_manifest()
    # A fast link and a costly head make the raw cut the best option without privacy.
    fast = Estimates(1e12, 0.0, {0: 0.0, 1: 50.0, 2: 50.0, 3: 50.0}, {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.0}, {}, True)
    assert CutPolicy(m, make_config().device, probe_every=0).decide(fast).choice.cut == 0
    private = CutPolicy(m, make_config(privacy=True).device, probe_every=2)
    chosen = {private.decide(fast).choice.cut for _ in range(100)}
    assert 0 not in chosen and private.probes >= 50  # (every decision on the device cut: probe_every // 5 -> 1)


def test_tau_from_targets_on_the_exit_curve() -> None:
    cut = fake_manifest().cut(1)
    assert tau_for(cut, 8, TauTarget.ESCALATION_RATE, 0.4, 0.9) == 0.5
    assert tau_for(cut, 8, TauTarget.ESCALATION_RATE, 0.0, 0.9) == 0.0
    assert tau_for(cut, 8, TauTarget.ESCALATION_RATE, 1.0, 0.9) == 1.0
    assert tau_for(cut, 8, TauTarget.ACCURACY, 0.8, 0.9) == 0.5  # 0.6*0.8 + 0.4*0.9 = 0.84
    assert tau_for(cut, 8, TauTarget.ACCURACY, 0.9, 0.9) == 0.9  # 0.2*0.95 + 0.8*0.9 = 0.91
    assert tau_for(cut, 8, TauTarget.ACCURACY, 0.95, 0.9) == math.inf  # unreachable: escalate all
    policy = CutPolicy(fake_manifest(), make_config(target_escalation_rate=0.4).device)
    assert policy.tau(1, 8) == 0.5


def test_softmax_prediction_uses_the_temperature() -> None:
    p = softmax_prediction(np.array([2.0, 0.0, 0.0]), 1.0)
    assert p.cls == 0 and p.confidence == pytest.approx(np.exp(2) / (np.exp(2) + 2))
    assert softmax_prediction(np.array([2.0, 0.0, 0.0]), 100.0).confidence < 0.34


# ------------------------------------------------------------------------------------------ estimator


def test_estimator_separates_latency_and_bandwidth_without_clock_sync() -> None:
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6)
    for _ in range(10):
        e.observe_network(2, 100, 20.0 + 100 / 50e3 * 1000)  # small payloads: latency 20 ms
        e.observe_network(1, 10_000, 20.0 + 10_000 / 50e3 * 1000)  # big ones: 50 kB/s on top
    assert e.link_ms == pytest.approx(20.0, rel=0.05)
    assert e.bandwidth == pytest.approx(50e3, rel=0.05)
    e.observe_timeout(1, 10_000, 1000.0)  # no answer within 1 s: at most ~10 kB/s
    assert e.bandwidth < 10_500


def test_a_deadline_cap_is_a_bound_the_next_faster_sample_replaces() -> None:
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6)
    e.observe_network(1, 10_000, 10_000 / 400e3 * 1000)  # 400 kB/s
    e.observe_timeout(1, 1_000, 500.0)  # a sub-second outage: capped at 2 kB/s
    assert e.bandwidth == pytest.approx(2e3, rel=0.01)
    e.observe_network(1, 1_000, 900.0)  # that frame's late answer: slower than the cap, a real sample
    assert e.bandwidth < 2e3
    e.observe_network(1, 10_000, 10_000 / 300e3 * 1000)  # the link is back: replaces, not a geometric step
    assert e.bandwidth == pytest.approx(300e3, rel=0.01)
    e.observe_network(1, 10_000, 10_000 / 100e3 * 1000)  # no cap any more: the EWMA as usual
    assert 100e3 < e.bandwidth < 300e3


# ------------------------------------------------------------------------------------------ dynamic cut


def test_cut_moves_later_when_the_emulated_uplink_drops_and_back_when_it_recovers() -> None:
    clock = FakeClock()
    hub = InMemoryHub(clock=clock)
    shaper = ConstantRateShaper(10e6)
    shaped = ShapedTransport(hub.transport(DEVICE), shaper, clock=clock, threaded=False)
    runner, answers, hub, clock = make_runner(
        hub=hub, clock=clock, transport=shaped, probe_every=5, deadline_ms=1000, confidence=0.0
    )
    Responder(hub, clock)

    def run(n: int) -> list[int]:
        cuts = []
        for _ in range(n):
            runner.process(FRAME)
            cuts.append(runner.policy.current.cut)
            end = clock() + 0.1
            while (due := shaped.next_due()) is not None and due <= end:  # deliver in time order
                clock.t = max(clock.t, due)
                shaped.pump()
            clock.t = end
            runner.expire()
        return cuts

    fast = run(30)
    assert fast[-10:] == [1] * 10
    shaper.set_rate(20e3)  # 10 MB/s -> 20 kB/s
    slow = run(40)
    assert slow[-10:] == [2] * 10, slow
    shaper.set_rate(10e6)
    recovered = run(40)
    assert recovered[-10:] == [1] * 10, recovered
    assert runner.policy.switches <= 4  # no flapping on the way
    assert_exactly_once(answers, 110)


# ------------------------------------------------------------------------------------------ sources


def test_sources_synthetic_npz_and_fps_cap(tmp_path) -> None:
    a = [f for _, f in zip(range(3), SyntheticSource((8, 8, 3), seed=1), strict=False)]
    b = [f for _, f in zip(range(3), SyntheticSource((8, 8, 3), seed=1), strict=False)]
    assert all(x.dtype == np.uint8 and x.shape == (8, 8, 3) for x in a)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    np.savez(tmp_path / "f.npz", frames=np.zeros((2, 16, 16), dtype=np.uint8))
    frames = list(NpzSource(tmp_path / "f.npz", (8, 8, 3)))
    assert len(frames) == 2 and frames[0].shape == (8, 8, 3)
    clock = FakeClock(0.0)
    limiter = FpsLimiter(10, clock=clock, sleep=clock.advance)
    for _ in range(5):
        limiter.wait()
    assert clock() == pytest.approx(0.4)


# ------------------------------------------------------------------------------------------ heads


def test_model_cache_loads_lazily_and_evicts_lru_within_the_budget(tmp_path) -> None:
    from device_runner.heads import ModelCache
    from sdk.manifest import FileRef

    loaded: list[str] = []
    cache = ModelCache(tmp_path, threads=1, budget_bytes=250, loader=lambda p, t: loaded.append(p.name) or p.name)
    a, b, c = FileRef("a", "", 100), FileRef("b", "", 100), FileRef("c", "", 100)
    cache.get(a), cache.get(b), cache.get(a)  # a is now the most recently used
    assert loaded == ["a", "b"] and cache.used_bytes == 200
    cache.get(c)  # 300 > 250: the least recently used (b) goes
    assert cache.loaded == ("a", "c") and cache.evictions == 1
    cache.get(b)
    assert loaded == ["a", "b", "c", "b"] and cache.used_bytes <= 250


def test_device_runner_never_imports_tensorflow_or_the_converter() -> None:
    import subprocess
    import sys

    code = (
        "import sys, device_runner.cli, device_runner.runner, device_runner.heads, device_runner.sources;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'converter', 'cloud_tail')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------------------------------ shadow probes


def _recording(runner: DeviceRunner) -> list:
    decisions: list = []
    decide = runner.policy.decide
    runner.policy.decide = lambda est: decisions.append(decide(est)) or decisions[-1]  # type: ignore[method-assign]
    return decisions


def test_a_shadow_probe_is_answered_on_the_device_and_its_result_only_measures_the_link() -> None:
    runner, answers, hub, clock = make_runner(initial=Choice(3, 0), probe_every=1)
    cloud = Responder(hub, clock, mode="hold")
    decisions = _recording(runner)
    for _ in range(2):  # (the fake manifest's plan then prefers cut 1 and leaves the device cut)
        runner.process(FRAME)
    probes = [d for d in decisions if d.probe]
    assert probes, "the policy never probed from the device cut"
    assert all(d.answer_with == Choice(3, 0) for d in probes)  # served by the current choice
    assert [(a.answered_by, a.reason, a.cut, a.bytes, a.probe) for a in answers] == [
        (AnsweredBy.DEVICE, "device_cut", 3, 0, False)] * 2  # fmt: skip
    assert runner.inflight == 0 and len(cloud.frames) == runner.shadow_probes == len(probes)  # sent; nothing waits
    assert {f.header.cut_id for f in cloud.frames} == {d.choice.cut for d in probes}
    samples = runner.estimator.network_samples
    cloud.release()
    assert runner.estimator.network_samples > samples  # the results measured the link ...
    assert runner.shadow_results == len(probes) and runner.late_answers == 0  # ... and answered nothing
    clock.advance(10.0)
    assert runner.expire() == 0
    assert_exactly_once(answers, 2)


def test_a_shadow_probe_runs_the_probed_head_after_the_frame_is_answered() -> None:
    # the probed head costs the device's time, not the frame's: the answer is written before it runs
    runner, answers, hub, clock = make_runner(initial=Choice(3, 0), probe_every=1)
    Responder(hub, clock, mode="hold")
    calls = runner.executor.calls  # type: ignore[attr-defined]
    calls.clear()  # (start timed every head once)
    runner.on_answer = lambda a: (answers.append(a), calls.append(-1 - a.seq))  # type: ignore[method-assign]
    runner.policy._probe_target = lambda plan, est: Choice(1, 4)  # type: ignore[method-assign]  # a split head
    decisions = _recording(runner)
    runner.process(FRAME)
    d = decisions[-1]
    assert d.probe and d.answer_with == Choice(3, 0) and d.choice == Choice(1, 4), decisions
    assert calls == [3, -1, 1]  # the device cut, the frame's answer (seq 0), then the probed head
    assert runner.shadow_probes == 1
    assert_exactly_once(answers, 1)


def test_a_shadow_probe_from_a_split_cut_sends_the_frame_first_and_matches_results_by_cut() -> None:
    # tau 2: the exit never answers, every frame at cut 1 escalates; a probe turn every frame
    runner, answers, hub, clock = make_runner(initial=Choice(1, 4), probe_every=1, tau=2.0)
    cloud = Responder(hub, clock, mode="hold")
    runner.policy._probe_target = lambda plan, est: Choice(2, 4)  # type: ignore[method-assign]  # (the runner's side)
    decisions = _recording(runner)
    runner.process(FRAME)
    d, seq = decisions[-1], 0
    assert d.probe and d.answer_with == Choice(1, 4) and d.choice.cut != 1, decisions
    assert [f.header.cut_id for f in cloud.frames if f.header.seq == seq] == [1, d.choice.cut]  # the frame's first
    assert runner.inflight == seq + 1 and answers == []
    cloud.release()  # two results for the probe's seq: the one at cut 1 answers it, the shadow's only measures
    assert [(a.answered_by, a.cut) for a in answers] == [(AnsweredBy.CLOUD, 1)] * (seq + 1)
    assert runner.shadow_results == 1 and runner.late_answers == 0 and runner.duplicate_results == 0
    assert runner.inflight == 0
    assert_exactly_once(answers, seq + 1)


def test_the_late_answer_of_a_missed_frame_is_not_a_link_latency_sample() -> None:
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6, prior_link_ms=5.0)
    e.observe_network(1, 100, 5.0)  # small payloads teach the latency: 5 ms
    e.observe_timeout(1, 100, 300.0)  # an outage: no answer within 300 ms
    e.observe_network(1, 100, 900.0)  # ... its answer after the outage: not a 900 ms link
    assert e.link_ms == pytest.approx(5.0, abs=0.5)
    assert e.bandwidth is not None and e.bandwidth < 1e3  # the cap (100 B in ~300 ms)
    e.observe_network(1, 100, 6.0)  # the next frame in time: faster than the cap allows, so the outage is over
    assert e.bandwidth == pytest.approx(1e6)  # back to what was known before it (here the prior)
    # and a latency sample again (5.9 ms, not 6 ms - 300 ms of capped transfer = 0): the floor of the two
    assert e.link_ms == pytest.approx(4.9) and e._link_samples[-1] == pytest.approx(5.9)
