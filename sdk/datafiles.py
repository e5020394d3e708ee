"""Where the files shipped with splitedge live: board profiles, broker configs, the systemd unit, calibration models.

In a checkout (or an editable install) they are ``firmware_configs/`` next to the ``sdk`` package. A wheel
installs them as data files under ``<prefix>/share/splitedge/firmware_configs`` (pyproject.toml,
``[tool.setuptools.data-files]``): ``sys.prefix`` for a venv, the user base for ``pip install --user``,
and ``share/`` next to the packages for ``pip install --target DIR`` (pip moves the data there).
`shipped_dirs` lists those places in that order; `shipped_path` finds one file in them.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

__all__ = ["shipped_dirs", "shipped_path"]

_SHARE = Path("share") / "splitedge" / "firmware_configs"


def shipped_dirs() -> list[Path]:
    """The candidate ``firmware_configs`` folders, checkout first (existing or not)."""
    packages = Path(__file__).resolve().parent.parent
    dirs = [packages / "firmware_configs", Path(sys.prefix) / _SHARE]
    user_base = site.getuserbase()
    if user_base:
        dirs.append(Path(user_base) / _SHARE)
    dirs.append(packages / _SHARE)
    return list(dict.fromkeys(dirs))


def shipped_path(relative: str) -> Path:
    """``relative`` (e.g. ``calibration/mobilenet_v2_224_int8.tflite``) in the first shipped folder that has
    it; when none has it, its path in the checkout's folder (so a message can name where it belongs)."""
    dirs = shipped_dirs()
    for folder in dirs:
        if (folder / relative).is_file():
            return folder / relative
    return dirs[0] / relative
