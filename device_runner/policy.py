"""The dynamic cut: re-solve argmin T(s, b) from the live estimates, with hysteresis and probes.

A plan evaluates ``sdk.planner.evaluate`` over every cut x allowed bit width, using the
estimator's head/tail times (board milliseconds, so ``device_factor = 1``), bandwidth and link
latency, within the manifest's accuracy-drop budget (``accuracy_drop_budget`` of the profile) and,
under ``privacy``, without the raw cut. Options whose payload exceeds the broker's packet limit are
dropped before planning.

* **Hysteresis**: the policy moves to the plan's best option only after it has been better than the
  current one by more than ``margin`` (relative) for ``patience`` consecutive *decisions* (frames); a
  current option that becomes infeasible is left at once, and so is a beaten one after two sent frames
  in a row missed (``Estimates.miss_streak``): in an outage every frame sent meanwhile waits for its
  overdue wait, and ``patience`` frames more cost 40-180 ms each in the replay. Leaving after *one* miss
  was tried first: through a loaded broker one jitter-late answer then moved the cut to the device and
  back (the real-broker cut test flapped). A steady link therefore never flaps.
* **Re-planning only on news** (the per-frame cost): :meth:`CutPolicy.decide` solves the plan only
  when it is handed another :class:`~device_runner.estimator.Estimates` object than last time; the
  estimator returns the same cached object until an estimate changes materially (its module doc), so
  in steady state a decision is a few attribute reads. ``patience`` still counts decisions, not
  plans: the same plan preferring another option for ``patience`` frames switches, as before (counting
  plans instead would never switch while the estimates stand still). ``plans`` counts the solves.
  Measured (docs/DYNAMIC.md, "Per-frame cost of the policy", with the command):
  ``decide(estimator.snapshot())`` on unchanged estimates took 240-280 us before this cache and
  2.3-3.9 us with it (reference bundle, 17 options, pi5 profile, 2-core x86 host); a re-plan costs
  ~2/3 of what it did (151 vs 229 us: the exit terms are computed once per (cut, bits)).
* **Probes** (device_runner/probes.py, which has the rules and their measurements): every
  ``probe_every`` decisions one frame goes to another cut, so the estimates of the cuts not in use stay
  fresh; rules keep probes that cannot pay from being sent (plausible link, back-off, shadow probes,
  probes from the device cut, a provisional latency).
* **Cold start** (with ``shadow_probes`` and no ``initial`` choice): the first frame, before any
  network sample, starts on the device cut and shadow-probes the option the prior bandwidth prefers;
  the policy moves there at the first plan that still prefers it (the device cut is a placeholder, so
  no ``patience``). Sent at the prior, the
  first frames of the replay on the mahimahi traces had met an outage at the start and waited for it.
* **Outage risk** (``risk=True``): an escalated frame that misses costs the runner's wait for it (the
  overdue wait, at most the deadline). Every escalating option is charged ``miss_rate x (q x wait - q x T_esc)`` (``q`` = 1
  without the exit), with ``Estimates.miss_rate`` the estimator's rate of *unexplained* deadline misses
  (its module doc). The charge is added to ``link_ms``: no bandwidth pays for it. With real probes
  (``shadow_probes=False``) a cut it prices out is not probed either until the rate decays - probes into
  outages were most of the loss on the bursty mahimahi traces; shadow probes cost device time only, so
  they are chosen on the plan without the charge, and their answers in time bring the rate down (in the
  replay on metro the device cut had otherwise stayed 16 s after a dip).
* ``allowed_cuts`` restricts the candidates (``splitedge device --cut N`` pins one).
* **Privacy**: the raw cut is excluded from the plan and from the probes; :meth:`CutPolicy.decide`
  never returns it when ``privacy`` is set (a test checks it).

**tau** (early-exit threshold) per (cut, bits) comes from the cut's ``exit_curve`` (held-out
points ``tau -> coverage, local accuracy``), see :func:`tau_for`.

**Expected cost with the early exit** (``expected_cost=True``, the default): a split cut's option is
planned at ``E[T] = T_dev + q * T_esc`` (``sdk.planner.cascade_latency``), with ``q`` = 1 - the exit
curve's coverage at that option's tau: its transfer, link and tail times in the plan are scaled by
``q``. Without it a cut whose exit answers most frames locally looks as costly as escalating every
frame, and the policy misses the cheapest option (the replay benchmark measured 2.3x the oracle's
mean latency on a Zero 2 W profile). Probes still escalate in full. An option whose cascade
accuracy (exit + escalations, on the exit curve) drops more than the budget below the float model is
infeasible under ``target_escalation_rate`` (whose tau ignores accuracy), so an uninformative exit that
answers every frame locally is never the "fastest" option.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

from device_runner.estimator import Estimates
from device_runner.payload_size import PayloadSizes
from device_runner.probes import _QUICK, ProbeRules
from sdk.config import DeviceSettings, TauTarget
from sdk.manifest import CutKind, CutSpec, Manifest
from sdk.planner import CutCost, Option, Plan, costs_from_manifest, evaluate
from sdk.policy_options import POLICY_KEYS, PolicyOptions

__all__ = ["Choice", "CutPolicy", "Decision", "escalation_rate", "tau_for"]

log = logging.getLogger(__name__)

_LEAVE, _BETTER, _STAY = 0, 1, 2  # what a plan says about the current choice (CutPolicy._judge)
_JITTER_K = 4.0  # the overdue slack is this many mean deviations (RFC 6298's K) ...
_MIN_SLACK_MS = 10.0  # ... but at least this: a loaded host's thread that wakes late is not an outage (the
# real-broker tests, with both cores busy, saw answers 5-10 ms past a 5 ms floor; the replay is the same at 5 or 10)
_MISSES_TO_LEAVE = 2  # sent frames missing in a row: a beaten choice is left without waiting for patience


@dataclass(frozen=True, slots=True)
class Choice:
    """A cut and the bit width of its activation (0 for the raw frame and for the device cut)."""

    cut: int
    bits: int


@dataclass(frozen=True, slots=True)
class Decision:
    choice: Choice
    probe: bool
    plan: Plan
    switched: bool = False
    #: a *shadow* probe (module doc): the frame is served by this choice (the current one), and the
    #: probe's payload is sent only to measure the link and the tail
    answer_with: Choice | None = None

    @property
    def option(self) -> Option:
        return self.plan.option(self.choice.cut, self.choice.bits)


def tau_for(cut: CutSpec, bits: int, target: TauTarget, value: float, cloud_accuracy: float) -> float:
    """The early-exit threshold for ``cut`` meeting ``target`` on its held-out ``exit_curve``.

    * ``target_escalation_rate = r``: the largest tau whose escalation rate ``1 - coverage`` is at
      most r (escalating as much as allowed maximises accuracy); 0.0 (answer everything locally) if
      no point qualifies.
    * ``target_accuracy = A``: the smallest tau (fewest escalations) whose cascade accuracy
      ``coverage * local_accuracy + (1 - coverage) * cloud_accuracy`` reaches A; ``inf`` (escalate
      every frame) if none does. ``cloud_accuracy`` is the cut's accuracy at ``bits``. This assumes
      the escalated frames are as easy for the tail as the average frame, which is optimistic.

    Without an exit curve every frame escalates (``inf``).
    """
    curve = sorted(cut.exit_curve, key=lambda p: p.tau)
    if not curve:
        return math.inf
    if target is TauTarget.ESCALATION_RATE:
        ok = [p.tau for p in curve if 1.0 - p.coverage <= value + 1e-9]
        return max(ok) if ok else 0.0
    for p in curve:
        overall = p.coverage * p.accuracy + (1.0 - p.coverage) * cloud_accuracy
        if overall >= value - 1e-9:
            return float(p.tau)
    return math.inf


def _exit_point(cut: CutSpec, tau: float) -> tuple[float, float]:
    """(coverage, local accuracy) on the cut's held-out exit curve at the first point at or above tau."""
    if cut.kind is not CutKind.SPLIT:
        return 0.0, 1.0
    above = [p for p in sorted(cut.exit_curve, key=lambda p: p.tau) if p.tau >= tau - 1e-12]
    return (above[0].coverage, above[0].accuracy) if above else (0.0, 1.0)


def escalation_rate(cut: CutSpec, tau: float) -> float:
    """q(tau) = 1 - coverage on the cut's held-out exit curve (the first point at or above tau); 1 without a curve."""
    return 1.0 - _exit_point(cut, tau)[0]


def _replanned(plan: Plan, options: list[Option]) -> Plan:
    """``plan`` with its options replaced and the best re-picked (``evaluate``'s tie rule); ``plan`` as is
    when none of them is feasible."""
    feasible = [o for o in options if o.feasible]
    if not feasible:
        return plan
    best = min(feasible, key=lambda o: (round(o.total_ms, 9), o.index, -o.bits))
    return Plan(tuple(options), best, plan.bandwidth_bytes_per_s, plan.link_latency_ms)


class CutPolicy(ProbeRules):
    """Picks (cut, bits) per frame from :class:`~device_runner.estimator.Estimates`."""

    def __init__(
        self,
        manifest: Manifest,
        device: DeviceSettings,
        options: PolicyOptions | None = None,
        *,
        initial: Choice | None = None,
        **overrides: Any,
    ) -> None:
        """``options``: the profile's ``[policy]`` (``DeviceConfig.policy``; default :class:`PolicyOptions`());
        ``overrides``: fields of it replaced for this policy (``probe_every=0``, ``allowed_cuts=(51,)``...), so
        a CLI flag or a benchmark changes one knob without restating the rest."""
        try:
            opts = replace(options or PolicyOptions(), **overrides)
        except TypeError:
            unknown = sorted(set(overrides) - set(POLICY_KEYS))
            raise TypeError(f"unknown policy option(s) {unknown}; the options are {', '.join(POLICY_KEYS)}") from None
        self.options = opts
        margin, patience, probe_every = opts.margin, opts.patience, opts.probe_every
        max_payload_bytes, tau_override, allowed_cuts = opts.max_payload_bytes, opts.tau_override, opts.allowed_cuts
        expected_cost, plausible_factor, bandwidth_ceiling = opts.expected_cost, opts.plausible_factor, opts.bandwidth_ceiling
        max_backoff, explore_backoff, max_probe_interval_s = opts.max_backoff, opts.explore_backoff, opts.max_probe_interval_s
        risk, shadow_probes = opts.risk, opts.shadow_probes
        self.manifest = manifest
        self.device = device
        self.margin = margin
        self.patience = patience
        self.probe_every = probe_every
        self.risk = risk
        self.shadow_probes = shadow_probes
        # the back-off cap in decisions: max_backoff x probe_every, but at most max_probe_interval_s at fps_cap
        self._max_interval = max_backoff
        if max_probe_interval_s is not None and probe_every:
            frames = max_probe_interval_s * device.fps_cap
            self._max_interval = max(1, min(max_backoff, int(frames // probe_every)))
        self.allow_raw = not device.privacy
        self._device_cuts = frozenset(c.index for c in manifest.cuts if c.kind is CutKind.DEVICE)  # (per decision)
        self.bits: tuple[int, ...] = tuple(b for b in device.bits if b in manifest.bits)
        self._base: list[CutCost] = []
        for c in costs_from_manifest(manifest):
            if allowed_cuts is not None and c.index not in allowed_cuts:
                continue
            nbytes = dict(c.bytes_at_bits)
            jpeg = c.kind is CutKind.RAW and device.raw_jpeg_quality is not None  # sized on the first frame
            if max_payload_bytes is not None and c.kind is not CutKind.DEVICE and not jpeg:
                nbytes = {b: n for b, n in nbytes.items() if n <= max_payload_bytes}
            if nbytes:
                self._base.append(replace(c, bytes_at_bits=nbytes))
        if not self._base:
            known = [c.index for c in manifest.cuts]
            raise ValueError(f"no cut left to plan with (allowed_cuts={allowed_cuts}, bundle cuts {known})")
        self._tau_override = tau_override
        self.expected_cost = expected_cost
        self._taus: dict[tuple[int, int], float] = {}
        self._exit_effects: dict[tuple[int, int], tuple[float, str]] = {}
        self.current: Choice | None = initial
        self._streak = 0
        self._decisions = 0
        self._warned_budget = False
        self.plausible_factor = plausible_factor
        self.bandwidth_ceiling = bandwidth_ceiling
        self.max_backoff = max_backoff
        self.explore_backoff = explore_backoff
        self._probed: dict[int, int] = {}
        self._interval = 1  # probe every probe_every x this many decisions (back-off, module doc)
        self._since_turn = 0  # decisions since the last probe turn
        # the last probe, not judged yet: (cut, its last sample, bandwidth, exploration)
        self._pending: tuple[int, float, float, bool] | None = None
        self._preferred = False  # a plan preferred the pending probe's cut
        self._sizes = PayloadSizes()  # learned payload bytes per cut (observe_payload)
        self._est: Estimates | None = None  # the snapshot the cached plan was solved for
        self._plan: Plan | None = None
        self._plain: Plan | None = None  # the cached plan without the risk charge (probe targets)
        self._best = Choice(-1, 0)  # the cached plan's best option
        self._verdict: tuple[Choice | None, int] = (None, _LEAVE)
        self.switches = 0
        self.probes = 0
        self.plans = 0  # how many times the plan was solved (once per new snapshot)

    def observe_payload(self, cut: int, nbytes: int) -> None:
        """A payload of the raw cut as sent (the frame as JPEG): its learned size becomes the plan's bytes
        for that cut, re-planned at the next decision (device_runner/payload_size.py)."""
        for i, c in enumerate(self._base):
            if c.index != cut or c.kind is not CutKind.RAW:
                continue
            (bits, old), = c.bytes_at_bits.items()
            new = self._sizes.learn(cut, nbytes, old)
            if new is not None:
                self._base[i] = replace(c, bytes_at_bits={bits: new})
                self._plan = None  # re-plan at the next decision
            return

    def payload_bytes(self, cut: int) -> int | None:
        """The bytes the plan prices ``cut``'s payload at (its largest bit width), None for a cut not planned."""
        for c in self._base:
            if c.index == cut:
                return max(c.bytes_at_bits.values())
        return None

    @property
    def cut_indices(self) -> tuple[int, ...]:
        """The cuts this policy can choose (``allowed_cuts`` within the payload limit)."""
        return tuple(c.index for c in self._base)

    # ---- tau
    def tau(self, cut: int, bits: int) -> float:
        """The early-exit threshold at (cut, bits): ``--tau``, else :func:`tau_for` on the profile's target.

        Under ``target_escalation_rate`` (a cap: escalate at most that share) the bundle's ``exit_budget``
        point is used when it escalates fewer frames than the cap allows and keeps the combined accuracy
        within a budget no looser than the profile's ``accuracy_drop_budget`` (the converter measured it
        frame by frame, converter/early_exit.py): the cap alone escalates its whole share even where the
        exit is as accurate as the tail. On the MobileNetV2 workload's cut 125 the cap (0.3 on the Zero 2 W)
        sent 30 % of frames to the cloud where 3 % keep accuracy within 1 pp. Under ``target_accuracy`` the
        point is used only where no tau reaches the target (an absolute accuracy above what the model itself
        scores: the Pi 4's 0.97 against MobileNetV2's 0.62), which would otherwise escalate every frame.
        """
        if self._tau_override is not None:
            return self._tau_override
        key = (cut, bits)
        if key not in self._taus:
            spec = self.manifest.cut(cut)
            acc = spec.accuracy_at(bits or 8)
            cloud = acc.accuracy if acc is not None else self.manifest.float_accuracy
            target, value = self.device.tau_target
            tau = tau_for(spec, bits, target, value, cloud)
            point = spec.exit_budget_at(bits or 8)
            usable = (point is not None and point.met
                      and point.budget <= self.device.accuracy_drop_budget + 1e-12)
            if usable and target is TauTarget.ESCALATION_RATE and point.escalation_rate <= value + 1e-9:
                tau = min(tau, point.tau)  # the cap's point escalates more for accuracy the budget does not need
            elif usable and target is TauTarget.ACCURACY and math.isinf(tau):
                tau = point.tau  # the target is out of reach: stay within the accuracy budget instead
            self._taus[key] = tau
        return self._taus[key]

    def answer_within_ms(self, est: Estimates, cut: int, nbytes: int) -> float:
        """How long after sending a frame of ``nbytes`` at ``cut`` the runner waits for the cloud before
        answering locally: ``overdue_factor`` x the expected time (``link_ms + nbytes / bandwidth +
        tail_ms`` at ``est``, with the bandwidth as the last measurement left it: after a miss the capped
        estimate made each next frame's wait longer, 38 -> 103 -> 248 ms in the replay) + a slack, or
        the deadline when that is off (factor 0) or later. The slack is ``overdue_slack_ms`` until the
        cut's answers have been seen, then 4 x their mean deviation from the expected time
        (``Estimates.jitter_ms``, RFC 6298's retransmission timeout), at least 10 ms and at most
        ``overdue_slack_ms``: a steady link is waited for less. On the bursty mahimahi traces a missed
        frame had waited ~2 x 9 + 30 ms for an answer that was not coming, against 15 ms on the device
        (docs/DYNAMIC.md, "Session 4").

        The deadline is a bound the user sets; this wait follows the link. A frame caught in an
        outage is answered after tens of ms instead of the whole deadline (on ``zero2w-offload``
        a 500 ms deadline hit added ~0.8 ms to a 600-frame mean, docs/DYNAMIC.md), and the miss is a
        censored sample that caps the bandwidth estimate at once (``Estimator.observe_timeout``).
        """
        bw = est.sampled_bandwidth_bytes_per_s or est.bandwidth_bytes_per_s  # a cap must not stretch the wait
        return self._wait_ms(est.link_ms + nbytes / bw * 1000.0 + est.tail_ms.get(cut, 0.0), self._slack(est, cut))

    def _slack(self, est: Estimates, cut: int) -> float:
        """The fixed part of the overdue wait at ``cut``: ``overdue_slack_ms`` until the cut's answers have
        shown their jitter, then 4 x its mean deviation, between 10 ms and ``overdue_slack_ms`` (:meth:`answer_within_ms`)."""
        slack = self.device.overdue_slack_ms
        jitter = est.jitter_ms.get(cut)
        return slack if jitter is None else min(slack, max(_MIN_SLACK_MS, _JITTER_K * jitter))

    def _wait_ms(self, expected_ms: float, slack_ms: float) -> float:
        """The overdue wait for an answer expected after ``expected_ms`` (:meth:`answer_within_ms`)."""
        dev = self.device
        if dev.overdue_factor <= 0:
            return dev.deadline_ms
        return min(dev.deadline_ms, dev.overdue_factor * expected_ms + slack_ms)

    # ---- planning
    def planning_bandwidth(self, est: Estimates) -> float:
        """The bandwidth a plan prices transfers at: the estimate, or with ``plan_quantile`` the bandwidth that
        makes the transfer time that quantile of the lognormal (``Estimates.bandwidth_log_sd``) - on bursty
        cellular traces planning at the mean missed a 5 % deadline target (docs/DYNAMIC.md, "Link prediction")."""
        q = self.options.plan_quantile
        if q is None or not est.measured or est.bandwidth_log_sd <= 0:
            return est.bandwidth_bytes_per_s
        return est.bandwidth_bytes_per_s * math.exp(NormalDist().inv_cdf(1.0 - q) * est.bandwidth_log_sd)

    def plan(self, est: Estimates) -> Plan:
        costs = [
            replace(c, head_ms=est.head_ms.get(c.index, c.head_ms), tail_ms=est.tail_ms.get(c.index, c.tail_ms))
            for c in self._base
        ]
        kwargs = dict(
            bandwidth_bytes_per_s=self.planning_bandwidth(est),
            link_latency_ms=est.link_ms,
            bits=self.bits,
            allow_raw=self.allow_raw,
        )
        try:
            plan = evaluate(costs, accuracy_drop_budget=self.device.accuracy_drop_budget, **kwargs)  # type: ignore[arg-type]
        except ValueError:
            if not self._warned_budget:
                log.warning(
                    "no cut meets accuracy_drop_budget=%s; planning without it (re-convert with more bits "
                    "or raise the budget)", self.device.accuracy_drop_budget,
                )
                self._warned_budget = True
            plan = evaluate(costs, **kwargs)  # type: ignore[arg-type]
        plan = self._with_exits(plan) if self.expected_cost else plan
        self._plain = plan  # without the risk charge: what the probes are chosen on
        return self._with_risk(plan, est) if self.risk and est.miss_rate > 0 else plan

    def _with_risk(self, plan: Plan, est: Estimates) -> Plan:
        """Charge every escalating option for the deadline misses (module doc, "Outage risk").

        An escalated frame misses with probability ``miss_rate`` and then costs the runner's wait for it
        (the overdue wait, :meth:`answer_within_ms`, at most the deadline) instead of its planned time:
        ``+ miss_rate x q x (wait - T_esc)``, where ``q x T_esc`` is already in the option's transfer +
        link + tail (``q`` = 1 without the exit). The charge goes into ``link_ms``: no bandwidth removes
        it (shadow probes are chosen without it: module doc). (Charging the whole deadline, as before the
        overdue wait, priced one jitter-late answer through a loaded broker at 0.2 x 400 ms and moved the
        cut to the device - the real-broker cut test flapped.)
        """
        options = []
        for o in plan.options:
            if o.kind is not CutKind.DEVICE:
                q = self._exit_effect(o.index, o.bits)[0] if o.kind is CutKind.SPLIT and self.expected_cost else 1.0
                esc = o.transfer_ms + o.link_ms + o.tail_ms  # = q x T_esc
                wait = self._wait_ms(esc / q if q > 0 else esc, self._slack(est, o.index))
                extra = est.miss_rate * max(0.0, q * wait - esc)
                o = replace(o, link_ms=o.link_ms + extra)
            options.append(o)
        return _replanned(plan, options)

    def _with_exits(self, plan: Plan) -> Plan:
        """The plan at E[T] = T_dev + q * T_esc per split option (module doc); same tie rule as evaluate.

        Under ``target_escalation_rate`` (tau chosen without regard to accuracy), an option whose *cascade* accuracy (exit answers + escalated answers, on the exit curve) falls
        more than ``accuracy_drop_budget`` below the float model is marked infeasible: otherwise an
        uninformative exit answering everything locally (``target_escalation_rate``, tau 0) would look
        like the cheapest option. If that leaves nothing feasible, the plan is returned unchanged.
        """
        options = []
        for o in plan.options:
            if o.kind is CutKind.SPLIT:
                q, why = self._exit_effect(o.index, o.bits)
                feasible, reason = (False, why) if why and o.feasible else (o.feasible, o.reason)
                o = Option(o.index, o.name, o.kind, o.bits, o.nbytes, o.head_ms, q * o.transfer_ms, q * o.link_ms,
                           q * o.tail_ms, o.accuracy_drop, feasible, reason)
            options.append(o)
        return _replanned(plan, options)

    def _exit_effect(self, index: int, bits: int) -> tuple[float, str]:
        """(q, why infeasible or "") of a split option: fixed per (cut, bits), so computed once."""
        key = (index, bits)
        if key not in self._exit_effects:
            budget, ref = self.device.accuracy_drop_budget, self.manifest.float_accuracy
            # Only tau from an escalation-rate target ignores accuracy; a target accuracy or --tau is the user's choice.
            check = self._tau_override is None and self.device.tau_target[0] is TauTarget.ESCALATION_RATE
            cut = self.manifest.cut(index)
            coverage, local = _exit_point(cut, self.tau(index, bits))
            q = 1.0 - coverage
            acc = cut.accuracy_at(bits)
            cascade = coverage * local + q * (acc.accuracy if acc is not None else ref)
            why = ""
            if check and ref - cascade > budget + 1e-12:
                why = f"cascade accuracy {cascade:.4f} < {ref:.4f} - budget {budget:.4f}"
            self._exit_effects[key] = (q, why)
        return self._exit_effects[key]

    def decide(self, est: Estimates) -> Decision:
        """The choice for one frame; solves the plan only for a snapshot not seen last time (module doc)."""
        if est is not self._est or self._plan is None:
            self._plan, self._est = self.plan(est), est
            self._best = self._local_unless_clearly_better(self._plan)
            self.plans += 1
            if self._pending is not None and self._plan.best.index == self._pending[0]:
                self._preferred = True
            self._verdict = (None, _LEAVE)
        plan, best = self._plan, self._best
        self._decisions += 1
        if self.current is None and self.shadow_probes and not est.measured:
            cold = self._cold_start(plan)
            if cold is not None:
                return cold
        switched = False
        if self._verdict[0] != self.current or self.current is None:
            self._verdict = (self.current, self._judge(plan, best))
        verdict = self._verdict[1]
        if verdict == _LEAVE:
            switched = self.current is not None
            self.current, self._streak = best, 0
        elif verdict == _BETTER:
            self._streak += 1
            if self._streak >= self.patience or est.miss_streak >= _MISSES_TO_LEAVE or est.unreachable:
                self.current, self._streak, switched = best, 0, True
        else:
            self._streak = 0
        if switched:
            self.switches += 1
            self._interval = 1  # conditions changed: probe at the normal rate again
            # ... and look back soon: a switch after misses is often a dip of a few seconds (module doc)
            self._since_turn = self._probe_period() - max(1, self.probe_every // _QUICK)
            log.info("cut -> %s (%.2f ms predicted)", self.current, plan.best.total_ms)
        assert self.current is not None
        if self.probe_every:
            self._since_turn += 1
            every = self._probe_period()
            if self._since_turn >= every * self._interval:
                self._judge_probe(plan, est)
            if self._since_turn >= every * self._interval:
                self._since_turn = 0
                # Shadow probes cost device time, not a frame's wait: they are chosen without the risk charge,
                # so a cut priced out by recent misses is still probed and can show the link is back.
                plain = self._plain if self.shadow_probes and self._plain is not None else plan
                probe = self._probe_target(plain, est)
                if probe is not None:
                    self.probes += 1
                    return Decision(probe, True, plan, switched, self._shadow_answer())
        return Decision(self.current, False, plan, switched)

    def _cold_start(self, plan: Plan) -> Decision | None:
        """The first frame, before any network sample (module doc, "Cold start"): start on the device cut
        and shadow-probe the option the prior prefers; None when there is no device cut or it is that option."""
        device = next((o for o in plan.options if o.kind is CutKind.DEVICE and o.feasible), None)
        if device is None or plan.best.kind is CutKind.DEVICE:
            return None
        self.current = Choice(device.index, device.bits)
        self._streak = self.patience - 1  # a placeholder: the first plan that confirms the probe moves at once
        self.probes += 1
        return Decision(Choice(plan.best.index, plan.best.bits), True, plan, False, self.current)

    def _local_unless_clearly_better(self, plan: Plan) -> Choice:
        """The plan's best, except that the device cut is kept when no escalating option beats it by ``margin``.

        An escalation bets the frame on the link (queueing, outages, the deadline) for a predicted gain;
        a gain inside the hysteresis margin is not worth that bet. (The replay measured it: a Zero 2 W
        profile whose only feasible split, the pool cut, was predicted 1-2 % faster than the device cut
        ran 0.3-18 % slower than all-on-device on the shared traces.)
        """
        best = plan.best
        if best.kind is not CutKind.DEVICE:
            device = next((o for o in plan.options if o.kind is CutKind.DEVICE and o.feasible), None)
            if device is not None and best.total_ms > device.total_ms * (1.0 - self.margin):
                return Choice(device.index, device.bits)
        return Choice(best.index, best.bits)

    def _judge(self, plan: Plan, best: Choice) -> int:
        """What ``plan`` says about the current choice: leave it now, a better one exists, or stay."""
        current_opt = self._option(plan, self.current)
        if current_opt is None or not current_opt.feasible:
            return _LEAVE
        if best != self.current and plan.best.total_ms < current_opt.total_ms * (1.0 - self.margin):
            return _BETTER
        if best != self.current and self.manifest.cut(best.cut).kind is CutKind.DEVICE:
            device = self._option(plan, best)
            if device is not None and current_opt.total_ms > device.total_ms:
                return _BETTER  # an escalating option predicted slower than all-on-device: no bet to keep
        return _STAY
