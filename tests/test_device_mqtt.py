"""The device runner on a real Mosquitto with the real reference bundle and a minimal test-side cloud.

The responder below decodes frames with ``sdk.wire.decode_frame`` and runs the bundle's tails with
LiteRT (it does not use ``cloud_tail``); it answers with a ResultMessage and a ReportMessage.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from device_runner import cli
from device_runner.heads import LiteRTHeads
from device_runner.policy import CutPolicy
from device_runner.runner import Answer, AnsweredBy, DeviceRunner, RunnerOptions
from device_runner.sources import SyntheticSource
from sdk import topics
from sdk.config import load_config
from sdk.litert import LiteRTModel
from sdk.manifest import CutKind, Manifest, load_manifest
from sdk.messages import ReportMessage, ResultMessage, StatusMessage, decode_message
from sdk.mqtt import MqttTransport
from sdk.topics import TopicKind
from sdk.transport import Message, status_will
from sdk.wire import decode_frame

pytestmark = pytest.mark.broker

PROFILE = """
[board]
name = "host"
cpu = "x86-64"
threads = 1
memory_budget_mb = 256
speed_factor = 1.0
speed_factor_source = "test: this machine"

[device]
device_id = "{device_id}"
source = "synthetic"
fps_cap = {fps}
deadline_ms = {deadline_ms}
target_accuracy = 0.5
bits = [8, 4]
codec = "auto"
telemetry_interval_s = 0.3

[broker]
url = "{url}"
"""


def write_profile(tmp_path: Path, url: str, *, device_id: str = "it-01", fps: float = 50, deadline_ms: float = 2000) -> Path:
    path = tmp_path / f"{device_id}.toml"
    path.write_text(PROFILE.format(device_id=device_id, url=url, fps=fps, deadline_ms=deadline_ms))
    return path


class TailResponder:
    """A one-worker cloud: LiteRT tails of the bundle behind a shared subscription."""

    def __init__(self, url: str, bundle: Path, manifest: Manifest) -> None:
        self.bundle, self.manifest = bundle, manifest
        self.tails: dict[int, LiteRTModel] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.transport = MqttTransport(url, client_id="test-tail", reconnect_max_delay=0.5)
        self.transport.subscribe(topics.shared_filter("tails"), self.on_frame, qos=1)

    def on_frame(self, msg: Message) -> None:
        recv = time.time()
        t0 = time.perf_counter()
        frame = decode_frame(msg.payload)
        h = frame.header
        cut = self.manifest.cut(h.cut_id)
        decode_ms = (time.perf_counter() - t0) * 1000
        if h.cut_id not in self.tails:
            assert cut.tail is not None
            self.tails[h.cut_id] = LiteRTModel(self.bundle / cut.tail.path)
        t1 = time.perf_counter()
        if cut.kind is CutKind.RAW:
            feeds = {cut.tensors[0].name: frame.tensors[0].data.reshape(1, *cut.tensors[0].shape)}
        else:
            deq = frame.dequantized()
            feeds = {t.name: deq[t.name].reshape(1, *t.shape) for t in cut.tensors}
        logits = next(iter(self.tails[h.cut_id].run(feeds).values()))[0]
        tail_ms = (time.perf_counter() - t1) * 1000
        cls = int(np.argmax(logits))
        report = ReportMessage(h.seq, h.device_id, h.cut_id, len(msg.payload), recv, 0.0, tail_ms, "t1", decode_ms)
        result = ResultMessage(h.seq, h.device_id, cls, ((cls, 1.0),), "cloud", h.cut_id, "t1", tail_ms, time.time())
        self.transport.publish(topics.topic(h.device_id, TopicKind.REPORT), report.to_bytes())
        self.transport.publish(topics.topic(h.device_id, TopicKind.RESULT), result.to_bytes(), qos=1)
        with self.lock:
            self.count += 1

    def close(self) -> None:
        self.transport.close()


def test_cli_answers_locally_and_through_the_cloud(reference_bundle, fresh_mosquitto, tmp_path, capsys) -> None:
    manifest = load_manifest(reference_bundle)
    cloud = TailResponder(fresh_mosquitto.url, reference_bundle, manifest)
    watcher = MqttTransport(fresh_mosquitto.url, client_id="test-fleet")
    telemetry: list = []
    watcher.subscribe(topics.topic("it-01", TopicKind.TELEMETRY), lambda m: telemetry.append(decode_message(m.payload)))
    out = tmp_path / "answers.jsonl"
    # One split cut, real reference frames, and the tau at which the cut's held-out exit curve answers
    # about half the frames locally: some frames are answered by the exit, the others by the cloud.
    from converter.reference_data import make_frames

    cut, point = min(
        ((c, p) for c in manifest.cuts if c.kind is CutKind.SPLIT for p in c.exit_curve),
        key=lambda cp: abs(cp[1].coverage - 0.5),
    )
    assert 0.25 <= point.coverage <= 0.75, f"no split cut's exit answers about half the frames: {point}"
    tau = point.tau
    x, _ = make_frames(15, seed=77, split="test")
    np.savez(tmp_path / "frames.npz", x=x)
    try:
        code = cli.main(["--bundle", str(reference_bundle), "--config", str(write_profile(tmp_path, fresh_mosquitto.url)),
                         "--source", f"npz:{tmp_path / 'frames.npz'}", "--frames", "15", "--out", str(out),
                         "--tau", str(tau), "--cut", str(cut.index), "--probe-every", "0"])  # fmt: skip
        assert code == 0
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(a["seq"] for a in lines) == list(range(15))
        assert {a["cut"] for a in lines} == {cut.index}
        who = Counter(a["answered_by"] for a in lines)
        assert who["cloud"] >= 2 and who["device"] >= 2, (who, tau)
        assert all(a["reason"] == "cloud" for a in lines if a["answered_by"] == "cloud")
        assert cloud.count == who["cloud"] + who["deadline"]  # sent: answered by the cloud, or (a loaded host) overdue
        status = []
        watcher.subscribe(topics.topic("it-01", TopicKind.STATUS), lambda m: status.append(decode_message(m.payload)))
        time.sleep(0.2)
        assert status and status[-1].online is False  # retained offline status after a clean stop
        assert telemetry and telemetry[-1].device_id == "it-01" and not telemetry[-1].emulated
        summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])["summary"]
        assert summary["frames"] == 15
    finally:
        watcher.close()
        cloud.close()


def test_broker_killed_mid_run_every_frame_answered_once_and_reports_resume(reference_bundle, fresh_mosquitto, tmp_path) -> None:
    manifest = load_manifest(reference_bundle)
    cfg = load_config(write_profile(tmp_path, fresh_mosquitto.url, device_id="it-02", fps=20, deadline_ms=400))
    cloud = TailResponder(fresh_mosquitto.url, reference_bundle, manifest)
    offline = StatusMessage("it-02", False, time.time()).to_bytes()
    transport = MqttTransport(fresh_mosquitto.url, client_id="it-02", will=status_will("it-02", offline),
                              reconnect_max_delay=0.5)
    answers: list[Answer] = []
    splits = [c.index for c in manifest.cuts if c.kind is CutKind.SPLIT]
    # tau > 1: always escalate; only split cuts, so every frame goes to the cloud when it can
    policy = CutPolicy(manifest, cfg.device, tau_override=2.0, probe_every=10, allowed_cuts=splits)
    runner = DeviceRunner(manifest, cfg, transport, LiteRTHeads(reference_bundle, manifest, cfg.board),
                          policy=policy, on_answer=answers.append, options=RunnerOptions(max_inflight=8))
    samples_before_kill: list[int] = []

    def chaos() -> None:
        time.sleep(1.0)
        samples_before_kill.append(runner.estimator.network_samples)
        fresh_mosquitto.kill()
        time.sleep(1.0)
        fresh_mosquitto.restart()

    thread = threading.Thread(target=chaos)
    thread.start()
    try:
        summary = runner.run(SyntheticSource(tuple(manifest.input.shape), seed=3), frames=90)  # 4.5 s at 20 fps
    finally:
        thread.join()
        runner.close()
        cloud.close()
    counts = Counter(a.seq for a in answers)
    assert sorted(counts) == list(range(90)) and set(counts.values()) == {1}
    by = Counter(a.answered_by for a in answers)
    reasons = Counter(a.reason for a in answers)
    assert by[AnsweredBy.CLOUD] >= 20, reasons
    assert by[AnsweredBy.DEADLINE] >= 5, reasons  # the outage: broker_unavailable / deadline
    # the outage's frames: refused by the dead transport, or unanswered until the overdue wait or the deadline
    assert reasons["broker_unavailable"] + reasons["overdue"] + reasons["deadline"] == by[AnsweredBy.DEADLINE]
    assert samples_before_kill[0] > 0
    assert runner.estimator.network_samples > samples_before_kill[0] + 5  # reports resumed after the restart
    last = [a.answered_by for a in sorted(answers, key=lambda a: a.seq)[-10:]]
    assert last.count(AnsweredBy.CLOUD) >= 8, last
    assert summary.frames == 90
