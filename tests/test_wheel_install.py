"""The Pi install recipe (firmware_configs/README.md, "Install on a Raspberry Pi") on this host.

The wheel is built from the working tree, installed as ``splitedge-*.whl[device]`` with ``numpy<2`` into a
fresh venv made with ``--system-site-packages``, and the venv's ``splitedge device`` (the console script the
systemd unit runs) answers frames through a real Mosquitto with a cloud tail worker from the main venv.
Everything on the device side runs from a temporary folder with no PYTHONPATH, so the checkout is never
imported; a meta-path guard records any attempt to import TensorFlow or Keras. pip may fetch ai-edge-litert,
paho-mqtt, numpy and zstandard from PyPI (fast from pip's cache); without PyPI and the cache, skipped.
~20-40 s.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from wheelhouse import NUMPY_PIN, REPO, answered_by_cloud, build_wheel, data_prefix, pip_install, wheel_names

from sdk.manifest import CutKind, load_manifest

pytestmark = [pytest.mark.broker, pytest.mark.wheel]

UNIT = REPO / "firmware_configs" / "systemd" / "splitedge-device.service"
RECIPE_VENV = "/opt/splitedge/venv"  # the venv of the recipe and the unit

# Runs a console script with a guard that refuses (and records) any import of TensorFlow or Keras.
GUARD = '''
import json, runpy, sys
tried = []
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "keras", "tf_keras"}:
            tried.append(name)
            raise ImportError(f"the device side must not import {name}")
        return None
sys.meta_path.insert(0, NoTensorFlow())
script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "tf_keras"})
    print("GUARD " + json.dumps({"tried": tried, "loaded": loaded, "sdk": sys.modules["sdk"].__file__}), file=sys.stderr)
'''

# What the installed package sees, printed as JSON (run by the venv's python from the temporary folder).
PROBE = '''
import importlib.util, json, sys, numpy, sdk
from sdk import host_speed
from sdk.config import config_dir, load_board
print(json.dumps({
    "sdk": sdk.__file__, "prefix": sys.prefix, "numpy": numpy.__version__, "config_dir": str(config_dir()),
    "calibration": [str(host_speed.CALIBRATION_MODEL)] + [str(c.path) for c in host_speed.FAMILY_CALIBRATIONS.values()],
    "tensorflow": importlib.util.find_spec("tensorflow") is not None,
    "pi4_emulates": load_board("pi4").board.emulate_timing,
}))
'''


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory) -> Path:
    """The recipe's venv: python -m venv --system-site-packages, pip install 'WHEEL[device]' 'numpy<2'."""
    wheel = build_wheel(tmp_path_factory)
    root = tmp_path_factory.mktemp("device-venv")
    venv = root / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120, cwd=root)
    pip_install([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[device]", NUMPY_PIN],
                what=f"{wheel.name}[device]", cwd=root)
    return venv


def clean_env() -> dict[str, str]:
    """This environment without anything that would point the device at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "SPLITEDGE_CONFIG_DIR"}}
    env.pop("SPLITEDGE_HOST_SCALE", None)  # the installed calibration model is timed (emulated pi4 timing)
    return env


def test_the_wheel_carries_the_device_data_files(tmp_path_factory) -> None:
    names = wheel_names(build_wheel(tmp_path_factory))
    data = data_prefix(build_wheel(tmp_path_factory))
    for rel in ("pi4.toml", "pi3bplus.toml", "pi5.toml", "zero2w.toml", "zero2w-offload.toml", "README.md",
                "systemd/splitedge-device.service", "mosquitto/dev-local.conf",
                "calibration/mobilenet_v2_224_int8.tflite", "calibration/resnet50_224_int8.tflite"):
        assert f"{data}/{rel}" in names, rel
    assert {"sdk/hardware.py", "sdk/datafiles.py", "device_runner/cli.py"} <= names
    assert not any(n.startswith("tests/") for n in names)


def test_the_unit_points_at_files_the_install_puts_in_place(device_venv) -> None:
    text = UNIT.read_text(encoding="utf-8")
    [doc] = re.findall(r"^Documentation=file://(\S+)$", text, re.M)
    [exe] = re.findall(r"^ExecStart=(\S+)", text, re.M)
    for path in (doc, exe):
        assert path.startswith(RECIPE_VENV + "/"), path
        assert (device_venv / path.removeprefix(RECIPE_VENV + "/")).is_file(), path
    assert f'{RECIPE_VENV}/bin/pip install "$(ls /tmp/splitedge-*.whl)[device]" \'{NUMPY_PIN}\'' in text
    assert "python3 -m venv --system-site-packages /opt/splitedge/venv" in text


def test_the_installed_package_finds_its_profiles_and_calibration_outside_the_checkout(device_venv, tmp_path) -> None:
    done = subprocess.run([str(device_venv / "bin" / "python"), "-c", PROBE], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    share = device_venv / "share" / "splitedge" / "firmware_configs"
    assert Path(seen["sdk"]).is_relative_to(device_venv) and not Path(seen["sdk"]).is_relative_to(REPO)
    assert Path(seen["config_dir"]) == share
    assert [Path(p) for p in seen["calibration"]] == [share / "calibration" / "mobilenet_v2_224_int8.tflite",
                                                      share / "calibration" / "resnet50_224_int8.tflite"]
    assert seen["numpy"].startswith("1.") and seen["tensorflow"] is False
    assert seen["pi4_emulates"] is True  # this host is no Raspberry Pi (tests/test_hardware.py: both branches)


def test_the_installed_device_answers_frames_through_mosquitto_with_a_cloud_tail(
    device_venv, reference_bundle, fresh_mosquitto, tmp_path
) -> None:
    manifest = load_manifest(reference_bundle)
    split = max(c.index for c in manifest.cuts if c.kind is CutKind.SPLIT)
    cwd = tmp_path / "pi"
    cwd.mkdir()
    (cwd / "guard.py").write_text(GUARD, encoding="utf-8")
    out = cwd / "answers.jsonl"
    done = answered_by_cloud(
        [str(device_venv / "bin" / "python"), "guard.py", str(device_venv / "bin" / "splitedge"), "device",
         "--bundle", str(reference_bundle), "--config", "pi4", "--broker", fresh_mosquitto.url,
         "--source", "synthetic", "--frames", "3", "--out", str(out), "--cut", str(split), "--tau", "2",
         "--probe-every", "0"],
        fresh_mosquitto.url, reference_bundle, out, timeout=120, cwd=cwd, env=clean_env(),
    )  # fmt: skip
    guard = next(line for line in done.stderr.splitlines() if line.startswith("GUARD "))
    seen = json.loads(guard.removeprefix("GUARD "))
    assert seen["tried"] == [] and seen["loaded"] == [], seen
    assert Path(seen["sdk"]).is_relative_to(device_venv), seen
    assert "board pi4, timings emulated (" in done.stderr, done.stderr[-2000:]
    assert "is missing" not in done.stderr and "could not time" not in done.stderr
