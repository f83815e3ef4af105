#!/usr/bin/env bash
# The embedded default's world model (wvla_gym/assets/default/world_model, libero_object task 0), stage by stage;
# long stages run in the background (nohup), each resumable by rerunning it.
#
#   scripts/world_model_task0.sh STAGE [DATA_ROOT] [RUN_ROOT]      # DATA_ROOT /work/wvla-data, RUN_ROOT /work/wvla-runs
#
# The recorded data is committed as VQ codes (datasets/libero_object_t0/, `wvla-gym data pack`): start from
# `unpack` to rebuild every later stage without recording (training reads the stored codes, so it sees exactly
# the codes of the recorded frames).
#
# Stages:
#   data      real LIBERO, 64 px, no wrist, two chains of processes (one per core):
#               DATA_ROOT/t0_expert      30 expert demos on init states 20-49 (the default's training data)
#               DATA_ROOT/t0_heldout     20 expert demos on init states 0-19 (evaluation only)
#               DATA_ROOT/t0_wm          40 episodes from fresh, 3 cm-perturbed placements, failures kept, behaviours
#                                        expert, cut, burst, random, zero, noise 0.1/0.3/0.6 (5 each; seed 0)
#               DATA_ROOT/t0_wm_heldout  24 more such episodes with seed 1 (other placements; evaluation only)
#   data-ctrl action-control data (2026-12-06), two chains, fresh 3 cm-perturbed placements, failures kept:
#               DATA_ROOT/t0_hold        30 scripted-expert episodes cut at a random step, then held commands
#                                        (behaviour hold; seed 2)
#               DATA_ROOT/t0_agent       16 closed-loop episodes of the default WorldVLA agent (expert, hold, burst,
#                                        noise 0.1; seed 3): the policy's own states, where the imagined arm stalled
#   pack      DATA_ROOT/t0_* -> datasets/libero_object_t0/{expert,heldout,wm,wm_heldout,hold,agent}/*.codes.npz
#   unpack    the committed code files -> DATA_ROOT/unpacked/t0_* (frames decoded by the default's VQ, codes stored
#             beside); to rebuild without recording, run the later stages with DATA_ROOT=<DATA_ROOT>/unpacked
#   vq        the embedded default's VQGAN written out as a VQ folder (RUN_ROOT/vq_default_t0), so the world model
#             shares the default's image codes
#   wm        world model: 4.0 M-parameter LM, 2 frame-action pairs of history, 10 % context-code noise, image
#             loss weight 1.0 (a world-model checkpoint; the policy keeps the paper's 0.04), 15 of 16 samples per
#             batch world samples, action bins over everything the data emits (random included)  -> RUN_ROOT/wm_t0
#             (INIT=<folder>/model warm-starts it from a committed checkpoint: --init-from)
#   wm-ft     the shipped world model fine-tuned on all four training sets (expert, wm, hold, agent): 800 steps,
#             lr 5e-4, warm-started from wvla_gym/assets/default/world_model  -> RUN_ROOT/wm_t0_ft
#   sf-samples MODEL  self-forcing samples (scripts/self_forcing_samples.py): MODEL rolled out open loop for 7 steps
#             from every SF_EVERY-th (16) recorded step of SF_SETS (default "expert wm"), two shards  -> RUN_ROOT/sf_<name>/shard{0,1}.pt
#   wm-sf MODEL OUT   MODEL fine-tuned 400 steps (lr 3e-4) on TRAIN_SETS (default "expert wm") plus its
#             self-forcing samples (3 x), his 2, context noise 0.1  -> RUN_ROOT/OUT
#   wm-his1   the ablation: the same without history and context noise (nice 19: spare cycles only)  -> RUN_ROOT/wm_t0_his1
#   (WORKERS=2 before a wm stage trains it data-parallel over 2 CPU processes; a run resumes across worker counts)
#   judge     success judge on VQ-reconstructed frames (DATA_ROOT/unpacked expert + world-model episodes: what the
#             world model renders is VQ decodes)  -> RUN_ROOT/judge_wm
#   package CKPT   CKPT (e.g. RUN_ROOT/wm_t0/model) + RUN_ROOT/judge_wm -> wvla_gym/assets/default/world_model
#             (float16 LM, the default's VQ shared, <= 30 MB for the whole default)
#   eval [CKPT]    open loop on the held-out expert episodes (h = 1..100, copy-the-start-frame baseline), from
#             re-encoded frames and from codes; imagined replays of every held-out episode (success judge vs the
#             real outcome), both ways -> benchmarks/results/world_model_t0/
#
# Measured on the shared 2-core machine (1 torch thread each): recording ~25-45 s per episode beside other jobs
# (2026-12-06); wm ~1.45 s per step with 2 ranks on an idle machine, ~2.6 s with one process beside a busy one.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE="${1:?usage: scripts/world_model_task0.sh data|data-ctrl|pack|unpack|vq|wm|wm-ft|sf-samples|wm-sf|wm-his1|judge|package|eval [DATA_ROOT] [RUN_ROOT]}"
DATA="${2:-/work/wvla-data}"
RUNS="${3:-/work/wvla-runs}"
export OMP_NUM_THREADS=1
mkdir -p "$DATA" "$RUNS"
TASK0=pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5
REC=(.venv/bin/wvla-gym record --suite libero_object --tasks 0 --resolution 64 --no-wrist --no-progress)
WMDATA=(--keep-failures --placement sampled --perturb-radius 0.03
        --behaviours expert,cut,burst,random,zero,noise --noise-levels 0.1,0.3,0.6)
LM=(--hidden-size 256 --intermediate-size 768 --num-hidden-layers 4 --num-attention-heads 4 --batch-size 16
    --lr 1e-3 --warmup-steps 100 --steps 2000 --checkpoint-every 100 --log-every 20 --threads 1 --no-progress
    --split all --world-weight 15 --image-loss-weight 1.0)

train() {  # train OUT NICE ARGS...   (WORKERS=2: data-parallel over 2 CPU processes with torchrun)
  local out="$1" nice="$2"; shift 2
  local launch=(.venv/bin/wvla-gym)
  if [[ "${WORKERS:-1}" -gt 1 ]]; then
    launch=(.venv/bin/torchrun --standalone --nproc_per_node "$WORKERS" .venv/bin/wvla-gym)
  fi
  nohup nice -n "$nice" "${launch[@]}" train model --data "$DATA/t0_expert/$TASK0" "$DATA/t0_wm/$TASK0" \
    --vq "$RUNS/vq_default_t0" "${LM[@]}" ${INIT:+--init-from "$INIT"} "$@" --out "$out" >>"$out.log" 2>&1 &
  echo "started pid $! -> $out (log $out.log)"
}

case "$STAGE" in
  data)
    # two chains, one per core: expert demos, then world-model episodes
    nohup bash -c "
      ${REC[*]} --episodes-per-task 30 --first-init-state 20 --out $DATA/t0_expert >>$DATA/t0_expert.log 2>&1
      ${REC[*]} --episodes-per-task 20 --first-init-state 0 --out $DATA/t0_heldout >>$DATA/t0_heldout.log 2>&1
    " >/dev/null 2>&1 &
    echo "started pid $! (logs $DATA/t0_expert.log, t0_heldout.log)"
    nohup bash -c "
      ${REC[*]} --episodes-per-task 40 ${WMDATA[*]} --out $DATA/t0_wm >>$DATA/t0_wm.log 2>&1
      ${REC[*]} --episodes-per-task 24 --seed 1 ${WMDATA[*]} --out $DATA/t0_wm_heldout >>$DATA/t0_wm_heldout.log 2>&1
    " >/dev/null 2>&1 &
    echo "started pid $! (logs $DATA/t0_wm.log, t0_wm_heldout.log)" ;;
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
  data-ctrl)
    nohup "${REC[@]}" --keep-failures --placement sampled --perturb-radius 0.03 --episodes-per-task 30 \
      --behaviours hold --seed 2 --out "$DATA/t0_hold" >>"$DATA/t0_hold.log" 2>&1 &
    echo "started pid $! (log $DATA/t0_hold.log)"
    nohup "${REC[@]}" --keep-failures --placement sampled --perturb-radius 0.03 --episodes-per-task 16 \
      --policy worldvla --checkpoint wvla_gym/assets/default --behaviours expert,hold,burst --noise-levels 0.1 \
      --seed 3 --out "$DATA/t0_agent" >>"$DATA/t0_agent.log" 2>&1 &
    echo "started pid $! (log $DATA/t0_agent.log)" ;;
  wm)
    train "$RUNS/wm_t0" 0 --world-history 2 --world-context-noise 0.1 ;;
  wm-ft)
    # the LM options are the shipped model's; a later value wins with tyro, so these override LM's schedule
    INIT="${INIT:-wvla_gym/assets/default/world_model}" train "$RUNS/wm_t0_ft" 0 --world-history 2 \
      --world-context-noise 0.1 --data "$DATA/t0_expert/$TASK0" "$DATA/t0_wm/$TASK0" "$DATA/t0_hold/$TASK0" \
      "$DATA/t0_agent/$TASK0" --lr 5e-4 --warmup-steps 50 --steps 800 ;;
  sf-samples)
    MODEL="${4:?usage: scripts/world_model_task0.sh sf-samples DATA_ROOT RUN_ROOT MODEL}"
    dir="$RUNS/sf_$(basename "$(dirname "$MODEL")")_$(basename "$MODEL")"
    mkdir -p "$dir"
    sets=(); for set in ${SF_SETS:-expert wm}; do sets+=("datasets/libero_object_t0/$set"); done
    for i in 0 1; do
      nohup .venv/bin/python scripts/self_forcing_samples.py --world-model "$MODEL" --data "${sets[@]}" \
        --rollout 8 --every "${SF_EVERY:-16}" --batch 32 --shard "$i/2" --out "$dir/shard$i.pt" >"$dir/shard$i.log" 2>&1 &
    done
    echo "started 2 shards -> $dir (logs shard*.log)" ;;
  wm-sf)
    MODEL="${4:?usage: scripts/world_model_task0.sh wm-sf DATA_ROOT RUN_ROOT MODEL OUT}"; OUT="${5:?OUT}"
    dir="$RUNS/sf_$(basename "$(dirname "$MODEL")")_$(basename "$MODEL")"
    files=(); for set in ${TRAIN_SETS:-expert wm}; do files+=("$DATA/t0_$set/$TASK0"); done
    INIT="$MODEL" train "$RUNS/$OUT" 0 --world-history 2 --world-context-noise 0.1 --data "${files[@]}" \
      --extra-world-samples "$dir/shard0.pt" "$dir/shard1.pt" --extra-world-repeat 3 --lr 3e-4 --warmup-steps 20 \
      --steps 400 ;;
  wm-his1)
    train "$RUNS/wm_t0_his1" 19 ;;
  pack)
    for set in expert heldout wm wm_heldout hold agent; do
      .venv/bin/wvla-gym data pack --data "$DATA/t0_$set" --out "datasets/libero_object_t0/$set"
    done ;;
  unpack)
    for set in expert heldout wm wm_heldout hold agent; do
      .venv/bin/wvla-gym data unpack --data "datasets/libero_object_t0/$set" --out "$DATA/unpacked/t0_$set"
    done ;;
  judge)
    for set in expert wm; do  # VQ-decoded frames: what the world model renders
      [[ -f "$DATA/unpacked/t0_$set/$TASK0" ]] || \
        .venv/bin/wvla-gym data unpack --data "datasets/libero_object_t0/$set" --out "$DATA/unpacked/t0_$set"
    done
    .venv/bin/wvla-gym train judge --data "$DATA/unpacked/t0_expert/$TASK0" "$DATA/unpacked/t0_wm/$TASK0" \
      --out "$RUNS/judge_wm" --input-size 32 --epochs 10 --no-progress ;;
  package)
    CKPT="${4:?usage: scripts/world_model_task0.sh package DATA_ROOT RUN_ROOT CHECKPOINT}"
    .venv/bin/wvla-gym train package --model "$CKPT" --judge "$RUNS/judge_wm" --vq "$RUNS/vq_default_t0" \
      --out wvla_gym/assets/default/world_model --share-vq-with wvla_gym/assets/default --dtype float16
    # reference outputs (tests reload the shipped model against them) and the float16 storage's effect on them
    .venv/bin/python scripts/world_model_reference.py --model wvla_gym/assets/default/world_model --original "$CKPT" ;;
  eval)
    CKPT="${4:-wvla_gym/assets/default/world_model}"
    OUT=benchmarks/results/world_model_t0
    mkdir -p "$OUT"
    for from in frames codes; do
      .venv/bin/wvla-gym wm-eval --data "$DATA/t0_heldout/$TASK0" --checkpoint "$CKPT" --horizon 100 --every 20 \
        --imagine-from "$from" --out "$OUT/openloop_heldout_$from.json"
      .venv/bin/python benchmarks/judge_imagined.py --world-model "$CKPT" --judge "$CKPT/judge" wvla_gym/assets/default/judge \
        --data "$DATA/t0_heldout" "$DATA/t0_wm_heldout" --imagine-from "$from" --out "$OUT/judge_imagined_$from.json"
    done ;;
  *)
    echo "unknown stage $STAGE; expected data, data-ctrl, pack, unpack, vq, wm, wm-ft, sf-samples, wm-sf, wm-his1, judge, package or eval" >&2; exit 2 ;;
esac
