"""Link prediction on real uplink traces: which predictor of a payload's transfer time plans best?

    python -m benchmarks.bench_predict [--deadline-ms 300] [--target 0.95] [--rtt-ms 50] [--duration 600]
    python -m benchmarks.run predict    # the same at the defaults, into docs/BENCHMARKS.md

Every predictor of :mod:`benchmarks.predictors` runs side by side on every shared trace
(``sdk.traces.shared_traces``), first ``--duration`` seconds of each, in two passes:

* **accuracy**: a sender offers one payload per frame (``FRAME_S``, 6 fps) cycling over ``SIZES`` (2, 10, 50,
  150 kB), FIFO over the trace (``BandwidthTrace.transfer_end``); a frame is skipped while the link is busy
  more than ``MAX_BACKLOG_S`` ahead (a device does not queue without bound). Before each send every
  predictor, having seen only the transfers completed by then (as a device does), predicts the payload's
  transfer time (from reaching the head of the queue to its end) at the median and at ``--target``.
  Reported: the median absolute relative error of the median prediction, and the under-prediction rate
  (actual > predicted) at the target quantile - 1 - target is calibrated.
* **plan**: per predictor its own FIFO link; each frame sends the largest size whose predicted latency
  (round trip + the transfer of the bytes still unacknowledged + its own, at the target quantile) fits the
  deadline, else nothing (the frame stays on the device); with no transfer completed for ``PROBE_AFTER_S``
  the smallest payload goes out as a shadow probe (it teaches the predictor, answers no frame). Reported:
  the deadline-miss rate of the frames sent, the frames sent, and the bytes of frames answered within the
  deadline over a greedy link oracle's (the largest size that fits knowing the trace ahead) - a predictor
  that never sends never misses, so both matter.

The round trip is a constant added to the latency; the predictors see transfer times only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
from sdk.defaults import CELLULAR_RTT_MS
from sdk.traces import BandwidthTrace, load_trace, shared_traces

__all__ = ["PREDICTORS", "PlanResult", "Row", "accuracy", "main", "parse_args", "plan", "run"]

COMMAND = "python -m benchmarks.bench_predict"
SIZES: tuple[int, ...] = (2_000, 10_000, 50_000, 150_000)
FRAME_S = 1.0 / 6.0
MAX_BACKLOG_S = 0.5
DEADLINE_MS = 300.0
TARGET = 0.95
DURATION_S = 600.0

#: name -> factory; "point" predictors give one time whatever the quantile
PREDICTORS: dict[str, Callable[[], Predictor]] = {
    "ewma (today)": EwmaPredictor,
    "harmonic (MPC)": lambda: HarmonicPredictor(discount=False),
    "robust harmonic (RobustMPC)": HarmonicPredictor,
    "quantile, empirical (Sprout-like)": QuantilePredictor,
    "quantile, lognormal": lambda: QuantilePredictor(method="lognormal"),
    "ewma-lognormal": EwmaLogNormalPredictor,
    "change-point + quantile, empirical": lambda: ChangePointPredictor(QuantilePredictor),
    "change-point + ewma-lognormal": lambda: ChangePointPredictor(EwmaLogNormalPredictor),
    "ewma + residual quantile": ResidualQuantilePredictor,
    "change-point + ewma + residual quantile": lambda: ChangePointPredictor(ResidualQuantilePredictor),
    "ewma + tracked quantile": TrackedQuantilePredictor,
    "harmonic + tracked quantile": lambda: TrackedQuantilePredictor(HarmonicPredictor(discount=False)),
    "ewma-lognormal + tracked quantile": lambda: TrackedQuantilePredictor(EwmaLogNormalPredictor()),
}
#: with no transfer completed for this long the plan sends the smallest payload as a shadow probe (as the
#: runner's probes do), so a predictor that priced every payload out can learn that the link recovered
PROBE_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class PlanResult:
    frames: int
    sent: int
    missed: int
    bytes_sent: int
    bytes_in_time: int  # bytes of the frames answered within the deadline
    probes: int

    @property
    def miss_rate(self) -> float:
        return self.missed / self.sent if self.sent else 0.0


@dataclass(frozen=True, slots=True)
class Row:
    trace: str
    predictor: str
    samples: int
    mdape: float  # median |predicted - actual| / actual of the median prediction
    under_median: float  # actual > predicted at the median
    under_target: float  # actual > predicted at the target quantile
    plan: PlanResult
    oracle_bytes: int  # the oracle's bytes in time


def _feed(pending: list[tuple[float, int, float]], upto: float, predictors: Sequence[Predictor]) -> None:
    """Hand every transfer that completed by ``upto`` to the predictors (in completion order) and drop it."""
    while pending and pending[0][0] <= upto:
        end, n, dur = pending.pop(0)
        for p in predictors:
            p.observe(end, n, dur)


def accuracy(trace: BandwidthTrace, names: Sequence[str], *, target: float, duration_s: float
             ) -> dict[str, tuple[int, float, float, float]]:
    """The accuracy pass (module doc): name -> (samples, MdAPE, under-prediction at 0.5, at ``target``)."""
    preds = [PREDICTORS[n]() for n in names]
    pending: list[tuple[float, int, float]] = []
    free = 0.0
    med: list[list[float]] = [[] for _ in names]
    tgt: list[list[float]] = [[] for _ in names]
    actual: list[float] = []
    k = 0
    while (t := k * FRAME_S) < duration_s:
        n = SIZES[k % len(SIZES)]
        k += 1
        if free > t + MAX_BACKLOG_S:
            continue
        _feed(pending, t, preds)
        for i, p in enumerate(preds):
            med[i].append(p.predict_ms(n, 0.5))
            tgt[i].append(p.predict_ms(n, target))
        start = max(t, free)
        free = trace.transfer_end(start, n)
        actual.append((free - start) * 1000.0)
        pending.append((free, n, free - start))
    a = np.array(actual)
    out = {}
    for i, name in enumerate(names):
        m, q = np.array(med[i]), np.array(tgt[i])
        out[name] = (len(a), float(np.median(np.abs(m - a) / a)), float((a > m).mean()), float((a > q).mean()))
    return out


def plan(trace: BandwidthTrace, predictor: Predictor | None, *, target: float, deadline_ms: float, rtt_ms: float,
         duration_s: float) -> PlanResult:
    """The plan pass (module doc) for one predictor; ``None`` is the greedy link oracle."""
    pending: list[tuple[float, int, float]] = []
    inflight: list[tuple[float, int]] = []  # (end, nbytes) not yet acknowledged (the end is in the future)
    free = 0.0
    sent = missed = nbytes_sent = in_time = probes = 0
    last_sample = 0.0
    k = 0
    budget_s = (deadline_ms - rtt_ms) / 1000.0
    while (t := k * FRAME_S) < duration_s:
        k += 1
        if predictor is not None:
            if pending and pending[0][0] <= t:
                last_sample = max(e for e, _, _ in pending if e <= t)
            _feed(pending, t, [predictor])
        inflight = [(e, n) for e, n in inflight if e > t]
        queued = sum(n for _, n in inflight)
        choice = None
        for n in sorted(SIZES, reverse=True):
            if predictor is None:
                fits = trace.transfer_end(max(t, free), n) - t <= budget_s
            else:
                fits = rtt_ms + predictor.predict_ms(queued + n, target) <= deadline_ms
            if fits:
                choice = n
                break
        probe = choice is None and not inflight and t - last_sample > PROBE_AFTER_S
        if choice is None and not probe:
            continue
        n = min(SIZES) if choice is None else choice
        start = max(t, free)
        free = trace.transfer_end(start, n)
        pending.append((free, n, free - start))
        inflight.append((free, n))
        if probe:
            probes += 1
            last_sample = t  # the next probe waits for this one's answer or another second
            continue
        sent += 1
        nbytes_sent += n
        late = free - t > budget_s
        missed += int(late)
        in_time += 0 if late else n
    return PlanResult(frames=k, sent=sent, missed=missed, bytes_sent=nbytes_sent, bytes_in_time=in_time,
                      probes=probes)


def rows(trace_path: Path, names: Sequence[str], *, target: float, deadline_ms: float, rtt_ms: float,
         duration_s: float) -> list[Row]:
    trace = load_trace(trace_path)
    dur = min(duration_s, trace.period)
    acc = accuracy(trace, names, target=target, duration_s=dur)
    oracle = plan(trace, None, target=target, deadline_ms=deadline_ms, rtt_ms=rtt_ms, duration_s=dur)
    out = []
    for name in names:
        samples, mdape, under_m, under_t = acc[name]
        res = plan(trace, PREDICTORS[name](), target=target, deadline_ms=deadline_ms, rtt_ms=rtt_ms, duration_s=dur)
        out.append(Row(trace.name, name, samples, mdape, under_m, under_t, res, oracle.bytes_in_time))
    return out


def _short(name: str) -> str:
    return name.split("-report")[0].split(".up")[0]


def table(all_rows: Sequence[Row], *, target: float, deadline_ms: float, rtt_ms: float, duration_s: float) -> str:
    pct = f"{target:.0%}"
    lines = [
        f"`{COMMAND} --deadline-ms {deadline_ms:g} --target {target:g} --rtt-ms {rtt_ms:g} --duration {duration_s:g}`",
        "",
        f"Payloads {', '.join(f'{s // 1000} kB' for s in SIZES)} at {1 / FRAME_S:g} fps over each trace's first "
        f"{duration_s:g} s (module doc of benchmarks/bench_predict.py). Accuracy: MdAPE = median |predicted - "
        f"actual| / actual of the median prediction; under = share of transfers slower than predicted (at "
        f"the median, and at the {pct} quantile: {1 - target:.0%} is calibrated). Plan: largest payload whose "
        f"round trip + queued + own transfer at the {pct} quantile fits a {deadline_ms:g} ms deadline; miss = "
        f"sent frames over the deadline (target {1 - target:.0%}); bytes = bytes of frames within the deadline "
        f"over the greedy link oracle's; probes (the smallest payload after {PROBE_AFTER_S:g} s without an "
        f"answer) are not frames. Point predictors (EWMA, harmonic) ignore the quantile.",
        "",
        f"| trace | predictor | transfers | MdAPE | under @50 % | under @{pct} | plan: miss | plan: sent | "
        f"plan: bytes in time / oracle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        lines.append(f"| {_short(r.trace)} | {r.predictor} | {r.samples} | {r.mdape:.2f} | {r.under_median:.0%} | "
                     f"{r.under_target:.1%} | {r.plan.miss_rate:.1%} | {r.plan.sent}/{r.plan.frames} | "
                     f"{r.plan.bytes_in_time / max(r.oracle_bytes, 1):.2f} |")
    lines += ["", "Over all traces (mean of the per-trace figures):", "",
              f"| predictor | MdAPE | under @{pct} | plan: miss | plan: bytes in time / oracle | traces with miss <= "
              f"{1 - target:.0%} |", "|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(r.predictor for r in all_rows))
    for name in names:
        rs = [r for r in all_rows if r.predictor == name]
        ok = sum(r.plan.miss_rate <= 1 - target for r in rs)
        lines.append(f"| {name} | {np.mean([r.mdape for r in rs]):.2f} | {np.mean([r.under_target for r in rs]):.1%} "
                     f"| {np.mean([r.plan.miss_rate for r in rs]):.1%} | "
                     f"{np.mean([r.plan.bytes_in_time / max(r.oracle_bytes, 1) for r in rs]):.2f} | {ok}/{len(rs)} |")
    return "\n".join(lines)


def measure(*, target: float = TARGET, deadline_ms: float = DEADLINE_MS, rtt_ms: float = CELLULAR_RTT_MS,
            duration_s: float = DURATION_S, names: Sequence[str] | None = None) -> str:
    traces = shared_traces()
    if not traces:
        return ("No shared traces found (../shared/traces next to the checkout, see its README.md): nothing to "
                "measure. The predictors' unit tests (tests/test_predict.py) do not need them.")
    chosen = list(names or PREDICTORS)
    t0 = time.perf_counter()
    all_rows = [r for p in traces for r in rows(p, chosen, target=target, deadline_ms=deadline_ms, rtt_ms=rtt_ms,
                                                 duration_s=duration_s)]
    body = table(all_rows, target=target, deadline_ms=deadline_ms, rtt_ms=rtt_ms, duration_s=duration_s)
    print(f"bench_predict: {len(traces)} traces in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return body


def run() -> str:
    """docs/BENCHMARKS.md: every predictor on every shared trace at the defaults."""
    return measure()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deadline-ms", type=float, default=DEADLINE_MS, help=f"default {DEADLINE_MS:g}")
    p.add_argument("--target", type=float, default=TARGET,
                   help=f"share of frames within the deadline; the plan's quantile (default {TARGET:g})")
    p.add_argument("--rtt-ms", type=float, default=CELLULAR_RTT_MS, help=f"default {CELLULAR_RTT_MS:g}")
    p.add_argument("--duration", type=float, default=DURATION_S, help=f"seconds of each trace (default {DURATION_S:g})")
    p.add_argument("--predictor", action="append", choices=list(PREDICTORS), help="repeatable; default: all")
    args = p.parse_args(argv)
    if not 0 < args.target < 1:
        p.error(f"--target must be in (0, 1), got {args.target}")
    if args.deadline_ms <= args.rtt_ms:
        p.error(f"--deadline-ms ({args.deadline_ms:g}) must exceed --rtt-ms ({args.rtt_ms:g})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(measure(target=args.target, deadline_ms=args.deadline_ms, rtt_ms=args.rtt_ms, duration_s=args.duration,
                  names=args.predictor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
