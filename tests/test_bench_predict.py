"""benchmarks.bench_predict on a synthetic trace (fast; the shared traces are not needed)."""

from __future__ import annotations

from benchmarks import bench_predict
from sdk.traces import synthetic_trace


def test_accuracy_and_plan_on_a_synthetic_trace():
    trace = synthetic_trace(seed=1, duration_s=60.0)
    names = ["ewma (today)", "quantile, empirical (Sprout-like)"]
    acc = bench_predict.accuracy(trace, names, target=0.95, duration_s=30.0)
    for samples, mdape, under_median, under_target in acc.values():
        assert samples > 0 and mdape >= 0
        assert 0 <= under_target <= 1 and 0 <= under_median <= 1
    # a point predictor's 95 % time is its median time: the same under-prediction rate
    assert acc["ewma (today)"][2] == acc["ewma (today)"][3]
    oracle = bench_predict.plan(trace, None, target=0.95, deadline_ms=300, rtt_ms=50, duration_s=30.0)
    assert oracle.missed == 0 and oracle.sent > 0 and oracle.bytes_in_time == oracle.bytes_sent
    res = bench_predict.plan(trace, bench_predict.PREDICTORS[names[1]](), target=0.95, deadline_ms=300,
                             rtt_ms=50, duration_s=30.0)
    assert res.frames == oracle.frames and res.bytes_in_time <= res.bytes_sent


def test_missing_traces_folder_says_so(monkeypatch):
    monkeypatch.setattr(bench_predict, "shared_traces", lambda: [])
    assert "No shared traces found" in bench_predict.run()


def test_main_on_a_bad_target_exits_with_a_usage_error(capsys):
    import pytest

    with pytest.raises(SystemExit):
        bench_predict.main(["--target", "1.5"])
    assert "--target" in capsys.readouterr().err
