"""The replay behind ``splitedge bench dynamic``: measure a bundle once, replay a bandwidth trace per policy.

What is measured once per bundle (:func:`measure`, LiteRT on N reference test frames): every cut's int8
head + early exit on each frame (the device runner's own ``LiteRTHeads``), the real wire bytes of each
activation at each bit width (``sdk.wire.encode_activation`` with the profile's codec) and whether the
cloud tail is right on the decoded activation; the raw frame's bytes and the float model's answer; the
frame as JPEG at qualities 95..30 (PIL) with the float model's accuracy on the decoded JPEG.

What is replayed (:func:`simulate`): frames arrive at ``fps``; device compute is serial (a cut costs the
manifest's head + exit ms times the board's speed factor); the uplink is a FIFO whose transfers end at
``trace.transfer_end(start, bytes)``; an answer comes back ``link_ms`` + the tail's ms after the transfer.
A confident exit (``tau`` from the policy) answers at the end of the device compute. With a deadline
(default: the profile's), a frame still unanswered then is answered locally at the deadline (as the
runner does; raw/JPEG frames also run the device model), and counts as a ``deadline`` answer. The
policies that are the runner (``dynamic*`` and the static cuts, cloud-raw included: the runner pinned to
one cut) answer earlier when the answer is overdue, after ``CutPolicy.answer_within_ms`` from the send
at their own live estimates (also a ``deadline`` answer here); cloud-jpeg (a plain client) and the
oracles wait for the deadline.

Policies (:func:`compare`): ``dynamic`` (the runner's own ``CutPolicy`` + ``Estimator``, fed only what a
device learns: the network time of its own sent frames when the answer arrives, and timeouts at the
deadline), three diagnostics (``dynamic-no-probes``, ``dynamic-perfect-bw``: the policy planning with
the trace's true rate over the next second, ``dynamic-escalated-cost``: without the exit in the plan),
every static cut at its smallest bit width within the accuracy budget, ``best-static`` (in hindsight),
``cloud-raw``, ``cloud-jpeg``, ``edge-only`` and two oracles that know the link and the queue:
``oracle`` (per frame the argmin of that frame's true latency over the policy's candidates, exit
outcome included) and ``oracle-link`` (knows the link, not the exit).

The reporting and the command line are in ``benchmarks.bench_dynamic``.
"""

from __future__ import annotations

import heapq
import io
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from device_runner.estimator import Estimates, Estimator
from device_runner.policy import CutPolicy
from device_runner.runner import make_estimator
from sdk.config import DeviceConfig, load_board
from sdk.families import model_family
from sdk.host_speed import board_factor
from sdk.manifest import CutKind, Manifest
from sdk.planner import significant_drop
from sdk.traces import BandwidthTrace
from sdk.wire import Codec, decode_frame, encode_activation, encode_raw

__all__ = [
    "DEFAULT_FRAMES", "JPEG_QUALITIES", "Dynamic", "FrameData", "Oracle", "Pinned", "PolicyRun", "Route", "Scenario", "Setup",
    "Static", "TraceLink", "compare", "make_setup", "measure", "outcome", "reference_frames", "simulate",
]  # fmt: skip

JPEG_QUALITIES = tuple(range(95, 25, -5))
REF_SEED = 4321  # not the calibration seed (1234): frames the converter never saw
DEFAULT_FRAMES = 200


# ---------------------------------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True, order=True)
class Route:
    """How one frame is served: a cut at a bit width (0 for raw/device), or the raw frame as JPEG."""

    cut: int
    bits: int = 0
    jpeg: int = 0  # JPEG quality of the raw frame (cut 0); 0 = not JPEG


@dataclass(frozen=True, slots=True)
class FrameData:
    """Per reference frame, measured once: bytes on the wire, cloud/local correctness, confidences."""

    labels: np.ndarray
    nbytes: Mapping[Route, np.ndarray]  # wire bytes per frame (0 for the device cut)
    cloud_ok: Mapping[Route, np.ndarray]  # the cloud's answer is right
    conf: Mapping[int, np.ndarray]  # cut -> exit confidence (device cut: the full model's)
    local_ok: Mapping[int, np.ndarray]  # cut -> the local prediction is right
    jpeg_ms: Mapping[int, tuple[float, float]] = field(default_factory=dict)  # quality -> host (encode, decode) ms
    codec: str = "none"
    #: cut -> median host ms of head + exit on 1 LiteRT thread, what an emulating runner measures and
    #: stretches (the manifest's head_ms are at the converter's threads: 2 threads shorten the wide late
    #: layers more than a small head, so they understate a split cut's share); empty: the manifest's
    host_ms: Mapping[int, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, slots=True)
class Scenario:
    trace: BandwidthTrace
    fps: float
    duration_s: float
    link_ms: float = 0.0  # fixed round-trip latency added to every transfer
    deadline_ms: float | None = None  # None: every frame waits for the cloud

    @property
    def frames(self) -> int:
        return max(1, int(round(self.fps * self.duration_s)))


@dataclass(frozen=True, slots=True)
class Setup:
    """A bundle on a board with a profile: per-route costs (board ms), tau, the policy's candidates."""

    manifest: Manifest
    config: DeviceConfig
    data: FrameData
    dev_ms: Mapping[Route, float]
    cloud_ms: Mapping[Route, float]
    tau: Mapping[Route, float]
    candidates: tuple[Route, ...]  # what the dynamic policy may pick (budget, privacy, bits)
    statics: tuple[Route, ...]  # each split cut at its best bits within the budget
    jpeg: Route | None
    notes: tuple[str, ...] = ()

    @property
    def device(self) -> Route | None:
        c = self.manifest.device_cut
        return Route(c.index) if c is not None else None


class TraceLink:
    """``BandwidthTrace.transfer_end`` with the cumulative table computed once (the same arithmetic)."""

    def __init__(self, trace: BandwidthTrace) -> None:
        self.trace = trace
        durations = np.diff(np.append(trace.starts, trace.period))
        self.cum = np.concatenate([[0.0], np.cumsum(trace.rates * durations)])
        self.per_period = float(self.cum[-1])
        self.starts, self.rates, self.period = trace.starts, trace.rates, trace.period

    def delivered(self, t: float) -> float:
        loops, tt = divmod(t, self.period)
        i = int(np.searchsorted(self.starts, tt, side="right") - 1)
        return loops * self.per_period + float(self.cum[i]) + float(self.rates[i]) * (tt - self.starts[i])

    def transfer_end(self, t0: float, nbytes: float) -> float:
        if nbytes <= 0:
            return t0
        loops, rem = divmod(self.delivered(t0) + nbytes, self.per_period)
        if rem == 0:
            loops, rem = loops - 1, self.per_period
        i = min(max(int(np.searchsorted(self.cum, rem, side="left") - 1), 0), len(self.rates) - 1)
        while self.rates[i] <= 0:
            i += 1
        return loops * self.period + float(self.starts[i]) + (rem - float(self.cum[i])) / float(self.rates[i])

    def rate_ahead(self, t: float, window_s: float = 1.0) -> float:
        return max((self.delivered(t + window_s) - self.delivered(t)) / window_s, 1.0)


# ---------------------------------------------------------------------------------------------- measuring
_MEASURED: dict[tuple[str, int, str], FrameData] = {}


def measure(bundle: str | Path, manifest: Manifest, *, n: int = DEFAULT_FRAMES, codec: Codec = Codec.NONE) -> FrameData:
    """Run every cut's head/exit/tail with LiteRT on ``n`` reference test frames (cached per process)."""
    key = (str(Path(bundle).resolve()) + manifest.bundle_id, n, codec.name)
    if key not in _MEASURED:
        x, y = reference_frames(n, manifest)
        _MEASURED[key] = _measure(Path(bundle), manifest, x, y, codec)
    return _MEASURED[key]


def _measure(bundle: Path, m: Manifest, x: np.ndarray, y: np.ndarray, codec: Codec) -> FrameData:
    from device_runner.heads import LiteRTHeads
    from sdk.litert import LiteRTModel

    heads = LiteRTHeads(bundle, m, replace(load_board("pi5").board, emulate_timing=False, memory_budget_mb=4096, threads=1))
    host_ms: dict[int, float] = {}
    nbytes: dict[Route, np.ndarray] = {}
    cloud_ok: dict[Route, np.ndarray] = {}
    conf: dict[int, np.ndarray] = {}
    local_ok: dict[int, np.ndarray] = {}
    jpeg_ms: dict[int, tuple[float, float]] = {}
    common = dict(device_id="bench", bundle_id=m.wire_bundle_id, capture_ts=0.0, codec=codec)
    for cut in m.cuts:
        if cut.kind is CutKind.RAW:
            assert cut.tail is not None
            model = LiteRTModel(bundle / cut.tail.path)
            key = next(iter(model.inputs))
            nbytes[Route(cut.index)] = np.array([len(encode_raw(seq=i, image=x[i][None], name=cut.tensors[0].name,
                                                                cut_id=cut.index, **common)) for i in range(len(x))])  # type: ignore[arg-type]
            cloud_ok[Route(cut.index)] = _argmax(model.run_batched({key: x})) == y
            plain = dict(common, codec=Codec.NONE)
            header = len(encode_raw(seq=0, image=x[0][None], name=cut.tensors[0].name, **plain)) - int(x[0].size)  # type: ignore[arg-type]
            _measure_jpeg(model, key, x, y, header, nbytes, cloud_ok, jpeg_ms)
            continue
        outs = [heads.run(cut, x[i]) for i in range(len(x))]
        host_ms[cut.index] = float(np.percentile([o.head_ms + o.exit_ms for o in outs], 10))  # as host_scale
        conf[cut.index] = np.array([o.prediction.confidence if o.prediction else 0.0 for o in outs])
        local_ok[cut.index] = np.array([o.prediction is not None and o.prediction.cls == y[i] for i, o in enumerate(outs)])
        if cut.kind is CutKind.DEVICE:
            nbytes[Route(cut.index)] = np.zeros(len(x), dtype=np.int64)
            continue
        assert cut.tail is not None
        tail = LiteRTModel(bundle / cut.tail.path)
        quant = {t.name: (t.scale, t.zero_point) for t in cut.tensors}
        for bits in m.bits:
            payloads = [encode_activation(seq=i, cut_id=cut.index, activations=o.activations, quant=quant, bits=bits,
                                          **common) for i, o in enumerate(outs)]  # type: ignore[arg-type]
            deq = [decode_frame(p).dequantized() for p in payloads]
            feeds = {t.name: np.stack([d[t.name].reshape(t.shape) for d in deq]).astype(np.float32) for t in cut.tensors}
            nbytes[Route(cut.index, bits)] = np.array([len(p) for p in payloads])
            cloud_ok[Route(cut.index, bits)] = _argmax(tail.run_batched(feeds)) == y
    return FrameData(y, nbytes, cloud_ok, conf, local_ok, jpeg_ms, codec.name.lower(), host_ms)


def _argmax(outs: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.argmax(next(iter(outs.values())).reshape(len(next(iter(outs.values()))), -1), axis=1)


def _measure_jpeg(model: object, key: str, x: np.ndarray, y: np.ndarray, header: int, nbytes: dict,
                  cloud_ok: dict, jpeg_ms: dict) -> None:
    """The frame as a JPEG (PIL) at each quality: bytes (+ the wire header), float-model accuracy, host ms."""
    from PIL import Image

    for q in JPEG_QUALITIES:
        sizes, decoded, t_enc, t_dec = [], [], 0.0, 0.0
        for img in x:
            t0 = time.perf_counter()
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=q)
            data = buf.getvalue()
            t1 = time.perf_counter()
            decoded.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
            t_enc, t_dec = t_enc + t1 - t0, t_dec + time.perf_counter() - t1
            sizes.append(len(data) + header)
        nbytes[Route(0, 0, q)] = np.array(sizes)
        cloud_ok[Route(0, 0, q)] = _argmax(model.run_batched({key: np.stack(decoded)})) == y  # type: ignore[attr-defined]
        jpeg_ms[q] = (t_enc / len(x) * 1000.0, t_dec / len(x) * 1000.0)


# ---------------------------------------------------------------------------------------------- set-up
def make_setup(manifest: Manifest, config: DeviceConfig, data: FrameData, *, offload_only: bool = False) -> Setup:
    """Costs in board ms (head + exit, measured on 1 host thread, x this host's board factor - unless the bundle
    was converted for this board: its manifest times), tau, candidates."""
    board, dev = config.board, config.device
    family = model_family(manifest.model_name)  # the board factor of this workload's family
    factor = 1.0 if manifest.board == board.name else board_factor(board, family)  # this host emulates the board
    allowed = None if not offload_only else [c.index for c in manifest.cuts if c.kind is not CutKind.DEVICE]
    policy = CutPolicy(manifest, dev, allowed_cuts=allowed)
    dev_ms: dict[Route, float] = {}
    cloud_ms: dict[Route, float] = {}
    tau: dict[Route, float] = {}
    notes: list[str] = []
    for r in data.nbytes:
        c = manifest.cut(r.cut)
        if r.jpeg:
            enc, dec = data.jpeg_ms[r.jpeg]
            dev_ms[r], cloud_ms[r] = enc * board_factor(board), dec + c.tail_ms
        else:
            host = data.host_ms.get(c.index) if factor != 1.0 else None
            dev_ms[r] = 0.0 if c.kind is CutKind.RAW else (host if host is not None else c.head_ms + c.exit_ms) * factor
            cloud_ms[r] = c.tail_ms
        tau[r] = policy.tau(c.index, r.bits) if c.kind is CutKind.SPLIT else math.inf
    plan = policy.plan(make_estimator(manifest, config).snapshot())
    candidates = tuple(Route(o.index, o.bits) for o in plan.options if o.feasible)
    if any(o.reason.startswith("accuracy") for o in plan.options) and not any(
            o.feasible and o.kind is not CutKind.RAW for o in plan.options):
        notes.append("no cut meets the accuracy budget: candidates planned without it")
    budget = dev.accuracy_drop_budget
    statics = []
    for c in manifest.cuts:
        if c.kind is not CutKind.SPLIT:
            continue
        ok = [b for b in dev.bits if b in manifest.bits and (a := c.accuracy_at(b)) is not None
              and significant_drop(manifest.float_accuracy, a.accuracy, a.agreement, manifest.n_eval)
              <= budget + 1e-12]
        best = min(ok, key=lambda b: c.payload_bytes(b)) if ok else max(b for b in dev.bits if b in manifest.bits)
        if not ok:
            notes.append(f"cut {c.index}: no bit width within the budget; static uses {best} bits")
        statics.append(Route(c.index, best))
    raw = Route(manifest.raw_cut.index) if manifest.raw_cut else None
    jpeg = None
    if raw is not None and raw in data.cloud_ok:
        ref = float(np.mean(data.cloud_ok[raw]))
        within = [r for r in data.nbytes if r.jpeg and ref - float(np.mean(data.cloud_ok[r])) <= budget + 1e-12]
        jpeg = min(within, key=lambda r: float(np.mean(data.nbytes[r]))) if within else None
        if jpeg is None and data.jpeg_ms:
            notes.append("no JPEG quality within the accuracy budget")
    return Setup(manifest, config, data, dev_ms, cloud_ms, tau, candidates, tuple(statics), jpeg, tuple(notes))


# ---------------------------------------------------------------------------------------------- replay
@dataclass(frozen=True, slots=True)
class _Out:
    dev_end: float
    done: float  # when the answer would arrive (uncapped)
    link_free: float
    nbytes: int
    sent: bool
    correct: bool
    latency: float  # seconds, after the deadline fallback
    deadline: bool
    due: float = math.inf  # when the runner answers locally if the cloud has not (deadline or overdue wait)


def outcome(s: Setup, link: TraceLink, sc: Scenario, k: int, r: Route, probe: bool, arrival: float,
             start: float, link_free: float, wait: Callable[[Route, int], float | None] | None = None) -> _Out:
    """What serving frame ``k`` (arrived at ``arrival``, device free at ``start``) by route ``r`` gives.

    ``wait(r, nbytes)``: ms after the send (the end of the device compute) at which the runner answers
    a frame still unanswered (the overdue wait), None: the scenario's deadline only.
    """
    d = s.data
    kind = s.manifest.cut(r.cut).kind
    dev_end = start + s.dev_ms[r] / 1000.0
    local = kind is CutKind.DEVICE or (kind is CutKind.SPLIT and not probe and d.conf[r.cut][k] >= s.tau[r])
    if local:
        ok = bool(d.local_ok[r.cut][k])
        return _Out(dev_end, dev_end, link_free, 0, False, ok, dev_end - arrival, False)
    nb = int(d.nbytes[r][k])
    tx_end = link.transfer_end(max(dev_end, link_free), nb)
    done = tx_end + (sc.link_ms + s.cloud_ms[r]) / 1000.0
    latency, ok, late = done - arrival, bool(d.cloud_ok[r][k]), False
    due = arrival + sc.deadline_ms / 1000.0 if sc.deadline_ms is not None else math.inf
    wait_ms = wait(r, nb) if wait is not None else None
    if wait_ms is not None:
        due = min(due, dev_end + wait_ms / 1000.0)
    if done > due:
        late, latency = True, due - arrival
        if kind is CutKind.SPLIT:
            ok = bool(d.local_ok[r.cut][k])
        else:  # no exit: the runner runs the device cut's model at the deadline
            dc = s.device
            ok = dc is not None and bool(d.local_ok[dc.cut][k])
            latency += s.dev_ms[dc] / 1000.0 if dc is not None else 0.0
    return _Out(dev_end, done, tx_end, nb, True, ok, latency, late, due)


@dataclass(frozen=True, slots=True)
class PolicyRun:
    name: str
    latency_ms: np.ndarray
    nbytes: np.ndarray
    correct: np.ndarray
    sent: np.ndarray
    deadline: np.ndarray
    cuts: np.ndarray
    switches: int
    probes: int
    route: str = ""

    def summary(self) -> dict[str, object]:
        lat = self.latency_ms
        return {
            "route": self.route, "mean_ms": round(float(lat.mean()), 4), "p95_ms": round(float(np.percentile(lat, 95)), 4),
            "bytes_sent": int(self.nbytes.sum()), "bytes_per_frame": round(float(self.nbytes.mean()), 1),
            "accuracy": round(float(self.correct.mean()), 4), "escalation_rate": round(float(self.sent.mean()), 4),
            "deadline_rate": round(float(self.deadline.mean()), 4), "cut_switches": self.switches, "probes": self.probes,
            "frames": int(len(lat)),
        }  # fmt: skip


class _Chooser:
    name = ""
    probes = 0
    shadow: Route | None = None  # set by choose(): a shadow probe, the frame is answered by this local route

    def before(self, t: float) -> None: ...

    def choose(self, k: int, arrival: float, start: float, link_free: float) -> tuple[Route, bool]:
        raise NotImplementedError

    def after(self, r: Route, probe: bool, arrival: float, out: _Out) -> None: ...

    def wait_ms(self, r: Route, nbytes: int) -> float | None:
        return None  # the scenario's deadline only


def simulate(s: Setup, sc: Scenario, chooser: _Chooser, link: TraceLink | None = None) -> PolicyRun:
    """Replay ``sc.frames`` frames at ``sc.fps`` through the serial device and the FIFO uplink."""
    link = link or TraceLink(sc.trace)
    n = sc.frames
    lat, nb = np.zeros(n), np.zeros(n, dtype=np.int64)
    ok, sent, late = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    cuts = np.zeros(n, dtype=np.int64)
    dev_free = link_free = 0.0
    last: Route | None = None
    switches = 0
    for i in range(n):
        arrival = i / sc.fps
        start = max(arrival, dev_free)
        chooser.before(start)
        r, probe = chooser.choose(i % s.data.n, arrival, start, link_free)
        serve = chooser.shadow
        if serve is None:
            answer = outcome(s, link, sc, i % s.data.n, r, probe, arrival, start, link_free, chooser.wait_ms)
            chooser.after(r, probe, arrival, answer)
        else:
            answer = _shadow_probe(s, link, sc, i % s.data.n, r, serve, arrival, start, link_free, chooser)
        dev_free, link_free = answer.dev_end, answer.link_free
        lat[i], nb[i], ok[i], sent[i], late[i], cuts[i] = (answer.latency * 1000, answer.nbytes, answer.correct,
                                                           answer.sent, answer.deadline, serve.cut if serve else r.cut)
        if not probe:
            switches += last is not None and r != last
            last = r
    return PolicyRun(chooser.name, lat, nb, ok, sent, late, cuts, switches, chooser.probes)


class _Runner(_Chooser):
    """What every policy that *is* the runner shares: its ``Estimator``, fed only what a device observes
    (head times; for each sent frame, when its answer arrives, the tail and network times; a timeout
    when it is answered locally first), and the overdue wait (``CutPolicy.answer_within_ms``)."""

    def __init__(self, s: Setup, sc: Scenario, policy: CutPolicy, estimator: Estimator | None = None) -> None:
        self.s, self.sc, self.policy = s, sc, policy
        self.est = estimator or make_estimator(s.manifest, s.config)
        for cut in policy.cut_indices:  # the runner times every candidate head on start (RunnerOptions.measure_heads)
            if s.manifest.cut(cut).kind is not CutKind.RAW:
                self.est.observe_head(cut, next(v for r, v in s.dev_ms.items() if r.cut == cut and not r.jpeg))
        self._events: list[tuple[float, int, str, int, int, float, float]] = []
        self._ids = itertools.count()

    def before(self, t: float) -> None:
        while self._events and self._events[0][0] <= t:
            _, _, kind, cut, nbytes, a, b = heapq.heappop(self._events)
            if kind == "net":
                self.est.observe_tail(cut, b)
                self.est.observe_network(cut, nbytes, a)
            else:
                self.est.observe_timeout(cut, nbytes, a)

    def wait_ms(self, r: Route, nbytes: int) -> float | None:
        return self.policy.answer_within_ms(self.est.snapshot(), r.cut, nbytes)

    def after(self, r: Route, probe: bool, arrival: float, out: _Out) -> None:
        if self.s.manifest.cut(r.cut).kind is not CutKind.RAW:
            self.est.observe_head(r.cut, self.s.dev_ms[r])
        if not out.sent:
            return
        cloud = self.s.cloud_ms[r]
        net_ms = (out.done - out.dev_end) * 1000.0 - cloud  # device clock only, minus what the cloud reports
        heapq.heappush(self._events, (out.done, next(self._ids), "net", r.cut, out.nbytes, net_ms, cloud))
        if out.deadline:
            heapq.heappush(self._events, (out.due, next(self._ids), "timeout", r.cut, out.nbytes,
                                          (out.due - out.dev_end) * 1000.0, 0.0))


def _shadow_probe(s: Setup, link: TraceLink, sc: Scenario, k: int, probe: Route, serve: Route, arrival: float,
                  start: float, link_free: float, chooser: _Chooser) -> _Out:
    """A shadow probe, as the runner does it: the frame is served by ``serve`` (its payload, if any, goes
    first), then the probed head runs and its payload is sent; its answer only feeds the chooser's
    estimates. The probed head keeps the device busy (the next frame may wait for it), not the frame."""
    kind = s.manifest.cut(probe.cut).kind
    mine = outcome(s, link, sc, k, serve, False, arrival, start, link_free, chooser.wait_ms)
    chooser.after(serve, False, arrival, mine)
    probe_end = mine.dev_end + s.dev_ms[probe] / 1000.0
    if kind is CutKind.DEVICE:  # nothing to send: the probe measured the head only
        chooser.after(probe, True, arrival, replace(mine, dev_end=probe_end, sent=False, nbytes=0))
        return replace(mine, dev_end=probe_end)
    nb = int(s.data.nbytes[probe][k])
    tx_end = link.transfer_end(max(probe_end, mine.link_free), nb)
    done = tx_end + (sc.link_ms + s.cloud_ms[probe]) / 1000.0
    chooser.after(probe, True, arrival, _Out(probe_end, done, tx_end, nb, True, False, done - arrival, False))
    return replace(mine, dev_end=probe_end, link_free=tx_end, nbytes=mine.nbytes + nb)


class Static(_Chooser):
    """One route for every frame, waiting for the scenario's deadline (a plain client: cloud-jpeg)."""

    def __init__(self, name: str, route: Route) -> None:
        self.name, self.route = name, route

    def choose(self, k: int, arrival: float, start: float, link_free: float) -> tuple[Route, bool]:
        return self.route, False


class Pinned(_Runner):
    """The runner pinned to one route (every static cut, cloud-raw, edge-only): the same route for every
    frame, with the runner's estimates and overdue wait."""

    def __init__(self, name: str, route: Route, s: Setup, sc: Scenario) -> None:
        super().__init__(s, sc, CutPolicy(s.manifest, s.config.device, probe_every=0))
        self.name, self.route = name, route

    def choose(self, k: int, arrival: float, start: float, link_free: float) -> tuple[Route, bool]:
        return self.route, False


class Oracle(_Chooser):
    """Knows the link and the queue: per frame the candidate with the earliest answer (``exits``: knowing
    that frame's exit outcome too; otherwise planning as if it escalates)."""

    def __init__(self, name: str, s: Setup, sc: Scenario, link: TraceLink, *, exits: bool = True) -> None:
        self.name, self.s, self.sc, self.link, self.exits = name, s, sc, link, exits

    def choose(self, k: int, arrival: float, start: float, link_free: float) -> tuple[Route, bool]:
        def cost(r: Route) -> tuple[float, int, int]:
            o = outcome(self.s, self.link, self.sc, k, r, not self.exits, arrival, start, link_free)
            return (round(o.done, 9), o.nbytes, r.cut)

        return min(self.s.candidates, key=cost), False


class Dynamic(_Runner):
    """The runner's CutPolicy + Estimator, fed what a device observes (``perfect``: the true rate)."""

    def __init__(self, name: str, s: Setup, sc: Scenario, link: TraceLink, *, probe_every: int = 25,
                 perfect: bool = False, estimator: Estimator | None = None, allowed: Sequence[int] | None = None,
                 expected_cost: bool = True) -> None:
        allowed = allowed if allowed is not None else sorted({r.cut for r in s.candidates})
        super().__init__(s, sc, CutPolicy(s.manifest, s.config.device, probe_every=probe_every, allowed_cuts=allowed,
                                          expected_cost=expected_cost), estimator)  # fmt: skip
        self.name, self.link, self.perfect = name, link, perfect
        self.trail: list[tuple[float, int]] = []  # (decision time, chosen cut) of non-probe frames
        self._peak = 0.0  # perfect: the highest true rate so far (the estimator's peak, known exactly)

    @property
    def probes(self) -> int:  # type: ignore[override]
        return self.policy.probes

    def choose(self, k: int, arrival: float, start: float, link_free: float) -> tuple[Route, bool]:
        snap = self.est.snapshot()
        if self.perfect:
            rate = self.link.rate_ahead(start)
            self._peak = max(self._peak, rate)
            snap = Estimates(rate, self.sc.link_ms, snap.head_ms, snap.tail_ms, snap.last_sample, True, self._peak,
                             measured_peak_bytes_per_s=self._peak)
        d = self.policy.decide(snap)
        if not d.probe:
            self.trail.append((start, d.choice.cut))
        self.shadow = Route(d.answer_with.cut, d.answer_with.bits) if d.answer_with is not None else None
        return Route(d.choice.cut, d.choice.bits), d.probe


def _label(s: Setup, r: Route) -> str:
    kind = s.manifest.cut(r.cut).kind
    return (f"jpeg-q{r.jpeg}" if r.jpeg else "raw" if kind is CutKind.RAW else "device" if kind is CutKind.DEVICE
            else f"cut{r.cut}@{r.bits}b")  # fmt: skip


def compare(s: Setup, sc: Scenario, *, diagnostics: bool = True) -> dict[str, PolicyRun]:
    """Every policy on one scenario, in one run (same frames, same trace)."""
    link = TraceLink(sc.trace)
    runs: dict[str, PolicyRun] = {}
    choosers: list[_Chooser] = [Dynamic("dynamic", s, sc, link)]
    if diagnostics:
        choosers += [Dynamic("dynamic-no-probes", s, sc, link, probe_every=0),
                     Dynamic("dynamic-perfect-bw", s, sc, link, perfect=True),
                     Dynamic("dynamic-escalated-cost", s, sc, link, expected_cost=False)]
    choosers += [Pinned(f"static:{_label(s, r)}", r, s, sc) for r in s.statics]
    raw = s.manifest.raw_cut
    if raw is not None:
        choosers.append(Pinned("cloud-raw", Route(raw.index), s, sc))
    if s.jpeg is not None:
        choosers.append(Static("cloud-jpeg", s.jpeg))
    if s.device is not None:
        choosers.append(Pinned("edge-only", s.device, s, sc))
    choosers += [Oracle("oracle", s, sc, link), Oracle("oracle-link", s, sc, link, exits=False)]
    for ch in choosers:
        run_ = simulate(s, sc, ch, link)
        label = _label(s, getattr(ch, "route", Route(-1))) if isinstance(ch, Static | Pinned) else ""
        runs[ch.name] = replace(run_, route=label)
    allowed_static = [n for n in runs if n.startswith("static:") or n == "edge-only"
                      or (n == "cloud-raw" and not s.config.device.privacy)]
    feasible = [n for n in allowed_static if _route_of(s, runs[n]) in s.candidates] or allowed_static
    best = min(feasible, key=lambda n: float(runs[n].latency_ms.mean()))
    runs["best-static"] = replace(runs[best], name="best-static", route=f"{best}")
    return runs


def _route_of(s: Setup, r: PolicyRun) -> Route | None:
    for route in list(s.statics) + [x for x in (s.device, Route(0)) if x is not None]:
        if _label(s, route) == r.route:
            return route
    return None


# ---------------------------------------------------------------------------------------------- frames
_FRAMES: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}


def reference_frames(n: int = DEFAULT_FRAMES, manifest: Manifest | None = None) -> tuple[np.ndarray, np.ndarray]:
    """N labelled test frames of the bundle's workload (digits when unknown) that :func:`measure` uses."""
    from converter.workloads import WORKLOADS, for_manifest  # numpy only; never TensorFlow

    workload = (for_manifest(manifest) if manifest is not None else None) or WORKLOADS["digits"]
    if manifest is not None and tuple(manifest.input.shape) != (workload.frame_size, workload.frame_size, 3):
        raise ValueError(f"bundle {manifest.bundle_id[:12]} takes {tuple(manifest.input.shape)} frames and was not "
                         "built from a named workload (splitedge reference --list): the replay has no labelled "
                         "frames for it")
    key = (workload.name, n)
    if key not in _FRAMES:
        frames = workload.frames(n, seed=REF_SEED, split="test")
        _FRAMES[key] = (frames.x, np.asarray(frames.y))
    return _FRAMES[key]
