"""Cloud tail throughput: per worker with and without micro-batching, 1 vs 2 worker processes, overhead.

Run: ``python -m benchmarks.bench_cloud [BUNDLE]`` (or ``SPLITEDGE_BENCH_BUNDLE=BUNDLE``; default: the
reference bundle, built on first use). Prints Markdown tables, each headed by that command.

* **Per worker, in process**: N real frames per cut (the bundle's int8 heads run on random frames, sent
  at 8 bits, from 4 devices) are handed to ``TailWorker.handle`` and answered by ``drain()`` through
  an ``InMemoryHub`` (no broker): decode + admit + tail + softmax + result/report encoding.
  ``--max-batch 1`` vs ``8``. Bare LiteRT invoke of the same tail, batch 1 and batch 8, per frame,
  shows what the worker adds beyond the model's own compute.
* **Through Mosquitto**: one producer publishes N frames (QoS 1, at most WINDOW in flight) to 1 or 2
  ``splitedge cloud`` worker processes sharing a group; throughput = frames answered / time from the
  first publish to the last result. Producer, broker and workers share this machine's cores.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from cloud_tail.tails import TailSet
from cloud_tail.worker import TailWorker, WorkerConfig
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, CutSpec, Manifest, load_manifest
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


def _bundle(path: str | None) -> Path:
    path = path or os.environ.get("SPLITEDGE_BENCH_BUNDLE")
    if path:
        return Path(path)
    from converter.reference import build_reference_bundle, default_bundle_dir

    build_reference_bundle()
    return default_bundle_dir()


def _frames(root: Path, m: Manifest, cut: CutSpec, n: int, seed: int = 0) -> list[bytes]:
    """n encoded frames of one cut (8 bits), device ids cam-0..cam-3, seq 0..n-1."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (min(n, 16), *m.input.shape), dtype=np.uint8)
    head = LiteRTModel(root / cut.head.path) if cut.head else None
    out = []
    for i in range(n):
        image, dev = images[i % len(images)], f"cam-{i % DEVICES}"
        if cut.kind is CutKind.RAW:
            out.append(encode_raw(device_id=dev, seq=i, bundle_id=m.wire_bundle_id, image=image, capture_ts=time.time(),
                                  name=cut.tensors[0].name, cut_id=cut.index))  # fmt: skip
        else:
            assert head is not None
            h = head.run({next(iter(head.inputs)): image[None]})
            out.append(encode_activation(
                device_id=dev, seq=i, cut_id=cut.index, bundle_id=m.wire_bundle_id,
                activations={t.name: h[t.head_output][0] for t in cut.tensors},
                quant={t.name: (t.scale, t.zero_point) for t in cut.tensors}, bits=8, capture_ts=time.time(),
            ))  # fmt: skip
    return out


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


def _bare_ms(tails: TailSet, cut: int, frames: list[bytes], batch: int) -> float:
    """Median LiteRT invoke time per frame of the cut's tail on pre-decoded inputs."""
    model = tails.model(cut)
    decoded = [decode_frame(f) for f in frames[:batch]]
    feeds = tails.feeds(cut, decoded)
    times = []
    for _ in range(40):
        model.run(feeds)
        times.append(model.last_invoke_ms)
    return statistics.median(times[5:]) / batch


def _in_process(root: Path, m: Manifest, n: int) -> list[str]:
    tails = TailSet(root)
    rows = [
        f"### Tail throughput of one worker, in process (`{COMMAND}`)",
        "",
        f"{n} frames per cut at 8 bits from {DEVICES} devices, handed to `TailWorker.handle` and answered "
        "through an `InMemoryHub` (decode, admit, tail, softmax, result + report). Best of 3. "
        "'bare' = LiteRT invoke alone per frame; 'overhead' = worker time per frame minus bare invoke (batch 1).",
        "",
        "| cut | kind | frame bytes | batch 1 frames/s | batch 8 frames/s | batch 8 / 1 | bare invoke ms (b1) "
        "| bare ms/frame (b8) | worker ms/frame (b1) | overhead ms/frame |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cut in m.cuts:
        if cut.kind is CutKind.DEVICE or cut.tail is None:
            continue
        frames = _frames(root, m, cut, n)
        fps1 = _worker_fps(tails, frames, 1)
        fps8 = _worker_fps(tails, frames, 8)
        bare1, bare8 = _bare_ms(tails, cut.index, frames, 1), _bare_ms(tails, cut.index, frames, 8)
        worker_ms = 1000.0 / fps1
        rows.append(
            f"| {cut.index} ({cut.name}) | {cut.kind.value} | {len(frames[0])} | {fps1:.0f} | {fps8:.0f} | "
            f"{fps8 / fps1:.2f} | {bare1:.3f} | {bare8:.3f} | {worker_ms:.3f} | {worker_ms - bare1:.3f} |"
        )
    return rows


def _through_broker(root: Path, m: Manifest, cut: CutSpec, n: int, workers: int) -> tuple[float, int, int]:
    """(frames/s, answered, refused) with `workers` worker processes behind one Mosquitto."""
    from sdk.broker import EmbeddedBroker
    from sdk.mqtt import MqttTransport

    frames = _frames(root, m, cut, n)
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
            done.wait(120)
            src.close()
            sink.close()
            return n / ((t_end[0] or time.perf_counter()) - t0), counts["ok"], counts["err"]
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


def run(bundle: str | None = None, n: int = 256, n_broker: int = 1500) -> str:
    root = _bundle(bundle)
    m = load_manifest(root)
    out = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
           f"bundle {m.model_name} 0x{m.wire_bundle_id:08x}", ""]  # fmt: skip
    out += _in_process(root, m, n)
    split = [c for c in m.cuts if c.kind is CutKind.SPLIT]
    cut = max(split, key=lambda c: c.tail_ms) if split else m.cuts[0]
    results = {k: _through_broker(root, m, cut, n_broker, k) for k in (1, 2)}
    out += [
        "",
        f"### 1 vs 2 worker processes through Mosquitto (`{COMMAND}`)",
        "",
        f"{n_broker} frames of cut {cut.index} ({cut.name}, {len(_frames(root, m, cut, 1)[0])} bytes) published "
        f"QoS 1 by one producer keeping {WINDOW} frames in flight; workers `--max-batch 8 --max-wait-ms 2` (the defaults).",
        "",
        "| workers | frames/s | answered | refused | vs 1 worker |",
        "|---|---|---|---|---|",
    ]
    for k, (fps, ok, err) in results.items():
        out.append(f"| {k} | {fps:.0f} | {ok} | {err} | {fps / results[1][0]:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else None))
