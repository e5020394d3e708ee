"""Online estimates of what a cut costs right now: uplink bandwidth, link latency, head and tail times.

Sources of samples:

* every head run on the device -> ``head_ms(cut)`` (board milliseconds, emulated or real);
* every ReportMessage of the cloud joined with the device-side arrival of the frame's answer ->
  ``tail_ms(cut)`` (the cloud's decode + queue + tail time) and one *network* sample.

**No clock synchronisation is needed.** A network sample uses only differences of the device's own
clock and durations measured by the cloud::

    net_ms = (t_answer_arrived - t_sent) * 1000  -  (decode_ms + queue_ms + tail_ms)   # from the report

``recv_ts`` of the report (the cloud's clock) is never compared with a device timestamp, so any
offset between the two clocks cancels. ``net_ms`` is the uplink transfer of the frame, the link
latency both ways and the (small) result's trip back; it is modelled as
``net_ms = link_ms + nbytes / bandwidth``.

The two unknowns are separated by payload size, online:

* a payload of at most ``small_bytes`` (512 B by default: a few ms even at 1 Mbit/s) teaches the
  *link latency*: ``link_ms`` <- the minimum of ``net_ms - nbytes / bandwidth`` over the last
  ``link_window`` (8) such samples. Latency is a floor (as BBR's min RTT): queueing and a slower link
  only add to it. An EWMA had taken the slow answers of ~450 B payloads in a dip for latency (2 ->
  7 ms on the ferry trace, ``zero2w-offload``), and with no small payloads sent while on the device
  cut that belief stayed: cut 51 looked 2-5 ms slower than it was and the policy stayed on the device
  for 33 s after the link had recovered. A real rise of the latency is followed once the window
  holds only samples of it;
* a bigger one teaches the *bandwidth*: ``bandwidth`` <- EWMA of ``nbytes / (net_ms - link_ms)``,
  taken on the logarithm (a geometric mean), so a drop or a recovery by orders of magnitude is
  followed in a few samples instead of dozens. A sample more than ``jump_factor`` (4x) *above* the
  estimate moves it with ``jump_alpha`` (0.8) instead of ``alpha``: waiting in the uplink queue
  (behind a probe, say) only ever makes a sample look slower, so a much faster one is the link
  recovering - and while the cut in use sends small payloads, the only bandwidth samples are the
  probes, one every ``probe_every`` frames or fewer (measured in the replay: after a 10 MB/s ->
  20 kB/s -> 10 MB/s step the cut came back 3 probes after the recovery with ``alpha`` alone; see
  docs/DYNAMIC.md). A much slower sample keeps ``alpha``; deadline misses cap the estimate at once.
  **A cap is a bound, not a measurement**: the first bandwidth sample faster than a cap replaces it
  (``alpha`` = 1). Before this, one missed frame in a sub-second outage capped the estimate at
  ~0.01 Mbit/s and the geometric EWMA needed several probes - seconds apart - to climb back to a
  ~3 Mbit/s link (the live demo on ``zero2w-offload`` stayed on the device for most of a 30 s run).

**No small payload** (issue 14): over a cellular round trip a device on its device cut sends only
shadow probes, and a classifier's smallest payloads (its pooled features) are 0.7-2.4 kB, above
``small_bytes``. With the latency taken as its prior of 0 ms, the whole round trip counted as transfer:
689 B in 53 ms read as 13 kB/s on a 5 Mbit/s link (0.03x, measured live through Mosquitto at a 50 ms
round trip), and no split could ever look worth sending. Two rules, both from the answers alone:

* an unknown latency (``prior_link_ms=None``, what :func:`make_estimator` passes) takes the *first*
  answer as a latency sample at the prior bandwidth: over a real uplink the round trip, not a first
  small payload's transfer, is most of its time. Taking it the other way round cannot correct itself (a
  link believed slow is never sent a payload big enough to show otherwise); this way a latency believed
  too high is lowered by the next faster answer (the floor below). Until another latency sample comes,
  ``Estimates.link_provisional`` says so: the policy then measures the latency with its smallest payload
  (device_runner/probes.py, "Provisional latency");
* two payload sizes teach it: per size class (a factor of 2 in bytes) over the last ``fit_window`` (16)
  answers in time, the fastest answer is that size's floor; the floors of the smallest and the largest
  class, at least ``fit_ratio`` (4x) apart, give the line ``net = link + nbytes / bandwidth`` and its
  intercept is one more latency sample for the floor (``fitted_link_samples`` counts them). The policy's
  probes rotate over the cuts, so their sizes differ. Floors no faster for more bytes (the link changed
  within the window) give no line.

**Noise**: the broker, the worker and the host add a few ms to every answer whatever its size; on a
1 kB payload at several Mbit/s that is more than the transfer itself, and an EWMA of such samples sat
at 0.2-0.4x the link in the live demo. The noise is the median excess of the recent answers over the
floor of their size class (at least ``noise_floor_ms``, 1 ms). A bandwidth sample whose transfer is
under ``noise_factor`` (2) x the noise is a lower bound of the rate only: it may raise the estimate,
never lower it (``noisy_samples`` counts those it left). A real drop shows as a transfer far above the
noise and is followed as before; a drop that hides in the noise costs a payload of that size at most
the noise. Likewise a *lone* miss of a payload whose transfer at the measured bandwidth is within the noise
is a stall of the broker, the worker or the host, not of the link: it counts as outage risk (below) but
caps nothing (``noise_misses``); a second miss in a row caps as before. Live (digits, ``zero2w-offload``,
ATT trace, 0 ms), such misses of ~250 B payloads on a ~200 kB/s link had capped the estimate at 5-12 kB/s
for the next answers, and were most of the distance between the estimate and the trace.

Small payloads (late cuts) therefore teach the latency and big ones (early cuts, probes) the
bandwidth - except the late answer of a frame that already missed: it waited out an outage, and as a
latency sample it had pushed ``link_ms`` to hundreds of ms, which no bandwidth could beat, so no cut
was probed again (the live demo on ``zero2w-offload`` stayed on the device for the 25 s after one
outage); the policy's probes keep the big ones coming. A frame whose answer never came before its
deadline is a *censored* sample: the link took at least ``elapsed`` for ``nbytes``, so the bandwidth
estimate is capped at ``nbytes / (elapsed - link_ms - tail_ms)`` (this is how a stalled uplink pushes the cut
later even though no answer comes back). Everything is O(1) memory per cut.

**Priors learn from the measured cuts** (the runner times every candidate head on start, so this
matters with ``RunnerOptions.measure_heads=False`` or a head that failed to run): a cut's head time is its prior (the manifest's, scaled to the
board) until it runs; the priors of the cuts not run yet are multiplied by the geometric mean of
measured / prior over the cuts that have run. The manifest's times were measured at the converter's
threads and host; an emulating runner measures one host thread scaled to the board, and a real board
is only known to its speed factor's +-40 %. Before this, the device cut measured 1.30 ms on the Pi 5
profile while the pool cut's prior said 0.80: the policy moved to the pool cut on that prior and sent
three frames into an outage (replay, mahimahi traces).

**Stale estimates**: a bandwidth sample arriving more than ``stale_after`` (20) samples after the
previous one (on the device cut only probes send) moves the estimate with ``jump_alpha``: an old
estimate is a weak prior.

**Outage risk** (``Estimates.miss_rate``): an EWMA (``miss_alpha``) over sent frames of "missed the
deadline", halved every ``miss_half_life`` (120) samples since its last update, so it decays while
nothing is sent. Only an *unexplained* miss counts as 1: one whose expected network time at the
current estimates (``link_ms + nbytes / bandwidth``) was under ``explained_share`` (1/4) of the time
that passed; a miss the bandwidth estimate explains is a slow link, already priced (counting it kept
the cut at the device after a plain drop and recovery). An answer in time counts as 0; the late answer
of a frame already counted as a miss does not count. The policy charges escalating options for it.

**Jitter** (``Estimates.jitter_ms``): per cut, an EWMA (``jitter_alpha``, 1/4 as in RFC 6298) of
``|net_ms - (link_ms + nbytes / bandwidth)|`` over its answers in time, taken against the estimates
before the sample moves them (the bandwidth as the last measurement left it, not a deadline cap). The
policy's overdue wait allows 4 of them (``CutPolicy.answer_within_ms``). Per cut, because a probe's
big payload at an early cut deviates by more than the cut in use does. The late answer of a missed
frame is not a sample. It is published when it moves by more than 25 % or 0.5 ms.

**Snapshots are cached and versioned** (the runner asks for one every frame): :meth:`Estimator.snapshot`
returns the *same* :class:`Estimates` object until an estimate changes materially, and each new one
carries a larger ``version``. Material is:

* a head, tail, bandwidth or link estimate that moved more than ``rel_tol`` (3 %) from the value in the
  last snapshot (plus ``abs_tol_ms`` = 0.01 ms for the millisecond estimates, so sub-microsecond jitter
  of a near-zero link latency is not news) - small moves accumulate until they cross it, so a
  snapshot is never more than ``rel_tol`` off;
* the first measurement of a cut's head or tail time, the first bandwidth sample, a new peak
  bandwidth;
* a deadline miss (a censored sample); the miss rate moving more than ``rel_tol`` + 0.002;
* a sample of another cut than the previous sample's: the order of ``last_sample`` (which the policy
  probes by) changes only then. Repeated samples of the same cut move its own counter, not the order,
  so the snapshot keeps the older counter value for it (it stays the most recent one).

Steady state (one cut, a steady link) therefore re-uses one snapshot and the policy re-uses one plan
(``device_runner.policy``). Not thread-safe: callers serialise ``observe_*`` and ``snapshot`` (the
runner does both under its lock).

``measured_peak_bytes_per_s`` is the highest bandwidth *estimate* so far (the EWMA, not a single
sample, so one lucky sample does not inflate it; ``None`` until one is measured) and
``peak_bandwidth_bytes_per_s`` the larger of it and the prior: the policy does not probe a cut that
would need a link far faster than that (``plausible_factor``), and probes rarely for one faster than
any measured (exploration). The prior keeps exploration alive: a first measurement taken in an
outage would otherwise make every faster link "implausible" for good, and a late cut whose payloads
are too small to teach the bandwidth would never be left.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from sdk.config import DeviceConfig
from sdk.families import model_family
from sdk.host_speed import prior_factor
from sdk.manifest import Manifest
from sdk.planner import costs_from_manifest

__all__ = ["Estimates", "Estimator", "make_estimator"]


@dataclass(frozen=True, slots=True)
class Estimates:
    """A snapshot the policy plans with. ``bandwidth`` is the estimate or the prior (``measured`` says)."""

    bandwidth_bytes_per_s: float
    link_ms: float
    head_ms: Mapping[int, float]
    tail_ms: Mapping[int, float]
    last_sample: Mapping[int, float]  # cut -> sample counter value of its last head or network sample
    measured: bool
    #: highest bandwidth estimate so far (the prior until one is measured); None: unknown (no plausibility rule)
    peak_bandwidth_bytes_per_s: float | None = None
    version: int = 0  # bumped by the estimator on every material change (module doc)
    measured_peak_bytes_per_s: float | None = None  # highest measured bandwidth estimate; None: none measured yet
    #: cut -> fastest head (+ exit) time measured: host noise only adds time, so "this cut cannot win"
    #: is judged on it, and one stalled sample cannot lock a cut out of the probes for good
    head_min_ms: Mapping[int, float] = field(default_factory=dict)
    #: recent share of sent frames whose answer missed the deadline (EWMA, decaying while nothing is sent;
    #: module doc "Outage risk"); the policy charges escalating options for it
    miss_rate: float = 0.0
    #: the bandwidth estimate as the last measurement left it: a deadline cap (a bound) does not move it;
    #: the overdue wait is planned on it, so a frame after a miss is not given a wait inflated by the cap
    sampled_bandwidth_bytes_per_s: float | None = None
    #: sent frames in a row that missed (deadline or overdue) since the last answer in time
    miss_streak: int = 0
    #: cut -> mean deviation (ms) of its answers in time from the expected network time (module doc, "Jitter")
    jitter_ms: Mapping[int, float] = field(default_factory=dict)
    #: the broker refused a publish and no answer has come back since (observe_unreachable)
    unreachable: bool = False
    #: spread of the bandwidth on its logarithm: the root of an EWMA (``log_var_alpha``) of the squared
    #: deviation of each bandwidth sample from the estimate before it; with ``bandwidth_bytes_per_s`` a
    #: lognormal the policy plans a quantile of (``PolicyOptions.plan_quantile``)
    bandwidth_log_sd: float = 0.0
    #: the latency rests on the first answer alone, split at the prior bandwidth (module doc, "No small
    #: payload"): an upper bound until a small payload, a fitted line or a faster answer gives another sample
    link_provisional: bool = False


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else (1.0 - alpha) * old + alpha * new


#: a move of ``Estimates.bandwidth_log_sd`` that is news (absolute, on the logarithm: ~3 % of a 95 % plan's
#: bandwidth); a relative tolerance would publish every sample while a steady link's spread decays to 0
_LOG_SD_TOL = 0.02

#: The bandwidth cap while the broker is unreachable (bytes/s): a link of zero bandwidth, kept positive.
UNREACHABLE_BYTES_PER_S = 1.0


class Estimator:
    """EWMA estimates fed by head timings, cloud reports and deadline misses (see the module doc)."""

    def __init__(
        self,
        *,
        head_prior: Mapping[int, float],
        tail_prior: Mapping[int, float],
        prior_bandwidth: float = 1_000_000.0,
        prior_link_ms: float | None = 0.0,
        alpha: float = 0.4,
        small_bytes: int = 512,
        min_transfer_ms: float = 0.05,
        rel_tol: float = 0.03,
        abs_tol_ms: float = 0.01,
        jump_factor: float = 4.0,
        jump_alpha: float = 0.8,
        stale_after: int = 20,
        miss_alpha: float = 0.2,
        miss_half_life: int = 120,
        explained_share: float = 0.25,
        jitter_alpha: float = 0.25,
        link_window: int = 8,
        fit_window: int = 16,
        fit_ratio: float = 4.0,
        noise_factor: float = 2.0,
        noise_floor_ms: float = 1.0,
        log_var_alpha: float = 0.1,
    ) -> None:
        if prior_bandwidth <= 0:
            raise ValueError(f"prior_bandwidth must be > 0 bytes/s, got {prior_bandwidth}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if rel_tol < 0 or abs_tol_ms < 0:
            raise ValueError(f"rel_tol and abs_tol_ms must be >= 0, got {rel_tol} and {abs_tol_ms}")
        if jump_factor < 1 or not 0 < jump_alpha <= 1:
            raise ValueError(f"need jump_factor >= 1 and jump_alpha in (0, 1], got {jump_factor} and {jump_alpha}")
        if link_window < 1:
            raise ValueError(f"need link_window >= 1, got {link_window}")
        if fit_window < 2 or fit_ratio <= 1:
            raise ValueError(f"need fit_window >= 2 and fit_ratio > 1, got {fit_window} and {fit_ratio}")
        self.fit_ratio = fit_ratio
        self.log_var_alpha = log_var_alpha
        self._log_var = 0.0  # EWMA of the squared log-deviation of bandwidth samples (Estimates.bandwidth_log_sd)
        self.noise_factor = noise_factor
        self.noise_floor_ms = noise_floor_ms
        self.noisy_samples = 0  # bandwidth samples below the noise, used as lower bounds only
        self.noise_misses = 0  # lone misses of payloads within the noise: no cap (module doc, "Noise")
        if stale_after < 1 or not 0 < miss_alpha <= 1 or miss_half_life < 1:
            raise ValueError(f"need stale_after >= 1, miss_alpha in (0, 1], miss_half_life >= 1; got {stale_after}, "
                             f"{miss_alpha} and {miss_half_life}")
        self.stale_after = stale_after
        self.explained_share = explained_share
        self.jitter_alpha = jitter_alpha
        self.miss_alpha = miss_alpha
        self.miss_half_life = miss_half_life
        self._bw_tick = 0  # counter value of the last bandwidth sample
        self._miss = 0.0  # miss-rate EWMA as of counter value self._miss_tick
        self._miss_tick = 0
        self._late_ms = math.inf  # elapsed time of the latest deadline miss: a later answer is that frame's
        self._capped = False  # the estimate is a deadline miss's cap (a bound): the next faster sample replaces it
        self._sampled_bw: float | None = None  # the estimate as the last network sample left it (caps aside)
        self._miss_streak = 0  # misses in a row since the last answer in time
        self._jitter: dict[int, float] = {}  # cut -> EWMA of |net_ms - expected| over answers in time
        self.jump_factor = jump_factor
        self.jump_alpha = jump_alpha
        self.rel_tol = rel_tol
        self.abs_tol_ms = abs_tol_ms
        self.alpha = alpha
        self.small_bytes = small_bytes
        self.min_transfer_ms = min_transfer_ms
        self._prior_bandwidth = float(prior_bandwidth)
        self._bandwidth: float | None = None
        self._link_unknown = prior_link_ms is None  # None: learn it, and split the first answer (module doc)
        self._link_provisional = False  # the one latency sample is the first answer's split (Estimates)
        self._link_ms = float(prior_link_ms or 0.0)
        self._link_samples: deque[float] = deque(maxlen=link_window)  # the last latency samples (module doc)
        self._fit: deque[tuple[int, float]] = deque(maxlen=fit_window)  # (nbytes, net_ms) of answers in time
        self.fitted_link_samples = 0  # latency samples from two payload sizes (module doc, "no small payload")
        self._head: dict[int, float] = dict(head_prior)
        self._head_prior = {c: float(v) for c, v in head_prior.items() if v > 0}
        self._prior_scale = 1.0  # measured / prior head time, over the measured cuts (module doc)
        self._tail: dict[int, float] = dict(tail_prior)
        self._head_measured: set[int] = set()
        self._head_min: dict[int, float] = {}
        self._tail_measured: set[int] = set()
        self._last: dict[int, float] = {}
        self._counter = 0
        self._last_cut: int | None = None
        self._peak: float | None = None
        self._version = 0
        self._snap: Estimates | None = None  # the published snapshot; None: stale, rebuilt on demand
        self.network_samples = 0
        self.censored_samples = 0
        self.unreachable_samples = 0  # publishes the broker refused (observe_unreachable)
        self._unreachable = False  # since the last refusal, no answer has come back

    # ---- what is known
    @property
    def bandwidth(self) -> float | None:
        """Measured uplink bandwidth in bytes/s, ``None`` until the first network sample."""
        return self._bandwidth

    @property
    def link_ms(self) -> float:
        return self._link_ms

    def head_ms(self, cut: int) -> float:
        return self._head.get(cut, 0.0)

    def tail_ms(self, cut: int) -> float:
        return self._tail.get(cut, 0.0)

    @property
    def miss_rate(self) -> float:
        """The deadline-miss EWMA of sent frames, halved every ``miss_half_life`` samples since its last update."""
        return self._miss * 0.5 ** ((self._counter - self._miss_tick) / self.miss_half_life)

    def _observe_miss(self, missed: bool) -> None:
        new = _ewma(self.miss_rate, 1.0 if missed else 0.0, self.miss_alpha)
        self._miss, self._miss_tick = new, self._counter

    def _check_miss(self) -> None:
        snap = self._snap
        if snap is not None and abs(self.miss_rate - snap.miss_rate) > self.rel_tol * snap.miss_rate + 0.002:
            self._changed()

    @property
    def version(self) -> int:
        """Bumped on every material change (module doc); equal versions mean the same snapshot."""
        return self._version

    def snapshot(self) -> Estimates:
        """The current estimates: the cached object while nothing changed materially (module doc)."""
        if self._snap is None:
            bw = self._bandwidth if self._bandwidth is not None else self._prior_bandwidth
            self._snap = Estimates(
                bandwidth_bytes_per_s=bw,
                link_ms=self._link_ms,
                head_ms=dict(self._head),
                tail_ms=dict(self._tail),
                last_sample=dict(self._last),
                measured=self._bandwidth is not None,
                peak_bandwidth_bytes_per_s=max(self._peak or 0.0, self._prior_bandwidth),
                version=self._version,
                measured_peak_bytes_per_s=self._peak,
                head_min_ms=dict(self._head_min),
                miss_rate=self.miss_rate,
                sampled_bandwidth_bytes_per_s=self._sampled_bw,
                bandwidth_log_sd=math.sqrt(self._log_var),
                miss_streak=self._miss_streak,
                jitter_ms=dict(self._jitter),
                unreachable=self._unreachable,
                link_provisional=self._link_provisional,
            )
        return self._snap

    def _changed(self) -> None:
        if self._snap is not None:
            self._snap = None
            self._version += 1

    def _moved(self, published: float | None, new: float, abs_tol: float) -> bool:
        return published is None or abs(new - published) > self.rel_tol * abs(published) + abs_tol

    def _touch(self, cut: int) -> None:
        self._counter += 1
        self._last[cut] = float(self._counter)
        if cut != self._last_cut:  # the staleness order changed (module doc)
            self._last_cut = cut
            self._changed()

    def _set_bandwidth(self, bw: float) -> None:
        self._bandwidth = bw
        snap = self._snap
        if snap is not None and (not snap.measured or self._moved(snap.bandwidth_bytes_per_s, bw, 0.0)):
            self._changed()
        if self._peak is None or bw > self._peak:
            self._peak = bw
            if snap is not None and self._moved(snap.measured_peak_bytes_per_s, bw, 0.0):
                self._changed()

    # ---- samples
    def observe_head(self, cut: int, ms: float) -> None:
        """A device-side time (head + exit) for ``cut``, in board milliseconds."""
        if not math.isfinite(ms) or ms < 0:
            return
        first = cut not in self._head_measured
        self._head[cut] = ms if first else _ewma(self._head.get(cut), ms, self.alpha)
        self._head_measured.add(cut)
        if ms < self._head_min.get(cut, math.inf):
            self._head_min[cut] = ms  # no snapshot change on its own: the policy reads it only when probing
        if self._snap is None or first or self._moved(self._snap.head_ms.get(cut), self._head[cut], self.abs_tol_ms):
            self._changed()
            self._rescale_priors()
        self._touch(cut)
        self._check_miss()  # the miss rate decays with every sample

    def _rescale_priors(self) -> None:
        """Scale the priors of the cuts not measured yet by how far the measured ones are off (module doc)."""
        logs = [math.log(self._head[c] / p) for c, p in self._head_prior.items()
                if c in self._head_measured and self._head[c] > 0]  # fmt: skip
        if not logs:
            return
        scale = math.exp(sum(logs) / len(logs))
        if abs(scale - self._prior_scale) <= self.rel_tol * self._prior_scale:
            return
        self._prior_scale = scale
        for c, p in self._head_prior.items():
            if c not in self._head_measured:
                self._head[c] = p * scale
        self._changed()

    def observe_tail(self, cut: int, ms: float) -> None:
        """The cloud's time for a frame of ``cut`` (decode + queue + tail), from a report."""
        if not math.isfinite(ms) or ms < 0:
            return
        first = cut not in self._tail_measured
        self._tail[cut] = ms if first else _ewma(self._tail.get(cut), ms, self.alpha)
        self._tail_measured.add(cut)
        if self._snap is not None and (first or self._moved(self._snap.tail_ms.get(cut), self._tail[cut], self.abs_tol_ms)):
            self._changed()

    def observe_network(self, cut: int, nbytes: int, net_ms: float) -> None:
        """One round trip's network part (see the module doc): ``net_ms = link_ms + nbytes / bandwidth``."""
        if not math.isfinite(net_ms) or nbytes < 0:
            return
        net_ms = max(net_ms, 0.0)
        self.network_samples += 1
        if self._unreachable:  # an answer came back: the broker is there again
            self._unreachable = False
            self._changed()
        self._touch(cut)
        late = net_ms >= self._late_ms  # the late answer of a frame already counted as a miss
        if not late:
            self._observe_miss(False)
            self._late_ms = math.inf
            if self._miss_streak:
                self._miss_streak = 0
                self._changed()
        self._check_miss()
        bw = self._bandwidth if self._bandwidth is not None else self._prior_bandwidth
        predicted_transfer = nbytes / bw * 1000.0
        if not late:
            self._observe_jitter(cut, abs(net_ms - self._link_ms - nbytes / (self._sampled_bw or bw) * 1000.0))
        # With no latency known yet, the first answer is split at the prior bandwidth: over a real uplink the
        # round trip, not a first payload's transfer, is most of its time (module doc, "No small payload").
        first = self._link_unknown and not self._link_samples and self._bandwidth is None
        small = nbytes <= self.small_bytes or (first and predicted_transfer < net_ms)
        if not late and not small:
            self._fit.append((nbytes, net_ms))
            fitted = self._fit_link()
            if fitted is not None:  # a latency sample from two sizes (module doc, "no small payload")
                self.fitted_link_samples += 1
                self._add_link_sample(fitted)
        transfer = net_ms - self._link_ms
        if small or transfer < self.min_transfer_ms:
            if late:  # it waited out an outage: not the link's latency (module doc)
                return
            if self._capped and net_ms < predicted_transfer:  # faster than the cap allows: the outage is over
                self._capped = False
                bw = self._sampled_bw or self._prior_bandwidth
                self._set_bandwidth(bw)
                predicted_transfer = nbytes / bw * 1000.0
            # Latency-dominated (or faster than the latency we believe in: that belief is too high).
            self._add_link_sample(net_ms - predicted_transfer, provisional=first and nbytes > self.small_bytes)
            return
        rate = nbytes / transfer * 1000.0
        if self._bandwidth is not None and rate <= self._bandwidth and transfer < self.noise_factor * self._noise_ms():
            self.noisy_samples += 1  # a transfer within the noise: a lower bound of the rate only (module doc)
            return
        stale = self._counter - self._bw_tick > self.stale_after
        self._bw_tick = self._counter
        if self._bandwidth is None:
            self._set_bandwidth(rate)
        elif self._capped and rate > self._bandwidth:
            self._capped = False
            self._set_bandwidth(rate)  # the first measurement above a cap replaces it (module doc)
        else:
            alpha = self.jump_alpha if stale or rate > self.jump_factor * self._bandwidth else self.alpha
            dev = math.log(rate) - math.log(self._bandwidth)
            self._log_var = (1.0 - self.log_var_alpha) * self._log_var + self.log_var_alpha * dev * dev
            if self._snap is not None and abs(math.sqrt(self._log_var) - self._snap.bandwidth_log_sd) > _LOG_SD_TOL:
                self._changed()
            self._set_bandwidth(math.exp(_ewma(math.log(self._bandwidth), math.log(rate), alpha)))
        self._sampled_bw = self._bandwidth

    def _add_link_sample(self, ms: float, *, provisional: bool = False) -> None:
        if self._link_provisional != provisional:
            self._link_provisional = provisional
            self._changed()
        self._link_samples.append(max(0.0, ms))
        self._link_ms = min(self._link_samples)  # a floor: queueing and a slower link only add (module doc)
        if self._snap is not None and self._moved(self._snap.link_ms, self._link_ms, self.abs_tol_ms):
            self._changed()

    def _floors(self) -> dict[int, tuple[int, float]]:
        """Size class (log2 of the bytes) -> (nbytes, net_ms) of the fastest recent answer of that class."""
        floors: dict[int, tuple[int, float]] = {}
        for n, net in self._fit:
            k = int(math.log2(max(n, 1)))
            if k not in floors or net < floors[k][1]:
                floors[k] = (n, net)
        return floors

    def _noise_ms(self) -> float:
        """The median excess of the recent answers over the floor of their size class: what the broker, the
        worker and the host add to a transfer, whatever the bandwidth (module doc, "Noise")."""
        if len(self._fit) < 3:
            return self.noise_floor_ms
        floors = self._floors()
        excess = sorted(net - floors[int(math.log2(max(n, 1)))][1] for n, net in self._fit)
        return max(self.noise_floor_ms, excess[len(excess) // 2])

    def _fit_link(self) -> float | None:
        """The link latency from the recent answers' two extreme payload sizes, or None (module doc).

        Per size class (a factor of 2) the fastest answer is the floor: noise only adds time. The floors of
        the smallest and the largest class, ``fit_ratio`` or more apart in bytes, give the line
        ``net = link + nbytes / bandwidth``; its intercept is the latency sample. Floors no faster for more
        bytes (a link that changed within the window, or transfers below the noise) give none.
        """
        floors = self._floors()
        if len(floors) < 2:
            return None
        n_s, net_s = floors[min(floors)]
        n_b, net_b = floors[max(floors)]
        if n_b < self.fit_ratio * n_s:
            return None
        if net_b <= net_s:  # the link changed within the window (or the transfer is below the noise): no line
            return None
        return net_s - n_s * (net_b - net_s) / (n_b - n_s)

    def _observe_jitter(self, cut: int, deviation_ms: float) -> None:
        """One answer's deviation from the expected network time (module doc, "Jitter")."""
        old = self._jitter.get(cut)
        new = _ewma(old, deviation_ms, self.jitter_alpha)
        self._jitter[cut] = new
        snap = self._snap
        if snap is not None:
            published = snap.jitter_ms.get(cut)
            if published is None or abs(new - published) > max(0.25 * published, 0.5):
                self._changed()

    def observe_unreachable(self) -> None:
        """The broker refused a publish (disconnected): for now the link carries nothing.

        The bandwidth is capped at :data:`UNREACHABLE_BYTES_PER_S`, a bound like a deadline miss's (module doc):
        the plan then prices every escalation out and the policy serves from the device cut, and the first
        answer that comes back faster - a shadow probe's, once the broker is back - lifts the cap. Before
        this, a lost broker left the estimates as they were, and two of three demo devices answered a third
        of their frames with cut 51's early exit for the 20 s the broker was away, though the full model
        fitted the deadline (issue 14).
        """
        self.unreachable_samples += 1
        if not self._unreachable:
            self._unreachable = True
            self._changed()
        current = self._bandwidth if self._bandwidth is not None else self._prior_bandwidth
        if current > UNREACHABLE_BYTES_PER_S or not self._capped:
            self._bandwidth = min(current, UNREACHABLE_BYTES_PER_S)
            self._capped = True
            self._changed()

    def observe_reachable(self) -> None:
        """The transport is connected again: the zero-bandwidth cap of :meth:`observe_unreachable` is lifted
        to the estimate as the last measurement left it (the answers that follow correct it). Without this, a
        runner that does not probe would stay on the device cut after the broker came back."""
        if not self._unreachable:
            return
        self._unreachable = False
        if self._capped and self._bandwidth is not None and self._bandwidth <= UNREACHABLE_BYTES_PER_S:
            self._capped = False
            self._set_bandwidth(self._sampled_bw or self._prior_bandwidth)
        self._changed()

    def observe_timeout(self, cut: int, nbytes: int, elapsed_ms: float) -> None:
        """A frame of ``nbytes`` got no answer within ``elapsed_ms``: cap the bandwidth accordingly."""
        transfer = elapsed_ms - self._link_ms - self.tail_ms(cut)
        if nbytes <= 0 or transfer <= 0:
            return
        self.censored_samples += 1
        self._miss_streak += 1
        self._changed()  # a deadline miss is always news
        self._touch(cut)
        current = self._bandwidth if self._bandwidth is not None else self._prior_bandwidth
        expected = self._link_ms + nbytes / current * 1000.0
        # Only a miss the estimates did not see coming is outage risk; one they explain (the link is
        # slow and the bandwidth estimate says so) is already priced by the bandwidth.
        if expected < self.explained_share * transfer:
            self._observe_miss(True)
        self._late_ms = min(self._late_ms, transfer)
        sampled = self._sampled_bw
        if (self._miss_streak == 1 and sampled is not None
                and nbytes / sampled * 1000.0 < self.noise_factor * self._noise_ms()):
            self.noise_misses += 1  # a lone miss of a payload the link carries within the noise (module doc)
            return
        cap = nbytes / transfer * 1000.0
        if cap < current:
            self._bandwidth = cap
            self._capped = True


def make_estimator(manifest: Manifest, config: DeviceConfig, *, prior_bandwidth: float = 1_000_000.0) -> Estimator:
    """Priors from the manifest: head times scaled to the board (unless converted for it), tail times as is."""
    factor = prior_factor(config.board, manifest.board, model_family(manifest.model_name))
    costs = costs_from_manifest(manifest)
    return Estimator(
        head_prior={c.index: c.head_ms * factor for c in costs},
        tail_prior={c.index: c.tail_ms for c in costs},
        prior_bandwidth=prior_bandwidth,
        prior_link_ms=None,
    )
