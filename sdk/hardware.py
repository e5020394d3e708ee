"""Is this machine a real Raspberry Pi? The one place that decides whether a profile's ``emulate_timing`` applies.

A Pi profile ships ``emulate_timing = true``: *when not on the real board*, head times measured on this host
are stretched by the board's factor (``BoardSpec.emulated_ms``, firmware_configs/README.md), so a laptop or
the CI host can stand in for a Zero 2 W. On the board itself the heads must report what they measured, so
`emulate_timing` (called by ``sdk.config`` when it parses ``[board]``) switches emulation off on a real Pi
and logs which way it decided, once per board and process.

What counts as a real Raspberry Pi: an ARM Linux userland (``platform.machine()`` ``aarch64``, ``armv7l``...)
whose device-tree model (``/proc/device-tree/model``, NUL-terminated, e.g. ``Raspberry Pi 4 Model B Rev
1.4``) starts with ``Raspberry Pi``. Both are needed: an x86 host never has the file, and an aarch64 host
that is no Pi (a cloud VM, QEMU user mode on the dev host) has another model or none.
``$SPLITEDGE_DEVICE_MODEL_FILE`` reads the model from another file: the tests give a fake model to show
both branches, e.g. under QEMU aarch64 (tests/test_device_qemu.py).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODEL_FILE", "MODEL_FILE_ENV", "Host", "emulate_timing", "read_host", "this_host"]

log = logging.getLogger(__name__)

MODEL_FILE = Path("/proc/device-tree/model")
MODEL_FILE_ENV = "SPLITEDGE_DEVICE_MODEL_FILE"
_ARM_MACHINES = frozenset({"aarch64", "arm64", "armv8l", "armv7l", "armv6l"})
_PI_PREFIX = "Raspberry Pi"
_logged: set[tuple[str, bool]] = set()


@dataclass(frozen=True, slots=True)
class Host:
    """The CPU architecture and the device-tree model (None when there is no readable model file)."""

    machine: str
    model: str | None

    @property
    def is_raspberry_pi(self) -> bool:
        return self.machine.lower() in _ARM_MACHINES and self.model is not None and self.model.startswith(_PI_PREFIX)

    def describe(self) -> str:
        """``Raspberry Pi 4 Model B Rev 1.4, aarch64`` or ``x86_64, not a Raspberry Pi``."""
        if self.is_raspberry_pi:
            return f"{self.model}, {self.machine}"
        seen = f"device-tree model {self.model!r}" if self.model else "no device-tree model"
        return f"{self.machine}, {seen}: not a Raspberry Pi"


def read_host(model_file: str | os.PathLike[str] | None = None, machine: str | None = None) -> Host:
    """This machine as `Host`; ``model_file`` (default ``$SPLITEDGE_DEVICE_MODEL_FILE``, else
    `MODEL_FILE`) and ``machine`` (default ``platform.machine()``) can be given, for tests."""
    if model_file is None:
        model_file = os.environ.get(MODEL_FILE_ENV) or MODEL_FILE
    try:
        raw = Path(model_file).read_bytes()[:256]
    except OSError:
        model = None
    else:
        model = raw.replace(b"\x00", b" ").decode("utf-8", "replace").strip() or None
    return Host(machine or platform.machine() or "unknown", model)


@functools.cache
def this_host() -> Host:
    """`read_host` with the defaults, read once per process."""
    return read_host()


def emulate_timing(board: str, requested: bool, host: Host | None = None) -> bool:
    """Whether board ``board``, whose profile says ``emulate_timing = requested``, emulates its timing here:
    ``requested`` unless this is a real Raspberry Pi (module doc). Logs the decision once per board."""
    host = this_host() if host is None else host
    decided = requested and not host.is_raspberry_pi
    if requested and (board, decided) not in _logged:
        _logged.add((board, decided))
        if decided:
            log.info("board %s: emulated timing (%s): head times are stretched by the board's factor",
                     board, host.describe())
        else:
            log.info("board %s: emulate_timing = true is switched off on a real Raspberry Pi (%s): "
                     "head times are measured here", board, host.describe())
    return decided
