"""Simulated time for the replay: a clock, an event queue, and the runner's sleep and wait on it.

:class:`SimClock` is what ``benchmarks.dynamic_replay`` hands the real ``DeviceRunner`` as its
``clock``, ``sleep`` and ``wait`` (the runner's one seam for time). Nothing blocks in real time:

* ``clock()`` returns the simulated time (seconds, starting at ``start``);
* ``at(t, fn)`` schedules ``fn()`` at simulated time ``t`` (FIFO among equal times); link
  deliveries and the simulated tail's answers are such events;
* ``sleep(s)`` runs every event due within ``s`` seconds, in time order, then sets the clock to the
  end (a head "running" for its measured time: messages arrive meanwhile, as on a device);
* ``wait(cond, timeout)`` is a ``Condition.wait`` in simulated time: it runs the next event due within
  ``timeout`` and returns (the runner's loop re-checks what it waits for, as after any wake-up), or
  moves the clock to the timeout when nothing is due.

Events run on the caller's thread; the runner's lock is re-entrant, so a delivery that calls a
handler while the runner waits holding its condition is what a network thread would do, one at a time.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable

__all__ = ["SimClock"]


class SimClock:
    """Simulated seconds and the events scheduled on them (module doc)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)
        self._events: list[tuple[float, int, Callable[[], object]]] = []
        self._ids = itertools.count()
        self.events_run = 0

    def __call__(self) -> float:
        return self.now

    @property
    def pending(self) -> int:
        return len(self._events)

    def next_event(self) -> float | None:
        return self._events[0][0] if self._events else None

    def at(self, t: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` at simulated time ``t`` (now, if ``t`` has passed)."""
        heapq.heappush(self._events, (max(float(t), self.now), next(self._ids), fn))

    def _run_next(self) -> None:
        t, _, fn = heapq.heappop(self._events)
        self.now = max(self.now, t)
        self.events_run += 1
        fn()

    def run_until(self, t: float) -> None:
        """Run every event due by ``t`` in time order, then set the clock to ``t`` (if later)."""
        while self._events and self._events[0][0] <= t:
            self._run_next()
        self.now = max(self.now, t)

    def sleep(self, seconds: float) -> None:
        self.run_until(self.now + max(0.0, float(seconds)))

    def wait(self, cond: threading.Condition | None = None, timeout: float | None = None) -> bool:
        """One wake-up: the next event due within ``timeout`` runs (True), or the clock moves to the timeout
        (False). ``timeout=None`` waits for the next event; with none scheduled it returns at once (False)."""
        end = self.now + max(0.0, float(timeout)) if timeout is not None else float("inf")
        if self._events and self._events[0][0] <= end:
            self._run_next()
            return True
        if end != float("inf"):
            self.now = end
        return False
