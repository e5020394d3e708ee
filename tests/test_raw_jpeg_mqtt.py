"""The raw frame as JPEG end to end: the device runner (LiteRT heads of the reference bundle) sends the raw
frame as a JPEG (``raw_jpeg_quality``) through a real Mosquitto to a real ``cloud_tail`` worker, which decodes
it (sdk.wire, codec 2) and answers with the whole float model; the answers match the model run here on the
same JPEG-decoded frames, and the device's planner prices cut 0 at the JPEG's size."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

from cloud_tail.tails import TailSet
from cloud_tail.worker import TailWorker, WorkerConfig
from device_runner.heads import LiteRTHeads
from device_runner.policy import CutPolicy
from device_runner.runner import Answer, AnsweredBy, DeviceRunner
from sdk.config import load_config
from sdk.litert import LiteRTModel
from sdk.manifest import load_manifest
from sdk.mqtt import MqttTransport

pytestmark = pytest.mark.broker
PIL = pytest.importorskip("PIL.Image")

PROFILE = """
[board]
name = "host"
cpu = "x86-64"
threads = 1
memory_budget_mb = 256
speed_factor = 1.0
speed_factor_source = "test: this machine"

[device]
device_id = "jpeg-01"
source = "synthetic"
fps_cap = 20
deadline_ms = 3000
target_accuracy = 0.5
bits = [8]
codec = "auto"
raw_jpeg_quality = 80
telemetry_interval_s = 1.0

[broker]
url = "{url}"
"""


def test_raw_frames_go_as_jpeg_and_the_cloud_answers_them(reference_bundle: Path, fresh_mosquitto, tmp_path) -> None:
    from converter.reference_data import make_frames

    manifest = load_manifest(reference_bundle)
    raw = manifest.raw_cut
    assert raw is not None and raw.tail is not None
    profile = tmp_path / "jpeg.toml"
    profile.write_text(PROFILE.format(url=fresh_mosquitto.url))
    cfg = load_config(profile)
    worker_t = MqttTransport(fresh_mosquitto.url, client_id="w-jpeg")
    worker = TailWorker(worker_t, TailSet(reference_bundle), WorkerConfig("w-jpeg"))
    worker.start()
    answers: list[Answer] = []
    policy = CutPolicy(manifest, cfg.device, cfg.policy, allowed_cuts=(raw.index,), probe_every=0)
    runner = DeviceRunner(manifest, cfg, MqttTransport(fresh_mosquitto.url, client_id="jpeg-01"),
                          LiteRTHeads(reference_bundle, manifest, cfg.board), policy=policy,
                          on_answer=answers.append)
    x, _ = make_frames(8, seed=5, split="test")
    try:
        runner.run(iter(x), frames=len(x))
        deadline = time.time() + 10
        while len(answers) < len(x) and time.time() < deadline:
            runner.expire()
            time.sleep(0.05)
    finally:
        runner.close()
        worker.stop()
        worker_t.close()
    assert sorted(a.seq for a in answers) == list(range(len(x)))
    assert all(a.answered_by is AnsweredBy.CLOUD and a.cut == raw.index for a in answers), answers
    jpegs = []
    for frame in x:
        buf = io.BytesIO()
        PIL.fromarray(frame).save(buf, format="JPEG", quality=80)
        jpegs.append(buf.getvalue())
    mean_jpeg = float(np.mean([len(j) for j in jpegs]))
    assert runner.bytes_sent < 0.5 * len(x) * int(np.prod(manifest.input.shape))  # JPEG, not the pixels
    learned = runner.policy.payload_bytes(raw.index)
    assert learned is not None and 0.5 * mean_jpeg < learned < 2 * mean_jpeg + 200  # + the frame header
    model = LiteRTModel(reference_bundle / raw.tail.path)
    name = next(iter(model.inputs))
    for a, j in zip(sorted(answers, key=lambda a: a.seq), jpegs, strict=True):
        decoded = np.asarray(PIL.open(io.BytesIO(j)).convert("RGB"), dtype=np.uint8)[None]
        expected = int(np.argmax(next(iter(model.run({name: decoded}).values()))[0]))
        assert a.cls == expected, (a.seq, a.cls, expected)
