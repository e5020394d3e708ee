"""`splitedge device` as aarch64 code under QEMU user mode against a real broker on the host (scripts/qemu_device.sh).

The first run builds the cached rootfs and wheels (~30 s); later runs take ~10-20 s. The second test runs the
built wheel instead of the checkout (tests/wheelhouse.py; pip may fetch the aarch64 wheels from PyPI). Skipped when
qemu-aarch64-static is missing, unless SPLITEDGE_REQUIRE_QEMU=1 (then it fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from wheelhouse import AARCH64, NUMPY_PIN, answered_by_cloud, build_wheel, pip_install

from sdk import topics
from sdk.hardware import MODEL_FILE_ENV
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


def test_the_installed_wheel_runs_a_pi_profile_as_aarch64_and_measures_on_a_fake_pi(
    reference_bundle, fresh_mosquitto, tmp_path, tmp_path_factory
) -> None:
    """The wheel (tests/wheelhouse.py) installed for aarch64 with the device extra and the recipe's numpy pin
    (pip --target with the aarch64 tags: the aarch64 rootfs has no pip), run from a temp folder with only that
    install on PYTHONPATH, with the shipped pi4 profile's [board] and a fake device-tree model "Raspberry Pi 4":
    emulate_timing is switched off (aarch64 + model, sdk.hardware) and a real cloud tail answers."""
    require_qemu()
    wheel = build_wheel(tmp_path_factory)
    site = tmp_path / "site"
    pip_install([sys.executable, "-m", "pip", "install", "-q", "--target", str(site), *AARCH64, f"{wheel}[device]",
                 NUMPY_PIN], what=f"{wheel.name}[device] for aarch64", cwd=tmp_path)  # fmt: skip
    shipped = site / "share" / "splitedge" / "firmware_configs"
    assert (shipped / "calibration" / "mobilenet_v2_224_int8.tflite").is_file()
    # The pi4 profile as shipped, but with a deadline emulation can meet (QEMU is 150-600x slower than a Pi).
    profile = tmp_path / "pi4.toml"
    profile.write_text((shipped / "pi4.toml").read_text().replace("deadline_ms = 100\n", "deadline_ms = 60000\n"))
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    manifest = load_manifest(reference_bundle)
    split = max(c.index for c in manifest.cuts if c.kind is CutKind.SPLIT)
    cwd = tmp_path / "pi"
    cwd.mkdir()
    out = cwd / "answers.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "SPLITEDGE_CONFIG_DIR", "SPLITEDGE_HOST_SCALE"}}
    env |= {"PYTHON": os.environ.get("PYTHON", shutil.which("python3") or "python3"), MODEL_FILE_ENV: str(model)}
    done = answered_by_cloud(
        [str(SCRIPT), "--site", str(site), "--bundle", str(reference_bundle), "--config", str(profile),
         "--broker", fresh_mosquitto.url, "--source", "synthetic", "--frames", "3", "--out", str(out),
         "--cut", str(split), "--tau", "2", "--probe-every", "0"],
        fresh_mosquitto.url, reference_bundle, out, timeout=170, env=env, cwd=cwd,
    )  # fmt: skip
    assert "board pi4, timings measured on this machine (Raspberry Pi 4 Model B Rev 1.4, aarch64, 4 threads)" in done.stderr
    assert '"frames": 3' in done.stderr
