"""The replay's baselines that are not the shipped policy, each run by the real ``DeviceRunner``.

The runner takes any ``CutPolicy``; these subclass it and override only *which* route a frame takes
(``decide``); the exit test (``tau``), the overdue wait, the deadline fallback, the in-flight map and
the estimator stay the runner's own:

* :class:`PinnedPolicy` - one route for every frame (every static cut, cloud-raw, edge-only), with the
  runner's overdue wait at its own live estimates;
* :class:`OraclePolicy` - knows the link: per frame the candidate whose answer would come first at the
  true FIFO state of the simulated uplink (``exits``: knowing that frame's exit outcome too); it waits
  for the deadline only (no overdue wait), a bound rather than a policy;
* :class:`PerfectBandwidth` - an estimator whose snapshots carry the trace's true rate over the next
  second (the ``dynamic-perfect-bw`` diagnostic: the shipped policy planning with a perfect link estimate).

:func:`plain_client` is the one baseline that is not the runner: ``cloud-jpeg``, a plain client that
JPEG-encodes every frame, sends it over the same FIFO trace link and waits for the deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from device_runner.estimator import Estimates, Estimator
from device_runner.link import TraceShaper
from device_runner.policy import Choice, CutPolicy, Decision
from sdk.config import DeviceSettings
from sdk.manifest import CutKind, Manifest

if TYPE_CHECKING:
    from benchmarks.dynamic_replay import PolicyRun, Route, Scenario, Setup

__all__ = ["OraclePolicy", "PerfectBandwidth", "PinnedPolicy", "plain_client"]


class _Forced(CutPolicy):
    """A CutPolicy whose route per frame comes from :meth:`route`; it counts its own switches."""

    def __init__(self, manifest: Manifest, device: DeviceSettings, **kw: Any) -> None:
        super().__init__(manifest, device, probe_every=0, **kw)
        self._last_est: Estimates | None = None
        self._last_plan: Any = None
        self.frames = 0

    def route(self, est: Estimates) -> Choice:
        raise NotImplementedError

    def decide(self, est: Estimates) -> Decision:
        choice = self.route(est)
        self.frames += 1
        switched = self.current is not None and choice != self.current
        self.switches += switched
        self.current = choice
        if est is not self._last_est:  # the plan is informational here (the runner reads the choice)
            self._last_est, self._last_plan = est, self.plan(est)
        return Decision(choice, False, self._last_plan, switched)


class PinnedPolicy(_Forced):
    """Every frame by one (cut, bits): a static baseline run by the real runner."""

    def __init__(self, manifest: Manifest, device: DeviceSettings, choice: Choice) -> None:
        super().__init__(manifest, device)
        self.choice = choice

    def route(self, est: Estimates) -> Choice:
        return self.choice


class OraclePolicy(_Forced):
    """Per frame the candidate whose answer comes first, at the simulated link's true state (module doc)."""

    def __init__(self, setup: Setup, device: DeviceSettings, shaper: TraceShaper, clock: Callable[[], float],
                 link_ms: float, *, exits: bool = True) -> None:
        super().__init__(setup.manifest, device, allowed_cuts=sorted({r.cut for r in setup.candidates}))
        self.setup, self.shaper, self.clock, self.link_ms, self.exits = setup, shaper, clock, link_ms, exits
        self._taus = {r: self.tau(r.cut, r.bits) for r in setup.candidates
                      if setup.manifest.cut(r.cut).kind is CutKind.SPLIT}  # fmt: skip

    def answer_within_ms(self, est: Estimates, cut: int, nbytes: int) -> float:
        return math.inf  # the deadline only

    def done_at(self, r: Route, k: int, now: float) -> tuple[float, int, int]:
        """(answer time, bytes, cut) of serving frame ``k`` by ``r`` from ``now``, the FIFO's state as it is."""
        s = self.setup
        kind = s.manifest.cut(r.cut).kind
        dev_end = now + s.dev_ms[r] / 1000.0
        if kind is CutKind.DEVICE or (self.exits and kind is CutKind.SPLIT and s.data.conf[r.cut][k] >= self._taus[r]):
            return (round(dev_end, 9), 0, r.cut)
        nb = int(s.data.nbytes[r][k])
        t = self.shaper.trace_time(dev_end)
        tx = self.shaper.trace.transfer_end(max(t, self.shaper.free_at), nb) - t
        return (round(dev_end + tx + (self.link_ms + s.cloud_ms[r]) / 1000.0, 9), nb, r.cut)

    def route(self, est: Estimates) -> Choice:
        k, now = self.frames % self.setup.data.n, self.clock()
        best = min(self.setup.candidates, key=lambda r: self.done_at(r, k, now))
        return Choice(best.cut, best.bits)


class PerfectBandwidth:
    """An :class:`Estimator` whose snapshots plan with the trace's true rate over the next second."""

    def __init__(self, inner: Estimator, shaper: TraceShaper, clock: Callable[[], float], link_ms: float) -> None:
        self.inner, self.shaper, self.clock, self.link_ms = inner, shaper, clock, link_ms
        self.peak = 0.0
        self._key: tuple[object, float] | None = None
        self._snap: Estimates | None = None

    def __getattr__(self, name: str) -> Any:  # every observation goes to the real estimator
        return getattr(self.inner, name)

    def snapshot(self) -> Estimates:
        snap = self.inner.snapshot()
        t = self.shaper.trace_time(self.clock())
        rate = max(self.shaper.trace.delivered(t + 1.0) - self.shaper.trace.delivered(t), 1.0)
        self.peak = max(self.peak, rate)
        if self._key != (snap, rate) or self._snap is None:
            self._key = (snap, rate)
            self._snap = replace(snap, bandwidth_bytes_per_s=rate, link_ms=self.link_ms, measured=True,
                                 peak_bandwidth_bytes_per_s=self.peak, measured_peak_bytes_per_s=self.peak,
                                 sampled_bandwidth_bytes_per_s=rate, unreachable=False)
        return self._snap


def plain_client(s: Setup, sc: Scenario, route: Route, name: str) -> PolicyRun:
    """A plain client (not the runner): encode the frame as JPEG on the serial device, send it over the FIFO
    trace link, wait for the answer or the deadline; at the deadline the device cut's model answers."""
    from benchmarks.dynamic_replay import PolicyRun, Route

    d, trace, n = s.data, sc.trace, sc.frames
    lat, nb = np.zeros(n), np.zeros(n, dtype=np.int64)
    ok, late = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    device = s.device
    dev_free = link_free = 0.0
    for i in range(n):
        k, arrival = i % d.n, i / sc.fps
        dev_end = dev_free = max(arrival, dev_free) + s.dev_ms[route] / 1000.0
        nb[i] = int(d.nbytes[route][k])
        link_free = trace.transfer_end(max(dev_end, link_free), nb[i])
        done = link_free + (sc.link_ms + s.cloud_ms[route]) / 1000.0
        due = arrival + sc.deadline_ms / 1000.0 if sc.deadline_ms is not None else math.inf
        if done <= due:
            lat[i], ok[i] = done - arrival, bool(d.cloud_ok[route][k])
        else:
            late[i] = True
            lat[i] = due - arrival + (s.dev_ms[device] / 1000.0 if device is not None else 0.0)
            ok[i] = device is not None and bool(d.local_ok[device.cut][k])
    cuts = np.full(n, Route(route.cut).cut, dtype=np.int64)
    return PolicyRun(name, lat * 1000.0, nb, ok, nb > 0, late, cuts, 0, 0)
