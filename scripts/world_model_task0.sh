#!/usr/bin/env bash
# A world-model checkpoint for libero_object task 0 (the embedded default's task), trained to carry a whole
# episode, and its ablation; stage by stage, each in the background (nohup), each resumable by rerunning it.
#
#   scripts/world_model_task0.sh STAGE [DATA_ROOT] [RUN_ROOT]      # DATA_ROOT /work/wvla-data, RUN_ROOT /work/wvla-runs
#
# Stages:
#   data      real LIBERO, 64 px, no wrist, one process after the other (as run on 2026-12-01, t0_expert was the
#             task-0 part of `record --tasks 0-9 ... --out obj64_all`, stopped after task 0, linked as t0_expert):
#               DATA_ROOT/t0_expert      30 expert demos on init states 20-49 (the default's training data)
#               DATA_ROOT/t0_heldout     20 expert demos on init states 0-19 (evaluation only)
#               DATA_ROOT/t0_wm          40 episodes from fresh, 3 cm-perturbed placements, failures kept, behaviours
#                                        expert, cut, burst, random, zero, noise 0.1/0.3/0.6 (5 each; seed 0)
#               DATA_ROOT/t0_wm_heldout  16 more such episodes with seed 1 (other placements; evaluation only)
#   vq        the embedded default's VQGAN written out as a VQ folder (RUN_ROOT/vq_default_t0), so the world model
#             shares the default's image codes
#   wm        world model: 4.0 M-parameter LM, 2 frame-action pairs of history, 10 % context-code noise, image
#             loss weight 1.0 (a world-model checkpoint; the policy keeps the paper's 0.04), 15 of 16 samples per
#             batch world samples, action bins over everything the data emits (random included)  -> RUN_ROOT/wm_t0
#   wm-his1   the ablation: the same without history and context noise (nice 19: spare cycles only)  -> RUN_ROOT/wm_t0_his1
#   (WORKERS=2 before a wm stage trains it data-parallel over 2 CPU processes; a run resumes across worker counts)
#   eval CKPT open loop on the held-out episodes, h = 1..100, beside the copy-the-start-frame baseline
#
# Measured on the shared 2-core machine (1 torch thread each, 2026-12-01): recording ~12 s per expert episode
# and ~20 s per world-model episode; wm ~2.6 s per step with one process beside another busy one.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE="${1:?usage: scripts/world_model_task0.sh data|vq|wm|wm-his1|eval [DATA_ROOT] [RUN_ROOT]}"
DATA="${2:-/work/wvla-data}"
RUNS="${3:-/work/wvla-runs}"
export OMP_NUM_THREADS=1
mkdir -p "$DATA" "$RUNS"
TASK0=pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5
REC=(.venv/bin/wvla-gym record --suite libero_object --tasks 0 --resolution 64 --no-wrist --no-progress)
WMDATA=(--keep-failures --placement sampled --perturb-radius 0.03
        --behaviours expert,cut,burst,random,zero,noise --noise-levels 0.1,0.3,0.6)
LM=(--hidden-size 256 --intermediate-size 768 --num-hidden-layers 4 --num-attention-heads 4 --batch-size 16
    --lr 1e-3 --warmup-steps 100 --steps 2500 --checkpoint-every 100 --log-every 20 --threads 1 --no-progress
    --split all --world-weight 15 --image-loss-weight 1.0)

train() {  # train OUT NICE ARGS...   (WORKERS=2: data-parallel over 2 CPU processes with torchrun)
  local out="$1" nice="$2"; shift 2
  local launch=(.venv/bin/wvla-gym)
  if [[ "${WORKERS:-1}" -gt 1 ]]; then
    launch=(.venv/bin/torchrun --standalone --nproc_per_node "$WORKERS" .venv/bin/wvla-gym)
  fi
  nohup nice -n "$nice" "${launch[@]}" train model --data "$DATA/t0_expert/$TASK0" "$DATA/t0_wm/$TASK0" \
    --vq "$RUNS/vq_default_t0" "${LM[@]}" "$@" --out "$out" >>"$out.log" 2>&1 &
  echo "started pid $! -> $out (log $out.log)"
}

case "$STAGE" in
  data)
    nohup bash -c "
      ${REC[*]} --episodes-per-task 30 --first-init-state 20 --out $DATA/t0_expert >>$DATA/t0_expert.log 2>&1
      ${REC[*]} --episodes-per-task 20 --first-init-state 0 --out $DATA/t0_heldout >>$DATA/t0_heldout.log 2>&1
      ${REC[*]} --episodes-per-task 40 ${WMDATA[*]} --out $DATA/t0_wm >>$DATA/t0_wm.log 2>&1
      ${REC[*]} --episodes-per-task 16 --seed 1 ${WMDATA[*]} --out $DATA/t0_wm_heldout >>$DATA/t0_wm_heldout.log 2>&1
    " >/dev/null 2>&1 &
    echo "started pid $! (logs $DATA/t0_*.log)" ;;
  vq)
    .venv/bin/python - "$RUNS/vq_default_t0" <<'EOF'
import json, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from wvla_gym.runtime import DEFAULT_ASSET_DIR
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
weights = load_file(str(Path(DEFAULT_ASSET_DIR) / "model.safetensors"))
prefix = "model.vqmodel."
save_file({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, str(out / "vqgan.safetensors"))
cfg = json.loads((Path(DEFAULT_ASSET_DIR) / "config.json").read_text())["vq_config"]
(out / "vq_config.json").write_text(json.dumps(cfg, indent=2))
print(f"written: {out}")
EOF
    ;;
  wm)
    train "$RUNS/wm_t0" 0 --world-history 2 --world-context-noise 0.1 ;;
  wm-his1)
    train "$RUNS/wm_t0_his1" 19 ;;
  eval)
    CKPT="${4:?usage: scripts/world_model_task0.sh eval DATA_ROOT RUN_ROOT CHECKPOINT [OUT]}"
    OUT="${5:-$CKPT/openloop_t0_heldout.json}"
    .venv/bin/wvla-gym wm-eval --data "$DATA/t0_heldout/$TASK0" --checkpoint "$CKPT" --horizon 100 --every 20 \
      --out "$OUT" ;;
  *)
    echo "unknown stage $STAGE; expected data, vq, wm, wm-his1 or eval" >&2; exit 2 ;;
esac
