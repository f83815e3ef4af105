#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs the whole test suite, real-LIBERO tests included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not libero"`.
set -euo pipefail
cd "$(dirname "$0")/.."
WVLA_EXTRAS=${WVLA_EXTRAS:-libero,sb3,ray,dev,openpi} bash scripts/setup.sh
PY=.venv/bin/python
echo "[test] ruff"; .venv/bin/ruff check .
echo "[test] import-linter"; .venv/bin/lint-imports >/dev/null && echo "contracts kept"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# pytest exits 5 when nothing was collected: that is a failure here, as it should be.
exec "$PY" -m pytest -q -rfEs --durations=25 "$@"
