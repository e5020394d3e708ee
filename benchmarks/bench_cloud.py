"""Cloud tail throughput per workload: one worker with and without micro-batching, 1 vs 2 worker processes.

Run: ``python -m benchmarks.bench_cloud [--workloads A,B | all] [BUNDLE] [--frames N] [--broker-frames N]``.
Prints Markdown, a summary then one block per workload, each table headed by that command
(``benchmarks.run`` calls :func:`run`: every workload whose trained model exists, or
``$SPLITEDGE_BENCH_WORKLOADS``; see ``benchmarks/_workloads.py``).

* **Per worker, in process**: N frames per cut (the bundle's int8 heads run on up to 16 of the
  workload's test frames, sent at 8 bits, from 4 devices) are handed to ``TailWorker.handle`` and
  answered by ``drain()`` through an ``InMemoryHub`` (no broker): decode + admit + tail + softmax +
  result/report encoding. ``--max-batch 1`` vs ``8``. Bare LiteRT invoke of the same tail, batch 1 and
  batch 8, per frame, shows what the worker adds beyond the model's own compute.
* **Through Mosquitto**: one producer publishes N frames of the cut with the most tail work (QoS 1, at
  most WINDOW in flight) to 1 or 2 ``splitedge cloud`` worker processes sharing a group; throughput =
  frames answered / time from the first publish to the last result. Producer, broker and workers share
  this machine's cores.

Frame counts follow the manifest's tail times unless given (a ResNet-50 tail takes tens of ms per frame
on this host, the digits tails about one): see ``CUT_BUDGET_MS`` and ``BROKER_BUDGET_MS``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import _workloads
from cloud_tail.tails import TailSet
from cloud_tail.worker import TailWorker, WorkerConfig
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, CutSpec, Manifest
from sdk.messages import ResultMessage, decode_message
from sdk.topics import TopicKind, filter_for, topic
from sdk.transport import InMemoryHub, Message
from sdk.wire import decode_frame, encode_activation, encode_raw

COMMAND = "python -m benchmarks.bench_cloud"
REPO = Path(__file__).resolve().parents[1]
DEVICES = 4
#: frames in flight through the broker: Mosquitto drops QoS 1 messages beyond a subscriber's
#: max_queued_messages (default 1000), so an unpaced flood measures the broker's shedding, not the workers.
WINDOW = 64


#: per-cut budgets when the frame counts are automatic: a 224 px tail of tens of ms gets fewer frames than the
#: digits tails (3 repeats x batch 1 and 8 x n frames x the manifest's tail ms ~ CUT_BUDGET_MS)
CUT_BUDGET_MS = 2_000.0
MIN_FRAMES, MAX_FRAMES = 32, 256
BARE_BUDGET_MS = 2_000.0  #: bare invokes of one batch size
BROKER_BUDGET_MS = 12_000.0  #: one worker's share of the broker run (frames x heaviest tail ms)
MIN_BROKER, MAX_BROKER = 100, 1500


def _frames(target: _workloads.Target, cut: CutSpec, n: int) -> list[bytes]:
    """n encoded frames of one cut (8 bits), device ids cam-0..cam-3, seq 0..n-1, from up to 16 of the workload's
    test frames (each head runs once per distinct frame)."""
    root, m = target.root, target.manifest
    images = target.frames(min(n, 16))
    head = LiteRTModel(root / cut.head.path) if cut.head and cut.kind is not CutKind.RAW else None
    acts = []
    for image in images:
        if head is not None:
            h = head.run({next(iter(head.inputs)): image[None]})
            acts.append({t.name: h[t.head_output][0] for t in cut.tensors})
    quant = {t.name: (t.scale, t.zero_point) for t in cut.tensors}
    out = []
    for i in range(n):
        dev, k = f"cam-{i % DEVICES}", i % len(images)
        if cut.kind is CutKind.RAW:
            out.append(encode_raw(device_id=dev, seq=i, bundle_id=m.wire_bundle_id, image=images[k],
                                  capture_ts=time.time(), name=cut.tensors[0].name, cut_id=cut.index))  # fmt: skip
        else:
            out.append(encode_activation(device_id=dev, seq=i, cut_id=cut.index, bundle_id=m.wire_bundle_id,
                                         activations=acts[k], quant=quant, bits=8, capture_ts=time.time()))  # fmt: skip
    return out


def auto_frames(cut: CutSpec, cap: int = MAX_FRAMES) -> int:
    return int(min(cap, max(MIN_FRAMES, CUT_BUDGET_MS / max(cut.tail_ms, 1e-3))))


def _worker_fps(tails: TailSet, frames: list[bytes], max_batch: int, repeats: int = 3) -> float:
    """Frames/s of one in-process worker answering `frames` (best of `repeats`)."""
    best = 0.0
    for _ in range(repeats):
        hub = InMemoryHub(synchronous=True)
        w = TailWorker(hub.transport("w"), tails,
                       WorkerConfig("bench", max_batch=max_batch, max_wait_ms=0, queue_size=len(frames) + 1,
                                    max_queue_ms=1e9))  # fmt: skip
        w.start(thread=False)
        now = time.time()
        msgs = [
            Message(topic(f"cam-{i % DEVICES}", TopicKind.ACT), f, 1, False, now)
            for i, f in enumerate(frames)
        ]
        t0 = time.perf_counter()
        for msg in msgs:
            w.handle(msg)
        w.drain()
        dt = time.perf_counter() - t0
        assert w.counters.snapshot()["totals"]["answered"] == len(frames)
        best = max(best, len(frames) / dt)
    return best


def _bare_ms(tails: TailSet, cut: CutSpec, frames: list[bytes], batch: int) -> float:
    """Median LiteRT invoke time per frame of the cut's tail on pre-decoded inputs (6-40 invokes: fewer for a
    slow tail, the first of them untimed)."""
    model = tails.model(cut.index)
    decoded = [decode_frame(f) for f in frames[:batch]]
    feeds = tails.feeds(cut.index, decoded)
    reps = int(min(40, max(6, BARE_BUDGET_MS / max(batch * cut.tail_ms, 1e-3))))
    times = []
    for _ in range(reps):
        model.run(feeds)
        times.append(model.last_invoke_ms)
    return statistics.median(times[min(5, reps // 3):]) / batch


def _in_process(target: _workloads.Target, n: int | None) -> tuple[list[str], dict[int, tuple[float, float]]]:
    """(table lines, {cut: (batch 1 frames/s, batch 8 frames/s)}); ``n`` frames per cut, or None: auto_frames."""
    root, m = target.root, target.manifest
    tails = TailSet(root, manifest=m)
    count = f"{n} frames per cut" if n is not None else (
        f"N frames per cut (N = {CUT_BUDGET_MS / 1000:.0f} s / the manifest's tail ms, {MIN_FRAMES}-{MAX_FRAMES}: "
        "fewer for a 224 px tail)")
    rows = [
        f"`{COMMAND} --workloads {target.name}` - tail throughput of one worker, in process: {count} at 8 bits "
        f"from {DEVICES} devices (the head's outputs on up to 16 of the workload's test frames), handed to "
        "`TailWorker.handle` and answered through an `InMemoryHub` (decode, admit, tail, softmax, result + report). "
        "Best of 3. 'bare' = LiteRT invoke alone per frame (6-40 invokes); 'overhead' = worker time per frame minus "
        "bare invoke (batch 1).",
        "",
        "| cut | kind | frame bytes | frames | batch 1 frames/s | batch 8 frames/s | batch 8 / 1 | bare invoke ms (b1) "
        "| bare ms/frame (b8) | worker ms/frame (b1) | overhead ms/frame |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fps: dict[int, tuple[float, float]] = {}
    for cut in m.cuts:
        if cut.kind is CutKind.DEVICE or cut.tail is None:
            continue
        k = n if n is not None else auto_frames(cut)
        print(f"   cloud: {target.name} cut {cut.index}, {k} frames", file=sys.stderr, flush=True)
        frames = _frames(target, cut, k)
        fps1 = _worker_fps(tails, frames, 1)
        fps8 = _worker_fps(tails, frames, 8)
        fps[cut.index] = (fps1, fps8)
        bare1, bare8 = _bare_ms(tails, cut, frames, 1), _bare_ms(tails, cut, frames, 8)
        worker_ms = 1000.0 / fps1
        rows.append(
            f"| {cut.index} ({cut.name}) | {cut.kind.value} | {len(frames[0])} | {k} | {fps1:.0f} | {fps8:.0f} | "
            f"{fps8 / fps1:.2f} | {bare1:.3f} | {bare8:.3f} | {worker_ms:.3f} | {worker_ms - bare1:.3f} |"
        )
    return rows, fps


def _through_broker(target: _workloads.Target, cut: CutSpec, n: int, workers: int) -> tuple[float, int, int]:
    """(frames/s, answered, refused) with `workers` worker processes behind one Mosquitto."""
    from sdk.broker import EmbeddedBroker
    from sdk.mqtt import MqttTransport

    root = target.root
    frames = _frames(target, cut, n)
    with EmbeddedBroker(impl="mosquitto") as broker:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [
            subprocess.Popen([sys.executable, "-m", "sdk.cli", "cloud", "--bundle", str(root), "--broker", broker.url,
                              "--worker-id", f"w{i}", "--queue", str(n + 1), "--max-queue-ms", "1e9"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for i in range(workers)
        ]  # fmt: skip
        try:
            for p in procs:
                line = p.stdout.readline() if p.stdout else ""
                if not line.startswith("ready"):
                    raise RuntimeError(f"worker failed to start: {line!r}")
            done = threading.Event()
            window = threading.Semaphore(WINDOW)
            counts = {"ok": 0, "err": 0}
            lock = threading.Lock()
            t_end = [0.0]

            def on_result(msg: Message) -> None:
                r = decode_message(msg.payload)
                with lock:
                    counts["ok" if isinstance(r, ResultMessage) else "err"] += 1
                    if counts["ok"] + counts["err"] == n:
                        t_end[0] = time.perf_counter()
                        done.set()
                window.release()

            sink = MqttTransport(broker.url, client_id="bench-sink")
            sink.subscribe(filter_for(TopicKind.RESULT), on_result, qos=1)
            src = MqttTransport(broker.url, client_id="bench-src")
            t0 = time.perf_counter()
            for i, f in enumerate(frames):
                window.acquire(timeout=10)
                src.publish(topic(f"cam-{i % DEVICES}", TopicKind.ACT), f, qos=1)
            done.wait(max(120.0, 3.0 * n * cut.tail_ms / 1000.0))
            src.close()
            sink.close()
            return n / ((t_end[0] or time.perf_counter()) - t0), counts["ok"], counts["err"]
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


def broker_frames(cut: CutSpec) -> int:
    return int(min(MAX_BROKER, max(MIN_BROKER, BROKER_BUDGET_MS / max(cut.tail_ms, 1e-3))))


def _broker_cut(m: Manifest) -> CutSpec:
    """The split cut with the most tail work (the raw cut when there is none)."""
    split = [c for c in m.cuts if c.kind is CutKind.SPLIT]
    return max(split, key=lambda c: c.tail_ms) if split else m.cuts[0]


def workload_block(target: _workloads.Target, n: int | None, n_broker: int | None) -> tuple[str, dict]:
    """The Markdown of one workload and its headline figures (for the summary)."""
    m = target.manifest
    rows, fps = _in_process(target, n)
    cut = _broker_cut(m)
    k = n_broker if n_broker is not None else broker_frames(cut)
    print(f"   cloud: {target.name} through Mosquitto, cut {cut.index}, {k} frames", file=sys.stderr, flush=True)
    results = {w: _through_broker(target, cut, k, w) for w in (1, 2)}
    nbytes = len(_frames(target, cut, 1)[0])
    out = [
        f"### {target.name}",
        "",
        f"{target.describe()}. Cloud = this host ({_workloads.host()}), 1 LiteRT thread per tail; no trace; "
        "in process: no network; through Mosquitto: loopback, TCP_NODELAY, no emulated round trip.",
        "",
        *rows,
        "",
        f"`{COMMAND} --workloads {target.name}` - 1 vs 2 worker processes through Mosquitto: {k} frames of cut "
        f"{cut.index} ({cut.name}, the split cut with the most tail work, {nbytes} bytes) published QoS 1 by one "
        f"producer keeping {WINDOW} frames in flight; workers `--max-batch 8 --max-wait-ms 2` (the defaults). "
        "Producer, broker and workers share the 2 cores.",
        "",
        "| workers | frames | frames/s | answered | refused | vs 1 worker |",
        "|---|---|---|---|---|---|",
    ]
    for w, (f, ok, err) in results.items():
        out.append(f"| {w} | {k} | {f:.0f} | {ok} | {err} | {f / results[1][0]:.2f} |")
    raw = m.raw_cut.index if m.raw_cut is not None and m.raw_cut.index in fps else None
    headline = {"raw": fps.get(raw) if raw is not None else None, "cut": cut, "split": fps.get(cut.index),
                "broker": (results[1][0], results[2][0])}
    return "\n".join(out), headline


def _summary(headlines: list[tuple[_workloads.Target, dict]]) -> list[str]:
    lines = [
        "| workload | model | raw frame (cloud-only) b1 / b8 frames/s | heaviest split cut | its b1 / b8 frames/s "
        "| through Mosquitto, 1 / 2 workers frames/s |",
        "|---|---|---|---|---|---|",
    ]
    for target, h in headlines:
        raw = f"{h['raw'][0]:.0f} / {h['raw'][1]:.0f}" if h["raw"] else "-"
        split = f"{h['split'][0]:.0f} / {h['split'][1]:.0f}" if h["split"] else "-"
        lines.append(f"| {target.name} | {target.manifest.model_name} | {raw} | {h['cut'].index} ({h['cut'].name}) | "
                     f"{split} | {h['broker'][0]:.0f} / {h['broker'][1]:.0f} |")
    return lines


def run(bundle: str | None = None, n: int | None = None, n_broker: int | None = None, *,
        workloads: _workloads.Spec = None) -> str:
    """The Markdown section: a summary, then per workload the in-process and the broker tables.
    ``n`` / ``n_broker`` None: frame counts from the manifest's tail times (module constants)."""
    targets, notes = _workloads.targets(workloads, bundle)
    blocks, headlines = [], []
    for target in targets:
        block, headline = workload_block(target, n, n_broker)
        blocks.append(block)
        headlines.append((target, headline))
    intro = [f"Host {_workloads.host()}. Frames/s of the cloud tail per workload; compare within a table."]
    return _workloads.document(intro, "Summary (in process, one worker; the tables below have every cut):",
                               _summary(headlines) if headlines else [], blocks, notes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", help="one bundle folder instead of the workloads (or $SPLITEDGE_BENCH_BUNDLE)")
    p.add_argument("--workloads", default=None, help="comma-separated workload names or all (default: every "
                   f"workload whose trained model exists, or ${_workloads.ENV})")
    p.add_argument("--frames", type=int, default=None, help="frames per cut in process (default: from the tail ms)")
    p.add_argument("--broker-frames", type=int, default=None, help="frames through Mosquitto (default: from the tail ms)")
    args = p.parse_args(argv)
    print(run(args.bundle, args.frames, args.broker_frames, workloads=args.workloads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
