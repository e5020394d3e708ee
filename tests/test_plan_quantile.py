"""PolicyOptions.plan_quantile: the estimator's log-spread of the bandwidth and the policy planning on its
quantile (docs/DYNAMIC.md, "Link prediction"); off by default, so plans are as before."""

from __future__ import annotations

import math

import pytest
from fakes import fake_manifest

from device_runner.estimator import Estimates, Estimator
from device_runner.policy import CutPolicy
from sdk.config import ConfigError, parse_config
from sdk.policy_options import PolicyOptions


def profile(**policy: object) -> dict:
    return {
        "board": {"name": "host", "cpu": "x", "threads": 1, "memory_budget_mb": 64, "speed_factor": 1.0,
                  "speed_factor_source": "test"},
        "device": {"device_id": "cam-01", "fps_cap": 10, "deadline_ms": 100, "target_accuracy": 0.9,
                   "bits": [8, 4, 2], "codec": "none", "accuracy_drop_budget": 0.01, "telemetry_interval_s": 1.0,
                   "privacy": True},
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        **({"policy": policy} if policy else {}),
    }  # fmt: skip


def snap(bw: float, sd: float) -> Estimates:
    m = fake_manifest()
    return Estimates(bw, 0.0, {c.index: c.head_ms for c in m.cuts}, {c.index: c.tail_ms for c in m.cuts},
                     {1: 1.0, 2: 2.0, 3: 3.0}, True, bw, bandwidth_log_sd=sd)


def test_estimator_spread_is_an_ewma_of_squared_log_deviations():
    est = Estimator(head_prior={}, tail_prior={}, prior_link_ms=0.0, alpha=0.5, log_var_alpha=0.5)
    est.observe_network(1, 100_000, 1000.0)  # 100 kB/s: the first sample sets the estimate, no spread
    assert est.snapshot().bandwidth_log_sd == 0.0
    est.observe_network(1, 100_000, 1000.0 / math.e)  # e x faster (< 4x: alpha): deviation 1 -> var 0.5
    assert est.snapshot().bandwidth_log_sd == pytest.approx(math.sqrt(0.5))
    assert est.bandwidth == pytest.approx(100_000 * math.exp(0.5))


def test_policy_plans_at_the_quantile_only_when_asked():
    m = fake_manifest()
    dev = parse_config(profile()).device
    est = snap(300_000.0, 0.5)
    assert CutPolicy(m, dev).planning_bandwidth(est) == 300_000.0  # default: the estimate, as before
    assert CutPolicy(m, dev).plan(est).bandwidth_bytes_per_s == 300_000.0
    p95 = CutPolicy(m, dev, PolicyOptions(plan_quantile=0.95))
    expected = 300_000.0 * math.exp(-1.6448536269514722 * 0.5)
    assert p95.planning_bandwidth(est) == pytest.approx(expected)
    assert p95.plan(est).bandwidth_bytes_per_s == pytest.approx(expected)
    assert p95.planning_bandwidth(snap(300_000.0, 0.0)) == 300_000.0  # no spread measured: the estimate


def test_plan_quantile_from_the_profile_and_checked():
    assert parse_config(profile(plan_quantile=0.95)).policy.plan_quantile == 0.95
    assert parse_config(profile()).policy.plan_quantile is None
    with pytest.raises(ConfigError, match="plan_quantile"):
        parse_config(profile(plan_quantile=1.5))
