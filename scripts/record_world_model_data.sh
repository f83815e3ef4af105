#!/usr/bin/env bash
# Background recordings of world-model training data for all 10 libero_object tasks (real LIBERO, CPU).
#
#   scripts/record_world_model_data.sh [DATA_ROOT] [EPISODES_PER_TASK]      # DATA_ROOT defaults to /work/wvla-data
#   CHECKPOINT=runs/model scripts/record_world_model_data.sh                # + closed-loop rollouts of our model
#
# What it records (64 px, no wrist camera, failures kept, every episode from a fresh LIBERO placement with
# objects shifted by up to 3 cm, so no episode starts from a fixed init state and evaluation states 0-19 stay
# unseen): the behaviour cycle expert, cut, burst, random, zero, noise 0.1 / 0.3 / 0.6 (8 behaviours; 80
# episodes per task = 10 of each). Output: $DATA_ROOT/obj64_wm (and $DATA_ROOT/obj64_wm_policy with CHECKPOINT),
# one <task>_demo.hdf5 per task + manifest.json (counts by behaviour and success) + run_identity.json.
#
# Resumable: rerun the same command after a kill (even SIGKILL); finished episodes are not redone. A larger
# EPISODES_PER_TASK extends the recording. Logs: <out>.log. Each recording runs in the background (nohup);
# the script prints their PIDs and returns. Measured ~25 s per episode (one process, shared 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ROOT="${1:-/work/wvla-data}"
EPISODES="${2:-80}"
export OMP_NUM_THREADS=1

COMMON=(--suite libero_object --tasks all --episodes-per-task "$EPISODES" --resolution 64 --no-wrist
        --keep-failures --placement sampled --perturb-radius 0.03 --no-progress)

mkdir -p "$DATA_ROOT"
start() {  # start OUT ARGS...: one background recording
  local out="$1"; shift
  nohup .venv/bin/wvla-gym record --out "$out" "$@" >>"$out.log" 2>&1 &
  echo "started pid $! -> $out (log $out.log)"
}

start "$DATA_ROOT/obj64_wm" "${COMMON[@]}" \
  --behaviours expert,cut,burst,random,zero --noise-levels 0.1,0.3,0.6

if [[ -n "${CHECKPOINT:-}" ]]; then
  start "$DATA_ROOT/obj64_wm_policy" "${COMMON[@]}" --policy worldvla --checkpoint "$CHECKPOINT" \
    --behaviours expert,burst --noise-levels 0.3
fi
