#!/usr/bin/env bash
# Create the development environment in $1 (default .venv) on a fresh Debian machine:
# the few system packages the Python dependencies need to build, then a venv with ocppd
# installed editable together with its test tools. Safe to run again.
set -euo pipefail
venv=${1:-.venv}
here=$(cd "$(dirname "$0")/.." && pwd)

need=()
dpkg -s libsystemd-dev >/dev/null 2>&1 || need+=(libsystemd-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need+=(python3-dev)
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: please install ${need[*]} (no apt-get here)" >&2; exit 1
  fi
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "bootstrap: installing ${need[*]} with apt-get"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# The web page's browser tests drive Debian's chromium; the page serves Debian's Chart.js.
# Wanted, not required: without them the browser tests skip and the page shows no chart.
want=()
dpkg -s chromium >/dev/null 2>&1 || want+=(chromium)
dpkg -s chromium-driver >/dev/null 2>&1 || want+=(chromium-driver)
dpkg -s libjs-chart.js >/dev/null 2>&1 || want+=(libjs-chart.js)
if [ ${#want[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "bootstrap: installing ${want[*]} with apt-get (web page tests)"
    { $sudo apt-get update -q >/dev/null &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
        "${want[@]}" >/dev/null; } ||
      echo "bootstrap: could not install ${want[*]}: the browser tests will skip" >&2
  else
    echo "bootstrap: no apt-get: install ${want[*]} for the browser tests and charts" >&2
  fi
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"bootstrap: ocppd needs Python 3.11 or newer, this is {sys.version.split()[0]}")
PY

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install -q -e "$here[test,systemd,dev]"
touch "$venv/.done"
echo "bootstrap: $venv ready ($("$venv/bin/python" --version))"
