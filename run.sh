#!/usr/bin/env bash
# splitedge's two set-up commands (see README.md):
#   ./run.sh start   set up .venv (once) and run the main job: the end-to-end demo (splitedge demo)
#   ./run.sh test    set up .venv (once), install Mosquitto/QEMU if missing, run the whole test suite
# Extra arguments after the command go to `splitedge demo` / pytest.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv

system_packages() {
  # Mosquitto for the real-broker tests; QEMU user mode + mmdebstrap for the aarch64 device smoke test;
  # Debian's dataset-fashion-mnist for the real-scale workloads.
  local missing=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto mosquitto-clients)
  command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  # The full labelled Fashion-MNIST, which the real-scale workloads' frames are made from.
  [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
  # Headless Chromium renders the fleet's web page in tests/test_fleet_web.py.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: installing ${missing[*]} with apt-get" >&2
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "run.sh: please install ${missing[*]} (no apt-get here); tests that need them will be skipped" >&2
  fi
}

venv() {
  if [ ! -x "$VENV/bin/splitedge" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e '.[all]'
    touch "$VENV/.installed"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  start)
    venv
    system_packages
    exec "$VENV/bin/splitedge" demo "$@"
    ;;
  test)
    system_packages
    venv
    set +e
    "$VENV/bin/python" -m pytest -q "$@"
    rc=$?
    [ $rc -eq 5 ] && { echo "run.sh: pytest collected no tests" >&2; exit 1; }
    exit $rc
    ;;
  *)
    echo "usage: ./run.sh start|test [args]" >&2
    exit 2
    ;;
esac
