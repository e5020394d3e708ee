"""sdk.hardware (is this a real Raspberry Pi, so a profile's emulate_timing is off) and sdk.datafiles."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from sdk import datafiles, hardware
from sdk.config import load_board
from sdk.hardware import Host, emulate_timing, read_host

PI4_MODEL = b"Raspberry Pi 4 Model B Rev 1.4\x00"  # as /proc/device-tree/model reads on the board


def fake_model(tmp_path: Path, content: bytes = PI4_MODEL) -> Path:
    path = tmp_path / "model"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "machine", "is_pi"),
    [
        (PI4_MODEL, "aarch64", True),
        (b"Raspberry Pi Zero 2 W Rev 1.0\x00", "aarch64", True),
        (b"Raspberry Pi 3 Model B Plus Rev 1.3\x00", "armv7l", True),  # 32-bit Pi OS
        (PI4_MODEL, "x86_64", False),  # a model file alone is not enough
        (b"QEMU Virtual Machine\x00", "aarch64", False),  # an aarch64 board that is no Pi
        (b"\x00", "aarch64", False),
        (None, "aarch64", False),  # no device tree (QEMU user mode, containers)
        (None, "x86_64", False),
    ],
)
def test_a_raspberry_pi_is_an_arm_machine_with_a_raspberry_pi_device_tree_model(tmp_path, content, machine, is_pi):
    path = fake_model(tmp_path, content) if content is not None else tmp_path / "missing"
    host = read_host(path, machine)
    assert host.is_raspberry_pi is is_pi
    assert ("not a Raspberry Pi" in host.describe()) is not is_pi


def test_the_model_is_read_without_its_nul(tmp_path):
    assert read_host(fake_model(tmp_path), "aarch64") == Host("aarch64", "Raspberry Pi 4 Model B Rev 1.4")
    assert read_host(fake_model(tmp_path), "aarch64").describe() == "Raspberry Pi 4 Model B Rev 1.4, aarch64"


def test_the_model_file_can_be_set_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(hardware.MODEL_FILE_ENV, str(fake_model(tmp_path)))
    assert read_host(machine="aarch64").is_raspberry_pi


def test_emulation_is_switched_off_on_a_real_pi_and_kept_elsewhere_with_the_decision_logged(tmp_path, caplog):
    pi = read_host(fake_model(tmp_path), "aarch64")
    laptop = read_host(tmp_path / "missing", "x86_64")
    with caplog.at_level(logging.INFO, logger="sdk.hardware"):
        assert emulate_timing("test-pi-board", True, pi) is False
        assert emulate_timing("test-laptop-board", True, laptop) is True
        assert emulate_timing("test-pi-board", True, pi) is False  # logged once
    assert emulate_timing("test-off", False, pi) is False and emulate_timing("test-off", False, laptop) is False
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "switched off on a real Raspberry Pi (Raspberry Pi 4 Model B Rev 1.4, aarch64)" in messages[0]
    assert "test-laptop-board: emulated timing (x86_64, no device-tree model: not a Raspberry Pi)" in messages[1]


@pytest.mark.parametrize("board", ["pi4", "pi3bplus", "pi5", "zero2w", "zero2w-offload"])
def test_a_pi_profile_measures_its_own_timing_on_a_pi_and_emulates_elsewhere(tmp_path, monkeypatch, board):
    monkeypatch.setattr(hardware, "this_host", lambda: read_host(fake_model(tmp_path), "aarch64"))
    on_pi = load_board(board).board
    assert on_pi.emulate_timing is False and on_pi.emulated_ms(10.0, "resnet") == 10.0
    monkeypatch.setattr(hardware, "this_host", lambda: read_host(tmp_path / "missing", "x86_64"))
    assert load_board(board).board.emulate_timing is True


def test_shipped_files_are_found_in_the_checkout_then_where_a_wheel_put_them(tmp_path, monkeypatch):
    assert datafiles.shipped_path("pi4.toml") == Path(datafiles.__file__).resolve().parent.parent / "firmware_configs" / "pi4.toml"
    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # a venv the wheel was installed into
    installed = tmp_path / "share" / "splitedge" / "firmware_configs" / "calibration" / "only-installed.tflite"
    assert datafiles.shipped_path("calibration/only-installed.tflite") == datafiles.shipped_dirs()[0] / "calibration" / "only-installed.tflite"
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"x")
    assert datafiles.shipped_path("calibration/only-installed.tflite") == installed


# ------------------------------------------------------------------------- the install's one-line errors


def test_picamera2_broken_by_numpy_2_in_the_venv_says_to_pin_numpy(tmp_path, monkeypatch):
    from device_runner.sources import CameraSource
    from sdk.errors import MissingDependencyError

    fake = tmp_path / "picamera2"
    fake.mkdir()  # what apt's picamera2 does when the venv's numpy 2 shadows apt's numpy 1.24 (simplejpeg)
    (fake / "__init__.py").write_text('raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(MissingDependencyError, match=r"picamera2 cannot be imported with numpy .*pip install 'numpy<2'"):
        CameraSource((8, 8, 3))


def test_a_missing_extra_says_how_to_install_without_pypi():
    from sdk.errors import MissingDependencyError

    text = str(MissingDependencyError.for_extra("paho", "device"))
    assert "splitedge[device]" in text and "pip install -e '.[device]'" in text and ".whl[device]" in text
    assert "\n" not in text
