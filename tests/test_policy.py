"""The policy's per-frame cost (cached snapshots and plans) and its probe rules (plausible link, back-off).

Numbers are from tests/fakes.py's manifest, by hand, with ``tau_override=2.0`` (every split frame
escalates, q = 1) and ``margin=0.15``:

    cut 1 @4 b: head 1 + 1024 B / B + tail 2      cut 2 @4 b: head 3 + 64 B / B + tail 1
    device cut: 20 ms                             raw: 3072 B / B + tail 5 (excluded: privacy)

At B = 20 kB/s cut 2 costs 3 + 3.2 + 1 = 7.2 ms and is chosen; the bar a probe target must beat is
7.2 x 0.85 = 6.12 ms; cut 1's cost without the transfer is 3 ms, so it wins only above
B* = 1024 B / 3.12 ms = 328.2 kB/s; the device cut (20 ms) never does.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from fakes import fake_manifest

from device_runner.estimator import Estimates, Estimator
from device_runner.policy import Choice, CutPolicy
from sdk.config import DeviceSettings, parse_config

B_STAR = 1024 / 3.12 * 1000  # bytes/s, see the module doc


def device(**over: object) -> DeviceSettings:
    target = {} if "target_escalation_rate" in over else {"target_accuracy": 0.9}
    data = {
        "board": {"name": "host", "cpu": "x", "threads": 1, "memory_budget_mb": 64, "speed_factor": 1.0,
                  "speed_factor_source": "test"},
        "device": {"device_id": "cam-01", "fps_cap": 10, "deadline_ms": 100, **target,
                   "bits": [8, 4, 2], "codec": "none", "accuracy_drop_budget": 0.01, "telemetry_interval_s": 1.0,
                   "privacy": True, **over},
        "broker": {"url": "mqtt://127.0.0.1:1883"},
    }  # fmt: skip
    return parse_config(data).device


def priors() -> tuple[dict[int, float], dict[int, float]]:
    m = fake_manifest()
    return {c.index: c.head_ms for c in m.cuts}, {c.index: c.tail_ms for c in m.cuts}


def snapshot(bandwidth: float, peak: float | None, sampled: tuple[int, ...] = (1, 2, 3),
             measured_peak: float | None = -1.0) -> Estimates:
    """``peak`` measured too, unless ``measured_peak`` says otherwise (None: nothing measured)."""
    head, tail = priors()
    measured = peak if measured_peak == -1.0 else measured_peak
    return Estimates(bandwidth, 0.0, head, tail, {c: float(i + 1) for i, c in enumerate(sampled)}, True, peak,
                     measured_peak_bytes_per_s=measured)


def sampled_at(i: int, bandwidth: float, peak: float, measured_peak: float | None = -1.0) -> Estimates:
    """A snapshot after decision ``i``: every cut's last sample is newer than at the previous decision."""
    head, tail = priors()
    measured = peak if measured_peak == -1.0 else measured_peak
    return Estimates(bandwidth, 0.0, head, tail, {1: float(i), 2: float(i), 3: float(i)}, True, peak,
                     measured_peak_bytes_per_s=measured)


def policy(**kw: object) -> CutPolicy:
    return CutPolicy(fake_manifest(), device(), tau_override=2.0, **kw)  # type: ignore[arg-type]


def estimator() -> Estimator:
    head, tail = priors()
    return Estimator(head_prior=head, tail_prior=tail, prior_bandwidth=1e6)


# ------------------------------------------------------------------------------------ cached snapshots
def test_snapshot_is_reused_until_an_estimate_moves_materially() -> None:
    e = estimator()
    first = e.snapshot()
    assert e.snapshot() is first
    e.observe_head(2, 3.0)  # first measurement of cut 2: news
    second = e.snapshot()
    assert second is not first and second.version > first.version and second.head_ms[2] == 3.0
    for _ in range(20):
        e.observe_head(2, 3.03)  # 1 % off, same cut: no news
    assert e.snapshot() is second
    e.observe_head(2, 3.6)  # the EWMA moves 0.23 ms (> 3 % of 3.0)
    third = e.snapshot()
    assert third is not second and third.head_ms[2] == pytest.approx(e.head_ms(2))


def test_small_moves_add_up_until_they_cross_the_tolerance() -> None:
    e = Estimator(head_prior={2: 10.0}, tail_prior={}, alpha=1.0, rel_tol=0.03, abs_tol_ms=0.0)
    e.observe_head(2, 10.0)
    published = e.snapshot()
    e.observe_head(2, 10.2)
    e.observe_head(2, 10.25)
    assert e.snapshot() is published  # 2.5 % from the published 10.0
    e.observe_head(2, 10.35)  # 3.5 %: publish
    assert e.snapshot().head_ms[2] == 10.35


def test_network_timeout_and_another_cut_are_news() -> None:
    head, tail = priors()
    e = Estimator(head_prior=head, tail_prior=tail, prior_bandwidth=10e3)
    e.observe_head(2, 3.0)
    s = e.snapshot()
    e.observe_network(1, 10_000, 100.0)  # first bandwidth sample
    s1 = e.snapshot()
    assert s1 is not s and s1.measured and s1.peak_bandwidth_bytes_per_s == pytest.approx(100e3)
    assert s1.measured_peak_bytes_per_s == pytest.approx(100e3)
    e.observe_network(1, 10_000, 100.5)  # 0.5 % slower: no news
    assert e.snapshot() is s1
    e.observe_network(1, 10_000, 200.0)  # the link halves: news, and the peak stays
    s2 = e.snapshot()
    assert s2.bandwidth_bytes_per_s < 0.9 * s1.bandwidth_bytes_per_s and s2.peak_bandwidth_bytes_per_s == pytest.approx(100e3)
    e.observe_head(3, 20.0)  # a sample of another cut: the staleness order changed
    s3 = e.snapshot()
    assert s3 is not s2 and s3.last_sample[3] > s3.last_sample[1]
    e.observe_timeout(1, 10_000, 5_000.0)  # a deadline miss is always news
    assert e.snapshot() is not s3


def test_peak_is_never_below_the_prior() -> None:
    e = estimator()  # prior 1 MB/s
    assert e.snapshot().peak_bandwidth_bytes_per_s == 1e6 and e.snapshot().measured_peak_bytes_per_s is None
    e.observe_network(1, 10_000, 100.0)  # 100 kB/s measured: the prior still bounds what is plausible
    assert e.snapshot().peak_bandwidth_bytes_per_s == 1e6
    e.observe_network(1, 10_000, 2.0)  # 5 MB/s
    assert e.snapshot().peak_bandwidth_bytes_per_s > 1e6


# ------------------------------------------------------------------------------------ cached plans
def test_the_plan_is_not_resolved_on_an_unchanged_snapshot_and_is_after_a_report() -> None:
    e, p = estimator(), policy(probe_every=0)
    e.observe_network(1, 10_000, 10.0)  # 1 MB/s: cut 1 @4 b costs 1 + 1.024 + 2 = 4.02 ms, cut 2 @4 b 4.06
    for c in (2, 3, 1):  # first head measurements (news), at the priors' values; cut 1 (in use) last
        e.observe_head(c, fake_manifest().cut(c).head_ms)
    first = p.decide(e.snapshot())
    assert first.choice == Choice(1, 4) and p.plans == 1
    for _ in range(100):
        d = p.decide(e.snapshot())
        e.observe_head(d.choice.cut, fake_manifest().cut(d.choice.cut).head_ms)  # steady: same value
    assert p.plans == 1 and d.choice == first.choice
    # A report: the uplink dropped to 20 kB/s (net 51.2 ms for 1024 B). Re-planned, and after
    # `patience` decisions on that plan the cut moves later.
    for _ in range(10):
        e.observe_network(1, 1024, 51.2)
    assert p.decide(e.snapshot()).plan.bandwidth_bytes_per_s < 100e3
    assert p.plans == 2
    seq = [p.decide(e.snapshot()).choice for _ in range(3)]
    assert seq[-1] == Choice(2, 4) and p.plans == 2


def test_patience_counts_decisions_on_one_cached_plan() -> None:
    p = policy(probe_every=0, patience=3, initial=Choice(1, 4))
    slow = snapshot(20e3, None)  # the same object every frame: one plan
    seq = [p.decide(slow).choice for _ in range(4)]
    assert seq == [Choice(1, 4), Choice(1, 4), Choice(2, 4), Choice(2, 4)]
    assert p.plans == 1 and p.switches == 1


# ------------------------------------------------------------------------------------ probe rules
def test_a_probe_target_needing_an_implausible_bandwidth_is_skipped() -> None:
    p = policy(probe_every=2)
    est = snapshot(20e3, peak=0.9 * B_STAR / 4)  # cut 1 would need more than 4x the fastest link seen
    decisions = [p.decide(est) for _ in range(20)]
    assert {d.choice for d in decisions} == {Choice(2, 4)} and p.probes == 0


def test_a_probe_target_on_a_plausible_link_is_still_probed() -> None:
    p = policy(probe_every=2)
    est = snapshot(20e3, peak=1.1 * B_STAR / 4)  # within 4x the fastest link seen
    probes = [d.choice for d in (p.decide(est) for _ in range(20)) if d.probe]
    assert probes and {c.cut for c in probes} == {1}  # never the device cut: it cannot win at any rate


def test_a_bandwidth_ceiling_caps_the_plausible_link() -> None:
    est = snapshot(20e3, peak=1.1 * B_STAR / 4)
    low = policy(probe_every=2, bandwidth_ceiling=0.9 * B_STAR)
    assert not any(low.decide(est).probe for _ in range(20))
    high = policy(probe_every=2, bandwidth_ceiling=1.1 * B_STAR)
    assert any(high.decide(est).probe for _ in range(20))


def test_without_a_known_link_a_never_sampled_cut_is_probed_once_as_before() -> None:
    p = policy(probe_every=2)
    est = snapshot(20e3, peak=None, sampled=(2,))
    probed = {d.choice.cut for d in (p.decide(est) for _ in range(6)) if d.probe}
    assert probed == {1, 3}  # unsampled: cut 1 and even the device cut


def test_known_link_never_sampled_cut_that_cannot_win_is_not_probed() -> None:
    p = policy(probe_every=2)
    est = snapshot(20e3, peak=1.1 * B_STAR / 4, sampled=(2,))
    probed = {d.choice.cut for d in (p.decide(est) for _ in range(20)) if d.probe}
    assert probed == {1}


def test_probes_that_keep_losing_come_less_often() -> None:
    p = policy(probe_every=1, max_backoff=4)
    plausible = 1.1 * B_STAR / 4
    # A fresh snapshot per frame (as if samples kept coming), in which cut 1 never wins.
    probed = [i for i in range(1, 17) if p.decide(sampled_at(i, 20e3, plausible)).probe]
    assert probed == [1, 3, 7, 11, 15]  # every decision, then every 2nd, then every 4th (the cap)


def test_exploration_probes_back_off_further() -> None:
    # Plausible only thanks to the prior: nothing this fast was measured (4x 20 kB/s < B*).
    p = policy(probe_every=1, max_backoff=4, explore_backoff=16)
    plausible = 1.1 * B_STAR / 4
    probed = [i for i in range(1, 40) if p.decide(sampled_at(i, 20e3, plausible, measured_peak=20e3)).probe]
    assert probed == [1, 3, 7, 15, 31]  # the interval doubles up to 16


def test_a_probe_whose_cut_a_plan_preferred_did_not_lose() -> None:
    plausible = 1.1 * B_STAR / 4
    preferred, control = policy(probe_every=1, max_backoff=4), policy(probe_every=1, max_backoff=4)
    for p in (preferred, control):
        for i in range(1, 11):  # probes at decisions 1, 3, 7: backed off to every 4th decision
            p.decide(sampled_at(i, 20e3, plausible))
    for i in (11, 12):  # a fast link, cut 1 is the plan's best (not by the margin: no switch)
        assert preferred.decide(sampled_at(i, 1e6, plausible)).plan.best.index == 1
        control.decide(sampled_at(i, 20e3, plausible))
    assert preferred.decide(sampled_at(13, 20e3, plausible)).probe  # back to every decision
    assert not control.decide(sampled_at(13, 20e3, plausible)).probe  # still every 4th (it probed at 11)


def test_a_probe_is_not_judged_before_its_sample_comes_in() -> None:
    p = policy(probe_every=1, max_backoff=4)
    plausible = 1.1 * B_STAR / 4
    # New snapshot objects (re-planned every decision) but no newer sample of cut 1: no back-off.
    probed = [p.decide(snapshot(20e3 * (1 + i / 1000), plausible)).probe for i in range(8)]
    assert all(probed)


def test_policy_rejects_bad_probe_settings() -> None:
    with pytest.raises(ValueError, match="plausible_factor"):
        policy(plausible_factor=0.0)
    with pytest.raises(ValueError, match="max_backoff"):
        policy(max_backoff=0)
    with pytest.raises(ValueError, match="explore_backoff"):
        policy(max_backoff=8, explore_backoff=4)


def test_a_much_faster_bandwidth_sample_moves_the_estimate_further() -> None:
    plain = Estimator(head_prior={}, tail_prior={}, alpha=0.4, jump_factor=1e9)  # never jumps
    jumpy = Estimator(head_prior={}, tail_prior={}, alpha=0.4, jump_factor=4.0, jump_alpha=0.8)
    for e in (plain, jumpy):
        e.observe_network(1, 1024, 1024 / 20e3 * 1000)  # 20 kB/s
        e.observe_network(1, 1024, 1024 / 10e6 * 1000)  # the link recovered: 10 MB/s
    assert plain.bandwidth == pytest.approx(20e3 ** 0.6 * 10e6 ** 0.4, rel=1e-6)  # geometric EWMA, alpha 0.4
    assert jumpy.bandwidth == pytest.approx(20e3 ** 0.2 * 10e6 ** 0.8, rel=1e-6)  # alpha 0.8
    for e in (plain, jumpy):
        e.observe_network(1, 1024, 1024 / 10e3 * 1000)  # much slower (a queue?): plain alpha both
    assert jumpy.bandwidth == pytest.approx((20e3 ** 0.2 * 10e6 ** 0.8) ** 0.6 * 10e3 ** 0.4, rel=1e-6)


def test_one_stalled_head_sample_does_not_lock_a_cut_out_of_the_probes() -> None:
    # A fast link: the split cut beats the device cut by far at its normal head time. One sample of
    # its head 100x too slow (a host stall x the speed factor) while the device cut is in use must
    # not make "no bandwidth could make it win" stick: the fastest measured head time is what counts.
    m = fake_manifest()
    split = next(c for c in m.cuts if c.kind.value == "split")
    dev = m.device_cut
    assert dev is not None
    settings = device(target_accuracy=0.5, bits=[8], accuracy_drop_budget=1.0)
    e = Estimator(head_prior={c.index: c.head_ms for c in m.cuts}, tail_prior={c.index: c.tail_ms for c in m.cuts},
                  prior_bandwidth=10e6)
    p = CutPolicy(m, settings, probe_every=2, allowed_cuts=(split.index, dev.index), tau_override=2.0,
                  initial=Choice(dev.index, 0))
    e.observe_head(split.index, split.head_ms)
    e.observe_head(split.index, 100 * split.head_ms)
    probes = 0
    for _ in range(200):
        d = p.decide(e.snapshot())
        probes += d.probe
        chosen = d.choice.cut
        e.observe_head(chosen, split.head_ms if chosen == split.index else dev.head_ms)
    assert probes >= 1
    assert p.current is not None and p.current.cut == split.index, (p.current, e.snapshot().head_ms)


# ------------------------------------------------------------------------------- outage risk, staleness
def test_a_stale_bandwidth_estimate_follows_a_new_sample_faster() -> None:
    fresh = Estimator(head_prior={}, tail_prior={}, alpha=0.4, jump_factor=1e9, stale_after=20)
    stale = Estimator(head_prior={}, tail_prior={}, alpha=0.4, jump_factor=1e9, jump_alpha=0.8, stale_after=20)
    for e in (fresh, stale):
        e.observe_network(1, 1024, 1024 / 20e3 * 1000)  # 20 kB/s
    for _ in range(21):  # a long stretch on the device cut: head samples only
        stale.observe_head(3, 20.0)
    for e in (fresh, stale):
        e.observe_network(1, 1024, 1024 / 60e3 * 1000)  # 60 kB/s: within jump_factor
    assert fresh.bandwidth == pytest.approx(20e3 ** 0.6 * 60e3 ** 0.4, rel=1e-6)
    assert stale.bandwidth == pytest.approx(20e3 ** 0.2 * 60e3 ** 0.8, rel=1e-6)


def test_miss_rate_rises_on_deadline_misses_falls_on_answers_and_decays() -> None:
    e = Estimator(head_prior={}, tail_prior={}, miss_alpha=0.5, miss_half_life=10)
    assert e.snapshot().miss_rate == 0.0
    e.observe_timeout(1, 1024, 100.0)
    assert e.snapshot().miss_rate == pytest.approx(0.5)
    e.observe_network(1, 1024, 150.0)  # that frame's late answer: not a success
    assert e.miss_rate == pytest.approx(0.5 * 0.5 ** (1 / 10))
    e.observe_network(1, 1024, 10.0)  # an answer in time
    assert e.miss_rate == pytest.approx(0.5 * 0.5 ** (2 / 10) * 0.5)
    before = e.snapshot()
    for _ in range(10):  # ten frames without sending: halved
        e.observe_head(3, 20.0)
    assert e.snapshot() is not before
    assert e.snapshot().miss_rate == pytest.approx(before.miss_rate * 0.5)


def test_deadline_misses_keep_the_device_cut_and_stop_the_probes() -> None:
    # At 200 kB/s cut 2 (7.2 -> 3 + 0.32 + 1 = 4.32 ms) beats the 20 ms device cut; deadline 100 ms.
    head, tail = priors()

    def snap(miss: float) -> Estimates:
        return Estimates(200e3, 0.0, head, tail, {1: 1.0, 2: 2.0, 3: 3.0}, True, 200e3,
                         measured_peak_bytes_per_s=200e3, miss_rate=miss)

    def at_deadline(**kw: object) -> CutPolicy:  # no overdue wait: a miss costs the whole deadline
        return CutPolicy(fake_manifest(), device(overdue_factor=0), tau_override=2.0, **kw)  # type: ignore[arg-type]

    assert at_deadline().decide(snap(0.0)).choice.cut == 2
    # 10 % of escalations miss: + 0.1 x (100 - 1.32) ms makes cut 2 cost ~14.2 ms, still below 20.
    assert at_deadline().decide(snap(0.1)).choice.cut == 2
    risky = at_deadline(probe_every=1, shadow_probes=False)
    d = risky.decide(snap(0.3))  # + 0.3 x 98.7 = 29.6 ms: the device cut wins
    assert d.choice.cut == 3 and d.plan.option(2, 4).total_ms == pytest.approx(4.32 + 0.3 * (100 - 1.32))
    assert not any(risky.decide(snap(0.3)).probe for _ in range(5))  # real probes: no bandwidth pays for the misses
    shadow = at_deadline(probe_every=1)  # shadow probes cost head time only: they go on, served by the device cut
    shadow.decide(snap(0.3))
    probes = [d for d in (shadow.decide(snap(0.3)) for _ in range(5)) if d.probe]
    assert probes and all(d.answer_with == Choice(3, 0) and d.choice.cut != 3 for d in probes)
    assert at_deadline(risk=False).decide(snap(0.3)).choice.cut == 2
    # With the overdue wait (2 x 1.32 + 30 = 32.64 ms) a miss costs that wait, not the deadline:
    d = policy().decide(snap(0.3))  # + 0.3 x (32.64 - 1.32) = 9.4 ms, not the 29.6 of the deadline
    assert d.choice.cut == 2 and d.plan.option(2, 4).total_ms == pytest.approx(4.32 + 0.3 * (2 * 1.32 + 30 - 1.32))
    assert policy().decide(snap(0.8)).choice.cut == 3  # + 25 ms: the device cut wins


def test_the_probe_back_off_is_bounded_in_seconds_at_fps_cap() -> None:
    plausible = 1.1 * B_STAR / 4
    # fps_cap 10: at most 2 s between probes = 20 decisions = 2 x probe_every (10) instead of 4x.
    p = policy(probe_every=10, max_backoff=4, max_probe_interval_s=2.0)
    probed = [i for i in range(1, 80) if p.decide(sampled_at(i, 20e3, plausible)).probe]
    assert probed == [10, 30, 50, 70]
    unbounded = policy(probe_every=10, max_backoff=4, max_probe_interval_s=None)
    probed = [i for i in range(1, 80) if unbounded.decide(sampled_at(i, 20e3, plausible)).probe]
    assert probed == [10, 30, 70]


def test_a_miss_the_bandwidth_estimate_explains_is_not_outage_risk() -> None:
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6)
    e.observe_network(1, 10_000, 10_000 / 20e3 * 1000)  # the link is at 20 kB/s and the estimate knows it
    e.observe_timeout(1, 10_000, 600.0)  # 500 ms expected: a slow link, not an outage
    assert e.miss_rate == 0.0 and e.bandwidth == pytest.approx(10_000 / 600.0 * 1000)
    e.observe_timeout(1, 100, 600.0)  # 100 B should take 6 ms at the new estimate: an outage
    assert e.miss_rate > 0.0


def test_the_device_cut_is_kept_unless_an_escalation_is_clearly_faster() -> None:
    # Fake manifest: device cut 20 ms; split cut 2 at 4 bits = 3 + 1 ms + 64 B / bandwidth.
    near = policy(probe_every=0).decide(snapshot(64 / 0.015, 1e6))  # cut 2: 19 ms, inside the 15 % margin
    assert near.plan.best.index == 2 and near.choice.cut == 3
    far = policy(probe_every=0).decide(snapshot(64 / 0.001, 1e6))  # cut 2: 5 ms
    assert far.choice.cut == 2



def test_two_misses_in_a_row_skip_the_patience_of_a_beaten_choice_one_does_not() -> None:
    from dataclasses import replace

    fast, slow = snapshot(1e9, 1e9), snapshot(2e3, 1e9)  # a split wins on the fast link, the device on the slow

    def after(streak: int) -> Choice:
        p = policy(probe_every=0)
        first = p.decide(fast).choice
        assert p.manifest.cut(first.cut).kind.value != "device"
        assert p.decide(slow).choice == first  # patience (3 decisions): one plan saying so is not enough
        return p.decide(replace(slow, miss_streak=streak)).choice

    assert after(1).cut != 3  # one miss (jitter through a loaded broker, say): patience still applies
    assert after(2).cut == 3  # two sent frames in a row missed: leave now


def test_cold_start_serves_on_the_device_and_shadow_probes_the_priors_choice() -> None:
    head, tail = priors()
    cold = Estimates(1e9, 0.0, head, tail, {}, False, 1e9)  # nothing measured yet; the prior says: a split
    p = policy(probe_every=0)
    d = p.decide(cold)
    assert d.probe and d.answer_with is not None and p.manifest.cut(d.answer_with.cut).kind.value == "device"
    assert (d.choice.cut, d.choice.bits) == (d.plan.best.index, d.plan.best.bits) and d.choice.cut != 3
    assert p.current == d.answer_with and not p.decide(cold).probe  # once; then the usual rules
    assert policy(probe_every=0, shadow_probes=False).decide(cold).choice.cut != 3  # off: the prior's choice


def test_unmeasured_priors_scale_with_the_measured_cuts() -> None:
    e = Estimator(head_prior={1: 1.0, 2: 2.0, 3: 4.0}, tail_prior={}, prior_bandwidth=1e6)
    e.observe_head(3, 8.0)  # the device cut runs 2x slower than its prior
    assert (e.head_ms(1), e.head_ms(2), e.head_ms(3)) == (2.0, 4.0, 8.0)
    e.observe_head(1, 1.0)  # cut 1 as its prior: the geometric mean of 2x and 1x scales cut 2
    assert e.head_ms(2) == pytest.approx(2.0 * 2**0.5) and e.snapshot().head_ms[2] == pytest.approx(2.0 * 2**0.5)


def test_the_overdue_wait_is_planned_on_the_sampled_bandwidth_not_a_cap() -> None:
    e = estimator()
    e.observe_network(2, 10_000, 10_000 / 500e3 * 1000)  # 500 kB/s measured
    e.observe_timeout(2, 1_000, 200.0)  # a miss caps the estimate at ~5 kB/s
    est = e.snapshot()
    assert est.bandwidth_bytes_per_s < 10e3 and est.sampled_bandwidth_bytes_per_s == pytest.approx(500e3)
    wait = policy().answer_within_ms(est, 2, 1_000)
    assert wait == pytest.approx(2 * (1_000 / 500e3 * 1000 + est.tail_ms[2]) + 30)  # not 2 x 200 ms


def test_link_latency_is_the_floor_of_the_recent_latency_samples() -> None:
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6, link_window=4)
    for net in (2.1, 2.3, 2.2):  # 100 B at 1 MB/s: 0.1 ms of transfer
        e.observe_network(1, 100, net)
    assert e.link_ms == pytest.approx(2.0)
    for net in (9.1, 14.1):  # the link slowed: small payloads wait longer, the latency floor does not move
        e.observe_network(1, 100, net)
    assert e.link_ms == pytest.approx(2.1)  # (2.0 left the 4-sample window; 2.1, 2.2 ms... remain)
    for net in (30.1, 30.1, 30.1, 30.1):  # a longer route: once the window holds only it, the floor follows
        e.observe_network(1, 100, net)
    assert e.link_ms == pytest.approx(30.0)
    with pytest.raises(ValueError, match="link_window"):
        Estimator(head_prior={}, tail_prior={}, link_window=0)


def test_an_unknown_latency_takes_the_first_answer_as_round_trip_not_a_slow_link() -> None:
    # 689 B answered in 53.3 ms over a 50 ms round trip (measured live, issue 14): before, with the latency
    # taken as 0, it was a 13 kB/s link (0.1 Mbit/s on a 5 Mbit/s one) and no split was ever worth sending.
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6, prior_link_ms=None)
    e.observe_network(1, 689, 53.3)
    assert e.link_ms == pytest.approx(53.3 - 0.689) and e.bandwidth is None  # still the prior
    e.observe_network(1, 7_000, e.link_ms + 7.0)  # then a bigger payload measures the bandwidth: 1 MB/s
    assert e.bandwidth == pytest.approx(1e6, rel=0.01)
    known = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6)  # prior_link_ms=0: a known, 0 ms link
    known.observe_network(1, 10_000, 25.0)
    assert known.link_ms == 0.0 and known.bandwidth == pytest.approx(400e3)


def test_two_payload_sizes_teach_the_latency_when_no_payload_is_small() -> None:
    # Probes of 700 B and 7 kB over a 50 ms round trip at 1 MB/s; no payload under small_bytes (512 B).
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6)  # the latency believed 0 ms
    for _ in range(3):
        e.observe_network(1, 700, 50.7)
        e.observe_network(2, 7_000, 57.0)
    assert e.link_ms == pytest.approx(50.0, abs=0.05) and e.fitted_link_samples > 0
    assert e.bandwidth == pytest.approx(1e6, rel=0.15)  # it was ~0.12 MB/s: the round trip taken for transfer
    near = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6)  # sizes under fit_ratio apart: no line
    for _ in range(3):
        near.observe_network(1, 2_000, 52.0)
        near.observe_network(2, 4_000, 54.0)
    assert near.fitted_link_samples == 0 and near.link_ms == 0.0
    with pytest.raises(ValueError, match="fit_window"):
        Estimator(head_prior={}, tail_prior={}, fit_window=1)


def test_a_transfer_within_the_noise_only_raises_the_bandwidth() -> None:
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6, prior_link_ms=None)
    e.observe_network(1, 300, 50.3)  # latency 50 ms
    e.observe_network(2, 20_000, 70.0)  # 1 MB/s
    # 700 B in 1.5 ms more than the round trip (the broker and the host add ~1 ms): read as 0.47 MB/s, it
    # would halve the estimate; below noise_factor x the noise it is a lower bound, which 1 MB/s is above.
    e.observe_network(1, 700, 51.5)
    assert e.bandwidth == pytest.approx(1e6, rel=0.01) and e.noisy_samples == 1
    e.observe_network(2, 20_000, 50.0 + 5.0)  # 4 MB/s: a faster sample still raises it
    assert e.bandwidth > 1.5e6
    e.observe_network(1, 700, 50.0 + 70.0)  # 10 kB/s, far above the noise: a real drop, followed
    assert e.bandwidth < 0.5e6


def test_the_overdue_slack_follows_the_jitter_of_each_cuts_answers() -> None:
    e, p = estimator(), policy()
    net = 10_000 / 500e3 * 1000  # 20 ms for 10 kB at 500 kB/s

    def wait(cut: int) -> float:
        est = e.snapshot()
        expected = est.link_ms + 10_000 / est.sampled_bandwidth_bytes_per_s * 1000 + est.tail_ms[cut]  # type: ignore[operator]
        return p.answer_within_ms(est, cut, 10_000) - 2 * expected  # the slack

    for _ in range(30):  # a steady link: the deviation decays towards 0, the slack to its floor
        e.observe_network(2, 10_000, net)
    assert e.snapshot().jitter_ms[2] < 0.5
    assert wait(2) == pytest.approx(10.0)  # at least 10 ms
    assert 1 not in e.snapshot().jitter_ms and wait(1) == pytest.approx(30.0)  # per cut: overdue_slack_ms until seen
    for i in range(30):  # answers 5 ms early or late: 4 x ~5 ms of deviation
        e.observe_network(1, 10_000, net + (5.0 if i % 2 else -5.0))
    assert 12.0 < wait(1) < 30.0 and wait(1) != pytest.approx(10.0)
    for i in range(30):  # a bursty link: the slack is capped at overdue_slack_ms
        e.observe_network(1, 10_000, net * (3.0 if i % 2 else 0.5))
    assert wait(1) == pytest.approx(30.0)
    before = e.snapshot().jitter_ms[2]
    e.observe_timeout(2, 10_000, 100.0)
    e.observe_network(2, 10_000, 400.0)  # the late answer of the missed frame: not a jitter sample
    assert e.snapshot().jitter_ms[2] == before


def test_on_the_device_cut_shadow_probes_come_five_times_as_often() -> None:
    def turns(**kw: object) -> list[int]:
        p = policy(probe_every=25, initial=Choice(3, 0), **kw)  # the device cut of the fake manifest
        slow = snapshot(2e3, 1e6)  # no split can win at 2 kB/s, but the fast link seen before keeps them plausible
        return [i for i in range(100) if p.decide(slow).probe]

    shadow = turns()
    assert len(shadow) >= 10 and shadow[1] - shadow[0] <= 10  # every 5 decisions (x the back-off, at most 1 here)
    real = turns(shadow_probes=False)  # real probes cost the frame its wait: the usual period
    assert 2 <= len(real) <= 4 and real[1] - real[0] >= 25


def test_after_a_switch_the_next_probe_comes_soon() -> None:
    from dataclasses import replace

    head, tail = priors()
    p = policy(probe_every=25)
    fast = Estimates(1e9, 0.0, head, tail, {1: 1.0, 2: 2.0, 3: 3.0}, True, 1e9, measured_peak_bytes_per_s=1e9,
                     head_min_ms=dict(head))  # every head measured, the device cut's too
    for _ in range(30):
        assert p.manifest.cut(p.decide(fast).choice.cut).kind.value != "device" or p.decide(fast).probe
    slow = replace(fast, bandwidth_bytes_per_s=2e3, miss_streak=2)  # two misses: switch to the device cut now
    d = p.decide(slow)
    assert d.switched and d.choice.cut == 3
    turns = [i for i in range(1, 26) if p.decide(replace(slow, version=i)).probe]
    assert turns and turns[0] <= 25 // 5  # not probe_every (25) decisions later


def test_under_an_escalation_cap_the_exit_budget_point_is_used_when_it_escalates_fewer() -> None:
    from dataclasses import replace as dc_replace

    from sdk.manifest import ExitBudget

    m = fake_manifest()
    cut = m.cut(1)

    def with_budget(point: ExitBudget) -> object:
        cuts = tuple(dc_replace(c, exit_budget=(point,)) if c.index == 1 else c for c in m.cuts)
        return dc_replace(m, cuts=cuts)

    dev = device(target_escalation_rate=0.5, accuracy_drop_budget=0.02)
    cap_tau = CutPolicy(m, dev).tau(1, 8)  # no exit_budget: the cap's tau on the curve (escalate <= 50 %)
    assert cap_tau == 0.5
    good = ExitBudget(bits=8, budget=0.01, tau=0.2, escalation_rate=0.1, accuracy=0.89, met=True)
    assert CutPolicy(with_budget(good), dev).tau(1, 8) == 0.2  # 10 % escalated, within 1 pp
    assert CutPolicy(with_budget(good), dev).tau(1, 4) == cap_tau  # no point at 4 bits
    over_cap = dc_replace(good, tau=0.95, escalation_rate=0.7)  # needs more escalations than the cap allows
    assert CutPolicy(with_budget(over_cap), dev).tau(1, 8) == cap_tau
    looser = dc_replace(good, budget=0.05)  # its accuracy budget is looser than the profile's 2 pp
    assert CutPolicy(with_budget(looser), dev).tau(1, 8) == cap_tau
    unmet = dc_replace(good, met=False)
    assert CutPolicy(with_budget(unmet), dev).tau(1, 8) == cap_tau
    # A target accuracy is the user's own choice: the budget point does not replace it.
    by_accuracy = device(target_accuracy=0.9)
    assert CutPolicy(with_budget(good), by_accuracy).tau(1, 8) == CutPolicy(m, by_accuracy).tau(1, 8)
    # ... unless no tau reaches it: then every frame would escalate, and the budget point is used instead.
    out_of_reach = device(target_accuracy=0.999)
    assert CutPolicy(m, out_of_reach).tau(1, 8) == math.inf
    assert CutPolicy(with_budget(good), out_of_reach).tau(1, 8) == 0.2
    assert CutPolicy(with_budget(looser), out_of_reach).tau(1, 8) == math.inf
    assert cut.exit_budget == ()


def test_the_policy_takes_one_options_object_and_overrides_of_its_fields() -> None:
    from sdk.policy_options import POLICY_KEYS, PolicyOptions

    opts = PolicyOptions(margin=0.3, probe_every=7, allowed_cuts=[1, 3])  # type: ignore[arg-type]
    assert opts.allowed_cuts == (1, 3)
    p = CutPolicy(fake_manifest(), device(), opts, probe_every=0)  # a flag changes one knob, keeps the rest
    assert p.options == PolicyOptions(margin=0.3, probe_every=0, allowed_cuts=(1, 3))
    assert p.margin == 0.3 and p.probe_every == 0 and p.cut_indices == (1, 3)
    assert CutPolicy(fake_manifest(), device()).options == PolicyOptions()
    with pytest.raises(TypeError, match=r"unknown policy option\(s\) \['probe'\]; the options are margin, patience"):
        CutPolicy(fake_manifest(), device(), probe=3)
    with pytest.raises(ValueError, match="patience >= 1"):
        CutPolicy(fake_manifest(), device(), patience=0)
    assert POLICY_KEYS[:3] == ("margin", "patience", "probe_every")
    import sdk.policy_options

    assert sorted(sdk.policy_options.__all__) == ["POLICY_KEYS", "PolicyOptions"]


def test_a_lone_miss_of_a_payload_within_the_noise_caps_nothing_a_second_does() -> None:
    e = Estimator(head_prior={}, tail_prior={}, prior_bandwidth=1e6, prior_link_ms=None)
    e.observe_network(1, 300, 2.3)  # latency 2 ms
    e.observe_network(2, 20_000, 102.0)  # 200 kB/s
    # 250 B (1.25 ms at 200 kB/s, under 2 x the 1 ms noise floor) unanswered after 25 ms: a stall of the
    # broker or the host. Before, it capped the estimate at 250 B / 23 ms = 11 kB/s.
    e.observe_timeout(1, 250, 25.0)
    assert e.bandwidth == pytest.approx(200e3, rel=0.01) and e.noise_misses == 1
    assert e.snapshot().miss_streak == 1 and e.miss_rate > 0  # still outage risk
    e.observe_timeout(1, 250, 25.0)  # a second in a row: the link may be stalled; capped as before
    assert e.bandwidth < 20e3 and e.noise_misses == 1


# ------------------------------------------------------------------------------------ provisional latency
def _after_a_slow_first_answer() -> tuple[CutPolicy, Estimator]:
    """Every head timed (as the runner does on start), then the cold-start probe's answer at cut 1 (1024 B)
    comes back after 30 ms: with the latency unknown it is all latency, and at 29 ms no cut beats the 20 ms
    device cut."""
    head, tail = priors()
    e = Estimator(head_prior=head, tail_prior=tail, prior_bandwidth=1e6, prior_link_ms=None)
    for c, ms in head.items():
        e.observe_head(c, ms)
    p = policy(probe_every=10)
    cold = p.decide(e.snapshot())
    assert cold.probe and cold.choice == Choice(1, 4) and p.current == Choice(3, 0)
    e.observe_network(1, 1024, 30.0)
    assert e.link_ms == pytest.approx(29.0, abs=0.1) and e.snapshot().link_provisional
    return p, e


def test_a_provisional_latency_is_measured_with_the_smallest_payload() -> None:
    p, e = _after_a_slow_first_answer()
    snap = e.snapshot()
    plan = p.plan(snap)
    assert all(math.isinf(p.needed_bandwidth(plan, o)) for o in plan.options if o.index in (1, 2))
    first = next(d for d in (p.decide(snap) for _ in range(10)) if d.probe)
    assert first.choice == Choice(2, 4) and first.answer_with == Choice(3, 0)  # 64 B, though it "cannot win"
    e.observe_network(2, 64, 5.0)  # a small payload: a latency sample; the link is ~5 ms, not 29
    assert e.link_ms < 5.0 and not e.snapshot().link_provisional
    for _ in range(10):
        p.decide(e.snapshot())
    assert p.current is not None and p.current.cut != 3  # off the device cut: the split pays at the real latency


def test_a_confirmed_latency_ends_the_measurement_probes() -> None:
    p, e = _after_a_slow_first_answer()
    first = next(d for d in (p.decide(e.snapshot()) for _ in range(10)) if d.probe)
    e.observe_network(first.choice.cut, 64, 40.0)  # slow again: the latency is high after all
    assert not e.snapshot().link_provisional and e.link_ms == pytest.approx(29.0, abs=0.1)
    assert not any(p.decide(e.snapshot()).probe for _ in range(60))  # no cut can win at 29 ms: no probes


def test_no_latency_probes_with_real_probes_or_where_no_latency_could_help() -> None:
    p, e = _after_a_slow_first_answer()
    real = policy(probe_every=10, shadow_probes=False)  # real probes cost the frame its wait: no measuring
    real.current = Choice(3, 0)
    assert not any(real.decide(e.snapshot()).probe for _ in range(40))
    slow_tails = replace(e.snapshot(), tail_ms={0: 30.0, 1: 30.0, 2: 30.0, 3: 0.0})  # head + tail alone lose
    assert not any(p.decide(slow_tails).probe for _ in range(40))


def test_only_a_first_answer_bigger_than_a_small_payload_leaves_the_latency_provisional() -> None:
    head, tail = priors()
    e = Estimator(head_prior=head, tail_prior=tail, prior_bandwidth=1e6, prior_link_ms=None)
    e.observe_network(2, 64, 30.0)  # a small payload: a real latency sample
    assert not e.snapshot().link_provisional
    known = Estimator(head_prior=head, tail_prior=tail, prior_bandwidth=1e6)  # a latency prior: no split at all
    known.observe_network(1, 1024, 30.0)
    assert not known.snapshot().link_provisional
