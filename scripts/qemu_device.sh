#!/usr/bin/env bash
# Run `splitedge device` as aarch64 code under QEMU user mode (an emulated Raspberry Pi 64-bit userland).
#
#   scripts/qemu_device.sh --setup-only                      build the cache and exit
#   scripts/qemu_device.sh --bundle B --broker mqtt://127.0.0.1:PORT [--frames 3] [device args...]
#   scripts/qemu_device.sh --module MOD [args...]            run `python -m MOD args` as aarch64 instead
#                                                            (e.g. benchmarks.bench_device --inner ...)
#   scripts/qemu_device.sh --site DIR --bundle B ...          run an installed splitedge instead of the checkout:
#                                                            DIR is the only PYTHONPATH and the cwd is kept, e.g.
#                                                            a wheel installed with pip --target and the aarch64
#                                                            tags below (tests/test_device_qemu.py does)
#
# Cached under ${SPLITEDGE_CACHE:-~/.cache/splitedge}/qemu: an arm64 Debian bookworm rootfs with Python 3.11
# (mmdebstrap --variant=extract, ~76 MB) and aarch64 wheels of ai-edge-litert, numpy, paho-mqtt and zstandard
# (pip --target with the manylinux aarch64 tags; /work/shared/PLATFORM.md). The repo itself is put on PYTHONPATH,
# so the device code under test is the working tree's. qemu-user shares the host network: the emulated device
# reaches a broker on 127.0.0.1 directly. Emulation checks correctness, not timing (float LiteRT is 150-600x slower).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SPLITEDGE_CACHE:-$HOME/.cache/splitedge}/qemu"
ROOTFS="$CACHE/rootfs-bookworm-arm64"
SITE="$CACHE/site-py311-aarch64"
PYTHON_HOST="${PYTHON:-python3}"

need() {  # need BINARY PACKAGE
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "qemu_device: $1 missing; installing $2 with apt-get" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y "$2" >&2; else sudo apt-get install -y "$2" >&2; fi
  fi
}

setup() {
  need qemu-aarch64-static qemu-user-static
  need mmdebstrap mmdebstrap
  mkdir -p "$CACHE"
  if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
    echo "qemu_device: building the arm64 rootfs in $ROOTFS (once, ~20 s)" >&2
    rm -rf "$ROOTFS.tmp"
    mmdebstrap --variant=extract --architectures=arm64 --include=python3,libstdc++6 bookworm "$ROOTFS.tmp" >&2
    rm -rf "$ROOTFS" && mv "$ROOTFS.tmp" "$ROOTFS"
  fi
  # QEMU 7.2 passes the host's x86 /proc/cpuinfo through and XNNPACK crashes on it: give it an aarch64 one.
  mkdir -p "$ROOTFS/proc"
  if [ ! -s "$ROOTFS/proc/cpuinfo" ]; then
    n="$(nproc)"
    for ((i = 0; i < n; i++)); do
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i"
    done > "$ROOTFS/proc/cpuinfo"
  fi
  if [ ! -f "$SITE/.complete" ]; then
    echo "qemu_device: downloading aarch64 wheels into $SITE (once)" >&2
    rm -rf "$SITE"
    "$PYTHON_HOST" -m pip install --quiet --target "$SITE" --only-binary=:all: --python-version 3.11 \
      --implementation cp --abi cp311 --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 \
      --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
      "ai-edge-litert>=2.3" "numpy>=1.26" "paho-mqtt>=2.1" "zstandard>=0.22" >&2
    touch "$SITE/.complete"
  fi
}

setup
if [ "${1:-}" = "--setup-only" ]; then
  echo "qemu_device: ready ($ROOTFS, $SITE)" >&2
  exit 0
fi

export QEMU_CPU="${QEMU_CPU:-cortex-a72}"
export QEMU_LD_PREFIX="$ROOTFS"
export PYTHONDONTWRITEBYTECODE=1
if [ "${1:-}" = "--site" ]; then
  [ -d "${2:-}" ] || { echo "qemu_device: --site needs the folder splitedge was installed into (pip --target)" >&2; exit 2; }
  export PYTHONPATH="$(cd "$2" && pwd)"
  shift 2
  exec qemu-aarch64-static "$ROOTFS/usr/bin/python3.11" -m sdk.cli device "$@"
fi
export PYTHONPATH="$SITE:$REPO"
cd "$REPO"
if [ "${1:-}" = "--module" ]; then
  [ -n "${2:-}" ] || { echo "qemu_device: --module needs a module name (e.g. benchmarks.bench_device)" >&2; exit 2; }
  module="$2"
  shift 2
  exec qemu-aarch64-static "$ROOTFS/usr/bin/python3.11" -m "$module" "$@"
fi
exec qemu-aarch64-static "$ROOTFS/usr/bin/python3.11" -m sdk.cli device \
  --config "${SPLITEDGE_QEMU_CONFIG:-$REPO/firmware_configs/qemu-aarch64.toml}" "$@"
