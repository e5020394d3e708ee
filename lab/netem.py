"""Kernel link emulation for the demo: network namespaces + veth + ``tc tbf`` rates following a trace.

Where the kernel allows it (root, ``ip netns``, veth, a bridge and the ``tbf`` qdisc; this host has
``tbf`` but no ``netem``, /work/shared/PLATFORM.md), each emulated device gets its own network
namespace whose only link is a veth into a private bridge in the root namespace::

    root ns:  bridge sedm<tag>br 10.213.X.1/24  <- the broker listens here (and only here)
                 |-- sedm<tag>h0 ==veth== up0 10.213.X.10/24   (ns sedm-<tag>-0, tbf on up0's egress)
                 |-- sedm<tag>h1 ==veth== up0 10.213.X.11/24   (ns sedm-<tag>-1, ...)

The tbf on the device side of each veth shapes the device's *uplink*; :class:`TraceFollower` changes
its rate every ``step_s`` to the trace's mean rate over that step (``tc qdisc change``), starting at
each device's offset into the trace. Traffic never leaves the private 10.213.X.0/24 subnet. tbf has
no delay: one-way latency is not emulated in this mode (the transport shaper does add it).

:func:`detect` says whether this works here (it tries a throw-away namespace + veth + tbf) and why
not; the demo then falls back to the shaper in the transport. :func:`saturation_check` pushes TCP
as fast as it goes through one namespace while the follower runs and compares per-window delivered
bytes (the bridge side's ``rx_bytes``) with the trace: :func:`track` (correlation, mean relative
error), the same measure the demo applies to the transport shaper.

Everything created is removed by :meth:`NetnsLink.close` (also at interpreter exit).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.errors import TransportError
from sdk.traces import BandwidthTrace

__all__ = ["LinkCheck", "NetnsLink", "Support", "TraceFollower", "detect", "saturation_check", "track"]

MIN_RATE = 1000.0  # bytes/s: tbf cannot be 0; an outage becomes 8 kbit/s
QUEUE_LIMIT = 32768  # bytes the tbf queues before dropping (~130 ms at 2 Mbit/s)
_LIVE: set[NetnsLink] = set()


@dataclass(frozen=True, slots=True)
class Support:
    ok: bool
    reason: str  # what was found / what is missing and what to do


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """How well delivered bytes per window followed the trace's rate in the same windows."""

    windows: int
    window_s: float
    correlation: float  # Pearson r of achieved vs trace rate (nan when the trace is flat)
    mean_rel_error: float  # mean |achieved - trace| / mean trace rate (robust to near-zero windows)
    achieved_mean: float  # bytes/s
    trace_mean: float  # bytes/s
    achieved: tuple[float, ...] = field(default=(), repr=False)
    expected: tuple[float, ...] = field(default=(), repr=False)

    @property
    def follows(self) -> bool:
        """Within 25 % on average and, when the trace varies, correlated (r >= 0.8)."""
        flat = bool(np.isnan(self.correlation))
        return bool(self.windows > 0 and self.mean_rel_error <= 0.25 and (flat or self.correlation >= 0.8))

    def describe(self) -> str:
        r = "n/a (flat trace)" if np.isnan(self.correlation) else f"{self.correlation:.3f}"
        return (f"{self.windows} windows of {self.window_s:g} s: achieved {self.achieved_mean * 8 / 1e6:.2f} vs trace "
                f"{self.trace_mean * 8 / 1e6:.2f} Mbit/s, correlation {r}, mean error {self.mean_rel_error:.1%} -> "
                f"{'follows the trace' if self.follows else 'DOES NOT follow the trace'}")


def track(achieved: np.ndarray, expected: np.ndarray, window_s: float) -> LinkCheck:
    """Compare achieved bytes/s per window with the trace's bytes/s in the same windows."""
    a, e = np.asarray(achieved, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"achieved {a.shape} and expected {e.shape} must have the same shape")
    if a.size == 0:
        return LinkCheck(0, window_s, float("nan"), float("inf"), 0.0, 0.0)
    corr = float(np.corrcoef(a, e)[0, 1]) if a.size > 1 and e.std() > 1e-9 * max(e.mean(), 1) and a.std() > 0 \
        else float("nan")
    rel = float(np.mean(np.abs(a - e)) / max(float(e.mean()), MIN_RATE))
    return LinkCheck(int(a.size), window_s, corr, rel, float(a.mean()), float(e.mean()),
                     tuple(float(v) for v in a), tuple(float(v) for v in e))


# ---------------------------------------------------------------------- support


def _run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    if check and res.returncode != 0:
        raise TransportError(f"link emulation: `{' '.join(cmd)}` failed ({res.returncode}): "
                             f"{res.stderr.strip() or res.stdout.strip()}")
    return res


def detect() -> Support:
    """Can this process build namespaces + veth + bridge + tbf? Tries it on throw-away names."""
    if sys.platform != "linux":
        return Support(False, f"network namespaces are Linux-only (this is {sys.platform})")
    if os.geteuid() != 0:
        return Support(False, "network namespaces and tc need root (run as root, or use --link shaper)")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return Support(False, f"{' and '.join(missing)} not found (apt-get install iproute2)")
    tag = f"p{os.getpid() % 100000:05d}"
    ns, br, host, peer = f"sedm-probe-{tag}", f"sdb{tag}", f"sdh{tag}", f"sdn{tag}"
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", br, "type", "bridge"],
        ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
        ["ip", "link", "set", peer, "netns", ns],
        ["tc", "-n", ns, "qdisc", "add", "dev", peer, "root", "tbf", "rate", "1mbit", "burst", "4kb", "latency", "100ms"],
        ["tc", "-n", ns, "qdisc", "change", "dev", peer, "root", "tbf", "rate", "2mbit", "burst", "4kb", "latency",
         "100ms"],
    ]
    try:
        for cmd in steps:
            res = _run(cmd, check=False)
            if res.returncode != 0:
                return Support(False, f"`{' '.join(cmd)}` failed: {(res.stderr or res.stdout).strip()}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Support(False, f"cannot run ip/tc: {exc}")
    finally:
        for cmd in (["ip", "link", "del", host], ["ip", "link", "del", br], ["ip", "netns", "del", ns]):
            with contextlib.suppress(Exception):
                _run(cmd, check=False)
    return Support(True, "network namespaces + veth + bridge + tbf work here (no netem: rate only, no delay)")


# ---------------------------------------------------------------------- the links


def _free_subnet() -> int:
    used = _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    for x in [*range(os.getpid() % 200 + 20, 250), *range(20, 250)]:
        if f"10.213.{x}." not in used:
            return x
    raise TransportError("link emulation: no free 10.213.X.0/24 subnet for the demo bridge; remove stale ones "
                         "(ip -o addr | grep 10.213.)")


def _tbf_args(rate: float) -> list[str]:
    rate = max(float(rate), MIN_RATE)
    burst = max(3028, int(rate / 50))  # >= 2 MTU-sized packets and ~20 ms of the rate
    # A fixed queue limit: a `tc qdisc change` whose limit differs (e.g. from `latency`) collapsed TCP
    # after every rate step here (measured: 100 -> 400 kB/s delivered 110 kB/s); a fixed one follows.
    return ["rate", f"{int(rate * 8)}bit", "burst", str(burst), "limit", str(QUEUE_LIMIT)]


class NetnsLink:
    """``n`` device namespaces behind one bridge; ``host`` is the bridge address (bind the broker there)."""

    def __init__(self, n: int, *, initial_rate: float = 250_000.0) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.tag = f"{os.getpid() % 100000:05d}"
        self.subnet = _free_subnet()
        self.host = f"10.213.{self.subnet}.1"
        self.bridge = f"sdb{self.tag}"
        self._lock = threading.Lock()
        self._created: list[list[str]] = []  # undo commands, run in reverse
        _LIVE.add(self)
        try:
            self._setup(initial_rate)
        except BaseException:
            self.close()
            raise

    def namespace(self, i: int) -> str:
        return f"sedm-{self.tag}-{i}"

    def host_side(self, i: int) -> str:
        return f"sdh{self.tag}{i}"

    def address(self, i: int) -> str:
        return f"10.213.{self.subnet}.{10 + i}"

    def exec_prefix(self, i: int) -> list[str]:
        """Prefix a command with this to run it inside device ``i``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(i)]

    def _setup(self, rate: float) -> None:
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._created.append(["ip", "link", "del", self.bridge])
        _run(["ip", "addr", "add", f"{self.host}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i in range(self.n):
            ns, host, peer = self.namespace(i), self.host_side(i), f"sdn{self.tag}{i}"
            _run(["ip", "netns", "add", ns])
            self._created.append(["ip", "netns", "del", ns])
            _run(["ip", "link", "add", host, "type", "veth", "peer", "name", peer])
            self._created.append(["ip", "link", "del", host])
            _run(["ip", "link", "set", host, "master", self.bridge, "up"])
            _run(["ip", "link", "set", peer, "netns", ns])
            _run(["ip", "-n", ns, "link", "set", peer, "name", "up0"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "up0"])
            _run(["ip", "-n", ns, "link", "set", "up0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["tc", "-n", ns, "qdisc", "add", "dev", "up0", "root", "tbf", *_tbf_args(rate)])

    def set_rate(self, i: int, rate: float) -> None:
        """Device ``i``'s uplink rate in bytes/s (clamped to >= MIN_RATE)."""
        _run(["tc", "-n", self.namespace(i), "qdisc", "change", "dev", "up0", "root", "tbf", *_tbf_args(rate)])

    def rx_bytes(self, i: int) -> int:
        """Bytes device ``i`` has sent so far (after its tbf), counted on the bridge side."""
        return int(Path(f"/sys/class/net/{self.host_side(i)}/statistics/rx_bytes").read_text())

    def close(self) -> None:
        with self._lock:
            while self._created:
                with contextlib.suppress(Exception):
                    _run(self._created.pop(), check=False)
        _LIVE.discard(self)

    def __enter__(self) -> NetnsLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    for link in list(_LIVE):
        link.close()


class TraceFollower:
    """A thread setting each namespace's tbf rate to the trace's mean over the next ``step_s``.

    ``offsets`` maps a namespace index to its offset into the trace (seconds at ``t0``)."""

    def __init__(self, link: NetnsLink, trace: BandwidthTrace, offsets: dict[int, float], t0: float,
                 *, step_s: float = 0.5) -> None:
        bad = [i for i in offsets if not 0 <= i < link.n]
        if bad:
            raise ValueError(f"namespace indices {bad} out of range 0..{link.n - 1}")
        self.link, self.trace, self.offsets, self.t0, self.step_s = link, trace, dict(offsets), t0, step_s
        self.applied: dict[int, list[tuple[float, float]]] = {i: [] for i in offsets}  # (time, bytes/s)
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="splitedge-netem-follower", daemon=True)

    def start(self) -> TraceFollower:
        self._thread.start()
        return self

    def rate_for(self, i: int, now: float) -> float:
        """The rate namespace ``i`` gets for the step starting at ``now``: the trace's mean over it."""
        tt = now - self.t0 + self.offsets[i]
        return (self.trace.delivered(tt + self.step_s) - self.trace.delivered(tt)) / self.step_s

    def _loop(self) -> None:
        k = max(0, int((time.time() - self.t0) // self.step_s))
        while not self._stop.is_set():
            slot = self.t0 + k * self.step_s
            for i in self.offsets:
                rate = self.rate_for(i, slot)
                try:
                    self.link.set_rate(i, rate)
                    self.applied[i].append((slot, max(rate, MIN_RATE)))
                except (TransportError, OSError, subprocess.TimeoutExpired):
                    self.errors += 1
            k += 1
            self._stop.wait(max(0.0, self.t0 + k * self.step_s - time.time()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)


_SENDER = """
import socket, sys, time
host, port, seconds, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
buf, t0, sent = bytes(1400), time.time(), 0
while (now := time.time()) < t0 + seconds:
    while sent < (now - t0) * rate:
        try:
            s.sendto(buf, (host, port))
        except OSError:  # the qdisc is full: the excess is dropped, as intended
            pass
        sent += len(buf)
    time.sleep(0.002)
"""


def saturation_check(link: NetnsLink, i: int, trace: BandwidthTrace, offset: float, seconds: float,
                     *, window_s: float = 0.5, step_s: float = 0.5) -> LinkCheck:
    """Saturate namespace ``i``'s uplink for ``seconds`` while its rate follows ``trace`` from ``offset``;
    compare per-window delivered bytes with the trace (the first window, while the sender starts, is
    skipped). Uses only the bridge address and the namespace's own.

    The load is paced UDP at 1.5x the trace's peak, so the tbf is always the bottleneck: this measures
    the link. A single TCP flow does not measure it: after a step up (200 -> 400 kB/s) one flow stayed
    at ~200 kB/s for seconds here (congestion avoidance over a ~160 ms queue), which MQTT over this
    link will also see - that is TCP, not the emulation."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((link.host, 0))
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def sink() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                srv.recv(65536)

    reader = threading.Thread(target=sink, daemon=True)
    reader.start()
    t0 = time.time()
    follower = TraceFollower(link, trace, {i: offset}, t0, step_s=step_s).start()
    offered = 1.5 * max(float(trace.rates.max()), MIN_RATE)  # always more than the link carries
    sender = subprocess.Popen([*link.exec_prefix(i), sys.executable, "-c", _SENDER, link.host, str(port),
                               str(seconds + window_s), str(offered)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []
    try:
        end = t0 + seconds
        k = 0
        while time.time() < end:
            samples.append((time.time(), link.rx_bytes(i)))
            k += 1
            time.sleep(max(0.0, t0 + k * window_s - time.time()))
        samples.append((time.time(), link.rx_bytes(i)))
    finally:
        follower.stop()
        stop.set()
        with contextlib.suppress(Exception):
            sender.wait(timeout=seconds + 5)
        if sender.poll() is None:
            sender.kill()
        srv.close()
        reader.join(timeout=2.0)
    achieved, expected = [], []
    for (ta, ba), (tb, bb) in list(itertools.pairwise(samples))[1:]:
        achieved.append((bb - ba) / (tb - ta))
        expected.append((trace.delivered(tb - t0 + offset) - trace.delivered(ta - t0 + offset)) / (tb - ta))
    return track(np.array(achieved), np.array(expected), window_s)
