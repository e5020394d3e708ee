"""The dynamic cut end to end: real Mosquitto, real cloud tail worker, real bundle, shaped uplink.

The in-memory version (tests/test_device_runner.py) runs on a fake clock with a fake executor. Here
everything is real except the uplink's rate: the device runs the bundle's LiteRT heads (timing
emulated for a board slower than this host), publishes through ``device_runner.link.ShapedTransport``
over a ``ConstantRateShaper`` to a real Mosquitto, where ``cloud_tail.worker.TailWorker`` runs the
tails and replies with results and reports - the estimator's only source of network samples.

The scenario is derived from the bundle, so a new reference model changes the numbers, not the test:

* two cuts only (``allowed_cuts``): the *early split* (the split cut with the smallest head time
  among those whose payload is small enough) and the *device* cut (the whole model, nothing sent);
* the board's ``speed_factor`` makes the device cut take ``device_ms`` board milliseconds, from its
  head time measured here the way the runner measures it (``LiteRTHeads``, one thread: the manifest's
  head_ms are the converter's, at two threads);
* the two rates make the split cut's transfer ~2 % of ``device_ms`` (high) and twice ``device_ms``
  (low) - the low rate still carries one frame per frame period, so no backlog builds up in the
  shaper and the estimator sees the link, not a queue;
* a precondition evaluates ``T = head + bytes/bw + link + tail`` with ``sdk.planner`` at both rates
  (with an allowance for the MQTT round trip, which the estimator counts as transfer time) and
  fails with the numbers if the split cut does not clearly win at the high rate or the device cut
  at the low one;
* ``tau_override`` above 1: the early exit never answers, every frame at the split cut escalates, so
  each one is a bandwidth sample; probes every few frames are how the split cut is found again.

Phases (frames, not seconds, bound every assertion): high -> low -> high.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cloud_tail.tails import TailSet
from cloud_tail.worker import TailWorker, WorkerConfig
from device_runner.heads import LiteRTHeads
from device_runner.link import ConstantRateShaper, ShapedTransport
from device_runner.policy import CutPolicy
from device_runner.runner import Answer, AnsweredBy, DeviceRunner, RunnerOptions
from device_runner.sources import SyntheticSource
from sdk.config import BoardSpec, DeviceConfig, parse_config
from sdk.manifest import CutKind, CutSpec, Manifest, load_manifest
from sdk.mqtt import MqttTransport
from sdk.planner import CutCost, Plan, evaluate

pytestmark = pytest.mark.broker

DEVICE_ID = "cut-moves-01"
MIN_DEVICE_MS = 50.0  # board ms of the device cut (at least; more for a model slow on this host)
HOST_SHARE = 8.0  # the board is >= 8x slower than this host: the real head/tail times stay small
HIGH_TRANSFER = 0.02  # split payload's transfer at the high rate, as a fraction of device_ms
LOW_TRANSFER = 2.0  # ... and at the low rate
PERIOD = 2.5  # frame period, in device_ms: the low rate still carries every frame in time
ROUND_TRIP_MS = 5.0  # allowance for the MQTT round trip (device -> broker -> worker -> device)
MAX_PAYLOAD = 256 * 1024  # an early split cut must ship at most this much at 8 bits
MARGIN, PATIENCE, PROBE_EVERY = 0.15, 4, 4
CLEAR = 0.8  # "clearly wins": its T is at most CLEAR x the hysteresis bar
HIGH_A, LOW, HIGH_C = 30, 40, 45  # frames per phase
SETTLED = 10  # the last frames of every phase are all at the phase's cut
MOVE_WITHIN = 25  # frames after a rate change by which the cut has moved


@dataclass(frozen=True, slots=True)
class Scenario:
    split: CutSpec
    device: CutSpec
    speed_factor: float
    device_ms: float  # board ms of the device cut
    split_ms: float  # board ms of the split cut's head + exit
    payload: int
    high: float  # bytes/s
    low: float
    period_s: float
    plan_high: Plan
    plan_low: Plan

    def describe(self) -> str:
        return (
            f"split cut {self.split.index} ({self.split.name}, {self.payload} B), device cut {self.device.index}; "
            f"speed_factor {self.speed_factor:.1f}: device {self.device_ms:.1f} ms, split head+exit "
            f"{self.split_ms:.1f} ms (board); rates {self.high / 1e6:.2f} / {self.low / 1e3:.1f} kB/s; "
            f"period {self.period_s * 1000:.0f} ms"
        )


def early_split(manifest: Manifest) -> CutSpec:
    splits = [c for c in manifest.cuts if c.kind is CutKind.SPLIT and 0 < c.payload_bytes(8) <= MAX_PAYLOAD]
    assert splits, f"no split cut ships <= {MAX_PAYLOAD} B at 8 bits: {[(c.index, c.kind.value) for c in manifest.cuts]}"
    return min(splits, key=lambda c: (c.head_ms + c.exit_ms, c.index))


def host_ms(bundle: Path, manifest: Manifest, cut: CutSpec, runs: int = 15) -> float:
    """Median head (+ exit) time of ``cut`` on this host, one thread, as the runner measures it."""
    board = BoardSpec("calibrate", "host", 1, 256, 1.0, "test", emulate_timing=True)
    heads = LiteRTHeads(bundle, manifest, board)
    frames = SyntheticSource(tuple(manifest.input.shape), seed=11, n=runs + 3)
    times = [heads.run(cut, f).device_ms for f in frames]
    return statistics.median(times[3:])


def make_scenario(bundle: Path, manifest: Manifest) -> Scenario:
    split, device = early_split(manifest), manifest.device_cut
    assert device is not None, "the bundle has no device cut"
    host_device, host_split = host_ms(bundle, manifest, device), host_ms(bundle, manifest, split)
    device_ms = max(MIN_DEVICE_MS, HOST_SHARE * host_device)
    factor = device_ms / host_device
    payload = split.payload_bytes(8)
    high, low = payload / (HIGH_TRANSFER * device_ms / 1000), payload / (LOW_TRANSFER * device_ms / 1000)
    costs = [
        CutCost(split.index, split.name, split.kind, host_split * factor, split.tail_ms, {8: payload}),
        CutCost(device.index, device.name, device.kind, device_ms, 0.0, {0: 0}),
    ]

    def plan(rate: float) -> Plan:
        return evaluate(costs, bandwidth_bytes_per_s=rate, link_latency_ms=ROUND_TRIP_MS, bits=(8,))

    return Scenario(split, device, factor, device_ms, host_split * factor, payload, high, low,
                    PERIOD * device_ms / 1000, plan(high), plan(low))  # fmt: skip


def config(s: Scenario, url: str) -> DeviceConfig:
    data = {
        "board": {"name": "emulated-board", "cpu": "test", "threads": 1, "memory_budget_mb": 256,
                  "speed_factor": s.speed_factor, "speed_factor_source": "test: derived from the bundle",
                  "emulate_timing": True},
        "device": {"device_id": DEVICE_ID, "source": "synthetic", "fps_cap": 1.0 / s.period_s,
                   "deadline_ms": 8 * s.device_ms, "target_accuracy": 0.5, "bits": [8], "codec": "none",
                   "accuracy_drop_budget": 1.0, "telemetry_interval_s": 60.0},
        "broker": {"url": url},
    }  # fmt: skip
    return parse_config(data)


def cuts_string(cuts: list[int], probes: list[bool], s: Scenario) -> str:
    """One letter per frame: S split, D device; lower case for a probe frame."""
    letter = {s.split.index: "S", s.device.index: "D"}
    return "".join(letter.get(c, "?").lower() if p else letter.get(c, "?") for c, p in zip(cuts, probes, strict=True))


@pytest.fixture(scope="module")
def scenario(reference_bundle: Path) -> Scenario:
    manifest = load_manifest(reference_bundle)
    s = make_scenario(reference_bundle, manifest)
    at_high = (s.plan_high.option(s.split.index, 8), s.plan_high.option(s.device.index, 0))
    at_low = (s.plan_low.option(s.split.index, 8), s.plan_low.option(s.device.index, 0))
    table = (f"{s.describe()}; T at high: split {at_high[0].total_ms:.1f} / device {at_high[1].total_ms:.1f} ms; "
             f"at low: split {at_low[0].total_ms:.1f} / device {at_low[1].total_ms:.1f} ms")  # fmt: skip
    # Precondition: the bundle allows the scenario (a model change fails here, with the numbers).
    assert s.plan_high.best.index == s.split.index, f"the split cut does not win at the high rate: {table}"
    assert at_high[0].total_ms <= CLEAR * (1 - MARGIN) * at_high[1].total_ms, (
        f"the split cut does not win clearly at the high rate (its head is too large a share of the whole "
        f"model's?): {table}"
    )
    assert s.plan_low.best.index == s.device.index, f"the device cut does not win at the low rate: {table}"
    assert at_low[1].total_ms <= CLEAR * (1 - MARGIN) * at_low[0].total_ms, f"no clear win at the low rate: {table}"
    return s


def test_cut_moves_later_when_the_uplink_drops_and_back_when_it_recovers(
    reference_bundle: Path, mosquitto, scenario: Scenario
) -> None:
    s = scenario
    manifest = load_manifest(reference_bundle)
    cfg = config(s, mosquitto.url)
    cloud_transport = MqttTransport(mosquitto.url, client_id="cut-moves-tail")
    worker = TailWorker(cloud_transport, TailSet(reference_bundle, manifest=manifest), WorkerConfig("cut-moves-w1"))
    worker.start()
    shaper = ConstantRateShaper(s.high)
    uplink = ShapedTransport(MqttTransport(mosquitto.url, client_id=DEVICE_ID), shaper)
    answers: list[Answer] = []
    policy = CutPolicy(manifest, cfg.device, margin=MARGIN, patience=PATIENCE, probe_every=PROBE_EVERY,
                       tau_override=2.0, allowed_cuts=(s.split.index, s.device.index))  # fmt: skip
    runner = DeviceRunner(manifest, cfg, uplink, LiteRTHeads(reference_bundle, manifest, cfg.board), policy=policy,
                          on_answer=answers.append, options=RunnerOptions(stretch_emulated=True))  # fmt: skip
    total = HIGH_A + LOW + HIGH_C
    rates = {0: s.high, HIGH_A: s.low, HIGH_A + LOW: s.high}
    cuts: list[int] = []  # the policy's current cut after each frame (what a non-probe frame runs at)
    frame_pool = list(SyntheticSource(tuple(manifest.input.shape), seed=5, n=8))

    def frames() -> Iterator[np.ndarray]:
        for i in range(total):
            if i:  # frame i-1 has been processed: record the cut the policy settled on for it
                cuts.append(policy.current.cut)  # type: ignore[union-attr]
            if i in rates:
                shaper.set_rate(rates[i])
            yield frame_pool[i % len(frame_pool)]

    t0 = time.monotonic()
    try:
        summary = runner.run(frames(), frames=total)
    finally:
        runner.close()
        worker.stop()
        cloud_transport.close()
    elapsed = time.monotonic() - t0
    cuts.append(policy.current.cut)  # type: ignore[union-attr]
    by_seq = {a.seq: a for a in answers}
    probes = [by_seq[i].probe if i in by_seq else False for i in range(total)]
    trace = f"{s.describe()}; {elapsed:.1f} s; cuts per frame: {cuts_string(cuts, probes, s)}"

    # (5) every frame answered exactly once
    counts = Counter(a.seq for a in answers)
    assert sorted(counts) == list(range(total)) and set(counts.values()) == {1}, trace
    assert summary.frames == total
    phases = {"high": cuts[:HIGH_A], "low": cuts[HIGH_A : HIGH_A + LOW], "high again": cuts[HIGH_A + LOW :]}
    want = {"high": s.split.index, "low": s.device.index, "high again": s.split.index}
    for name, seq in phases.items():
        # (1)-(3) each phase settles on its cut, within MOVE_WITHIN frames of the rate change ...
        assert seq[-SETTLED:] == [want[name]] * SETTLED, f"{name}: not settled on cut {want[name]}: {trace}"
        first = seq.index(want[name])
        assert first <= MOVE_WITHIN, f"{name}: reached cut {want[name]} only after {first} frames: {trace}"
        # (4) ... and a steady link never flaps: at most one switch per phase, and none once there
        switches = sum(a != b for a, b in zip(seq, seq[1:], strict=False))
        assert switches <= 1 and seq[first:] == [want[name]] * (len(seq) - first), f"{name}: flapping: {trace}"
    assert policy.switches <= 3, trace
    cloud = [a for a in answers if a.answered_by is AnsweredBy.CLOUD]
    assert cloud and all(a.cut == s.split.index for a in cloud), trace
    assert all(a.reason == "device_cut" for a in answers if a.cut == s.device.index), trace
    print(trace)
