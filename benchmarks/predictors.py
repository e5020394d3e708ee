"""Transfer-time prediction for bursty uplinks: how long will a payload of ``n`` bytes take, at a quantile?

A plan that must meet a deadline on, say, 95 % of frames needs the 95th percentile of the transfer time of
each candidate's payload, not its mean: cellular uplinks are heavy-tailed (Sprout, NSDI'13; Fugu, NSDI'20;
``../shared/THEORY.md``, "Planning under uncertainty"). Every predictor here learns only from *completed*
transfers, as a device does, through one seam (:class:`Predictor`):

* ``observe(t, nbytes, seconds)``: a transfer of ``nbytes`` that finished at time ``t`` (s) took ``seconds``
  on the link (from the moment it reached the head of the uplink queue to its end);
* ``predict_ms(nbytes, quantile)``: the predicted transfer time (ms) of ``nbytes`` at that quantile of the
  predictive distribution (0.95: the time it exceeds on 5 % of transfers).

The implementations (which one wins, measured, is in docs/DYNAMIC.md, "Link prediction"):

* :class:`EwmaPredictor` - today's bandwidth rule of :class:`device_runner.estimator.Estimator`: an EWMA
  of the rate on its logarithm (``alpha`` 0.4; ``jump_alpha`` 0.8 for a sample ``jump_factor`` 4x above
  the estimate). A point estimate: every quantile is the same time;
* :class:`HarmonicPredictor` - RobustMPC (pensieve ``test/mpc.py``): the harmonic mean of the last 5
  rates divided by ``1 + max`` absolute relative error of the last 5 harmonic-mean predictions; also a
  point estimate (``discount=False`` gives plain MPC's harmonic mean);
* :class:`QuantilePredictor` - Sprout-like: the time at quantile ``q`` is ``nbytes`` over the ``1 - q``
  quantile of the recent per-transfer rates (empirical, or a lognormal fitted to their logarithms);
* :class:`EwmaLogNormalPredictor` - a distribution around today's EWMA: the EWMA of the log-rate and an
  EWMA of its squared deviation give a lognormal;
* :class:`ResidualQuantilePredictor` - any point predictor calibrated on its own errors (split-conformal
  style): the ``q`` time is the base's time times the ``q`` quantile of ``actual / predicted`` over its
  recent transfers, so the spread is measured in transfer times, whatever makes them vary;
* :class:`TrackedQuantilePredictor` - any point predictor times a scale per quantile, learnt online by
  quantile tracking (stochastic gradient on the pinball loss, on the logarithm): every transfer slower
  than the scaled time raises the scale by ``gamma * q``, every faster one lowers it by ``gamma * (1 - q)``,
  so in equilibrium a share ``1 - q`` of transfers is slower than predicted, whatever the link does;
* :class:`ChangePointPredictor` - wraps any of them with a two-sided CUSUM on the standardised log-rate
  and, at a detected change, drops the history before it, so the next plan uses the new regime at once.

numpy only, so any of them could run on a device; the one that won (``benchmarks.bench_predict``, docs/DYNAMIC.md
"Link prediction") does, as ``device_runner.estimator``'s ``bandwidth_log_sd`` with the policy's ``plan_quantile``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from statistics import NormalDist
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "ChangePointPredictor",
    "EwmaLogNormalPredictor",
    "EwmaPredictor",
    "HarmonicPredictor",
    "Predictor",
    "QuantilePredictor",
    "ResidualQuantilePredictor",
    "TrackedQuantilePredictor",
]

_NORMAL = NormalDist()


def _check_quantile(quantile: float) -> None:
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")


def _rate(nbytes: int, seconds: float) -> float | None:
    """bytes/s of one transfer, or None for a sample that teaches nothing (no bytes, no time, not finite)."""
    if nbytes <= 0 or not math.isfinite(seconds) or seconds <= 0:
        return None
    return nbytes / seconds


@runtime_checkable
class Predictor(Protocol):
    """Learns from completed transfers; predicts a payload's transfer time at a quantile (module doc)."""

    def observe(self, t: float, nbytes: int, seconds: float) -> None:
        """A transfer of ``nbytes`` ended at ``t`` (s) after ``seconds`` on the link."""
        ...

    def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
        """The transfer time (ms) of ``nbytes`` at ``quantile`` of the predictive distribution."""
        ...


class EwmaPredictor:
    """Today's estimator rule: geometric EWMA of the rate, with a fast jump up (module doc). Point estimate."""

    def __init__(self, *, prior_bytes_per_s: float = 125_000.0, alpha: float = 0.4,
                 jump_factor: float = 4.0, jump_alpha: float = 0.8) -> None:
        if prior_bytes_per_s <= 0 or not 0 < alpha <= 1 or not 0 < jump_alpha <= 1 or jump_factor < 1:
            raise ValueError(f"need prior > 0, alpha and jump_alpha in (0, 1], jump_factor >= 1; got "
                             f"{prior_bytes_per_s}, {alpha}, {jump_alpha}, {jump_factor}")
        self.prior = prior_bytes_per_s
        self.alpha, self.jump_factor, self.jump_alpha = alpha, jump_factor, jump_alpha
        self.bandwidth: float | None = None

    def observe(self, t: float, nbytes: int, seconds: float) -> None:
        rate = _rate(nbytes, seconds)
        if rate is None:
            return
        if self.bandwidth is None:
            self.bandwidth = rate
            return
        a = self.jump_alpha if rate > self.jump_factor * self.bandwidth else self.alpha
        self.bandwidth = math.exp((1 - a) * math.log(self.bandwidth) + a * math.log(rate))

    def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
        _check_quantile(quantile)
        bw = self.bandwidth if self.bandwidth is not None else self.prior
        return max(nbytes, 0) / bw * 1000.0


class HarmonicPredictor:
    """RobustMPC: harmonic mean of the last ``window`` rates / (1 + max recent relative error). Point estimate.

    As in pensieve's ``test/mpc.py``, the error of a prediction is ``|harmonic - sample| / sample`` of the
    *undiscounted* harmonic mean made before that sample; the discount is the largest of the last ``window``.
    """

    def __init__(self, *, window: int = 5, discount: bool = True, prior_bytes_per_s: float = 125_000.0) -> None:
        if window < 1 or prior_bytes_per_s <= 0:
            raise ValueError(f"need window >= 1 and prior > 0, got {window} and {prior_bytes_per_s}")
        self.discount = discount
        self.prior = prior_bytes_per_s
        self._rates: deque[float] = deque(maxlen=window)
        self._errors: deque[float] = deque(maxlen=window)

    def harmonic(self) -> float | None:
        """The harmonic mean of the recent rates (bytes/s), None before the first sample."""
        if not self._rates:
            return None
        return len(self._rates) / sum(1.0 / r for r in self._rates)

    def bandwidth(self) -> float:
        """The predicted rate (bytes/s): the harmonic mean, discounted by the recent error (class doc)."""
        h = self.harmonic()
        if h is None:
            return self.prior
        return h / (1.0 + max(self._errors, default=0.0)) if self.discount else h

    def observe(self, t: float, nbytes: int, seconds: float) -> None:
        rate = _rate(nbytes, seconds)
        if rate is None:
            return
        h = self.harmonic()
        if h is not None:
            self._errors.append(abs(h - rate) / rate)
        self._rates.append(rate)

    def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
        _check_quantile(quantile)
        return max(nbytes, 0) / self.bandwidth() * 1000.0


class QuantilePredictor:
    """Sprout-like: the ``q`` transfer time is ``nbytes`` over the ``1 - q`` quantile of recent rates.

    ``method="empirical"`` takes numpy's linear-interpolated quantile of the last ``window`` rates;
    ``"lognormal"`` fits a normal to their logarithms (the standard deviation floored at ``min_sigma``),
    which extrapolates beyond the few samples a short window has. Samples older than ``max_age_s`` are
    dropped, but the newest ``min_samples`` are always kept.
    """

    def __init__(self, *, window: int = 20, method: str = "empirical", max_age_s: float = 10.0,
                 min_samples: int = 3, min_sigma: float = 0.05, prior_bytes_per_s: float = 125_000.0) -> None:
        if method not in ("empirical", "lognormal"):
            raise ValueError(f"method must be 'empirical' or 'lognormal', got {method!r}")
        if window < 1 or min_samples < 1 or max_age_s <= 0 or prior_bytes_per_s <= 0:
            raise ValueError(f"need window, min_samples >= 1 and max_age_s, prior > 0; got {window}, "
                             f"{min_samples}, {max_age_s}, {prior_bytes_per_s}")
        self.method = method
        self.max_age_s, self.min_samples, self.min_sigma = max_age_s, min_samples, min_sigma
        self.prior = prior_bytes_per_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)  # (t, rate)
        self._now = -math.inf

    def observe(self, t: float, nbytes: int, seconds: float) -> None:
        rate = _rate(nbytes, seconds)
        if rate is None:
            return
        self._now = max(self._now, t)
        self._samples.append((t, rate))
        while len(self._samples) > self.min_samples and self._samples[0][0] < self._now - self.max_age_s:
            self._samples.popleft()

    def rates(self) -> np.ndarray:
        """The rates (bytes/s) in the window, oldest first."""
        return np.array([r for _, r in self._samples], dtype=np.float64)

    def rate_quantile(self, p: float) -> float:
        """The ``p`` quantile of the rate (bytes/s) under the current window (the prior before any sample)."""
        if not self._samples:
            return self.prior
        rates = self.rates()
        if self.method == "empirical":
            return float(np.quantile(rates, p))
        logs = np.log(rates)
        sigma = max(float(logs.std(ddof=1)) if len(logs) > 1 else 0.0, self.min_sigma)
        return float(math.exp(float(logs.mean()) + _NORMAL.inv_cdf(p) * sigma))

    def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
        _check_quantile(quantile)
        return max(nbytes, 0) / self.rate_quantile(1.0 - quantile) * 1000.0


class EwmaLogNormalPredictor:
    """A lognormal around today's geometric EWMA: EWMAs of the log-rate and of its squared deviation."""

    def __init__(self, *, alpha: float = 0.4, var_alpha: float = 0.1, min_sigma: float = 0.05,
                 prior_bytes_per_s: float = 125_000.0) -> None:
        if not 0 < alpha <= 1 or not 0 < var_alpha <= 1 or prior_bytes_per_s <= 0:
            raise ValueError(f"need alpha, var_alpha in (0, 1] and prior > 0, got {alpha}, {var_alpha}, "
                             f"{prior_bytes_per_s}")
        self.alpha, self.var_alpha, self.min_sigma = alpha, var_alpha, min_sigma
        self.prior = prior_bytes_per_s
        self._mu: float | None = None
        self._var = 0.0

    def observe(self, t: float, nbytes: int, seconds: float) -> None:
        rate = _rate(nbytes, seconds)
        if rate is None:
            return
        x = math.log(rate)
        if self._mu is None:
            self._mu = x
            return
        dev = x - self._mu  # against the estimate before the sample: the prediction's error
        self._var = (1 - self.var_alpha) * self._var + self.var_alpha * dev * dev
        self._mu += self.alpha * dev

    def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
        _check_quantile(quantile)
        if self._mu is None:
            return max(nbytes, 0) / self.prior * 1000.0
        sigma = max(math.sqrt(self._var), self.min_sigma)
        rate = math.exp(self._mu + _NORMAL.inv_cdf(1.0 - quantile) * sigma)
        return max(nbytes, 0) / rate * 1000.0


class ChangePointPredictor:
    """Any predictor plus a two-sided CUSUM on the log-rate; a detected change drops the older history.

    The CUSUM runs on ``z = (log rate - mean) / sd`` of the samples since the last change (``sd`` floored at
    ``min_sd``; the first ``warmup`` samples only build the mean): ``g+ = max(0, g+ + z - drift)``,
    ``g- = max(0, g- - z - drift)``; either above ``threshold`` is a change. The wrapped predictor is then
    rebuilt from ``factory`` and fed the samples since that sum was last zero (where the change began, at
    most ``history``), and the CUSUM restarts from them. ``changes`` counts the detections.
    """

    def __init__(self, factory: Callable[[], Predictor], *, drift: float = 0.5, threshold: float = 4.0,
                 warmup: int = 3, min_sd: float = 0.1, history: int = 50) -> None:
        if drift < 0 or threshold <= 0 or warmup < 2 or min_sd <= 0 or history < warmup:
            raise ValueError(f"need drift >= 0, threshold > 0, warmup >= 2, min_sd > 0, history >= warmup; "
                             f"got {drift}, {threshold}, {warmup}, {min_sd}, {history}")
        self.factory = factory
        self.drift, self.threshold, self.warmup, self.min_sd = drift, threshold, warmup, min_sd
        self.base: Predictor = factory()
        self._recent: deque[tuple[float, int, float]] = deque(maxlen=history)  # raw samples to re-feed
        self._logs: deque[float] = deque(maxlen=history)  # log-rates since the last change
        self._hi = 0.0
        self._lo = 0.0
        self._run_hi = 0  # samples since g+ was last zero
        self._run_lo = 0
        self.changes = 0

    def observe(self, t: float, nbytes: int, seconds: float) -> None:
        rate = _rate(nbytes, seconds)
        if rate is None:
            return
        x = math.log(rate)
        self._recent.append((t, nbytes, seconds))
        if len(self._logs) >= self.warmup:
            logs = np.fromiter(self._logs, dtype=np.float64)
            z = (x - float(logs.mean())) / max(float(logs.std(ddof=1)), self.min_sd)
            self._hi = max(0.0, self._hi + z - self.drift)
            self._lo = max(0.0, self._lo - z - self.drift)
            self._run_hi = self._run_hi + 1 if self._hi > 0 else 0
            self._run_lo = self._run_lo + 1 if self._lo > 0 else 0
            if self._hi > self.threshold or self._lo > self.threshold:
                self._reset(self._run_hi if self._hi > self.threshold else self._run_lo)
                return
        self._logs.append(x)
        self.base.observe(t, nbytes, seconds)

    def _reset(self, keep: int) -> None:
        """A change that began ``keep`` samples ago: forget everything before (class doc)."""
        self.changes += 1
        self.base = self.factory()
        self._hi = self._lo = 0.0
        self._run_hi = self._run_lo = 0
        self._logs.clear()
        for t, n, s in list(self._recent)[-max(keep, 1):]:
            self.base.observe(t, n, s)
            self._logs.append(math.log(n / s))

    def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
        return self.base.predict_ms(nbytes, quantile)


class ResidualQuantilePredictor:
    """A point predictor times the ``q`` quantile of its own recent ``actual / predicted`` ratios (module doc).

    Before a sample reaches the base, the base's median prediction for that payload is compared with the
    actual time; the last ``window`` log-ratios form an empirical distribution (numpy's linear-interpolated
    quantile). Until ``min_samples`` ratios exist, the base's own quantile is returned.
    """

    def __init__(self, base: Predictor | None = None, *, window: int = 50, min_samples: int = 5) -> None:
        if window < 1 or not 1 <= min_samples <= window:
            raise ValueError(f"need window >= 1 and 1 <= min_samples <= window, got {window} and {min_samples}")
        self.base: Predictor = base if base is not None else EwmaPredictor()
        self.min_samples = min_samples
        self._logs: deque[float] = deque(maxlen=window)

    def observe(self, t: float, nbytes: int, seconds: float) -> None:
        if _rate(nbytes, seconds) is None:
            return
        predicted = self.base.predict_ms(nbytes, 0.5)
        if predicted > 0:
            self._logs.append(math.log(seconds * 1000.0 / predicted))
        self.base.observe(t, nbytes, seconds)

    def ratio(self, quantile: float) -> float:
        """The ``quantile`` of ``actual / predicted`` over the window (1 before ``min_samples``)."""
        if len(self._logs) < self.min_samples:
            return 1.0
        return math.exp(float(np.quantile(np.fromiter(self._logs, dtype=np.float64), quantile)))

    def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
        _check_quantile(quantile)
        if len(self._logs) < self.min_samples:
            return self.base.predict_ms(nbytes, quantile)
        return self.base.predict_ms(nbytes, 0.5) * self.ratio(quantile)


class TrackedQuantilePredictor:
    """A point predictor times a per-quantile scale learnt by online quantile tracking (module doc).

    A quantile gets its scale (1 to start with) the first time it is asked for; every later sample updates
    every known scale against the base's median prediction made before the sample reaches the base:
    ``log s_q += gamma * (q if slower than the scaled time else -(1 - q))``.
    """

    def __init__(self, base: Predictor | None = None, *, gamma: float = 0.05) -> None:
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.base: Predictor = base if base is not None else EwmaPredictor()
        self.gamma = gamma
        self._log_scale: dict[float, float] = {}

    def scale(self, quantile: float) -> float:
        """The current factor on the base's median time for ``quantile`` (1 until it has learnt)."""
        return math.exp(self._log_scale.get(quantile, 0.0))

    def observe(self, t: float, nbytes: int, seconds: float) -> None:
        if _rate(nbytes, seconds) is None:
            return
        median = self.base.predict_ms(nbytes, 0.5)
        actual = seconds * 1000.0
        for q, log_s in self._log_scale.items():
            slower = actual > median * math.exp(log_s)
            self._log_scale[q] = log_s + self.gamma * (q if slower else -(1.0 - q))
        self.base.observe(t, nbytes, seconds)

    def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
        _check_quantile(quantile)
        self._log_scale.setdefault(quantile, 0.0)
        return self.base.predict_ms(nbytes, 0.5) * self.scale(quantile)
