"""Uplink emulation: a shaper that says how long a payload takes, and a Transport that holds publishes.

This host has no ``netem`` (/work/shared/PLATFORM.md), so a bandwidth trace is emulated inside the
transport: :class:`ShapedTransport` wraps any :class:`~sdk.transport.Transport` and delays each
shaped publish (by default the ``act`` topic only) by ``shaper.delay_s(nbytes, now)`` seconds before
handing it to the inner transport. :class:`ConstantRateShaper` models a FIFO link of a given rate
(``set_rate`` changes it) plus a fixed one-way latency; :class:`TraceShaper` is the same FIFO link
whose rate follows a bandwidth trace exactly (``sdk.traces.BandwidthTrace.transfer_end``).

Held publishes wait in a bounded heap (``max_pending``); when it is full, ``publish`` raises
``TransportError`` at once, so the device answers locally instead of queueing without limit. With
``threaded=True`` a background thread sleeps on a condition until the next one is due (no
busy-wait); with ``threaded=False`` the caller releases due messages with :meth:`ShapedTransport.pump`
(for fake-clock tests). A held message whose inner publish fails (broker gone by then) is dropped
and counted in ``dropped``: its frame then misses its deadline and is answered locally.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from sdk.errors import BrokerUnavailableError, TransportError
from sdk.traces import BandwidthTrace
from sdk.transport import ConnectionCallback, Handler, Transport

__all__ = ["ConstantRateShaper", "ShapedTransport", "TraceShaper", "UplinkShaper"]

log = logging.getLogger(__name__)


class UplinkShaper(Protocol):
    """How long until a payload of ``nbytes`` offered at ``now`` (seconds) has crossed the link."""

    def delay_s(self, nbytes: int, now: float) -> float: ...


class ConstantRateShaper:
    """A FIFO link of ``rate_bytes_per_s`` plus ``latency_s``: payloads queue behind each other."""

    def __init__(self, rate_bytes_per_s: float, *, latency_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self.set_rate(rate_bytes_per_s)
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        self.latency_s = float(latency_s)
        self._free_at = 0.0

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate_bytes_per_s: float) -> None:
        """Change the rate (bytes/s) for payloads offered from now on."""
        if not rate_bytes_per_s > 0:
            raise ValueError(f"rate must be > 0 bytes/s, got {rate_bytes_per_s}")
        with self._lock:
            self._rate = float(rate_bytes_per_s)

    def delay_s(self, nbytes: int, now: float) -> float:
        with self._lock:
            start = max(now, self._free_at)
            self._free_at = start + nbytes / self._rate
            return self._free_at - now + self.latency_s


class TraceShaper:
    """A FIFO link whose rate follows ``trace``: a payload offered at ``now`` starts when the previous
    one has crossed and ends at ``trace.transfer_end`` (trace time = ``now - t0 + offset``), plus
    ``latency_s``. Without ``t0`` the first ``delay_s`` call sets it (trace time ``offset`` then).
    The trace loops (see :mod:`sdk.traces`). Same interface as :class:`ConstantRateShaper`.
    """

    def __init__(
        self, trace: BandwidthTrace, *, offset: float = 0.0, t0: float | None = None, latency_s: float = 0.0
    ) -> None:
        if latency_s < 0 or offset < 0:
            raise ValueError(f"latency_s and offset must be >= 0, got {latency_s} and {offset}")
        self.trace = trace
        self.offset = float(offset)
        self.t0 = t0
        self.latency_s = float(latency_s)
        self._lock = threading.Lock()
        self._free_at = -float("inf")  # trace time at which the link is next free

    def rate_at(self, now: float) -> float:
        """The trace's rate (bytes/s) at clock time ``now``."""
        return self.trace.rate_at(now - (self.t0 if self.t0 is not None else now) + self.offset)

    @property
    def free_at(self) -> float:
        """Trace time at which the FIFO is next free (``-inf`` before the first payload)."""
        return self._free_at

    def trace_time(self, now: float) -> float:
        """The trace time of clock time ``now`` (``offset`` until ``t0`` is set)."""
        return now - (self.t0 if self.t0 is not None else now) + self.offset

    def delay_s(self, nbytes: int, now: float) -> float:
        with self._lock:
            if self.t0 is None:
                self.t0 = now
            t = now - self.t0 + self.offset
            self._free_at = self.trace.transfer_end(max(t, self._free_at), nbytes)
            return self._free_at - t + self.latency_s


class ShapedTransport:
    """A :class:`~sdk.transport.Transport` whose shaped publishes leave after the shaper's delay."""

    def __init__(
        self,
        inner: Transport,
        shaper: UplinkShaper,
        *,
        clock: Callable[[], float] = time.time,
        threaded: bool = True,
        max_pending: int = 64,
        shape: Callable[[str], bool] = lambda topic: topic.endswith("/act"),
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.inner = inner
        self.shaper = shaper
        self.clock = clock
        self.max_pending = max_pending
        self._shape = shape
        self._heap: list[tuple[float, int, str, bytes, int, bool]] = []
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.sent = 0
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="splitedge-uplink-shaper", daemon=True)
            self._thread.start()

    # ---- Transport
    @property
    def connected(self) -> bool:
        return self.inner.connected

    @property
    def pending(self) -> int:
        return len(self._heap)

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        if not self._shape(topic):
            self.inner.publish(topic, payload, qos=qos, retain=retain)
            return
        if not self.inner.connected:
            raise BrokerUnavailableError(f"uplink to the broker is down; cannot publish to {topic!r}: answer locally")
        with self._cond:
            if len(self._heap) >= self.max_pending:
                raise TransportError(
                    f"emulated uplink queue is full ({self.max_pending} payloads waiting); the link is slower "
                    "than the frames offered: answer locally, or lower fps / pick a later cut"
                )
            now = self.clock()
            due = now + max(0.0, float(self.shaper.delay_s(len(payload), now)))
            heapq.heappush(self._heap, (due, next(self._ids), topic, bytes(payload), qos, retain))
            self._cond.notify()

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 0) -> None:
        self.inner.subscribe(topic_filter, handler, qos=qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self.inner.unsubscribe(topic_filter)

    def on_connection_change(self, callback: ConnectionCallback) -> None:
        self.inner.on_connection_change(callback)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.inner.close()

    def kill(self) -> None:
        """Vanish like a crash (the inner transport's ``kill``) after dropping what is held."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        kill = getattr(self.inner, "kill", None)
        (kill or self.inner.close)()

    # ---- releasing held payloads
    def next_due(self) -> float | None:
        with self._cond:
            return self._heap[0][0] if self._heap else None

    def pump(self, now: float | None = None) -> int:
        """Publish every held payload due at ``now`` (default: the clock); return how many went out."""
        now = self.clock() if now is None else now
        done = 0
        while True:
            with self._cond:
                if not self._heap or self._heap[0][0] > now:
                    return done
                item = heapq.heappop(self._heap)
            self._send(item)
            done += 1

    def _send(self, item: tuple[float, int, str, bytes, int, bool]) -> None:
        _, _, topic, payload, qos, retain = item
        try:
            self.inner.publish(topic, payload, qos=qos, retain=retain)
            self.sent += 1
        except TransportError as exc:
            self.dropped += 1
            log.warning("held payload for %s dropped: %s", topic, exc)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        wait = self._heap[0][0] - self.clock()
                        if wait <= 0:
                            break
                        self._cond.wait(timeout=wait)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                item = heapq.heappop(self._heap)
            self._send(item)
