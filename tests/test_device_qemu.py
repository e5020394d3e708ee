"""`splitedge device` as aarch64 code under QEMU user mode against a real broker on the host (scripts/qemu_device.sh).

The first run builds the cached rootfs and wheels (~30 s); later runs take ~10-20 s. Skipped when
qemu-aarch64-static is missing, unless SPLITEDGE_REQUIRE_QEMU=1 (then it fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sdk import topics
from sdk.manifest import CutKind, load_manifest
from sdk.messages import ReportMessage, ResultMessage
from sdk.mqtt import MqttTransport
from sdk.topics import TopicKind
from sdk.transport import Message
from sdk.wire import decode_frame

pytestmark = [pytest.mark.qemu, pytest.mark.broker]

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "qemu_device.sh"


def require_qemu() -> None:
    if shutil.which("qemu-aarch64-static") is None:
        reason = "qemu-aarch64-static is not installed (apt-get install qemu-user-static mmdebstrap)"
        if os.environ.get("SPLITEDGE_REQUIRE_QEMU") == "1":
            pytest.fail(f"SPLITEDGE_REQUIRE_QEMU=1 but {reason}")
        pytest.skip(reason)


def test_device_runs_as_aarch64_under_qemu_through_a_real_broker(reference_bundle, fresh_mosquitto, tmp_path) -> None:
    require_qemu()
    manifest = load_manifest(reference_bundle)
    split = max(c.index for c in manifest.cuts if c.kind is CutKind.SPLIT)  # the smallest payload
    seen: list[int] = []
    cloud = MqttTransport(fresh_mosquitto.url, client_id="qemu-test-tail")

    def respond(msg: Message) -> None:  # a minimal cloud: decode, answer class 5, report
        h = decode_frame(msg.payload).header
        seen.append(h.seq)
        report = ReportMessage(h.seq, h.device_id, h.cut_id, len(msg.payload), 0.0, 0.0, 0.1, "qemu-test")
        result = ResultMessage(h.seq, h.device_id, 5, ((5, 1.0),), "cloud", h.cut_id, "qemu-test")
        cloud.publish(topics.topic(h.device_id, TopicKind.REPORT), report.to_bytes())
        cloud.publish(topics.topic(h.device_id, TopicKind.RESULT), result.to_bytes(), qos=1)

    cloud.subscribe(topics.shared_filter("tails"), respond, qos=1)
    out = tmp_path / "answers.jsonl"
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", shutil.which("python3") or "python3")}
    try:
        done = subprocess.run(
            [str(SCRIPT), "--bundle", str(reference_bundle), "--broker", fresh_mosquitto.url, "--frames", "3",
             "--out", str(out), "--cut", str(split), "--tau", "2", "--probe-every", "0"],
            capture_output=True, text=True, timeout=170, env=env,
        )  # fmt: skip
    finally:
        cloud.close()
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["seq"] for a in answers] == [0, 1, 2]
    assert {a["answered_by"] for a in answers} == {"cloud"} and {a["cls"] for a in answers} == {5}
    assert sorted(seen) == [0, 1, 2]
    assert "qemu-aarch64" in done.stderr and '"frames": 3' in done.stderr
