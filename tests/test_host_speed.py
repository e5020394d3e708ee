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


def test_a_calibrated_family_is_timed_on_this_host_and_replaces_the_assumed_factor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sdk.families import ModelFamily

    cal = host_speed.FAMILY_CALIBRATIONS[ModelFamily.RESNET]
    assert cal.path.is_file(), "run scripts/make_calibration_model.py --family resnet"
    monkeypatch.delenv("SPLITEDGE_HOST_SCALE", raising=False)
    monkeypatch.setattr(host_speed, "_scale", 4.0)
    monkeypatch.setattr(host_speed, "_family_ms", {ModelFamily.RESNET: 8.0})
    board = load_board("zero2w").board
    # The board's estimated ms of the calibration network over this host's ms of it: no MobileNetV2 scale.
    expected = board.speed_factor * host_speed.REFERENCE_CORE_MS * cal.board_ratio / 8.0
    assert host_speed.board_factor(board, "resnet") == pytest.approx(expected)
    assert board.emulated_ms(2.0, "resnet") == pytest.approx(2.0 * expected)
    # Uncalibrated families keep the profile's factor x the MobileNetV2 scale.
    assert host_speed.board_factor(board, "inception") == pytest.approx(board.factor_for("inception") * 4.0)
    # A declared host (SPLITEDGE_HOST_SCALE) times nothing: the profile's family factor.
    monkeypatch.setenv("SPLITEDGE_HOST_SCALE", "4")
    assert host_speed.family_host_ms("resnet") is None
    assert host_speed.board_factor(board, "resnet") == pytest.approx(board.factor_for("resnet") * 4.0)


def test_the_family_calibration_is_measured_and_a_missing_file_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sdk.families import ModelFamily

    monkeypatch.delenv("SPLITEDGE_HOST_SCALE", raising=False)
    monkeypatch.setattr(host_speed, "_family_ms", {})
    ms = host_speed.family_host_ms(ModelFamily.RESNET)
    assert ms is not None and 0.5 < ms < 5000  # ResNet50 224 int8, 1 thread: 8.8 ms (AMX) here
    assert host_speed.family_host_ms("mobilenet") is None  # the base scale's own network
    cal = host_speed.FAMILY_CALIBRATIONS[ModelFamily.RESNET]
    monkeypatch.setitem(host_speed.FAMILY_CALIBRATIONS, ModelFamily.RESNET,
                        replace(cal, path=tmp_path / "missing.tflite"))
    monkeypatch.setattr(host_speed, "_family_ms", {})
    with caplog.at_level(logging.WARNING, logger="sdk.host_speed"):
        assert host_speed.family_host_ms("resnet") is None
    assert "make_calibration_model.py --family resnet" in caplog.text


def test_the_factor_is_described_as_it_was_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.families import ModelFamily

    board = load_board("zero2w").board
    monkeypatch.setattr(host_speed, "_scale", 4.0)
    assert "speed factor 3.3 x host scale 4.00" in host_speed.describe_factor(board, "mobilenet")
    monkeypatch.delenv("SPLITEDGE_HOST_SCALE", raising=False)
    monkeypatch.setattr(host_speed, "_family_ms", {ModelFamily.RESNET: 8.0})
    text = host_speed.describe_factor(board, "resnet")
    assert "resnet50_224_int8.tflite time 3.3 x 10.8 ms x 5.7 over 8.00 ms" in text
    assert f"factor {host_speed.board_factor(board, 'resnet'):.2f} for resnet" in text
