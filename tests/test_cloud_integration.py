"""The cloud tail against a real Mosquitto and the real reference bundle.

Three simulated devices (plain MqttTransport clients) publish real activations - made by running
the bundle's int8 heads with LiteRT on reference frames - to two `splitedge cloud` worker processes
sharing one group. The expected class is computed here, independently of cloud_tail: the cut's float
tail (the whole float model for raw frames) run with LiteRT on the frame as decoded by sdk.wire.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from cloud_tail.tails import TailSet
from cloud_tail.worker import TailWorker, WorkerConfig
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, Manifest, load_manifest
from sdk.messages import ErrorMessage, ReportMessage, ResultMessage, decode_message
from sdk.mqtt import MqttTransport
from sdk.topics import TopicKind, filter_for, topic
from sdk.wire import decode_frame, encode_activation, encode_raw

REPO = Path(__file__).resolve().parents[1]
FRAMES = 12


@pytest.fixture(scope="module")
def bundle(reference_bundle: Path) -> tuple[Path, Manifest]:
    return reference_bundle, load_manifest(reference_bundle)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    from converter.reference import calibration_data

    return calibration_data(FRAMES).x


@dataclass
class Sample:
    payload: bytes
    cut: int
    probs: np.ndarray  # the local float prediction (softmax of the tail's logits)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def samples(bundle: tuple[Path, Manifest], frames: np.ndarray) -> dict[tuple[int, int], Sample]:
    """(cut id, frame index) -> a real encoded frame at one of 8/4/2 bits and its expected probabilities."""
    root, m = bundle
    out = {}
    for ci, cut in enumerate(c for c in m.cuts if c.kind in (CutKind.RAW, CutKind.SPLIT)):
        assert cut.tail is not None
        tail = LiteRTModel(root / cut.tail.path)
        head = LiteRTModel(root / cut.head.path) if cut.head else None
        for i, image in enumerate(frames):
            if cut.kind is CutKind.RAW:
                payload = encode_raw(
                    device_id="cam-0",
                    seq=0,
                    bundle_id=m.wire_bundle_id,
                    image=image,
                    capture_ts=time.time(),
                    name=cut.tensors[0].name,
                    cut_id=cut.index,
                )
            else:
                assert head is not None
                h = head.run({next(iter(head.inputs)): image[None]})
                payload = encode_activation(
                    device_id="cam-0", seq=0, cut_id=cut.index, bundle_id=m.wire_bundle_id,
                    activations={t.name: h[t.head_output][0] for t in cut.tensors},
                    quant={t.name: (t.scale, t.zero_point) for t in cut.tensors},
                    bits=(8, 4, 2)[(i + ci) % 3], capture_ts=time.time(),
                )  # fmt: skip
            feeds = {k: v[None] for k, v in decode_frame(payload).dequantized().items()}
            logits = next(iter(tail.run(feeds).values()))[0]
            out[(cut.index, i)] = Sample(payload, cut.index, _softmax(logits.astype(np.float64)))
    return out


def _with_header(payload: bytes, device: str, seq: int) -> bytes:
    """Re-encode a frame for another device id / seq (decode, then encode the same tensors)."""
    f = decode_frame(payload)
    h = f.header
    from sdk.wire import encode_frame

    return encode_frame(device_id=device, seq=seq, cut_id=h.cut_id, bundle_id=h.bundle_id,
                        tensors=list(f.tensors), capture_ts=time.time(), flags=h.flags)  # fmt: skip


@dataclass
class Device:
    """A simulated camera: publishes frames, collects results, errors and reports by seq."""

    device_id: str
    url: str
    results: dict[int | None, list[ResultMessage | ErrorMessage]] = field(
        default_factory=lambda: defaultdict(list)
    )
    reports: dict[int, list[ReportMessage]] = field(default_factory=lambda: defaultdict(list))
    expected: dict[int, Sample] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.t = MqttTransport(self.url, client_id=f"test-{self.device_id}")
        self.t.subscribe(filter_for(TopicKind.RESULT, self.device_id), self._on_result, qos=1)
        self.t.subscribe(filter_for(TopicKind.REPORT, self.device_id), self._on_report)

    def _on_result(self, msg) -> None:
        m = decode_message(msg.payload)
        assert isinstance(m, ResultMessage | ErrorMessage)
        with self.lock:
            self.results[m.seq].append(m)

    def _on_report(self, msg) -> None:
        m = decode_message(msg.payload)
        assert isinstance(m, ReportMessage)
        with self.lock:
            self.reports[m.seq].append(m)

    def send(self, seq: int, sample: Sample) -> None:
        self.expected[seq] = sample
        self.t.publish(
            topic(self.device_id, TopicKind.ACT), _with_header(sample.payload, self.device_id, seq), qos=1
        )

    def unanswered(self, seqs: list[int]) -> list[int]:
        with self.lock:
            return [s for s in seqs if not self.results.get(s)]


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _start_worker(url: str, bundle: Path, wid: str, tmp_path: Path, group: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdk.cli", "cloud", "--bundle", str(bundle), "--broker", url, "--group", group,
         "--worker-id", wid, "--max-batch", "4", "--max-wait-ms", "2",
         "--metrics-json", str(tmp_path / f"{wid}.json"), "--metrics-interval", "0.2"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc


def _await_ready(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "worker printed nothing within the timeout"
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        pytest.fail(f"worker did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return line


def _check_answer(dev: Device, seq: int) -> ResultMessage:
    [r] = dev.results[seq]
    assert isinstance(r, ResultMessage), r
    probs = dev.expected[seq].probs
    assert r.cut_id == dev.expected[seq].cut
    # the same class as the local float tail; a different one only on a numerical tie
    assert r.cls == int(np.argmax(probs)) or probs[r.cls] >= probs.max() - 1e-5, (r, probs)
    assert abs(r.topk[0][1] - probs.max()) < 1e-3
    return r


def test_two_workers_three_devices_errors_and_a_kill(
    mosquitto, bundle: tuple[Path, Manifest], samples: dict[tuple[int, int], Sample], tmp_path: Path
) -> None:
    root, m = bundle
    group = f"g{os.getpid()}"
    workers = {wid: _start_worker(mosquitto.url, root, wid, tmp_path, group) for wid in ("w1", "w2")}
    devices: list[Device] = []
    try:
        for proc in workers.values():
            _await_ready(proc)
        devices = [Device(f"cam-{i}", mosquitto.url) for i in range(3)]
        keys = sorted(samples)

        # ---- phase 1: every frame answered exactly once, with the local float prediction's class
        for d_i, dev in enumerate(devices):
            for k, key in enumerate(keys[d_i::3]):
                dev.send(k, samples[key])
        for dev in devices:
            seqs = list(dev.expected)
            assert _wait(lambda dev=dev, seqs=seqs: not dev.unanswered(seqs), 20), dev.unanswered(seqs)
        time.sleep(0.2)  # any duplicate would have arrived by now
        answered_by = set()
        for dev in devices:
            for seq in dev.expected:
                answered_by.add(_check_answer(dev, seq).worker_id)
                assert _wait(lambda dev=dev, seq=seq: len(dev.reports[seq]) == 1, 2)
                rep = dev.reports[seq][0]
                assert rep.bytes_received > 60 and rep.tail_ms > 0 and rep.queue_ms >= 0
        assert answered_by == {"w1", "w2"}  # the shared subscription split the load

        # ---- phase 2: malformed (mosquitto_pub), unknown cut, foreign bundle: error replies, no crash
        pub = shutil.which("mosquitto_pub")
        if pub is None:
            pytest.skip("mosquitto_pub is not installed: apt-get install mosquitto-clients")
        bad = Device("bad-0", mosquitto.url)
        good = samples[keys[-1]].payload
        truncated = tmp_path / "truncated.bin"
        truncated.write_bytes(_with_header(good, "bad-0", 7)[:-5])
        for args in (["-m", "not a frame"], ["-f", str(truncated)]):
            subprocess.run([pub, "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1",
                            "-t", topic("bad-0", TopicKind.ACT), *args], check=True, timeout=10)  # fmt: skip
        assert _wait(lambda: len(bad.results.get(None, [])) + len(bad.results.get(7, [])) == 2, 10)
        errors = bad.results[None] + bad.results[7]
        assert all(isinstance(e, ErrorMessage) and e.code == "malformed" for e in errors), errors
        assert errors[-1].seq == 7 or errors[0].seq == 7  # the truncated frame's header was readable

        f = decode_frame(good)
        enc = dict(device_id="bad-0", tensors=list(f.tensors), capture_ts=time.time(), flags=f.header.flags)
        from sdk.wire import encode_frame

        bad.t.publish(topic("bad-0", TopicKind.ACT), encode_frame(seq=8, cut_id=999, bundle_id=f.header.bundle_id,
                                                                  **enc), qos=1)  # fmt: skip
        bad.t.publish(
            topic("bad-0", TopicKind.ACT),
            encode_frame(seq=9, cut_id=f.header.cut_id, bundle_id=f.header.bundle_id ^ 1, **enc),
            qos=1,
        )
        assert _wait(lambda: bad.results.get(8) and bad.results.get(9), 10)
        assert [e.code for e in bad.results[8]] == ["unknown_cut"]
        assert [e.code for e in bad.results[9]] == ["bundle_mismatch"]
        assert "0x" in bad.results[9][0].detail
        assert all(p.poll() is None for p in workers.values()), "a worker died on a bad frame"

        # ---- phase 3: SIGKILL w2 mid-run; devices re-send on a timeout, then answer locally
        sent: dict[str, list[int]] = defaultdict(list)
        for n in range(30):
            dev = devices[n % 3]
            seq = 100 + n
            dev.send(seq, samples[keys[n % len(keys)]])
            sent[dev.device_id].append(seq)
            if n == 10:
                workers["w2"].send_signal(signal.SIGKILL)
            time.sleep(0.005)
        lost: dict[str, list[int]] = {}
        for dev in devices:
            seqs = sent[dev.device_id]
            _wait(lambda dev=dev, seqs=seqs: not dev.unanswered(seqs), 3)
            for seq in dev.unanswered(seqs):  # re-send once (the survivor takes it)
                dev.send(seq, dev.expected[seq])
            _wait(lambda dev=dev, seqs=seqs: not dev.unanswered(seqs), 3)
            lost[dev.device_id] = dev.unanswered(seqs)  # would be answered locally
        time.sleep(0.2)
        for dev in devices:
            for seq in sent[dev.device_id]:
                if seq in lost[dev.device_id]:
                    continue
                r = dev.results[seq][0]
                assert isinstance(r, ResultMessage) and r.seq == seq
                assert len(dev.results[seq]) <= 2  # at most the original and the re-send
        assert sum(len(v) for v in lost.values()) == 0, f"frames lost with a live worker: {lost}"
        assert workers["w1"].poll() is None
        late = [r.worker_id for dev in devices for s in sent[dev.device_id][5:] for r in dev.results[s]]
        assert late and set(late) == {"w1"}

        # ---- clean stop: SIGTERM -> exit code 0, counters written
        workers["w1"].send_signal(signal.SIGTERM)
        out, err = workers["w1"].communicate(timeout=15)
        assert workers["w1"].returncode == 0, err
        assert "stopped w1" in out
        import json

        snap = json.loads((tmp_path / "w1.json").read_text())
        t = snap["totals"]
        assert t["received"] == t["answered"] + t["shed"] + sum(t["errors"].values())
        assert t["answered"] > 10 and snap["queue_depth"] == 0
        bad.t.close()
    finally:
        for dev in devices:
            dev.t.close()
        for proc in workers.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def test_worker_survives_a_broker_restart(fresh_mosquitto, bundle: tuple[Path, Manifest],
                                          samples: dict[tuple[int, int], Sample]) -> None:  # fmt: skip
    root, _ = bundle
    t = MqttTransport(
        fresh_mosquitto.url, client_id="w-restart", reconnect_min_delay=0.05, reconnect_max_delay=0.2
    )
    worker = TailWorker(t, TailSet(root), WorkerConfig("w-restart"))
    worker.start()
    dev = Device("cam-r", fresh_mosquitto.url)
    sample = samples[sorted(samples)[1]]
    try:
        dev.send(1, sample)
        assert _wait(lambda: dev.results.get(1), 10)
        fresh_mosquitto.restart()
        assert _wait(lambda: t.connected and dev.t.connected, 15)
        time.sleep(0.3)  # both re-subscribe from on_connect
        dev.send(2, sample)
        assert _wait(lambda: dev.results.get(2), 10)
        _check_answer(dev, 2)
        snap = worker.counters.snapshot()
        assert snap["disconnects"] >= 1 and snap["connected"] is True
        assert snap["devices"]["cam-r"]["answered"] == 2
    finally:
        worker.stop()
        t.close()
        dev.t.close()
