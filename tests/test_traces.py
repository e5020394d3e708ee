"""Bandwidth traces: both formats, exact transfer times (hand-computed), looping, outages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdk.traces import BandwidthTrace, load_trace, pick_trace, shared_traces, synthetic_trace


def steps(*rates: float, step: float = 1.0) -> BandwidthTrace:
    return BandwidthTrace("t", np.arange(len(rates)) * step, np.array(rates, dtype=float), len(rates) * step)


def test_constant_rate():
    t = steps(1000.0)
    assert t.transfer_end(0.0, 1000) == pytest.approx(1.0)
    assert t.transfer_end(0.25, 500) == pytest.approx(0.75)
    assert t.transfer_end(3.0, 0) == 3.0


def test_outage_pushes_the_end_past_it():
    t = steps(1000.0, 0.0, 1000.0)  # 1 s up, 1 s down, 1 s up; loops every 3 s
    assert t.transfer_end(0.0, 1500) == pytest.approx(2.5)  # 1000 B by t=1, none in [1, 2], 500 B more
    assert t.transfer_end(1.2, 100) == pytest.approx(2.1)  # starts during the outage
    assert t.transfer_end(0.0, 5000) == pytest.approx(7.0)  # two loops (4000 B by t=6), then 1000 B more
    assert t.rate_at(1.5) == 0.0 and t.rate_at(3.5) == 1000.0  # looping
    assert t.mean_rate() == pytest.approx(2000 / 3)


def test_transfer_end_inverts_delivered():
    t = synthetic_trace(seed=3, duration_s=30)
    rng = np.random.default_rng(0)
    for t0, n in zip(rng.uniform(0, 80, 50), rng.uniform(1, 3e6, 50), strict=True):
        end = t.transfer_end(t0, n)
        assert end >= t0
        assert t.delivered(end) - t.delivered(t0) == pytest.approx(n, rel=1e-9)


def test_a_shifted_trace_starts_later_in_the_same_loop():
    t = steps(1000.0, 0.0, 3000.0)  # loops every 3 s
    s = t.shifted(1.5)  # half-way through the outage
    assert s.name == "t+1.5s" and s.period == 3.0
    # by hand: the outage's second half, the 3000 B/s second, the 1000 B/s second, the outage's first half
    assert list(s.starts) == [0.0, 0.5, 1.5, 2.5] and list(s.rates) == [0.0, 3000.0, 1000.0, 0.0]
    assert s.transfer_end(0.0, 1500) == pytest.approx(1.0)  # 0.5 s of outage, then 3000 B/s
    assert list(t.shifted(1.0).starts) == [0.0, 1.0, 2.0] and list(t.shifted(1.0).rates) == [0.0, 3000.0, 1000.0]
    assert t.shifted(0.0) is t and t.shifted(3.0) is t  # a whole loop
    r = synthetic_trace(seed=3, duration_s=30)
    for off in (0.25, 7.0, 29.9):
        sh = r.shifted(off)
        assert sh.bytes_per_period == pytest.approx(r.bytes_per_period)
        for x in (0.0, 0.05, 3.3, 12.4, 40.6):  # (not on a bin boundary: float rounding picks either side)
            assert sh.rate_at(x) == r.rate_at(x + off)


def test_mahimahi_format(tmp_path):
    path = tmp_path / "x.up"
    # packets at 0 ms (x2), 5 ms, 15 ms, 30 ms: 10 ms bins hold 3, 1, 0 packets of 1500 B; period 30 ms
    path.write_text("0\n0\n5\n15\n30\n")
    t = load_trace(path)
    assert t.period == pytest.approx(0.03)
    assert list(t.rates) == pytest.approx([3 * 1500 / 0.01, 1500 / 0.01, 1500 / 0.01])
    assert t.transfer_end(0.0, 4500) == pytest.approx(0.01)


def test_two_column_format(tmp_path):
    path = tmp_path / "x.log"
    path.write_text("10.0 8.0\n11.0 0.8\n12.5 4.0\n")  # Mbit/s; times need not start at 0
    t = load_trace(path)
    assert list(t.starts) == [0.0, 1.0, 2.5]
    assert t.rate_at(0.5) == pytest.approx(1e6) and t.rate_at(2.0) == pytest.approx(1e5)
    assert t.period == pytest.approx(4.0)


@pytest.mark.parametrize(("text", "match"), [("a b c\n", "two columns"), ("5\n3\n", "non-decreasing"),
                                             ("1 0\n2 0\n", "every rate is zero")])
def test_bad_traces_are_refused(tmp_path, text, match):
    path = tmp_path / "bad.log"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_trace(path)


def _raw_bytes_by(path, horizon_s: float) -> float:
    """Bytes the raw file allows before `horizon_s`, computed straight from its lines (no BandwidthTrace)."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines[0]) == 1:  # mahimahi: one 1500-byte packet per line, ms timestamps
        return 1500.0 * sum(1 for ln in lines if int(ln[0]) < horizon_s * 1000)
    t0 = float(lines[0][0])
    total = 0.0
    for (a, mbit), (b, _) in zip(lines, lines[1:], strict=False):
        a, b = float(a) - t0, float(b) - t0
        total += float(mbit) * 1e6 / 8 * max(0.0, min(b, horizon_s) - a)
    return total


def test_real_traces_load_and_the_shaped_throughput_follows_them():
    paths = shared_traces()
    if not paths:
        pytest.skip("../shared/traces is absent on this machine; the synthetic trace stands in for the demo")
    for p in paths:
        t = load_trace(p)
        assert 1e3 < t.mean_rate() < 1e8, p.name  # between 8 kbit/s and 800 Mbit/s
        # back-to-back 64 kB sends through the shaper for ~20 s deliver what the raw file allows
        now, sent = 0.0, 0
        while now < 20.0:
            now = t.transfer_end(now, 65536)
            sent += 65536
        raw = _raw_bytes_by(p, now)
        assert sent == pytest.approx(raw, rel=0.02, abs=3 * 65536), p.name


def test_a_file_that_is_not_a_trace_is_one_config_error_that_says_what_a_trace_is(tmp_path: Path) -> None:
    from sdk.errors import ConfigError, TraceError

    notes = tmp_path / "README.md"
    notes.write_text("Use these traces in benchmarks.\n")
    with pytest.raises(TraceError, match=r"README.md: expected two columns.*a trace is a mahimahi .up file") as info:
        load_trace(notes)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    with pytest.raises(TraceError, match=r"trace .*missing.up does not exist: pass a mahimahi .up file"):
        load_trace(tmp_path / "missing.up")


def test_rate_before_is_the_mean_rate_over_the_window_before_t() -> None:
    """1 kB/s for 2 s, then 3 kB/s: the second before t=2.5 is half at each rate; before 1 s it divides by the
    whole window (the demo's and the replay's estimate / true use the same rule)."""
    tr = BandwidthTrace("step", np.array([0.0, 2.0]), np.array([1000.0, 3000.0]), 4.0)
    assert tr.rate_before(2.5) == pytest.approx(2000.0)
    assert tr.rate_before(3.5, window=1.0) == pytest.approx(3000.0)
    assert tr.rate_before(0.5) == pytest.approx(500.0)


def test_pick_trace_names_the_file_it_read_and_says_synthetic_in_capitals(tmp_path: Path) -> None:
    from sdk.defaults import DEFAULT_TRACE

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "Aaa-first.up").write_text("0\n5\n10\n")
    (tmp_path / "b").mkdir()
    default = tmp_path / "b" / DEFAULT_TRACE
    default.write_text("0\n1\n2\n3\n")
    spec, trace, note = pick_trace(None, root=tmp_path)
    assert spec == str(default) and note == f"real trace {DEFAULT_TRACE} ({default.resolve()})"  # not the first found
    assert trace.period == load_trace(default).period
    default.unlink()
    assert pick_trace(None, root=tmp_path)[0].endswith("Aaa-first.up")  # without the default: the first one
    spec, trace, note = pick_trace(None, root=tmp_path / "absent")
    assert spec == "synthetic:0" and trace.name == "synthetic-0" and note.startswith("SYNTHETIC") and "absent" in note
    assert "asked for" in pick_trace("synthetic", root=tmp_path)[2]
    own = tmp_path / "mine.log"
    own.write_text("0 2.0\n1 4.0\n")
    assert pick_trace(str(own))[::2] == (str(own), f"trace {own}")
