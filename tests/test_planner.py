"""The planner against the worked example of ../shared/THEORY.md (numbers copied from it by hand)."""

from __future__ import annotations

import pytest

from sdk.manifest import CutKind
from sdk.planner import CutCost, cascade_latency, evaluate, parse_rate

# layer: (MFLOP, output MB) -- THEORY.md's table
LAYERS = [
    ("input", 0, 6.00),
    ("conv1", 420, 3.10),
    ("conv2", 880, 1.60),
    ("conv3", 950, 0.80),
    ("pool", 60, 0.40),
    ("fc1", 320, 0.05),
    ("fc2", 90, 0.02),
    ("softmax", 2, 0.004),
]
DEVICE_GFLOPS, CLOUD_GFLOPS, UPLINK_MB_S = 28.0, 900.0, 50.0
EXPECTED_MS = {
    "input": 123.02, "conv1": 79.56, "conv2": 80.01, "conv3": 96.88,
    "pool": 90.96, "fc1": 95.03, "fc2": 97.55, "softmax": 97.29,
}


def worked_example_costs() -> list[CutCost]:
    total = sum(f for _, f, _ in LAYERS)
    costs, done = [], 0.0
    for s, (name, mflop, mb) in enumerate(LAYERS):
        done += mflop
        kind = CutKind.RAW if s == 0 else CutKind.DEVICE if s == len(LAYERS) - 1 else CutKind.SPLIT
        costs.append(
            CutCost(
                index=s, name=name, kind=kind,
                head_ms=done / DEVICE_GFLOPS,  # MFLOP / GFLOP/s = ms
                tail_ms=(total - done) / CLOUD_GFLOPS,
                bytes_at_bits={8: round(mb * 1e6)},  # the example still counts softmax's output as sent
            )
        )
    return costs


def test_worked_example_totals_and_argmin():
    plan = evaluate(worked_example_costs(), bandwidth_bytes_per_s=UPLINK_MB_S * 1e6)
    got = {o.name: round(o.total_ms, 2) for o in plan.options}
    assert got == EXPECTED_MS
    assert plan.best.name == "conv1"
    assert round(plan.best.total_ms, 2) == 79.56
    assert round(plan.option(7).total_ms / plan.best.total_ms, 2) == 1.22  # 1.22x faster than on-device


def test_lower_bandwidth_moves_the_cut_later_and_faster_device_later():
    slow = evaluate(worked_example_costs(), bandwidth_bytes_per_s=5e6)
    assert slow.best.index > 1
    fast_dev = evaluate(worked_example_costs(), bandwidth_bytes_per_s=50e6, device_factor=0.1)
    assert fast_dev.best.index > 1


def test_link_latency_added_to_sending_cuts_only():
    base = evaluate(worked_example_costs(), bandwidth_bytes_per_s=50e6)
    lat = evaluate(worked_example_costs(), bandwidth_bytes_per_s=50e6, link_latency_ms=10.0)
    assert lat.option(1).total_ms == pytest.approx(base.option(1).total_ms + 10.0)
    assert lat.option(7).total_ms == pytest.approx(base.option(7).total_ms)


def test_privacy_excludes_raw_and_budget_excludes_lossy_bits():
    costs = [
        CutCost(0, "raw", CutKind.RAW, 0.0, 1.0, {0: 100}),
        CutCost(1, "a", CutKind.SPLIT, 1.0, 1.0, {8: 80, 2: 20}, {8: 0.0, 2: 0.05}),
        CutCost(2, "dev", CutKind.DEVICE, 50.0, 0.0, {0: 0}),
    ]
    plan = evaluate(costs, bandwidth_bytes_per_s=1000, allow_raw=False, accuracy_drop_budget=0.01)
    assert not plan.option(0).feasible and "privacy" in plan.option(0).reason
    assert not plan.option(1, 2).feasible and "budget" in plan.option(1, 2).reason
    assert (plan.best.index, plan.best.bits) == (2, 0)
    unconstrained = evaluate(costs, bandwidth_bytes_per_s=1000).best
    assert (unconstrained.index, unconstrained.bits) == (1, 2)  # 22 ms beats raw (101) and device (50)


def test_no_feasible_option_is_a_clear_error():
    costs = [CutCost(0, "raw", CutKind.RAW, 0.0, 1.0, {0: 100})]
    with pytest.raises(ValueError, match="no feasible cut"):
        evaluate(costs, bandwidth_bytes_per_s=1000, allow_raw=False)


def test_cascade_worked_exercise():
    # THEORY.md: device 90% correct, q(tau) = tau, cloud 99%; escalated inputs are exactly the device's errors.
    # Overall accuracy = 0.9 + q * 0.99 while q <= 0.1, so 97% needs q = 0.07 / 0.99.
    q = 0.07 / 0.99
    assert 0.9 + q * 0.99 == pytest.approx(0.97)
    assert cascade_latency(8.0, q, 60.0) == pytest.approx(8.0 + 60.0 * q)
    with pytest.raises(ValueError):
        cascade_latency(8.0, 1.5, 60.0)


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [("2Mbit/s", 250_000), ("20mbps", 2_500_000), ("250kB/s", 250_000), ("1.5MB/s", 1_500_000),
     ("8 kbit/s", 1000), ("100B/s", 100)],
)
def test_parse_rate(text, bytes_per_s):
    assert parse_rate(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("text", ["2", "fast", "2 furlongs/s", "-1MB/s", ""])
def test_parse_rate_refuses(text):
    with pytest.raises(ValueError, match="bandwidth"):
        parse_rate(text)


def test_significant_drop_is_the_drop_beyond_its_paired_sampling_error() -> None:
    from sdk.planner import significant_drop

    # 2 frames of 180 (the MobileNetV2 device cut): 1.1 pp raw, inside z * sqrt(0.05 / 180) = 2.7 pp.
    assert significant_drop(0.6222, 0.6111, 0.95, 180) == 0.0
    # A large drop on many frames survives, reduced by its margin only.
    se = (0.2 / 10_000) ** 0.5
    assert significant_drop(0.9, 0.8, 0.8, 10_000) == pytest.approx(0.1 - 1.645 * se)
    # Identical answers: no sampling error, the raw drop stands.
    assert significant_drop(0.9, 0.88, 1.0, 100) == pytest.approx(0.02)
    # No evaluation recorded: the raw drop; never negative.
    assert significant_drop(0.9, 0.85, 0.9, 0) == pytest.approx(0.05)
    assert significant_drop(0.8, 0.9, 0.9, 100) == 0.0


def test_breakeven_bandwidth_is_where_the_cut_starts_to_win() -> None:
    from sdk.planner import breakeven_bandwidth

    # Device 100 ms; head 20 ms, every frame sent: 10 kB must take under 100 - 20 - 50 - 5 = 25 ms -> 400 kB/s.
    assert breakeven_bandwidth(100.0, 20.0, 1.0, 10_000, 50.0, 5.0) == pytest.approx(400_000.0)
    # An exit keeping 90 % local: the 10 % escalated may take (100 - 20) / 0.1 - 55 = 745 ms.
    assert breakeven_bandwidth(100.0, 20.0, 0.1, 10_000, 50.0, 5.0) == pytest.approx(10_000 / 0.745)
    # The round trip alone costs more than the device saves: no bandwidth is enough.
    assert breakeven_bandwidth(35.0, 20.0, 1.0, 3_000, 50.0, 1.0) is None
    assert breakeven_bandwidth(35.0, 40.0, 0.1, 3_000, 50.0, 1.0) is None
    # Nothing escalates: it wins outright when the head is cheaper than the whole model.
    assert breakeven_bandwidth(35.0, 20.0, 0.0, 3_000, 50.0, 1.0) == 0.0
    with pytest.raises(ValueError, match="escalation rate"):
        breakeven_bandwidth(35.0, 20.0, 1.5, 3_000, 50.0, 1.0)
