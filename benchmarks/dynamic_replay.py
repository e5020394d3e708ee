"""The replay behind ``splitedge bench dynamic``: the real ``DeviceRunner`` on a bandwidth trace, in simulated time.

What is measured once per bundle (:func:`measure`, LiteRT on N reference test frames): every cut's int8
head + early exit on each frame (the device runner's own ``LiteRTHeads``): its activations and its
prediction, kept; the real wire bytes of each activation at each bit width (``sdk.wire.encode_activation``
with the profile's codec) and the cloud tail's answer on the decoded activation; the raw frame's bytes and
the float model's answer; the frame as JPEG at qualities 95..30 (PIL) with the float model's answer on it.

What is replayed (:func:`replay`): the device runner itself - ``DeviceRunner.run`` with its ``CutPolicy``,
``Estimator``, in-flight map, exit test, overdue wait, deadline fallback and shadow probes - on a
simulated clock (``benchmarks.sim_clock``; nothing sleeps in real time). Only its surroundings are
simulated: the heads return the recorded outputs after their measured board time
(``benchmarks.sim_heads``); the ``act`` uplink is the live run's ``TraceShaper`` (FIFO, bytes at the
trace's rate, plus ``link_ms``) on an in-memory hub, and a simulated worker answers each payload with the
recorded tail output after the tail's time (``benchmarks.sim_link``). When the policy or the runner
changes, the replay changes with it: it is the same code.

Policies (:func:`compare`): ``dynamic`` (the shipped policy), three diagnostics (``dynamic-no-probes``,
``dynamic-perfect-bw``: planning with the trace's true rate over the next second,
``dynamic-escalated-cost``: without the exit in the plan), every static cut at its smallest bit width within
the accuracy budget, ``cloud-raw`` and ``edge-only`` (the runner pinned to one route), ``best-static`` (in
hindsight), ``oracle`` / ``oracle-link`` (per frame the route whose answer comes first at the link's true
state, knowing the frame's exit outcome or not) - all run by the real runner (``benchmarks.replay_policies``)
- and ``cloud-jpeg``, a plain client that is not the runner (``replay_policies.plain_client``).

The reporting and the command line are in ``benchmarks.bench_dynamic``.
"""

from __future__ import annotations

import io
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks.replay_policies import OraclePolicy, PerfectBandwidth, PinnedPolicy, plain_client
from benchmarks.sim_clock import SimClock
from benchmarks.sim_heads import Recorded, RecordedHeads
from benchmarks.sim_link import SimTail, SimUplink
from device_runner.answers import Answer, AnsweredBy
from device_runner.estimator import Estimator
from device_runner.heads import Prediction
from device_runner.link import TraceShaper
from device_runner.policy import Choice, CutPolicy
from device_runner.runner import RunnerOptions, make_estimator
from device_runner.wiring import policy_for, wire_runner
from sdk.config import DeviceConfig, load_board
from sdk.families import model_family
from sdk.host_speed import board_factor
from sdk.manifest import CutKind, Manifest
from sdk.planner import significant_drop
from sdk.traces import BandwidthTrace
from sdk.transport import InMemoryHub
from sdk.wire import Codec, decode_frame, encode_activation, encode_raw

__all__ = [
    "DEFAULT_FRAMES", "JPEG_QUALITIES", "FrameData", "PolicyRun", "Route", "Scenario", "Setup", "answers_run",
    "compare", "dynamic_policy", "make_setup", "measure", "oracle_policy", "pinned_policy", "recorded_outputs",
    "reference_frames", "replay",
]  # fmt: skip

JPEG_QUALITIES = tuple(range(95, 25, -5))
REF_SEED = 4321  # not the calibration seed (1234): frames the converter never saw
DEFAULT_FRAMES = 200
DEVICE_ID = "bench-dynamic"
NO_DEADLINE_MS = 3_600_000.0  # a scenario without a deadline: the runner waits an hour


# ---------------------------------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True, order=True)
class Route:
    """How one frame is served: a cut at a bit width (0 for raw/device), or the raw frame as JPEG."""

    cut: int
    bits: int = 0
    jpeg: int = 0  # JPEG quality of the raw frame (cut 0); 0 = not JPEG


@dataclass(frozen=True, slots=True)
class FrameData:
    """Per reference frame, measured once: bytes on the wire, the cloud's and the heads' answers, confidences."""

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
    #: the replayed frames (None: blank frames of the bundle's input shape)
    frames: np.ndarray | None = field(default=None, repr=False)
    #: cut -> per frame (activations, prediction) as the head and exit produced them (empty: zero
    #: activations of the manifest's shapes and predictions made from ``conf``/``local_ok``, for fake bundles)
    outputs: Mapping[int, Sequence[Recorded]] = field(default_factory=dict, repr=False)
    #: route -> per frame the class the cloud answers (empty: the label when ``cloud_ok``, else another)
    cloud_cls: Mapping[Route, np.ndarray] = field(default_factory=dict)

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
    cloud_cls: dict[Route, np.ndarray] = {}
    conf: dict[int, np.ndarray] = {}
    local_ok: dict[int, np.ndarray] = {}
    outputs: dict[int, list[Recorded]] = {}
    jpeg_ms: dict[int, tuple[float, float]] = {}
    common = dict(device_id=DEVICE_ID, bundle_id=m.wire_bundle_id, capture_ts=0.0, codec=codec)
    for cut in m.cuts:
        if cut.kind is CutKind.RAW:
            assert cut.tail is not None
            model = LiteRTModel(bundle / cut.tail.path)
            key = next(iter(model.inputs))
            nbytes[Route(cut.index)] = np.array([len(encode_raw(seq=i, image=x[i][None], name=cut.tensors[0].name,
                                                                cut_id=cut.index, **common)) for i in range(len(x))])  # type: ignore[arg-type]
            cloud_cls[Route(cut.index)] = _argmax(model.run_batched({key: x}))
            plain = dict(common, codec=Codec.NONE)
            header = len(encode_raw(seq=0, image=x[0][None], name=cut.tensors[0].name, **plain)) - int(x[0].size)  # type: ignore[arg-type]
            _measure_jpeg(model, key, x, header, nbytes, cloud_cls, jpeg_ms)
            continue
        outs = [heads.run(cut, x[i]) for i in range(len(x))]
        outputs[cut.index] = [(o.activations, o.prediction) for o in outs]
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
            cloud_cls[Route(cut.index, bits)] = _argmax(tail.run_batched(feeds))
    cloud_ok = {r: v == y for r, v in cloud_cls.items()}
    return FrameData(y, nbytes, cloud_ok, conf, local_ok, jpeg_ms, codec.name.lower(), host_ms, x, outputs, cloud_cls)


def _argmax(outs: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.argmax(next(iter(outs.values())).reshape(len(next(iter(outs.values()))), -1), axis=1)


def _measure_jpeg(model: object, key: str, x: np.ndarray, header: int, nbytes: dict, cloud_cls: dict,
                  jpeg_ms: dict) -> None:
    """The frame as a JPEG (PIL) at each quality: bytes (+ the wire header), the float model's answer, host ms."""
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
        cloud_cls[Route(0, 0, q)] = _argmax(model.run_batched({key: np.stack(decoded)}))  # type: ignore[attr-defined]
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
    q = dev.raw_jpeg_quality  # the runner sends the raw frame as a JPEG of this quality
    candidates = tuple(Route(o.index, o.bits, q if q is not None and o.kind is CutKind.RAW else 0)
                       for o in plan.options if o.feasible)
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
    answers: tuple[Answer, ...] = field(default=(), repr=False)  # the runner's own, by seq (empty: not the runner)
    #: per answer of a sent frame: the device's bandwidth estimate / the trace's mean rate in the second before
    est_ratios: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def summary(self) -> dict[str, object]:
        lat = self.latency_ms
        return {
            "route": self.route, "mean_ms": round(float(lat.mean()), 4), "p95_ms": round(float(np.percentile(lat, 95)), 4),
            "bytes_sent": int(self.nbytes.sum()), "bytes_per_frame": round(float(self.nbytes.mean()), 1),
            "accuracy": round(float(self.correct.mean()), 4), "escalation_rate": round(float(self.sent.mean()), 4),
            "deadline_rate": round(float(self.deadline.mean()), 4), "cut_switches": self.switches, "probes": self.probes,
            "frames": int(len(lat)), "estimate_over_true": _median_or_none(self.est_ratios),
            "estimate_samples": int(len(self.est_ratios)),
        }  # fmt: skip


def _median_or_none(values: np.ndarray) -> float | None:
    return round(float(np.median(values)), 3) if len(values) else None


def answers_run(name: str, answers: Sequence[Answer], labels: np.ndarray, switches: int, probes: int,
                route: str = "") -> PolicyRun:
    """A run's table row from the runner's answers (the replay's and the live run's alike)."""
    a = tuple(sorted(answers, key=lambda v: v.seq))
    y = labels[np.array([v.seq for v in a], dtype=np.int64) % len(labels)]
    return PolicyRun(
        name, np.array([v.latency_ms for v in a]), np.array([v.bytes for v in a], dtype=np.int64),
        np.array([v.cls for v in a]) == y, np.array([v.bytes > 0 for v in a], dtype=bool),
        np.array([v.answered_by is AnsweredBy.DEADLINE for v in a], dtype=bool),
        np.array([v.cut for v in a], dtype=np.int64), switches, probes, route, a,
    )  # fmt: skip


def _other(cls: int, classes: int) -> int:
    return (cls + 1) % max(classes, 2)


def recorded_outputs(manifest: Manifest, data: FrameData) -> dict[int, list[Recorded]]:
    """The heads' outputs to replay: the measured ones, or (fake bundles) zero activations of the manifest's
    shapes with predictions made from ``conf`` and ``local_ok`` (the label, or another class)."""
    out: dict[int, list[Recorded]] = {c: list(v) for c, v in data.outputs.items()}
    for cut in manifest.cuts:
        if cut.kind is CutKind.RAW or cut.index in out or cut.index not in data.conf:
            continue
        acts = {} if cut.kind is CutKind.DEVICE else {
            t.name: np.zeros((1, *t.shape), dtype=np.int8) for t in cut.tensors}
        rows: list[Recorded] = []
        for k in range(data.n):
            y = int(data.labels[k])
            cls = y if data.local_ok[cut.index][k] else _other(y, manifest.num_classes)
            conf = float(data.conf[cut.index][k])
            rows.append((acts, Prediction(cls, conf, ((cls, conf),))))
        out[cut.index] = rows
    return out


class _CloudAnswers:
    """(cut, bits, seq) -> the recorded class the cloud answers for that frame's payload (module doc)."""

    def __init__(self, data: FrameData, manifest: Manifest, jpeg: int | None = None) -> None:
        """``jpeg``: the raw frame arrives as a JPEG of that quality (``raw_jpeg_quality`` of the run's profile)."""
        self.data, self.classes = data, manifest.num_classes
        self.raw = manifest.raw_cut.index if manifest.raw_cut is not None else None
        self.jpeg = jpeg or 0

    def __call__(self, cut: int, bits: int, seq: int) -> tuple[int, tuple[tuple[int, float], ...]]:
        d, k = self.data, seq % self.data.n
        r = Route(cut, bits, self.jpeg if cut == self.raw else 0)
        if r in d.cloud_cls:
            cls = int(d.cloud_cls[r][k])
        else:
            y = int(d.labels[k])
            cls = y if r in d.cloud_ok and d.cloud_ok[r][k] else _other(y, self.classes)
        return cls, ((cls, 1.0),)


def replay(s: Setup, sc: Scenario, make_policy: object, name: str, *, perfect_bw: bool = False,
           route: str = "") -> PolicyRun:
    """The real ``DeviceRunner`` on ``sc`` in simulated time (module doc).

    ``make_policy(device, shaper, clock)`` builds the runner's policy for the scenario's device settings
    (fps, deadline); ``perfect_bw``: the estimator's snapshots carry the trace's true rate.
    """
    m, d = s.manifest, s.data
    clock = SimClock()
    device = replace(s.config.device, device_id=DEVICE_ID, fps_cap=sc.fps,
                     deadline_ms=sc.deadline_ms if sc.deadline_ms is not None else NO_DEADLINE_MS)
    cfg = replace(s.config, device=device)
    hub = InMemoryHub(clock=clock)
    jpeg = device.raw_jpeg_quality
    raw = m.raw_cut.index if m.raw_cut is not None else None
    if jpeg is not None and Route(raw or 0, 0, jpeg) not in s.dev_ms:
        raise ValueError(f"raw_jpeg_quality = {jpeg} of the profile was not measured; the replay measures the "
                         f"qualities {list(JPEG_QUALITIES)}: use one of them")
    SimTail(hub.transport("sim-tail"), clock, _CloudAnswers(d, m, jpeg),
            lambda cut: s.cloud_ms.get(Route(cut, 0, jpeg or 0) if cut == raw else Route(cut), m.cut(cut).tail_ms))
    shaper = TraceShaper(sc.trace, latency_s=sc.link_ms / 1000.0)
    uplink = SimUplink(hub.transport(DEVICE_ID), shaper, clock)
    frames = d.frames if d.frames is not None else np.zeros((d.n, *m.input.shape), dtype=np.uint8)
    board_ms = {r.cut: v for r, v in s.dev_ms.items() if not r.jpeg}
    heads = RecordedHeads(clock, frames, recorded_outputs(m, d), board_ms,
                          raw_ms=s.dev_ms[Route(raw or 0, 0, jpeg)] if jpeg is not None else None)
    policy = make_policy(device, shaper, clock)  # type: ignore[operator]
    options = RunnerOptions(stretch_emulated=True)  # device work outside a head (JPEG) is slept on the sim clock
    estimator: Estimator = make_estimator(m, cfg, prior_bandwidth=options.prior_bandwidth)
    if perfect_bw:
        estimator = PerfectBandwidth(estimator, shaper, clock, sc.link_ms)  # type: ignore[assignment]
    answers: list[Answer] = []
    ratios: list[float] = []

    def on_answer(a: Answer) -> None:
        """Keep the answer; for a frame that sent a payload, once a bandwidth is measured, the estimate over the
        trace's mean rate in the second before (the demo's estimate / true, outages left out)."""
        answers.append(a)
        if a.bytes or a.probe:
            ratio = sc.trace.estimate_ratio(shaper.trace_time(clock()), runner.estimator.bandwidth)
            if ratio is not None:
                ratios.append(ratio)

    runner = wire_runner(cfg, uplink, manifest=m, heads=heads, policy=policy, estimator=estimator,
                         on_answer=on_answer, clock=clock, sleep=clock.sleep, wait=clock.wait, options=options)
    try:
        runner.start()  # times every candidate head (before the trace starts, as live)
        shaper.t0 = clock()
        summary = runner.run((frames[i % len(frames)] for i in itertools.count()), frames=sc.frames)
    finally:
        runner.close()
    return replace(answers_run(name, answers, d.labels, summary.switches, summary.probes, route),
                   est_ratios=np.array(ratios))


def dynamic_policy(s: Setup, *, probe_every: int | None = None, expected_cost: bool | None = None,
                   allowed: Sequence[int] | None = None) -> object:
    """The shipped policy over the setup's candidate cuts (or ``allowed``), for :func:`replay`: the profile's
    ``[policy]`` with the knobs given here (``device_runner.wiring.policy_for``, as ``splitedge device``)."""
    cuts = tuple(allowed) if allowed is not None else tuple(sorted({r.cut for r in s.candidates}))
    knobs = {"probe_every": probe_every, "expected_cost": expected_cost, "allowed_cuts": cuts}
    return lambda device, shaper, clock: policy_for(s.manifest, replace(s.config, device=device), knobs)


def pinned_policy(s: Setup, r: Route) -> object:
    """The runner pinned to ``r`` (a static baseline), for :func:`replay`."""
    return lambda device, shaper, clock: PinnedPolicy(s.manifest, device, Choice(r.cut, r.bits))


def oracle_policy(s: Setup, sc: Scenario, *, exits: bool) -> object:
    """Per frame the route whose answer comes first at the link's true state, for :func:`replay`."""
    return lambda device, shaper, clock: OraclePolicy(s, device, shaper, clock, sc.link_ms, exits=exits)


def _label(s: Setup, r: Route) -> str:
    kind = s.manifest.cut(r.cut).kind
    return (f"jpeg-q{r.jpeg}" if r.jpeg else "raw" if kind is CutKind.RAW else "device" if kind is CutKind.DEVICE
            else f"cut{r.cut}@{r.bits}b")  # fmt: skip


def compare(s: Setup, sc: Scenario, *, diagnostics: bool = True) -> dict[str, PolicyRun]:
    """Every policy on one scenario (same frames, same trace), each a run of the real runner but cloud-jpeg."""
    runs: dict[str, PolicyRun] = {"dynamic": replay(s, sc, dynamic_policy(s), "dynamic")}
    if diagnostics:
        runs["dynamic-no-probes"] = replay(s, sc, dynamic_policy(s, probe_every=0), "dynamic-no-probes")
        runs["dynamic-perfect-bw"] = replay(s, sc, dynamic_policy(s), "dynamic-perfect-bw", perfect_bw=True)
        runs["dynamic-escalated-cost"] = replay(s, sc, dynamic_policy(s, expected_cost=False), "dynamic-escalated-cost")
    for r in s.statics:
        name = f"static:{_label(s, r)}"
        runs[name] = replay(s, sc, pinned_policy(s, r), name, route=_label(s, r))
    raw = s.manifest.raw_cut
    jpeg = _jpeg_route(s)
    if jpeg is not None:  # the runner pinned to the raw frame as JPEG (the profile's raw_jpeg_quality)
        name = f"static:{_label(s, jpeg)}"
        runs[name] = replay(s, sc, pinned_policy(s, jpeg), name, route=_label(s, jpeg))
    if raw is not None:  # what sending the frame would give, even where privacy forbids it (best-static skips it then)
        open_ = replace(s, config=replace(s.config, device=replace(s.config.device, privacy=False,
                                                                   raw_jpeg_quality=None)))  # the frame's pixels
        runs["cloud-raw"] = replay(open_, sc, pinned_policy(open_, Route(raw.index)), "cloud-raw", route="raw")
    if s.jpeg is not None:
        runs["cloud-jpeg"] = replace(plain_client(s, sc, s.jpeg, "cloud-jpeg"), route=_label(s, s.jpeg))
    if s.device is not None:
        runs["edge-only"] = replay(s, sc, pinned_policy(s, s.device), "edge-only", route="device")
    runs["oracle"] = replay(s, sc, oracle_policy(s, sc, exits=True), "oracle")
    runs["oracle-link"] = replay(s, sc, oracle_policy(s, sc, exits=False), "oracle-link")
    allowed_static = [n for n in runs if n.startswith("static:") or n == "edge-only"
                      or (n == "cloud-raw" and not s.config.device.privacy)]
    feasible = [n for n in allowed_static if _route_of(s, runs[n]) in s.candidates] or allowed_static
    best = min(feasible, key=lambda n: float(runs[n].latency_ms.mean()))
    runs["best-static"] = replace(runs[best], name="best-static", route=f"{best}")
    return runs


def _jpeg_route(s: Setup) -> Route | None:
    """The raw frame as the profile's JPEG, where the profile sends it (``raw_jpeg_quality``, no privacy)."""
    raw, dev = s.manifest.raw_cut, s.config.device
    if raw is None or dev.raw_jpeg_quality is None or dev.privacy:
        return None
    return Route(raw.index, 0, dev.raw_jpeg_quality)


def _route_of(s: Setup, r: PolicyRun) -> Route | None:
    for route in list(s.statics) + [x for x in (s.device, Route(0), _jpeg_route(s)) if x is not None]:
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
