"""sdk.host_speed: the host's int8 speed against the reference core, which emulated board times scale by."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from sdk import host_speed
from sdk.config import load_board
from sdk.errors import ConfigError


def test_the_calibration_file_is_timed_on_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPLITEDGE_HOST_SCALE", raising=False)
    assert host_speed.CALIBRATION_MODEL.is_file(), "run scripts/make_calibration_model.py"
    ms = host_speed.measure_host_ms(repeats=5)
    assert 0.05 < ms < 1000  # MobileNetV2 224 int8: 1.6 ms (VNNI) .. 10.8 ms (the reference core) on x86 here
    scale = host_speed._host_scale()
    assert scale == pytest.approx(host_speed.REFERENCE_CORE_MS / ms, rel=0.5)  # two timings of a noisy host


def test_the_environment_sets_the_scale_and_a_bad_value_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITEDGE_HOST_SCALE", "6.5")
    assert host_speed._host_scale() == 6.5
    for bad in ("fast", "0", "-1", "inf"):
        monkeypatch.setenv("SPLITEDGE_HOST_SCALE", bad)
        with pytest.raises(ConfigError, match=r"SPLITEDGE_HOST_SCALE=.*expected a number > 0.*unset it"):
            host_speed._host_scale()


def test_without_the_file_the_scale_is_1_and_a_warning_says_how_to_restore_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SPLITEDGE_HOST_SCALE", raising=False)
    monkeypatch.setattr(host_speed, "CALIBRATION_MODEL", tmp_path / "missing.tflite")
    with caplog.at_level(logging.WARNING, logger="sdk.host_speed"):
        assert host_speed._host_scale() == 1.0
    assert "scripts/make_calibration_model.py" in caplog.text


def test_board_and_prior_factors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_speed, "_scale", 4.0)
    board = load_board("zero2w").board
    assert board.emulate_timing
    assert host_speed.board_factor(board) == pytest.approx(board.speed_factor * 4.0)
    assert board.emulated_ms(2.0) == pytest.approx(2.0 * board.speed_factor * 4.0)
    assert host_speed.prior_factor(board, converted_for=board.name) == 1.0
    assert host_speed.prior_factor(board, converted_for="host") == pytest.approx(board.speed_factor * 4.0)
    real = replace(board, emulate_timing=False)  # on the board itself: this host's speed says nothing
    assert host_speed.prior_factor(real, converted_for="host") == board.speed_factor
    assert real.emulated_ms(2.0) == 2.0


def test_the_factors_follow_the_workload_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_speed, "_scale", 4.0)
    board = load_board("pi4").board
    resnet = board.factor_for("resnet")
    assert resnet > board.speed_factor  # the shipped table (firmware_configs/README.md)
    assert host_speed.board_factor(board, "resnet") == pytest.approx(resnet * 4.0)
    assert host_speed.board_factor(board, None) == host_speed.board_factor(board) == pytest.approx(board.speed_factor * 4.0)
    assert board.emulated_ms(2.0, "resnet") == pytest.approx(2.0 * resnet * 4.0)
    assert host_speed.prior_factor(board, converted_for="host", family="resnet") == pytest.approx(resnet * 4.0)
    assert host_speed.prior_factor(board, converted_for="pi4", family="resnet") == 1.0
    real = replace(board, emulate_timing=False)
    assert host_speed.prior_factor(real, converted_for="host", family="resnet") == resnet
