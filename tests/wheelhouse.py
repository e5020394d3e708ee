"""Build splitedge's wheel from the working tree, and pip helpers, for the install tests.

`build_wheel` copies what the wheel is made of (pyproject.toml, README.md, the packages, firmware_configs)
to a temporary folder and runs ``python -m build --wheel --no-isolation`` there, so a build never writes
``build/`` or ``*.egg-info`` into the shared checkout and needs no network (the ``build`` package comes with
the ``test`` extra). It is built once per session (~5 s) and shared by tests/test_wheel_install.py and
tests/test_device_qemu.py.

`pip_install` runs pip; when it fails and PyPI cannot be reached, the test is skipped with the reason (pip
could not take the device extra's wheels from its cache), otherwise it fails with pip's last lines.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WHEEL_SOURCES = ("pyproject.toml", "README.md", "sdk", "converter", "device_runner", "cloud_tail", "benchmarks",
                 "firmware_configs")
#: The recipe's pin (firmware_configs/README.md, "Install on a Raspberry Pi"): apt's picamera2 needs numpy 1.x.
NUMPY_PIN = "numpy<2"
#: pip options that pick aarch64 wheels on this host (as scripts/qemu_device.sh; /work/shared/PLATFORM.md).
AARCH64 = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
           "--platform", "manylinux_2_27_aarch64", "--platform", "manylinux_2_28_aarch64",
           "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_17_aarch64"]
_built: list[Path] = []


def build_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the working tree (built on first use in this session)."""
    if _built:
        return _built[0]
    pytest.importorskip("build", reason="building the wheel needs the build package: pip install -e '.[test]'")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in WHEEL_SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"), str(src)],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"python -m build --wheel failed: {(done.stdout + done.stderr)[-2000:]}")
    [wheel] = (root / "dist").glob("splitedge-*.whl")
    _built.append(wheel)
    return wheel


def data_prefix(wheel: Path) -> str:
    """Where the wheel keeps what installs under ``<prefix>/share/splitedge/firmware_configs``."""
    name, version = wheel.name.split("-")[:2]
    return f"{name}-{version}.data/data/share/splitedge/firmware_configs"


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def pypi_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def pip_install(cmd: list[str], *, what: str, cwd: Path, timeout: float = 300.0) -> None:
    """Run a ``pip install`` command line; skip when PyPI is unreachable (and pip's cache was not enough)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if done.returncode == 0:
        return
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip() and "is ignored" not in ln]
    tail = " | ".join(lines[-4:])
    if not pypi_reachable():
        pytest.skip(f"PyPI (pypi.org:443) is unreachable and pip could not install {what} from its cache: {tail}")
    pytest.fail(f"pip install of {what} failed: {tail}")


def start_cloud_worker(url: str, bundle: Path, group: str = "tails") -> subprocess.Popen[str]:
    """A `splitedge cloud` tail worker from the main venv (the checkout), once it printed ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdk.cli", "cloud", "--bundle", str(bundle), "--broker", url, "--group", group,
         "--worker-id", "wheel-test-tail", "--max-batch", "1"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        proc.kill()
        pytest.fail(f"the cloud worker did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc


def answered_by_cloud(cmd: list[str], url: str, bundle: Path, out: Path, *, timeout: float, cwd: Path,
                      env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run an installed device command (``--out out``, 3 frames) against a checkout tail worker; assert it
    exits 0 and every frame was answered once, in order, by the cloud. Returns the finished process."""
    import json

    cloud = start_cloud_worker(url, bundle)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    finally:
        cloud.terminate()
        cloud.wait(timeout=20)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["seq"] for a in answers] == [0, 1, 2]
    assert {a["answered_by"] for a in answers} == {"cloud"}, answers
    return done
