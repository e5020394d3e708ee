"""benchmarks.predictors: each predictor against expectations computed by hand (module doc of predict)."""

from __future__ import annotations

import math

import pytest

from benchmarks.predictors import (
    ChangePointPredictor,
    EwmaLogNormalPredictor,
    EwmaPredictor,
    HarmonicPredictor,
    Predictor,
    QuantilePredictor,
    ResidualQuantilePredictor,
    TrackedQuantilePredictor,
)


def feed(p: Predictor, rates: list[float], nbytes: int = 1000) -> None:
    """One transfer of ``nbytes`` per rate (bytes/s), one second apart."""
    for i, r in enumerate(rates):
        p.observe(float(i), nbytes, nbytes / r)


def test_every_predictor_is_a_predictor():
    for p in (EwmaPredictor(), HarmonicPredictor(), QuantilePredictor(), EwmaLogNormalPredictor(),
              ChangePointPredictor(QuantilePredictor), ResidualQuantilePredictor(), TrackedQuantilePredictor()):
        assert isinstance(p, Predictor)


def test_prior_before_any_sample():
    # 125 kB/s prior: 1000 B take 8 ms
    assert EwmaPredictor().predict_ms(1000) == pytest.approx(8.0)
    assert HarmonicPredictor().predict_ms(1000, 0.95) == pytest.approx(8.0)
    assert QuantilePredictor().predict_ms(1000, 0.95) == pytest.approx(8.0)


def test_ewma_matches_the_estimator_rule():
    p = EwmaPredictor(alpha=0.4)
    feed(p, [1000.0, 8000.0 / 3])  # 2.67x: below the 4x jump, alpha 0.4 on the logarithm
    assert p.bandwidth == pytest.approx(math.exp(0.6 * math.log(1000) + 0.4 * math.log(8000 / 3)))
    feed(p, [100_000.0])  # far above: jump_alpha 0.8
    before = math.exp(0.6 * math.log(1000) + 0.4 * math.log(8000 / 3))
    assert p.bandwidth == pytest.approx(math.exp(0.2 * math.log(before) + 0.8 * math.log(100_000)))
    # a point estimate: the quantile does not matter
    assert p.predict_ms(500, 0.05) == p.predict_ms(500, 0.95) == pytest.approx(500 / p.bandwidth * 1000)


def test_harmonic_mean_and_robust_discount():
    p = HarmonicPredictor(discount=False)
    feed(p, [1.0, 2.0, 4.0])
    assert p.harmonic() == pytest.approx(3 / (1 + 0.5 + 0.25))  # 12/7
    # errors of the harmonic mean before each sample: |1 - 2| / 2 = 0.5; |4/3 - 4| / 4 = 2/3
    robust = HarmonicPredictor()
    feed(robust, [1.0, 2.0, 4.0])
    assert robust.bandwidth() == pytest.approx((12 / 7) / (1 + 2 / 3))
    assert robust.predict_ms(10, 0.5) == pytest.approx(10 / ((12 / 7) / (5 / 3)) * 1000)


def test_harmonic_window_is_the_last_five():
    p = HarmonicPredictor(discount=False)
    feed(p, [1000.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # the first drops out
    assert p.harmonic() == pytest.approx(1.0)


def test_empirical_quantile_of_a_known_sample():
    p = QuantilePredictor(window=10)
    feed(p, [float(r) for r in range(1, 11)])  # rates 1..10 bytes/s
    # 5th percentile of 1..10, linear interpolation: 1 + 0.05 * 9 = 1.45
    assert p.rate_quantile(0.05) == pytest.approx(1.45)
    assert p.predict_ms(29, 0.95) == pytest.approx(29 / 1.45 * 1000)
    assert p.predict_ms(11, 0.5) == pytest.approx(11 / 5.5 * 1000)  # the median rate


def test_lognormal_quantile():
    p = QuantilePredictor(window=10, method="lognormal")
    feed(p, [math.e, math.e**3])  # logs 1 and 3: mean 2, sample sd sqrt(2)
    z = -1.6448536269514722  # the normal's 5th percentile
    assert p.rate_quantile(0.05) == pytest.approx(math.exp(2 + z * math.sqrt(2)))


def test_quantile_window_drops_old_samples_but_keeps_the_newest():
    p = QuantilePredictor(window=50, max_age_s=5.0, min_samples=2)
    p.observe(0.0, 100, 1.0)
    p.observe(1.0, 100, 1.0)
    p.observe(100.0, 1000, 1.0)
    assert list(p.rates()) == [100.0, 1000.0]  # the oldest aged out; two kept


def test_ewma_lognormal_widens_with_variance():
    p = EwmaLogNormalPredictor(alpha=0.5, var_alpha=0.5)
    feed(p, [1.0, math.e**2])  # mu 0 -> dev 2 -> var 0.5 * 4 = 2, mu = 1
    z = 1.6448536269514722
    assert p.predict_ms(1, 0.95) == pytest.approx(1000 / math.exp(1 - z * math.sqrt(2)))
    assert p.predict_ms(1, 0.5) == pytest.approx(1000 / math.e)


def test_change_point_detects_a_step_within_two_samples():
    p = ChangePointPredictor(lambda: QuantilePredictor(window=20))
    steady = [1000.0, 1100.0, 900.0, 1050.0, 950.0, 1000.0, 1020.0, 980.0]
    feed(p, steady)
    assert p.changes == 0
    for i, r in enumerate([100.0, 110.0]):  # a 10x drop
        p.observe(100.0 + i, 1000, 1000 / r)
    assert p.changes == 1
    # after the reset only post-change samples remain: the median rate is the drop's
    assert p.predict_ms(1000, 0.5) > 5_000.0
    # a plain window still mixes the old regime in
    plain = QuantilePredictor(window=20)
    feed(plain, steady + [100.0, 110.0])
    assert plain.predict_ms(1000, 0.5) < 2_000.0


def test_change_point_quiet_on_noise():
    import numpy as np

    rng = np.random.default_rng(0)
    p = ChangePointPredictor(QuantilePredictor)
    feed(p, list(1000.0 * np.exp(rng.normal(0, 0.1, 200))))
    assert p.changes <= 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="quantile"):
        EwmaPredictor().predict_ms(10, 1.0)
    with pytest.raises(ValueError, match="method"):
        QuantilePredictor(method="mean")
    p = QuantilePredictor()
    p.observe(0.0, 0, 1.0)  # no bytes: ignored
    p.observe(0.0, 10, 0.0)  # no time: ignored
    assert len(p.rates()) == 0


def test_residual_quantile_scales_the_base_by_its_own_errors():
    class Fixed:
        """A point predictor that always says 10 ms per 1000 B (100 kB/s)."""

        def observe(self, t: float, nbytes: int, seconds: float) -> None:
            pass

        def predict_ms(self, nbytes: int, quantile: float = 0.5) -> float:
            return nbytes / 100.0

    p = ResidualQuantilePredictor(Fixed(), window=10, min_samples=5)
    for i, actual_ms in enumerate([10.0, 20.0, 40.0, 10.0]):
        p.observe(float(i), 1000, actual_ms / 1000.0)
    assert p.predict_ms(1000, 0.95) == pytest.approx(10.0)  # 4 ratios < min_samples: the base as is
    p.observe(4.0, 1000, 0.080)  # ratios 1, 2, 4, 1, 8: log2 0, 1, 2, 0, 3
    # 75th percentile of log2 [0, 0, 1, 2, 3] is 2 -> ratio 4; the median is 1 -> ratio 2
    assert p.predict_ms(2000, 0.75) == pytest.approx(20.0 * 4)
    assert p.predict_ms(1000, 0.5) == pytest.approx(10.0 * 2)


def test_tracked_quantile_steps_by_gamma():
    p = TrackedQuantilePredictor(EwmaPredictor(prior_bytes_per_s=1000.0, alpha=1.0), gamma=0.1)
    assert p.predict_ms(1000, 0.9) == pytest.approx(1000.0)  # registers q = 0.9 at scale 1
    p.observe(0.0, 1000, 2.0)  # 2000 ms > 1000 ms predicted: log s += 0.1 * 0.9
    assert p.scale(0.9) == pytest.approx(math.exp(0.09))
    # the base (alpha 1) now says 500 B/s: 1000 B in 2000 ms; a faster sample lowers the scale by 0.1 * 0.1
    p.observe(1.0, 1000, 1.0)
    assert p.scale(0.9) == pytest.approx(math.exp(0.08))
    assert p.predict_ms(1000, 0.9) == pytest.approx(1000.0 * math.exp(0.08))


def test_tracked_quantile_converges_to_the_target_share():
    import numpy as np

    rng = np.random.default_rng(3)
    p = TrackedQuantilePredictor(gamma=0.05)
    slower = []
    for i, r in enumerate(1000.0 * np.exp(rng.normal(0, 0.5, 4000))):
        predicted = p.predict_ms(1000, 0.95)
        actual = 1000 / r * 1000
        slower.append(actual > predicted)
        p.observe(float(i), 1000, actual / 1000)
    assert abs(np.mean(slower[1000:]) - 0.05) < 0.02
