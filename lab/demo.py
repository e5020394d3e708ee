"""``splitedge demo``: broker, cloud tail, N devices, each uplink following a real bandwidth trace.

    splitedge demo [--devices 3] [--duration 60] [--trace FILE] [--board pi4] [--fps F] [--out DIR]
                   [--link shaper|netns] [--no-plots] [--bundle DIR] [--workers K] [--kill-broker-at S]

This module lives on the cloud side, the side that may import every dependency: it builds the
reference bundle (TensorFlow, through ``converter``) and the labelled frames, draws plots with
matplotlib, and starts everything else as processes: the embedded broker (Mosquitto, else amqtt),
``python -m sdk.cli cloud`` tail workers, and one device process per camera
(``python -m lab.demo --device-worker SPEC.json``) that imports only the device side
(``device_runner``, LiteRT, numpy, paho) and runs a :class:`~device_runner.runner.DeviceRunner` on
the reference frames.

Each device's uplink follows the same trace from a different offset (staggered by period / N):

* ``--link shaper`` (default, works anywhere): inside the device's transport, a FIFO link whose
  transfers end when :meth:`BandwidthTrace.transfer_end` says (``device_runner.link.TraceShaper``), plus the
  ``--latency-ms`` round trip;
* ``--link netns`` (root, Linux): every device process runs in its own network namespace and its
  uplink is a veth whose ``tbf`` rate follows the trace (:mod:`lab.netem`); falls back to the
  shaper, saying why, where that is not possible.

Before the devices start, a short saturation check measures that the chosen emulation delivers what
the trace says (per-window correlation and mean error). Then a progress table refreshes; at the end a
summary (frames, who answered, cut switches, bytes vs raw frames, latency p50/p95, accuracy), the
answers (``device-<i>.jsonl``), ``summary.json`` and two PNGs go to ``--out`` (the table, the summary and
the plots: :mod:`lab.demo_report`). Exit code 0 only when every frame was answered exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lab import netem
from lab.demo_report import (
    View,
    answer_problems,
    cloud_totals,
    cut_labels,
    estimate_tracking,
    plots,
    print_summary,
    progress,
    summarise,
)
from sdk.defaults import CELLULAR_RTT_MS, DEFAULT_BOARD, DEFAULT_TRACE
from sdk.traces import BandwidthTrace, load_trace, pick_trace, synthetic_trace

if TYPE_CHECKING:
    from sdk.manifest import Manifest

__all__ = ["DeviceSpec", "answer_problems", "check_shaper", "main", "parse_args", "run_device"]

_REPO = Path(__file__).resolve().parents[1]


# ====================================================================== the emulated uplink (shaper)


class _Sink:
    """A Transport stand-in that records when each released payload arrives."""

    connected = True

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.arrivals.append((time.time(), len(payload)))

    def close(self) -> None:
        return None


def check_shaper(trace: BandwidthTrace, offset: float, seconds: float, *, window_s: float = 0.5,
                 packet: int = 4000) -> netem.LinkCheck:
    """Saturate a real :class:`~device_runner.link.ShapedTransport` + ``TraceShaper`` for
    ``seconds`` (wall clock, its release thread) and compare bytes released per window with the trace."""
    from device_runner.link import ShapedTransport, TraceShaper

    sink = _Sink()
    t0 = time.time()
    shaped = ShapedTransport(sink, TraceShaper(trace, offset=offset, t0=t0), max_pending=64)  # type: ignore[arg-type]
    payload = bytes(packet)
    try:
        while time.time() < t0 + seconds:
            while shaped.pending < 60:
                shaped.publish("demo/check/act", payload)
            time.sleep(0.002)
    finally:
        shaped.close()
    n = int(seconds / window_s)
    times = np.array([t for t, _ in sink.arrivals]) - t0
    sizes = np.array([b for _, b in sink.arrivals], dtype=np.float64)
    achieved = np.array([sizes[(times >= k * window_s) & (times < (k + 1) * window_s)].sum() / window_s
                         for k in range(n)])
    expected = np.array([(trace.delivered(offset + (k + 1) * window_s) - trace.delivered(offset + k * window_s))
                         / window_s for k in range(n)])
    return netem.track(achieved, expected, window_s)


def _load_trace(spec: str) -> BandwidthTrace:
    return synthetic_trace(int(spec.split(":", 1)[1])) if spec.startswith("synthetic:") else load_trace(spec)


# ====================================================================== one device (a subprocess)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """Everything a device process needs; written as JSON by the demo."""

    device_id: str
    bundle: str
    board: str
    broker: str
    frames: str  # .npz of frames
    fps: float | None
    duration: float
    trace: str  # a path, or synthetic:<seed>
    offset: float
    t0: float  # wall time at which frames start (trace time = now - t0 + offset)
    latency_ms: float
    shaper: bool  # False: the kernel shapes (netns)
    out: str  # answers JSON lines
    max_inflight: int = 32


def run_device(spec: DeviceSpec) -> int:
    """One camera: a DeviceRunner over MQTT (+ the trace shaper), writing one JSON line per answer."""
    from device_runner.heads import LiteRTHeads
    from device_runner.link import TraceShaper
    from device_runner.runner import Answer, DeviceRunner, RunnerOptions
    from device_runner.sources import NpzSource
    from device_runner.wiring import wire_runner
    from sdk.config import load_board, with_overrides
    from sdk.manifest import load_manifest
    from sdk.messages import StatusMessage
    from sdk.mqtt import MqttTransport
    from sdk.transport import Transport, status_will

    cfg = with_overrides(load_board(spec.board), broker_url=spec.broker, device_id=spec.device_id,
                         source=f"npz:{spec.frames}")
    if spec.fps:
        cfg = replace(cfg, device=replace(cfg.device, fps_cap=spec.fps))
    manifest = load_manifest(spec.bundle)
    heads = LiteRTHeads(spec.bundle, manifest, cfg.board)
    offline = StatusMessage(spec.device_id, False, time.time()).to_bytes()
    transport: Transport = MqttTransport(spec.broker, client_id=spec.device_id, wait_connected=False,
                                         will=status_will(spec.device_id, offline))
    deadline = time.monotonic() + 10.0
    while not transport.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    shaper = TraceShaper(_load_trace(spec.trace), offset=spec.offset, t0=spec.t0,
                         latency_s=spec.latency_ms / 1000.0) if spec.shaper else None
    out = open(spec.out, "w", encoding="utf-8")  # noqa: SIM115 - closed below, after the runner
    holder: list[DeviceRunner] = []

    def write(answer: Answer) -> None:
        r = holder[0]
        cur = r.policy.current
        line = {"t": time.time(), **answer.to_dict(), "cur": cur.cut if cur else answer.cut,
                "cur_bits": cur.bits if cur else answer.bits, "est": r.estimator.bandwidth}
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        out.flush()

    runner = wire_runner(cfg, transport, bundle=spec.bundle, manifest=manifest, heads=heads, shaper=shaper,
                         on_answer=write, options=RunnerOptions(max_inflight=spec.max_inflight))
    holder.append(runner)
    source = NpzSource(spec.frames, tuple(manifest.input.shape), loop=True)
    heads.run(manifest.cuts[-1], next(iter(source)))  # load a model before the clock starts
    out.write(json.dumps({"start": spec.t0, "ready": time.time(), "emulated": heads.emulated}) + "\n")
    out.flush()
    time.sleep(max(0.0, spec.t0 - time.time()))

    def frames() -> object:
        for frame in source:
            if time.time() >= spec.t0 + spec.duration:
                return
            yield frame

    try:
        summary = runner.run(frames())  # type: ignore[arg-type]
    finally:
        runner.close()
    out.write(json.dumps({"summary": asdict(summary)}) + "\n")
    out.close()
    return 0


# ====================================================================== the demo


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="splitedge demo", description="The end-to-end demo: broker, cloud tail, "
                                "devices, each uplink following a real bandwidth trace.")
    p.add_argument("--devices", type=int, default=3, help="number of emulated cameras (default 3)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of frames per device (default 60)")
    p.add_argument("--trace", help=f"a bandwidth trace file (default: {DEFAULT_TRACE} from the shared traces, "
                   "else a bundled synthetic one); 'synthetic' forces the synthetic one")
    p.add_argument("--board", default=DEFAULT_BOARD, help=f"board profile of every device (default {DEFAULT_BOARD})")
    p.add_argument("--fps", type=float, help="frames per second per device (default: the profile's fps_cap)")
    p.add_argument("--out", type=Path, default=Path("splitedge-demo"), help="output folder (default ./splitedge-demo)")
    p.add_argument("--link", choices=["shaper", "netns"], default="shaper",
                   help="emulate the uplink in the transport (default) or in the kernel (namespaces + tbf, root)")
    p.add_argument("--latency-ms", type=float, default=CELLULAR_RTT_MS,
                   help="fixed round trip per transfer, added on the uplink (answers return undelayed), shaper only "
                        f"(default {CELLULAR_RTT_MS:g}: an LTE round trip, sdk.defaults.CELLULAR_RTT_MS)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the replayed edge-only / cloud-JPEG comparison in the summary")
    from converter.workloads import DEFAULT_WORKLOAD, names

    p.add_argument("--workload", choices=names(), default=None,
                   help=f"the model and frames (default {DEFAULT_WORKLOAD}, or the one --bundle was built from; "
                        "splitedge reference --list)")
    p.add_argument("--bundle", type=Path, help="bundle folder (default: build or reuse the workload's bundle)")
    p.add_argument("--workers", type=int, default=1, help="cloud tail worker processes (default 1)")
    p.add_argument("--frames", type=int, default=200, help="distinct labelled frames per device (default 200)")
    p.add_argument("--link-check", type=float, default=4.0, help="seconds of the link saturation check (0: skip)")
    p.add_argument("--kill-broker-at", type=float, help="SIGKILL the broker this many seconds into the run")
    p.add_argument("--device-worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device_worker is None:
        for name in ("devices", "workers", "frames"):
            if getattr(args, name) < 1:
                p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
        if args.duration <= 0:
            p.error(f"--duration must be > 0 seconds, got {args.duration}")
    return args


def _say(text: str) -> None:
    print(f"splitedge demo: {text}", flush=True)


def _workload(arg: str | None, bundle: Path | None) -> str | None:
    """--workload, else the one --bundle was built from (None: a user's bundle), else the default."""
    from converter.workloads import DEFAULT_WORKLOAD, for_manifest
    from sdk.manifest import load_manifest

    if arg is not None or bundle is None:
        return arg or DEFAULT_WORKLOAD
    w = for_manifest(load_manifest(bundle))
    return w.name if w else None


def _bundle(arg: Path | None, workload: str | None) -> Path:
    if arg is not None:
        return arg
    assert workload is not None  # _workload names one whenever no --bundle is given
    from converter.convert_cli import _Bar
    from converter.reference import bundle_path, default_bundle_dir

    out = default_bundle_dir(workload)
    if (out / "manifest.json").is_file():
        _say(f"reusing (after a check) the {workload} bundle in {out}")
    else:
        _say(f"building the {workload} bundle in {out}: a one-time conversion (digits ~2 min, 224 px models "
             "~3-5 min on 2 cores); progress below")
    t0 = time.perf_counter()
    bar = _Bar(quiet=False)
    try:
        path, _ = bundle_path(workload, progress=bar)
    finally:
        bar.close()
    if time.perf_counter() - t0 > 5:
        _say(f"bundle built in {time.perf_counter() - t0:.0f} s")
    return path


def _frames(n: int, devices: int, out: Path, shape: tuple[int, ...],
            workload: str | None) -> tuple[list[Path], list[np.ndarray | None]]:
    """One .npz per device (the same labelled test frames, rotated), and the labels (None: unlabelled).

    ``workload`` None (a bundle not built from a named workload): random frames of its shape, no accuracy.
    """
    from sdk.errors import MissingDependencyError

    if workload is None:
        _say("the bundle was not built from a named workload: using unlabelled random frames (no accuracy)")
        x = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
        return _split_frames(x, None, devices, out)

    name = f"demo-frames-{n}.npz" if workload == "digits" else f"demo-frames-{workload}-{n}.npz"
    cache = Path(os.environ.get("SPLITEDGE_CACHE", Path.home() / ".cache" / "splitedge")) / name
    y: np.ndarray | None
    try:
        if cache.is_file():
            with np.load(cache) as data:
                x, y = data["x"], data["y"]
        else:
            from converter.reference_data import save_npz
            from converter.workloads import get

            frames = get(workload).frames(n, seed=2024, split="test")
            x, y = frames.x, frames.y
            save_npz(cache, x, y)
    except (MissingDependencyError, ImportError) as exc:
        _say(f"cannot make the labelled reference frames ({exc}); using unlabelled random frames: no accuracy")
        x, y = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8), None
    if tuple(x.shape[1:]) != tuple(shape):
        from sdk.errors import ConfigError

        raise ConfigError(f"the bundle takes frames of shape {tuple(shape)} but workload {workload!r} makes "
                          f"{tuple(x.shape[1:])}; pass the --workload the bundle was built from")
    return _split_frames(x, y, devices, out)


def _split_frames(x: np.ndarray, y: np.ndarray | None, devices: int,
                  out: Path) -> tuple[list[Path], list[np.ndarray | None]]:
    n = len(x)
    paths, labels = [], []
    for i in range(devices):
        k = i * n // devices
        path = out / f"frames-{i}.npz"
        np.savez(path, x=np.roll(x, -k, axis=0))
        paths.append(path)
        labels.append(None if y is None else np.roll(y, -k))
    return paths, labels


#: The replayed baselines the summary sets the live run beside (benchmarks/dynamic_replay.py names).
BASELINES = ("edge-only", "cloud-jpeg", "cloud-raw", "best-static", "dynamic")


def replayed_baselines(bundle: Path, manifest: Manifest, board: str, trace: BandwidthTrace, offsets: list[float],
                       duration: float, fps: float | None, latency_ms: float) -> dict[str, dict[str, float]]:
    """Edge-only, cloud-JPEG, cloud-raw, the best static cut and the dynamic policy replayed on each device's
    stretch of the same trace, board, frame rate and round trip (the simulation of ``splitedge bench dynamic``):
    {name: {"mean_ms", "accuracy", "route"}}, means over the devices (``route``: each device's, when they differ).
    The live run is set beside them."""
    from benchmarks.bench_dynamic import scenario
    from benchmarks.dynamic_replay import compare, make_setup, measure
    from device_runner.runner import codec_for
    from sdk.config import load_board

    config = load_board(board)
    data = measure(bundle, manifest, codec=codec_for(config.device.codec))
    setup = make_setup(manifest, config, data)
    rows: dict[str, list[tuple[float, float, str]]] = {}
    for offset in offsets:
        sc = scenario(trace.shifted(offset), config, fps=fps, duration=duration, link_ms=latency_ms)
        for name, run in compare(setup, sc, diagnostics=False).items():
            if name in BASELINES:
                rows.setdefault(name, []).append((float(run.latency_ms.mean()), float(run.correct.mean()), run.route))
    # best-static may be another route on each device's stretch: name them all (first device first)
    return {name: {"mean_ms": float(np.mean([r[0] for r in v])), "accuracy": float(np.mean([r[1] for r in v])),
                   "route": " / ".join(dict.fromkeys(r[2] for r in v))} for name, v in rows.items()}


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    from sdk.errors import BrokerUnavailableError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and any(ln.startswith("ready ") for ln in log.read_text(errors="replace").splitlines()):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise BrokerUnavailableError(f"the cloud tail worker did not subscribe within {timeout:g} s "
                                 f"(exit code {proc.poll()}); its output:\n{log.read_text(errors='replace')[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device_worker is not None:
        return run_device(DeviceSpec(**json.loads(args.device_worker.read_text())))
    from sdk.broker import EmbeddedBroker
    from sdk.config import load_board
    from sdk.manifest import load_manifest

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    board = load_board(args.board)
    workload = _workload(args.workload, args.bundle)
    bundle = _bundle(args.bundle, workload).resolve()
    manifest = load_manifest(bundle)
    shape = tuple(int(d) for d in manifest.input.shape)
    trace_spec, trace, trace_note = pick_trace(args.trace)
    n = args.devices
    offsets = [i * trace.period / n for i in range(n)]
    frame_paths, labels = _frames(args.frames, n, out, shape, workload)
    _say(f"bundle {bundle} ({len(manifest.cuts)} cuts), board {board.board.name}, {n} devices, {args.duration:g} s")
    _say(f"{trace_note}: period {trace.period:.0f} s, mean {trace.mean_rate() * 8 / 1e6:.2f} Mbit/s; "
         f"device offsets {', '.join(f'{o:.0f}' for o in offsets)} s")
    link_mode = args.link
    if link_mode == "netns":
        support = netem.detect()
        if not support.ok:
            _say(f"--link netns is not possible here ({support.reason}); FALLING BACK to the transport shaper")
            link_mode = "shaper"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_REPO), os.environ.get("PYTHONPATH", "")])}
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        stack.callback(lambda: [p.kill() for p in procs if p.poll() is None])
        link = stack.enter_context(netem.NetnsLink(n + 1)) if link_mode == "netns" else None
        broker = stack.enter_context(EmbeddedBroker(host=link.host if link else "127.0.0.1"))
        workers = args.workers
        if broker.impl == "amqtt" and workers > 1:
            _say("amqtt (MQTT 3.1.1) has no shared subscriptions: running ONE tail worker instead of "
                 f"{workers} (every worker would get every frame)")
            workers = 1
        _say(f"broker: {broker.impl} on {broker.url}" + (" (MQTT 3.1.1, one tail worker)" if broker.impl == "amqtt"
                                                         else ""))
        if link:
            _say(f"link emulation: KERNEL - namespaces {link.namespace(0)}.. behind bridge {link.bridge} "
                 f"({link.host}), tbf rate following the trace every 0.5 s (no added delay: no netem here)")
        else:
            _say(f"link emulation: TRANSPORT SHAPER - each device's act publishes are held until the trace "
                 f"lets them cross (FIFO), + {args.latency_ms:g} ms round trip")
        deadline_ms = board.device.deadline_ms
        for w in range(workers):
            log = out / f"cloud-{w}.log"
            cmd = [sys.executable, "-m", "sdk.cli", "cloud", "--bundle", str(bundle), "--broker", broker.url,
                   "--worker-id", f"demo-tail-{w}", "--max-queue-ms", str(deadline_ms),
                   "--metrics-json", str(out / f"cloud-{w}.json")]
            with open(log, "wb") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env))
        if args.link_check > 0:
            if link:
                check = netem.saturation_check(link, n, trace, offsets[0], args.link_check)
            else:
                check = check_shaper(trace, offsets[0], args.link_check)
            _say(f"link check ({link_mode}, device 0's stretch of the trace, saturated): {check.describe()}")
        for w in range(workers):
            _wait_ready(procs[w], out / f"cloud-{w}.log", 60.0)
        _say(f"{workers} cloud tail worker(s) ready")
        t0 = time.time() + 3.0
        if link:
            follower = netem.TraceFollower(link, trace, dict(enumerate(offsets)), t0).start()
            stack.callback(follower.stop)
        views, dev_procs = [], []
        for i in range(n):
            spec = DeviceSpec(
                device_id=f"demo-{i}", bundle=str(bundle), board=args.board,
                broker=broker.url, frames=str(frame_paths[i]), fps=args.fps, duration=args.duration,
                trace=trace_spec, offset=offsets[i], t0=t0, latency_ms=args.latency_ms if not link else 0.0,
                shaper=link is None, out=str(out / f"device-{i}.jsonl"),
            )  # fmt: skip
            spec_path = out / f"device-{i}.spec.json"
            spec_path.write_text(json.dumps(asdict(spec)))
            cmd = [sys.executable, "-m", "lab.demo", "--device-worker", str(spec_path)]
            if link:
                cmd = [*link.exec_prefix(i), *cmd]
            (out / f"device-{i}.jsonl").unlink(missing_ok=True)
            with open(out / f"device-{i}.log", "wb") as f:
                dev_procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env))
            procs.append(dev_procs[-1])
            views.append(View(out / f"device-{i}.jsonl", labels[i]))
        tty, state = sys.stdout.isatty(), {}
        killed = False
        hard_stop = t0 + args.duration + deadline_ms / 1000.0 + 60.0
        while any(p.poll() is None for p in dev_procs) and time.time() < hard_stop:
            if args.kill_broker_at is not None and not killed and time.time() >= t0 + args.kill_broker_at:
                broker.kill()
                killed = True
                _say(f"broker KILLED at t={args.kill_broker_at:g} s (frames must still be answered, locally)")
            progress(views, trace, offsets, t0, tty, state)
            time.sleep(0.5)
        codes = [_stop(p, 5.0) for p in dev_procs]
        state["next"] = 0.0
        progress(views, trace, offsets, t0, tty, state)
        for p in procs[:workers]:
            _stop(p)
    summary, problems = summarise(views, shape, codes)
    if not args.no_baselines:
        _say("replaying edge-only, cloud-JPEG and the static cuts on the same trace stretches for the summary")
        summary["replayed"] = replayed_baselines(bundle, manifest, args.board, trace, offsets, args.duration,
                                                 args.fps, args.latency_ms if not link else 0.0)
    summary["estimate_tracking"] = estimate_tracking(views, trace, offsets, t0)
    summary["latency_ms"] = args.latency_ms if not link else 0.0
    summary["cloud"] = cloud_totals(out, workers)
    summary.update(link=link_mode, trace=trace_note, broker_killed_at=args.kill_broker_at,
                   link_check=asdict(check) if args.link_check > 0 else None)
    print_summary(summary)
    c = summary["cloud"]
    print(f"  cloud workers     received {c['received']}, answered {c['answered']}, shed {c['shed']}, "
          f"refused {c['errors'] or 0}" + (" <- the cloud REFUSED frames: see cloud-*.log" if c["errors"] else ""))
    if args.link_check > 0:
        print(f"  link ({link_mode})      {check.describe()}")
    if not args.no_plots:
        for path in plots(views, trace, offsets, t0, args.duration, deadline_ms, out,
                          cut_labels(manifest, board.device.raw_jpeg_quality)):
            print(f"  plot              {path}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"  answers           {out}/device-<i>.jsonl, summary {out / 'summary.json'}")
    if problems:
        print("NOT every frame was answered exactly once:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("every frame answered exactly once", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
