#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs the main demo; extra arguments go to `wvla-gym demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
WVLA_EXTRAS=${WVLA_EXTRAS:-libero,sb3,dev} bash scripts/setup.sh
exec .venv/bin/wvla-gym demo "$@"
