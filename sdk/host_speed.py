"""How fast this host's CPU runs int8 LiteRT kernels compared with the reference core the board factors use.

A board profile's ``speed_factor`` is ``T_board / T_ref`` for MobileNetV2 1.0 224 int8
(firmware_configs/README.md), with ``T_ref`` = :data:`REFERENCE_CORE_MS` (10.8 ms: one thread of the x86
core the profiles were written on, which has no AVX-512 VNNI). Hosts differ by much more than the
factors' +-40 %: a core with VNNI ran the same file in 1.6 ms, 6.7x faster, and the reference model's
whole int8 network in 0.21 instead of 1.4 ms. Stretching such a host's head times by ``speed_factor``
alone made an emulated Zero 2 W as fast as a Pi 5.

So an emulating host measures itself: :func:`host_scale` times the calibration file
(``firmware_configs/calibration/mobilenet_v2_224_int8.tflite``, made by
``scripts/make_calibration_model.py``: the same network with random, seeded weights - only its timing
matters) on one LiteRT thread and returns ``T_ref / T_host``; :func:`board_factor` is the factor
that turns a head time measured on this host into the board's, ``speed_factor * host_scale()`` (or the
board's factor for the bundle's workload family, ``BoardSpec.factor_for``).

Per-family calibration. The scale is measured on MobileNetV2, so alone it assumes the host is as much
faster than the board on every network. It is not: an x86 host with VNNI/AMX speeds dense convolutions up
far more than depthwise ones (this repository's host ran ResNet50 224 int8 only 2.9x as long as MobileNetV2
224 int8, 1 thread, 2026-12-03), while on the Pi's Cortex-A cores ResNet50 int8 takes 5.5-5.9x as long as
MobileNet int8 (:data:`FAMILY_CALIBRATIONS`, ncnn's published figures). So a family with its own
calibration network (today ``resnet``: ResNet50 224 int8, random seeded weights, the same script with
``--family resnet``) is timed on this host too, and its factor is the board's time of that network,
``speed_factor x REFERENCE_CORE_MS x board_ratio``, over this host's: ``board_factor`` then no longer
depends on how much faster the host is at MobileNetV2. Families without a calibration file keep
``BoardSpec.factor_for(family) x host_scale()`` (the profile's assumed family factors); with
``SPLITEDGE_HOST_SCALE`` set, the host is declared and nothing is timed, so every family uses the profile.
The measurement (a load, 3 warm-up and 100 timed invokes, the 10th percentile: ~0.2 s here, seconds
under QEMU - which never emulates timing) runs once per process, and only when a board emulates timing.
The 10th percentile is the host undisturbed: on this shared 2-core host the median of 15 invokes moved
the scale between 6.9 and 7.6 from one process to the next (+-5 %), and the replay benchmark's
decisions with it; the 10th percentile of 100 moved +-1 % (docs/DYNAMIC.md, "Run-to-run spread").

``SPLITEDGE_HOST_SCALE=<number>`` sets the scale instead of measuring (``1`` = "this host is the
reference core": the behaviour before the calibration); without the file or a LiteRT runtime the
scale is 1 with a warning that says so.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sdk.config import BoardSpec
from sdk.datafiles import shipped_path
from sdk.errors import ConfigError
from sdk.families import ModelFamily

__all__ = [
    "CALIBRATION_MODEL",
    "FAMILY_CALIBRATIONS",
    "REFERENCE_CORE_MS",
    "FamilyCalibration",
    "board_factor",
    "describe_factor",
    "family_host_ms",
    "host_scale",
    "measure_host_ms",
    "prior_factor",
]

log = logging.getLogger(__name__)

REFERENCE_CORE_MS = 10.8  # MobileNetV2 1.0 224 int8, 1 LiteRT thread, the reference core (PLATFORM.md)
# In the checkout's firmware_configs/calibration, or where a wheel install put it (sdk.datafiles).
CALIBRATION_MODEL = shipped_path("calibration/mobilenet_v2_224_int8.tflite")
_ENV = "SPLITEDGE_HOST_SCALE"
_lock = threading.Lock()
_scale: float | None = None


@dataclass(frozen=True, slots=True)
class FamilyCalibration:
    """A family's calibration network and how much longer than MobileNetV2 224 int8 a board takes on it."""

    path: Path
    board_ratio: float  # board ms of this network / board ms of MobileNetV2 1.0 224 int8 (4 threads)
    source: str


FAMILY_CALIBRATIONS: dict[ModelFamily, FamilyCalibration] = {
    ModelFamily.RESNET: FamilyCalibration(
        shipped_path("calibration/resnet50_224_int8.tflite"),
        5.7,
        "ncnn benchmark/README.md (benchncnn, 4 threads): Raspberry Pi 4 (1.5 GHz) resnet50_int8 236.4 ms / "
        "mobilenet_int8 40.3 ms = 5.87; Zero 2 W 497.6 / 91.0 = 5.47 (MobileNet V1, whose fp32 time is within "
        "10 % of V2's on both boards: 72.1 vs 72.6 ms, 163.2 vs 147.4 ms); 5.7 +-15 %.",
    ),
}
_family_ms: dict[ModelFamily, float | None] = {}


def measure_host_ms(path: Path = CALIBRATION_MODEL, *, repeats: int = 100) -> float:
    """The 10th percentile ms of one invoke of ``path`` on one LiteRT thread of this host (after warm-up)."""
    from sdk.litert import LiteRTModel  # the LiteRT adapter (imports the interpreter lazily)

    model = LiteRTModel(path, threads=1)
    model.warm_up()
    return model.time_ms(repeats=repeats, warmup=3, percentile=10.0)


def host_scale() -> float:
    """``REFERENCE_CORE_MS / T_host`` (> 1: this host is faster than the reference core); see the module doc."""
    global _scale
    if _scale is not None:  # the per-frame path: no lock once measured
        return _scale
    with _lock:
        if _scale is None:
            _scale = _host_scale()
        return _scale


def _host_scale() -> float:
    text = os.environ.get(_ENV)
    if text is not None:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise ConfigError(f"{_ENV}={text!r}: expected a number > 0 (1 = this host is the reference core), "
                              f"or unset it to measure this host.")
        return value
    if not CALIBRATION_MODEL.is_file():
        log.warning("host speed: %s is missing, so emulated board times assume this host is the reference core "
                    "(scale 1); run scripts/make_calibration_model.py to restore it", CALIBRATION_MODEL)
        return 1.0
    try:
        ms = measure_host_ms()
    except Exception as exc:  # no LiteRT runtime, or an unreadable file: emulate as before, and say so
        log.warning("host speed: could not time %s (%s); emulated board times assume scale 1", CALIBRATION_MODEL, exc)
        return 1.0
    scale = REFERENCE_CORE_MS / ms
    log.info("host speed: MobileNetV2 int8 %.2f ms on 1 thread here vs %.1f ms on the reference core: scale %.2f",
             ms, REFERENCE_CORE_MS, scale)
    return scale


def family_host_ms(family: ModelFamily | str | None) -> float | None:
    """This host's ms for ``family``'s calibration network (1 thread, 10th percentile), measured once per
    process; None when the family has none, ``SPLITEDGE_HOST_SCALE`` declares the host, or it cannot be timed
    (then the profile's family factor is used, with a warning)."""
    try:
        fam = ModelFamily(family) if family is not None else None
    except ValueError:
        return None
    cal = FAMILY_CALIBRATIONS.get(fam) if fam is not None else None
    if cal is None or os.environ.get(_ENV) is not None:
        return None
    if fam in _family_ms:
        return _family_ms[fam]
    with _lock:
        if fam not in _family_ms:
            _family_ms[fam] = _time_calibration(fam, cal)
        return _family_ms[fam]


def _time_calibration(family: ModelFamily, cal: FamilyCalibration) -> float | None:
    if not cal.path.is_file():
        log.warning("host speed: %s is missing, so %s heads are emulated with the profile's assumed family factor; "
                    "run scripts/make_calibration_model.py --family %s to restore it", cal.path, family, family)
        return None
    try:
        ms = measure_host_ms(cal.path, repeats=30)
    except Exception as exc:  # no LiteRT runtime, or an unreadable file: the profile's factor, and say so
        log.warning("host speed: could not time %s (%s); %s heads use the profile's family factor", cal.path, exc, family)
        return None
    log.info("host speed: %s calibration %s %.2f ms on 1 thread here", family, cal.path.name, ms)
    return ms


def board_factor(board: BoardSpec, family: ModelFamily | str | None = None) -> float:
    """Board ms per ms measured on this host (1 thread) for a network of ``family`` (the manifest's
    ``sdk.families.model_family``). A calibrated family (module doc): the board's estimated ms of its
    calibration network, ``speed_factor x REFERENCE_CORE_MS x board_ratio``, over this host's; otherwise
    ``board.factor_for(family) * host_scale()``; None: ``speed_factor * host_scale()``."""
    host_ms = family_host_ms(family)
    if host_ms is not None:
        cal = FAMILY_CALIBRATIONS[ModelFamily(family)]
        return board.speed_factor * REFERENCE_CORE_MS * cal.board_ratio / host_ms
    return board.factor_for(family) * host_scale()


def describe_factor(board: BoardSpec, family: ModelFamily | str | None = None) -> str:
    """How :func:`board_factor` came about, for the CLIs' "timings emulated" line."""
    factor = board_factor(board, family)
    fam = ModelFamily(family).value if family is not None else "mobilenet"
    host_ms = family_host_ms(family)
    if host_ms is not None:
        cal = FAMILY_CALIBRATIONS[ModelFamily(family)]
        return (f"{board.name} factor {factor:.2f} for {fam}: the board's estimated {cal.path.name} time "
                f"{board.speed_factor} x {REFERENCE_CORE_MS} ms x {cal.board_ratio} over {host_ms:.2f} ms on 1 "
                f"thread here (sdk.host_speed)")
    return (f"{board.name} factor {factor:.2f} for {fam}: speed factor {board.factor_for(family)} x host scale "
            f"{host_scale():.2f} (this host vs the reference core, sdk.host_speed)")


def prior_factor(board: BoardSpec, converted_for: str | None, family: ModelFamily | str | None = None) -> float:
    """Board ms per manifest ms (the manifest's head times were measured where the bundle was converted):
    1 when it was converted for this board; :func:`board_factor` when this host emulates the board (it
    converted the bundle, as a rule); the bare ``board.factor_for(family)`` on the board itself, where this
    host's speed says nothing about the converting host's."""
    if converted_for == board.name:
        return 1.0
    return board_factor(board, family) if board.emulate_timing else board.factor_for(family)
