"""Probes: which frames measure another cut than the one in use, and which cut (``CutPolicy``'s probe rules).

A mixin of :class:`~device_runner.policy.CutPolicy`: the rules read the policy's state (its current
choice, margin, knobs and back-off counters, set in ``CutPolicy.__init__``) and the plan it solved; the
choice of the cut that serves a frame stays in device_runner/policy.py.

* **Probes**: every ``probe_every`` decisions one frame goes to another cut (the one whose estimates
  are the stalest), so head, tail and bandwidth estimates stay fresh for cuts not in use - this is
  how an early cut is found again when the bandwidth recovers. A probe waits for the cloud, so it
  costs latency; three rules keep probes that cannot pay from being sent:

  - a cut that has been sampled and could not beat the current option even over an infinitely fast
    link (its head + link + tail alone are not ``margin`` below the current total) is not probed
    (e.g. at the device cut of a small model no offload can ever win; probing there raised the mean
    latency 3x in the replay benchmark);
  - **plausible link**: a cut that would win only above ``plausible_factor`` (4) x the peak
    bandwidth (``Estimates.peak_bandwidth_bytes_per_s``: the highest estimate measured so far or the
    prior, whichever is higher), or above ``bandwidth_ceiling`` when given, is not probed. The
    bandwidth it needs is ``B* = B * transfer / (bar - floor)`` (:meth:`CutPolicy.needed_bandwidth`):
    the option's transfer time scales as 1/B, ``bar`` is the current total x (1 - margin), ``floor``
    its total minus the transfer; a cut that cannot win at any bandwidth needs ``inf``. This covers
    never-sampled cuts too (planned with the manifest's prior times) when the snapshot has a peak;
    without one (``peak_bandwidth_bytes_per_s=None``, hand-built snapshots) a never-sampled cut is
    probed once, as before. After a drop the peak still remembers the fast link, so the early cut
    stays plausible and is probed: recovery works (tests). A target beyond 4x the highest *measured*
    estimate (``measured_peak_bytes_per_s``), plausible only thanks to the prior, is *exploration*:
    probed only when no other target is, and backed off further (below). Keeping the prior in the peak
    keeps exploration alive: a first measurement taken in an outage must not rule out every faster
    link for good;
  - **back-off**: a probe that loses makes the next ones rarer. A probe is judged at the next probe
    turn once the probed cut has a newer sample (``Estimates.last_sample``): it *lost* if no plan
    preferred the probed cut and the bandwidth estimate did not at least double since (a recovering
    link). Each loss doubles the probe interval, up to ``max_backoff`` (4) x ``probe_every``
    decisions, or ``explore_backoff`` (16) x ``probe_every`` after a lost exploration probe; a probe
    that did not lose, or a switch of the current choice, resets it to ``probe_every``. Plausible
    targets are only spaced out, never dropped, so recovery after a drop (the fast link was measured,
    so its cuts are not exploration) is delayed by at most ``max_backoff`` x ``probe_every`` frames.
    (A per-cut back-off was tried first: with several plausible cuts taking turns it hardly lowered
    the probe rate.)
  After a switch the next probe turn comes after ``probe_every // 5`` decisions (5 frames, 2.5 s at
  2 fps): in the replay on the car trace the policy left cut 51 for the device cut in a dip and came
  back only at the next regular probe, 19 frames later, which was half its gap to the best static cut.
  The back-off of plausible probes is also bounded in time: at most ``max_probe_interval_s`` (20 s)
    at the profile's ``fps_cap`` (``None``: no bound). At 2 fps the 4x cap was 50 s between probes and
    kept the device cut ~100 s after the link recovered in the replay (metro trace, docs/DYNAMIC.md).
* **Shadow probes** (``shadow_probes=True``): a probe frame is served by the current choice as usual
  (``Decision.answer_with``); then the probed cut's head runs and its payload is sent after the
  frame's own, only to measure the link and the tail (the runner matches its result by seq and cut).
  The probed head runs after the frame is answered (or its payload sent), so the frame costs nothing
  more; the device is busy for the probed head's time, which delays the next frame only when frames come
  faster than the device is free (the head first, as before, had added 3-6 ms to each probe frame
  on ``zero2w-offload``: most of dynamic's remaining gap to the best static cut on the HSDPA traces).
  It does not wait for a round trip through the link at another cut: in
  the replay on the bursty mahimahi traces (zero2w-offload) real probes had taken 185-470 ms each (a big
  early-cut payload into a slow link) and were most of dynamic's gap to edge-only; on the HSDPA traces
  they were most of its gap to the oracle. A shadow probe that gets no answer is not a censored sample
  (nothing waited for it); the next probe tries again. ``shadow_probes=False``: real probes, whose
  answer is the frame's.
* **Provisional latency** (with ``shadow_probes``): while the latency rests on the first answer alone
  (``Estimates.link_provisional``: split at the prior bandwidth, an upper bound, device_runner/estimator.py)
  and some offloading option's head and tail alone are ``margin`` below the current total, the cuts the
  rules above rule out are still shadow-probed as exploration, the smallest payload first: a payload of at
  most ``small_bytes`` is a latency sample, two sizes 4x apart a fitted one. In the replay
  (resnet50-fashion-224, ``zero2w-offload``, car trace, 100 ms round trip) the cold-start probe's JPEG
  answer set the latency to 140 ms, at which no cut beat the device cut; none was probed again and the
  device sent nothing in 300 s, while the JPEG route was 13 % faster (docs/DYNAMIC.md, "Session 13").
* **Probes from the device cut** (with ``shadow_probes``): while the current choice is the device
  cut, probe turns come every ``probe_every // 5`` decisions (then the back-off as above). Nothing
  is sent there, so probes are the only news of the link, and a shadow probe costs the frame nothing
  (only the device's idle time and a payload). At ``probe_every`` the policy came back to cut 51 20-66
  frames after a dip had ended (the replay, ``zero2w-offload``, HSDPA traces); measured over each
  trace from 3 start points, the quicker turns took dynamic from +11 to +7 % of the oracle on ferry
  and from +2.3 to -0.8 % of edge-only on Verizon (docs/DYNAMIC.md, "Session 4").
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from device_runner.estimator import Estimates
from sdk.manifest import CutKind
from sdk.planner import Option, Plan

if TYPE_CHECKING:
    from device_runner.policy import Choice

__all__ = ["ProbeRules"]

_IMPROVING = 2.0  # a probe after which the bandwidth estimate rose this much did not lose (back-off)
_QUICK = 5  # probe_every // this: the next probe turn after a switch, and the probe period on the device cut


class ProbeRules:
    """The probe rules of :class:`~device_runner.policy.CutPolicy` (module doc); state lives on the policy."""

    current: Choice | None
    margin: float
    probe_every: int
    shadow_probes: bool
    allow_raw: bool
    plausible_factor: float
    bandwidth_ceiling: float | None
    explore_backoff: int
    _max_interval: int
    _device_cuts: frozenset[int]
    _interval: int
    _pending: tuple[int, float, float, bool] | None
    _preferred: bool
    _probed: dict[int, int]
    _decisions: int

    def _probe_period(self) -> int:
        """Decisions between probe turns (before the back-off): ``probe_every``, or ``probe_every // 5`` on
        the device cut with shadow probes (module doc, "Probes from the device cut")."""
        current = self.current
        if self.shadow_probes and current is not None and current.cut in self._device_cuts:
            return max(1, self.probe_every // _QUICK)
        return self.probe_every

    def _shadow_answer(self) -> Choice | None:
        """What serves a probe frame (module doc, "Shadow probes"): the current choice, or None (a real probe)."""
        return self.current if self.shadow_probes else None

    def _judge_probe(self, plan: Plan, est: Estimates) -> None:
        """Back-off (module doc): did the last probe lose? Judged once the probed cut's sample is in."""
        if self._pending is None:
            return
        cut, sample, bandwidth, explore = self._pending
        if est.last_sample.get(cut, -1.0) <= sample:
            return  # its samples are not in yet: wait
        improving = plan.bandwidth_bytes_per_s >= _IMPROVING * bandwidth
        lost = not self._preferred and not improving
        cap = self.explore_backoff if explore else self._max_interval
        self._interval = min(2 * self._interval, cap) if lost else 1
        self._pending = None

    @staticmethod
    def _option(plan: Plan, choice: Choice | None) -> Option | None:
        if choice is None:
            return None
        try:
            return plan.option(choice.cut, choice.bits)
        except KeyError:
            return None

    def needed_bandwidth(self, plan: Plan, option: Option) -> float:
        """B* (bytes/s): the bandwidth above which ``option`` beats the current choice by ``margin``;
        ``inf`` when no bandwidth can (its cost without the transfer is already over the bar)."""
        current = self._option(plan, self.current)
        if current is None or not current.feasible:
            return 0.0
        slack = current.total_ms * (1.0 - self.margin) - (option.total_ms - option.transfer_ms)
        if slack <= 0:
            return math.inf
        return plan.bandwidth_bytes_per_s * option.transfer_ms / slack

    def plausible_bandwidth(self, est: Estimates) -> float:
        """The fastest link worth probing for: ``plausible_factor`` x the peak estimate, at most the ceiling."""
        limit = math.inf if est.peak_bandwidth_bytes_per_s is None else self.plausible_factor * est.peak_bandwidth_bytes_per_s
        return min(limit, self.bandwidth_ceiling) if self.bandwidth_ceiling is not None else limit

    def _latency_matters(self, plan: Plan) -> bool:
        """Some offloading option's head and tail alone are ``margin`` below the current total: at a low enough
        latency and a fast enough link it would win, so measuring the latency can change the choice."""
        current = self._option(plan, self.current)
        if current is None or not current.feasible:
            return True
        bar = current.total_ms * (1.0 - self.margin)
        return any(o.feasible and o.kind is not CutKind.DEVICE and o.total_ms - o.transfer_ms - o.link_ms < bar
                   for o in plan.options)

    def _probe_target(self, plan: Plan, est: Estimates) -> Choice | None:
        """The feasible cut (other than the current one) sampled least recently, at its best bit width,
        among those that could win on a plausible link (module doc)."""
        from device_runner.policy import Choice  # the policy's vocabulary; policy.py imports this module

        assert self.current is not None
        limit = self.plausible_bandwidth(est)
        known_link = est.peak_bandwidth_bytes_per_s is not None or self.bandwidth_ceiling is not None
        seen = self.plausible_factor * (est.measured_peak_bytes_per_s or 0.0) if known_link else math.inf
        best_per_cut: dict[int, Option] = {}
        for o in plan.options:
            if not o.feasible or o.index == self.current.cut:
                continue
            if o.kind is CutKind.DEVICE and o.index in est.head_min_ms:
                continue  # measured once: its cost does not depend on the link, and a probe of it costs the whole model
            if o.kind is CutKind.RAW and not self.allow_raw:  # belt and braces: evaluate already excludes it
                continue
            if o.index not in best_per_cut or o.total_ms < best_per_cut[o.index].total_ms:
                best_per_cut[o.index] = o
        # (exploration, rank, option): rank 0, or the payload's bytes for a latency measurement (module doc)
        candidates: list[tuple[bool, int, Option]] = []
        measure_link = self.shadow_probes and est.link_provisional and self._latency_matters(plan)
        for o in best_per_cut.values():
            # Judged on the cut's fastest measured head time: a stalled sample only inflates the estimate.
            spare = max(0.0, est.head_ms.get(o.index, 0.0) - est.head_min_ms.get(o.index, math.inf))
            needed = min(self.needed_bandwidth(plan, replace(p, head_ms=p.head_ms - spare)) for p in plan.options
                         if p.index == o.index and p.feasible)
            sampled = o.index in est.last_sample
            if (sampled and math.isinf(needed)) or ((sampled or known_link) and needed > limit):
                # no bandwidth could make it win, or only one far faster than any seen: a probe would only cost
                # latency - unless the latency itself is in doubt and a payload of this size can measure it
                if measure_link and o.kind is not CutKind.DEVICE:
                    candidates.append((True, min(p.nbytes for p in plan.options if p.index == o.index), o))
                continue
            candidates.append((needed > seen, 0, o))
        if not candidates:
            return None
        explore, _, stalest = min(  # a link within reach of one measured first, then the stalest
            candidates,
            key=lambda c: (c[0], c[1], est.last_sample.get(c[2].index, -1.0), self._probed.get(c[2].index, -1),
                           c[2].index),
        )
        cut = stalest.index
        self._pending = (cut, est.last_sample.get(cut, -1.0), plan.bandwidth_bytes_per_s, explore)
        self._preferred = False
        self._probed[cut] = self._decisions
        return Choice(cut, stalest.bits)
