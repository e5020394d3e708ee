"""The replay is the real runner in simulated time: the clock, the simulated link and tail, the recorded heads,
the policy's behaviour on step traces (tests/fakes.py's manifest, hand-made per-frame data), and one scenario
run both simulated and live through Mosquitto on the digits test bundle, cut for cut and answer for answer.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import fake_manifest

from benchmarks import dynamic_replay as dr
from benchmarks.sim_clock import SimClock
from benchmarks.sim_heads import RecordedHeads
from benchmarks.sim_link import SimTail, SimUplink
from device_runner.heads import Prediction
from device_runner.link import TraceShaper
from sdk import topics
from sdk.config import parse_config
from sdk.messages import ReportMessage, ResultMessage, decode_message
from sdk.topics import TopicKind
from sdk.traces import BandwidthTrace
from sdk.transport import InMemoryHub
from sdk.wire import encode_activation


def profile(**board: object) -> dict[str, object]:
    return {
        "board": {"name": "host", "cpu": "x", "threads": 1, "memory_budget_mb": 64, "speed_factor": 1.0,
                  "speed_factor_source": "test", **board},
        "device": {"device_id": "cam-01", "fps_cap": 10, "deadline_ms": 100, "target_accuracy": 0.9,
                   "bits": [8, 4, 2], "codec": "none", "accuracy_drop_budget": 0.01, "telemetry_interval_s": 1.0,
                   "privacy": True},
        "broker": {"url": "mqtt://127.0.0.1:1883"},
    }  # fmt: skip


def frame_data(n: int = 4) -> dr.FrameData:
    """Every frame: the manifest's payload bytes, the cloud right, exits never confident (every frame escalates)."""
    m, R = fake_manifest(), dr.Route
    nbytes = {R(0): np.full(n, 3072), R(3): np.zeros(n, dtype=np.int64)}
    for c in (1, 2):
        for b in m.bits:
            nbytes[R(c, b)] = np.full(n, m.cut(c).payload_bytes(b))
    ok = {r: np.ones(n, dtype=bool) for r in nbytes}
    return dr.FrameData(np.zeros(n, dtype=np.int64), nbytes, ok, {c: np.zeros(n) for c in (1, 2, 3)},
                        {c: np.ones(n, dtype=bool) for c in (1, 2, 3)})


def trace(*steps: tuple[float, float], period: float) -> BandwidthTrace:
    return BandwidthTrace("steps", np.array([t for t, _ in steps]), np.array([r for _, r in steps]), period)


# ------------------------------------------------------------------------------------ the simulated pieces
def test_the_clock_runs_events_in_time_order_and_never_blocks() -> None:
    clock, seen = SimClock(), []
    clock.at(0.3, lambda: seen.append(("b", clock())))
    clock.at(0.1, lambda: seen.append(("a", clock())))
    clock.at(0.3, lambda: seen.append(("c", clock())))  # equal times: in the order scheduled
    clock.sleep(0.2)
    assert seen == [("a", 0.1)] and clock() == pytest.approx(0.2)
    cond = threading.Condition()
    t0 = time.perf_counter()
    assert clock.wait(cond, 10.0) is True and clock() == pytest.approx(0.3)  # one wake-up: the next event
    assert [s for s, _ in seen] == ["a", "b"]
    assert clock.wait(cond, 10.0) is True and [s for s, _ in seen] == ["a", "b", "c"]
    assert clock.wait(cond, 10.0) is False and clock() == pytest.approx(10.3)  # nothing due: the timeout
    assert time.perf_counter() - t0 < 1.0


def test_the_uplink_is_the_trace_shaper_fifo_and_the_tail_answers_after_its_time() -> None:
    clock = SimClock()
    hub = InMemoryHub(clock=clock)
    calls: list[tuple[int, int, int]] = []

    def answer(cut: int, bits: int, seq: int) -> tuple[int, tuple[tuple[int, float], ...]]:
        calls.append((cut, bits, seq))
        return 7, ((7, 1.0),)

    SimTail(hub.transport("tail"), clock, answer, lambda cut: 4.0)
    shaper = TraceShaper(trace((0.0, 1000.0), period=100.0), t0=0.0, latency_s=0.01)
    uplink = SimUplink(hub.transport("cam-01"), shaper, clock)
    got: list[tuple[float, object]] = []
    device = hub.transport("device-side")
    for kind in (TopicKind.RESULT, TopicKind.REPORT):
        device.subscribe(topics.topic("cam-01", kind), lambda msg: got.append((clock(), decode_message(msg.payload))))
    m = fake_manifest()
    cut = m.cut(2)
    acts = {t.name: np.zeros((1, *t.shape), dtype=np.int8) for t in cut.tensors}
    quant = {t.name: (t.scale, t.zero_point) for t in cut.tensors}
    payloads = [encode_activation(device_id="cam-01", seq=s, cut_id=2, bundle_id=m.wire_bundle_id, activations=acts,
                                  quant=quant, bits=4, capture_ts=0.0) for s in (0, 1)]  # fmt: skip
    for p in payloads:
        uplink.publish(topics.topic("cam-01", TopicKind.ACT), p, qos=1)
    clock.sleep(5.0)
    assert calls == [(2, 4, 0), (2, 4, 1)]
    n = len(payloads[0])  # both queue on the 1000 B/s link: FIFO, then 10 ms, then the 4 ms tail each
    results = [(t, msg) for t, msg in got if isinstance(msg, ResultMessage)]
    assert [t for t, _ in results] == pytest.approx([n / 1000 + 0.014, 2 * n / 1000 + 0.014])
    reports = [msg for _, msg in got if isinstance(msg, ReportMessage)]
    assert [r.bytes_received for r in reports] == [n, n] and all(r.tail_ms == 4.0 for r in reports)
    assert all(isinstance(msg, ResultMessage | ReportMessage) for _, msg in got) and results[0][1].cls == 7


def test_recorded_heads_replay_each_frames_outputs_after_the_measured_time() -> None:
    clock = SimClock()
    frames = np.arange(3 * 4, dtype=np.uint8).reshape(3, 2, 2, 1)
    preds = [Prediction(k, 0.5, ((k, 0.5),)) for k in range(3)]
    heads = RecordedHeads(clock, frames, {2: [({"t": np.full((1, 2), k, np.int8)}, preds[k]) for k in range(3)]},
                          {2: 3.0})
    cut = fake_manifest().cut(2)
    out = heads.run(cut, frames[2])
    assert out.prediction == preds[2] and out.activations["t"].tolist() == [[2, 2]] and out.device_ms == 3.0
    assert clock() == pytest.approx(0.003)
    assert heads.run(cut, np.zeros((2, 2, 1), np.uint8)).prediction == preds[0]  # the blank frame of the start
    assert heads.index(frames[1]) == 1 and heads.index(frames[1].copy()) == 0


def test_the_replay_never_waits_in_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only this thread's waits count: a background thread another test left behind (a paho loop) may sleep.
    me, wait, sleep = threading.get_ident(), threading.Condition.wait, time.sleep

    def blocked_wait(self: threading.Condition, *a: float | None) -> bool:
        if threading.get_ident() == me:
            raise AssertionError("the replay waited in real time")
        return wait(self, *a)

    def blocked_sleep(seconds: float) -> None:
        if threading.get_ident() == me:
            raise AssertionError("the replay waited in real time")
        sleep(seconds)

    monkeypatch.setattr(threading.Condition, "wait", blocked_wait)
    monkeypatch.setattr(time, "sleep", blocked_sleep)
    s = dr.make_setup(fake_manifest(), parse_config(profile()), frame_data())
    sc = dr.Scenario(trace((0.0, 1e5), (2.0, 1e3), period=4.0), fps=10.0, duration_s=60.0, deadline_ms=100.0)
    t0 = time.perf_counter()
    run = dr.compare(s, sc, diagnostics=False)["dynamic"]
    assert len(run.latency_ms) == 600 and run.deadline.any()  # a minute of frames, outages included
    assert time.perf_counter() - t0 < 20.0


# ------------------------------------------------------------------------------------ the policy, replayed
def test_no_probe_and_exactly_edge_only_where_no_offload_can_win() -> None:
    # A board 100x faster than the manifest's host: the device cut takes 0.2 ms, any offload >= 2 ms of tail.
    m = fake_manifest()
    s = dr.make_setup(m, parse_config(profile(name="fast", speed_factor=0.01)), frame_data())
    sc = dr.Scenario(trace((0.0, 1e6), (5.0, 1e4), period=10.0), fps=30.0, duration_s=20.0, deadline_ms=100.0)
    runs = dr.compare(s, sc, diagnostics=False)
    assert runs["dynamic"].probes == 0 and not runs["dynamic"].sent.any()
    np.testing.assert_allclose(runs["dynamic"].latency_ms, runs["edge-only"].latency_ms)


def test_the_cut_moves_back_after_the_link_recovers_within_a_few_seconds() -> None:
    s = dr.make_setup(fake_manifest(), parse_config(profile()), frame_data())
    sc = dr.Scenario(trace((0.0, 10e6), (20.0, 20e3), (40.0, 10e6), period=60.0), fps=10.0, duration_s=60.0)
    run = dr.replay(s, sc, dr.dynamic_policy(s, allowed=[1, 2]), "dynamic")
    trail = [(a.seq / sc.fps, a.cut) for a in run.answers if not a.probe]
    assert {c for t, c in trail if 5.0 <= t < 20.0} == {1}
    assert {c for t, c in trail if 25.0 <= t < 40.0} == {2}
    back = min(t for t, c in trail if t >= 40.0 and c == 1)
    # Probes every 25 frames (2.5 s), backed off to 1 turn in 4 while the link is bad: at worst 10 s + patience.
    assert back < 50.0, back
    assert {c for t, c in trail if t >= back} == {1}


# ------------------------------------------------------------------------------------ simulated vs live
def test_one_scenario_simulated_and_live_through_mosquitto_agree(reference_bundle: Path, mosquitto_bin: str) -> None:
    """The digits test bundle, 6 s of the synthetic trace at 5 fps, no round trip, the dynamic policy choosing
    between cut 51 and the device cut, simulated and live (Mosquitto, a cloud_tail worker, LiteRT heads
    stretched to the board): the same runner and policy, so the same cut and the same answer frame by frame.

    The board is zero2w-offload made 100x slower (tests declare this host the reference core,
    SPLITEDGE_HOST_SCALE=1): the device cut takes ~180 ms and cut 51 ~115 ms plus ~1 ms on the link, a clear
    choice even when the one network sample of the cold start is slow on a busy host (at 30x, ~55 against
    ~35 ms, one live run in four stayed on the device after it). At the real factor it is ~2 ms against
    ~1.2 ms + the link, and live pays 1-4 ms per frame the replay does not (the broker hop, the runner's
    Python time, the stretch sleep's overshoot on a busy host), which flips that near-tie. Tolerances: cuts
    and answers >= 90 % the same, frame by frame (a plan near its switching margin may still flip a frame,
    and every flipped route can change that frame's answer). Latency is only bounded: live may not beat the
    replay by more than 10 % nor take twice as long. Live charges each frame its own CPU time x the board
    factor (~330 here), so a 0.1 ms stall of this shared 2-core host is 33 board ms, while the replay charges
    the 10th percentile of the measured times; live was 35-55 % slower in 4 runs here. The <= 10 % goal is
    for the real boards' factors (`bench dynamic --live` reports the gap)."""
    from dataclasses import replace

    from benchmarks import bench_dynamic as bd
    from device_runner.runner import codec_for
    from sdk.config import load_board
    from sdk.manifest import load_manifest
    from sdk.traces import synthetic_trace

    m = load_manifest(reference_bundle)
    config = load_board("zero2w-offload")
    config = replace(config, board=replace(config.board, speed_factor=config.board.speed_factor * 100))
    data = dr.measure(reference_bundle, m, n=40, codec=codec_for(config.device.codec))
    s = dr.make_setup(m, config, data)
    sc = bd.scenario(synthetic_trace(0), config, fps=5.0, duration=6.0, link_ms=0.0)
    cuts = [51, m.device_cut.index if m.device_cut else -1]
    simulated = dr.replay(s, sc, dr.dynamic_policy(s, allowed=cuts), "dynamic")
    live = bd.live(reference_bundle, m, config, sc, n=40, allowed_cuts=cuts)
    assert len(simulated.answers) == len(live.answers) == sc.frames == 30
    assert sum(a.cut == 51 for a in simulated.answers) >= 25, "the scenario must offload"
    gap = bd.live_gap(simulated, live)
    trail = ("".join("D" if a.cut != 51 else "5" for a in simulated.answers),
             "".join("D" if a.cut != 51 else "5" for a in live.answers), [round(v) for v in live.latency_ms])
    assert gap["same_cut"] >= 0.9, (gap, trail)
    assert gap["same_answer"] >= 0.9, gap
    reasons = [a.reason == b.reason for a, b in zip(simulated.answers, live.answers, strict=True)]
    assert np.mean(reasons) >= 0.9, (gap, [a.reason for a in live.answers])
    assert -0.1 <= gap["mean_gap"] <= 1.0, (gap, simulated.summary(), live.summary())


def test_the_live_gap_compares_frame_by_frame() -> None:
    s = dr.make_setup(fake_manifest(), parse_config(profile()), frame_data())
    sc = dr.Scenario(trace((0.0, 1e6), period=10.0), fps=10.0, duration_s=1.0)
    a = dr.compare(s, sc, diagnostics=False)
    from benchmarks.bench_dynamic import live_gap

    same = live_gap(a["dynamic"], a["dynamic"])
    assert same == {"mean_gap": 0.0, "accuracy_gap": 0.0, "same_cut": 1.0, "same_answer": 1.0}
    other = live_gap(a["dynamic"], a["edge-only"])
    assert other["same_cut"] < 1.0 and other["mean_gap"] > 0




def test_the_replay_reports_the_devices_estimate_over_the_true_rate() -> None:
    """cut1 pinned on a steady 50 kB/s link without a round trip (every answer is mostly transfer): every
    escalated frame's answer after the first measured bandwidth is one ratio, and the estimate lands on the
    trace's rate. The device cut sends nothing: no ratio."""
    s = dr.make_setup(fake_manifest(), parse_config(profile()), frame_data())
    sc = dr.Scenario(trace((0.0, 50e3), period=10.0), fps=10.0, duration_s=10.0, link_ms=0.0)
    run = dr.replay(s, sc, dr.pinned_policy(s, dr.Route(1, 8)), "cut1")
    summary = run.summary()
    assert summary["estimate_samples"] == len(run.est_ratios) >= 90
    assert 0.9 <= summary["estimate_over_true"] <= 1.1, summary
    assert dr.replay(s, sc, dr.pinned_policy(s, dr.Route(3)), "device").summary()["estimate_samples"] == 0
