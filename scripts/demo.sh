#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs the main demo; extra arguments go to `wvla-gym demo`.
# The demo shows a progress bar per episode (real, then imagined) and ends with one JSON line (outcomes,
# wall time, torch threads, load average); the video goes to videos/demo.mp4 unless --out says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
WVLA_EXTRAS=${WVLA_EXTRAS:-libero,sb3,dev} bash scripts/setup.sh
echo "[demo.sh] setup done; running: wvla-gym demo $*" >&2
exec .venv/bin/wvla-gym demo "$@"
