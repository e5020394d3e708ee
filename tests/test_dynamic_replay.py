"""The replayed dynamic policy with the plausible-link probe rule: no probe cost where nothing can win, and
the cut still comes back after the link recovers (tests/fakes.py's manifest, hand-made per-frame data).
"""

from __future__ import annotations

import numpy as np
from fakes import fake_manifest

from benchmarks import dynamic_replay as dr
from sdk.config import parse_config
from sdk.traces import BandwidthTrace


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


def test_no_probe_and_exactly_edge_only_where_no_offload_can_win() -> None:
    # A board 100x faster than the manifest's host: the device cut takes 0.2 ms, any offload >= 2 ms of tail.
    m = fake_manifest()
    s = dr.make_setup(m, parse_config(profile(name="fast", speed_factor=0.01)), frame_data())
    sc = dr.Scenario(trace((0.0, 1e6), (5.0, 1e4), period=10.0), fps=30.0, duration_s=20.0, deadline_ms=100.0)
    runs = dr.compare(s, sc, diagnostics=False)
    assert runs["dynamic"].probes == 0
    np.testing.assert_allclose(runs["dynamic"].latency_ms, runs["edge-only"].latency_ms)


def test_the_cut_moves_back_after_the_link_recovers_within_a_few_seconds() -> None:
    s = dr.make_setup(fake_manifest(), parse_config(profile()), frame_data())
    sc = dr.Scenario(trace((0.0, 10e6), (20.0, 20e3), (40.0, 10e6), period=60.0), fps=10.0, duration_s=60.0)
    link = dr.TraceLink(sc.trace)
    dyn = dr.Dynamic("dynamic", s, sc, link, allowed=[1, 2])
    dr.simulate(s, sc, dyn, link)
    assert {c for t, c in dyn.trail if 5.0 <= t < 20.0} == {1}
    assert {c for t, c in dyn.trail if 25.0 <= t < 40.0} == {2}
    back = min(t for t, c in dyn.trail if t >= 40.0 and c == 1)
    # Probes every 25 frames (2.5 s), backed off to 1 turn in 4 while the link is bad: at worst 10 s + patience.
    assert back < 50.0, back
    assert {c for t, c in dyn.trail if t >= back} == {1}
