"""What a cloud worker counts, per device and cut, and the JSON snapshot of it.

Every frame the worker receives ends in exactly one of: ``answered`` (a result was published),
``errors[code]`` (an ErrorMessage was published: malformed, unknown_cut, bundle_mismatch, internal),
or ``shed`` (an ErrorMessage with code ``overloaded``). So ``received == answered + sum(errors) +
shed`` once the queue is empty — the invariant the tests check. ``publish_failed`` counts replies
that could not be sent (broker down); those frames are still counted where they ended.

One :class:`Tally` per (device, cut) pair — the cut is ``None`` for a frame whose header could not be
read — holds the counts, the bytes received, the tail-time window for the percentiles and two
cumulative histograms (tail time and queue wait, :data:`BUCKETS_S`). :meth:`Counters.snapshot` sums
the pairs per device and per cut (a JSON-ready dict, written to ``--metrics-json FILE``);
:meth:`Counters.series` hands the pairs themselves to the Prometheus collector
(:mod:`cloud_tail.metrics`, served on ``--metrics-port``).
"""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BUCKETS_S", "Counters", "Histogram", "Tally", "write_json"]

#: tail-time samples kept per key for the percentiles (a sliding window).
WINDOW = 1024

#: upper bounds (seconds) of the tail-time and queue-wait histograms; a last +Inf bucket is implied.
#: A digits tail takes ~0.005-0.3 ms here, MobileNetV2's ~5-10 ms, a loaded worker queues up to 1 s.
BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


@dataclass(slots=True)
class Histogram:
    """Counts per bucket of :data:`BUCKETS_S` (the last one is +Inf) and the sum, in seconds."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1  # bucket i holds v <= BUCKETS_S[i]
        self.sum_s += seconds

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum_s += other.sum_s

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` per bucket, the last bound ``inf``."""
        out, running = [], 0
        for bound, n in zip((*BUCKETS_S, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(slots=True)
class Tally:
    """The counts of one (device, cut) pair, or their sum over a device or a cut."""

    received: int = 0
    answered: int = 0
    shed: int = 0
    bytes_received: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    tail_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    tail_hist: Histogram = field(default_factory=Histogram)
    queue_hist: Histogram = field(default_factory=Histogram)

    def add(self, other: Tally) -> None:
        self.received += other.received
        self.answered += other.answered
        self.shed += other.shed
        self.bytes_received += other.bytes_received
        self.errors.update(other.errors)
        self.tail_ms.extend(other.tail_ms)
        self.tail_hist.add(other.tail_hist)
        self.queue_hist.add(other.queue_hist)

    def copy(self, *, window: bool = True) -> Tally:
        """An independent copy; without ``window`` the tail-time samples are left out (cheaper)."""
        return Tally(
            self.received, self.answered, self.shed, self.bytes_received, Counter(self.errors),
            deque(self.tail_ms if window else (), maxlen=WINDOW),
            Histogram(list(self.tail_hist.counts), self.tail_hist.sum_s),
            Histogram(list(self.queue_hist.counts), self.queue_hist.sum_s),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        p50, p95 = _percentiles(self.tail_ms)
        return {
            "received": self.received, "answered": self.answered, "shed": self.shed,
            "bytes_received": self.bytes_received, "errors": dict(sorted(self.errors.items())),
            "tail_ms_p50": p50, "tail_ms_p95": p95,
        }  # fmt: skip


def _percentiles(samples: deque[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    a = np.fromiter(samples, dtype=np.float64)
    return round(float(np.percentile(a, 50)), 4), round(float(np.percentile(a, 95)), 4)


def _sum(tallies: Iterable[Tally]) -> Tally:
    total = Tally(tail_ms=deque())  # unbounded: the sum keeps every pair's window
    for t in tallies:
        total.add(t)
    return total


class Counters:
    """Thread-safe counters of one worker (the paho thread and the inference thread both write)."""

    def __init__(self, worker_id: str, *, clock: Callable[[], float] = time.time) -> None:
        self.worker_id = worker_id
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, int | None], Tally] = {}
        self.queue_depth = 0
        self.max_queue_depth = 0
        self.publish_failed = 0
        self.batches: Counter[int] = Counter()  # batch size -> how many batches ran at that size
        #: the worker's outbox counters (sdk.outbox.OutboxStats.to_dict), set by TailWorker; read outside the lock
        self.outbox: Callable[[], dict[str, int]] | None = None
        self.connected = False
        self.disconnects = 0

    def _tally(self, device: str, cut: int | None) -> Tally:
        return self._pairs.setdefault((device, cut), Tally())

    def received(self, device: str, cut: int | None, nbytes: int = 0) -> None:
        with self._lock:
            t = self._tally(device, cut)
            t.received += 1
            t.bytes_received += nbytes

    def answered(self, device: str, cut: int, tail_ms: float, *, queue_ms: float | None = None) -> None:
        with self._lock:
            t = self._tally(device, cut)
            t.answered += 1
            t.tail_ms.append(tail_ms)
            t.tail_hist.observe(tail_ms / 1000.0)
            if queue_ms is not None:
                t.queue_hist.observe(max(0.0, queue_ms) / 1000.0)

    def error(self, device: str, cut: int | None, code: str) -> None:
        with self._lock:
            self._tally(device, cut).errors[code] += 1

    def shed(self, device: str, cut: int | None) -> None:
        with self._lock:
            self._tally(device, cut).shed += 1

    def batch(self, size: int) -> None:
        with self._lock:
            self.batches[size] += 1

    def set_queue_depth(self, depth: int) -> None:
        with self._lock:
            self.queue_depth = depth
            self.max_queue_depth = max(self.max_queue_depth, depth)

    def failed_publish(self) -> None:
        with self._lock:
            self.publish_failed += 1

    def connection(self, up: bool) -> None:
        with self._lock:
            if self.connected and not up:
                self.disconnects += 1
            self.connected = up

    def series(self, *, window: bool = False) -> dict[tuple[str, int | None], Tally]:
        """A copy of every (device, cut) pair's tally, taken under the lock (the metrics collector's view).

        ``window``: with the tail-time samples (the snapshot's percentiles need them; a scrape does not).
        """
        with self._lock:
            pairs = [(k, t.copy(window=window)) for k, t in self._pairs.items()]
        return dict(sorted(pairs, key=lambda kv: _order(kv[0])))

    def snapshot(self) -> dict[str, Any]:
        """Everything, JSON-ready: totals, per device, per cut, queue, batches, connection."""
        pairs = self.series(window=True)
        by_device: dict[str, list[Tally]] = {}
        by_cut: dict[int, list[Tally]] = {}
        for (device, cut), t in pairs.items():
            by_device.setdefault(device, []).append(t)
            if cut is not None:
                by_cut.setdefault(cut, []).append(t)
        state = self.state()
        return {
            "worker_id": self.worker_id,
            "ts": self._clock(),
            **state,
            "uptime_s": round(state["uptime_s"], 3),
            "batches": {str(k): v for k, v in sorted(state["batches"].items())},
            "totals": _sum(pairs.values()).to_dict(),
            "devices": {d: _sum(ts).to_dict() for d, ts in sorted(by_device.items())},
            "cuts": {str(c): _sum(ts).to_dict() for c, ts in sorted(by_cut.items())},
        }

    def state(self) -> dict[str, Any]:
        """The per-worker numbers (queue, batches, connection, outbox), taken under the lock."""
        outbox = self.outbox() if self.outbox is not None else {}  # its own lock: never nested in ours
        with self._lock:
            return {
                "outbox": outbox,
                "uptime_s": self._clock() - self._started,
                "connected": self.connected,
                "disconnects": self.disconnects,
                "queue_depth": self.queue_depth,
                "max_queue_depth": self.max_queue_depth,
                "publish_failed": self.publish_failed,
                "batches": dict(self.batches),
            }


def _order(key: tuple[str, int | None]) -> tuple[str, int]:
    return key[0], -1 if key[1] is None else key[1]


def write_json(counters: Counters, path: str | Path) -> None:
    """Write the snapshot to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(counters.snapshot(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
