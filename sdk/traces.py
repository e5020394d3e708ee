"""Bandwidth traces: load real uplink traces and answer "when does a transfer of n bytes end?".

Two formats (see ../shared/traces/README.md):

* **mahimahi** (``*.up``): one integer per line, a time in ms at which one 1500-byte packet may cross
  the link; a repeated time means several packets in that millisecond. The trace loops at its end.
* **two columns** (the HSDPA Norway logs): ``seconds  Mbit/s`` per line; the rate holds until the next line.

Both become a piecewise-constant rate over bins (mahimahi: 10 ms bins of its delivery opportunities;
two-column: one bin per line) that loops with the trace's period. :meth:`BandwidthTrace.transfer_end`
integrates the rate from a start time until n bytes have crossed, so a shaper can release a frame
exactly when the trace allows it; outages (zero-rate bins) simply push the end later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.errors import TraceError

__all__ = ["MAHIMAHI_PACKET_BYTES", "OUTAGE_BYTES_PER_S", "TRACK_WINDOW_S", "BandwidthTrace", "load_trace", "pick_trace", "shared_traces",
           "synthetic_trace"]

MAHIMAHI_PACKET_BYTES = 1500
MAHIMAHI_BIN_S = 0.010
#: the window (s) of the trace's mean rate a bandwidth estimate is compared with (estimate / true)
TRACK_WINDOW_S = 1.0
#: below this true rate (bytes/s) the trace is in an outage: no estimate / true ratio is taken there
OUTAGE_BYTES_PER_S = 1e3


@dataclass(frozen=True, slots=True)
class BandwidthTrace:
    name: str
    starts: np.ndarray  # bin start times (s), starts[0] == 0, increasing
    rates: np.ndarray  # bytes/s in each bin
    period: float  # the trace loops after this many seconds
    _cum: np.ndarray = field(init=False, repr=False, compare=False)  # bytes delivered by each bin start

    def __post_init__(self) -> None:
        if len(self.starts) == 0 or len(self.starts) != len(self.rates):
            raise TraceError(f"trace {self.name}: {len(self.starts)} bin starts but {len(self.rates)} rates")
        if self.period <= self.starts[-1]:
            raise TraceError(f"trace {self.name}: period {self.period} must exceed the last bin start")
        if float(self.rates.sum()) <= 0:
            raise TraceError(f"trace {self.name}: every rate is zero; nothing would ever be sent")
        durations = np.diff(np.append(self.starts, self.period))
        object.__setattr__(self, "_cum", np.concatenate([[0.0], np.cumsum(self.rates * durations)]))

    @property
    def bytes_per_period(self) -> float:
        return float(self._cum[-1])

    def mean_rate(self) -> float:
        return self.bytes_per_period / self.period

    def rate_at(self, t: float) -> float:
        """The true rate (bytes/s) at time t (looping)."""
        tt = t % self.period
        return float(self.rates[np.searchsorted(self.starts, tt, side="right") - 1])

    def rate_before(self, t: float, window: float = TRACK_WINDOW_S) -> float:
        """The mean rate (bytes/s) over the ``window`` seconds before ``t`` (from 0 when ``t < window``): the
        "true" rate a bandwidth estimate made at ``t`` is compared with (the demo's and the replay's
        estimate / true ratio)."""
        start = max(0.0, t - window)
        return (self.delivered(t) - self.delivered(start)) / window if t > start else self.rate_at(t)

    def estimate_ratio(self, t: float, estimate: float | None) -> float | None:
        """A bandwidth ``estimate`` made at ``t`` over :meth:`rate_before` ``t``; None with no estimate, or in an
        outage of the trace (under 1 kB/s), where any estimate is "off". The demo's and the replay's
        estimate / true (issue 14's goal: median within 0.7-1.3x)."""
        if not estimate:
            return None
        true = self.rate_before(t)
        return estimate / true if true >= OUTAGE_BYTES_PER_S else None

    def delivered(self, t: float) -> float:
        """Bytes the link could have carried from 0 to t (looping), a non-decreasing function."""
        loops, tt = divmod(t, self.period)
        i = int(np.searchsorted(self.starts, tt, side="right") - 1)
        return loops * self.bytes_per_period + float(self._cum[i]) + float(self.rates[i]) * (tt - self.starts[i])

    def transfer_end(self, t0: float, nbytes: float) -> float:
        """The time at which `nbytes` sent from t0 (alone on the link) have fully crossed it."""
        if nbytes <= 0:
            return t0
        target = self.delivered(t0) + nbytes
        loops, rem = divmod(target, self.bytes_per_period)
        cum = self._cum
        if rem == 0:  # lands exactly on a period boundary: the first moment that much is delivered
            loops, rem = loops - 1, self.bytes_per_period
        i = int(np.searchsorted(cum, rem, side="left") - 1)  # last bin whose start delivered < rem
        i = min(max(i, 0), len(self.rates) - 1)
        while self.rates[i] <= 0:  # cum is flat over outages: move to the bin that delivers
            i += 1
        return loops * self.period + float(self.starts[i]) + (rem - float(cum[i])) / float(self.rates[i])

    def shifted(self, start_s: float) -> BandwidthTrace:
        """The same loop, starting ``start_s`` seconds in (modulo the period): ``rate_at(t)`` of the result is
        ``rate_at(t + start_s)`` of this one. Named ``"<name>+<start>s"`` (the name as is for a start of 0)."""
        off = float(start_s) % self.period
        if off == 0.0:
            return self
        i = int(np.searchsorted(self.starts, off, side="right") - 1)  # the bin that contains off
        starts = np.concatenate([[0.0], self.starts[i + 1:] - off, self.starts[: i + 1] + (self.period - off)])
        rates = np.concatenate([[self.rates[i]], self.rates[i + 1:], self.rates[: i + 1]])
        if self.starts[i] == off:  # off is a bin start: that bin is already first, whole
            starts, rates = starts[:-1], rates[:-1]
        return BandwidthTrace(f"{self.name}+{start_s:g}s", starts, rates, self.period)

    def window_rates(self, window_s: float, duration_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(window start times, mean bytes/s in each window) over `duration_s` (default: one period)."""
        end = self.period if duration_s is None else duration_s
        t = np.arange(0.0, end, window_s)
        rates = np.array([(self.delivered(a + window_s) - self.delivered(a)) / window_s for a in t])
        return t, rates


def _load_mahimahi(path: Path) -> BandwidthTrace:
    try:
        ms = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise TraceError(f"{path}: not a mahimahi trace (one integer ms timestamp per line): {exc}") from None
    if ms.size == 0 or (np.diff(ms) < 0).any():
        raise TraceError(f"{path}: a mahimahi trace needs non-decreasing ms timestamps, one per line")
    period = max(float(ms[-1]) / 1000.0, MAHIMAHI_BIN_S)
    nbins = int(np.ceil(period / MAHIMAHI_BIN_S))
    counts = np.bincount(np.minimum((ms / 1000.0 / MAHIMAHI_BIN_S).astype(np.int64), nbins - 1), minlength=nbins)
    starts = np.arange(nbins) * MAHIMAHI_BIN_S
    return BandwidthTrace(path.name, starts, counts * MAHIMAHI_PACKET_BYTES / MAHIMAHI_BIN_S, nbins * MAHIMAHI_BIN_S)


def _load_two_column(path: Path) -> BandwidthTrace:
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise TraceError(f"{path}: expected two columns 'seconds Mbit/s' per line: {exc}") from None
    if data.shape[1] < 2 or len(data) < 2:
        raise TraceError(f"{path}: expected at least two lines of 'seconds Mbit/s'")
    t = data[:, 0] - data[0, 0]
    if (np.diff(t) <= 0).any():
        raise TraceError(f"{path}: times in the first column must increase")
    rates = np.clip(data[:, 1], 0, None) * 1e6 / 8
    period = float(t[-1] + (t[-1] - t[-2]))
    return BandwidthTrace(path.name, t, rates, period)


def load_trace(path: str | Path) -> BandwidthTrace:
    """A mahimahi ``.up``/``.down`` trace or a two-column ``seconds Mbit/s`` log, by its content."""
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"trace {p} does not exist: pass a mahimahi .up file (one ms timestamp per line) or a "
                         f"'seconds Mbit/s' log, e.g. one of ../shared/traces/mahimahi/*.up")
    first = next((ln.split() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()), [])
    try:
        return _load_mahimahi(p) if len(first) == 1 else _load_two_column(p)
    except TraceError as exc:
        raise TraceError(f"{exc}; a trace is a mahimahi .up file (one ms timestamp per line) or a "
                         f"'seconds Mbit/s' log") from None


def shared_traces(root: str | Path | None = None) -> list[Path]:
    """The real traces in ../shared/traces (next to the checkout), or [] when absent."""
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "traces"
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.is_file() and (p.suffix == ".up" or p.suffix == ".log"))


def pick_trace(arg: str | None, root: str | Path | None = None) -> tuple[str, BandwidthTrace, str]:
    """(spec a device process reloads, trace, a note naming the file actually read) for ``--trace ARG``.

    A path loads that file; None picks ``sdk.defaults.DEFAULT_TRACE`` among the shared traces (else the first
    one found); 'synthetic', or no shared traces at all, gives the seeded synthetic stand-in, and the note
    says so in capitals: it is not a measured link."""
    from sdk.defaults import DEFAULT_TRACE

    if arg and arg != "synthetic":
        return arg, load_trace(arg), f"trace {arg}"
    found = [] if arg == "synthetic" else shared_traces(root)
    if found:
        path = next((p for p in found if p.name == DEFAULT_TRACE), found[0])
        return str(path), load_trace(path), f"real trace {path.name} ({path.resolve()})"
    why = "asked for" if arg == "synthetic" else "no real trace found (../shared/traces is absent)"
    return "synthetic:0", synthetic_trace(0), f"SYNTHETIC trace synthetic-0 ({why}; not a measured link)"


def synthetic_trace(seed: int = 0, duration_s: float = 120.0, step_s: float = 1.0) -> BandwidthTrace:
    """A bundled stand-in when no real trace is present: a seeded random walk between 0.2 and 8 Mbit/s
    with occasional deep fades, one step per second."""
    rng = np.random.default_rng(seed)
    n = int(duration_s / step_s)
    log_rate = np.log(2.0) + np.cumsum(rng.normal(0, 0.25, n))
    mbit = np.clip(np.exp(log_rate), 0.2, 8.0)
    fades = rng.random(n) < 0.04
    mbit[fades] = 0.1
    return BandwidthTrace(f"synthetic-{seed}", np.arange(n) * step_s, mbit * 1e6 / 8, n * step_s)
