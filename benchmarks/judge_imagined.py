"""Does the imagined env's success verdict match the real outcome, episode by episode?

Every recorded episode (real LIBERO, success flag from the simulator) is replayed in the imagined env: the same
start frame, then exactly the recorded actions, each frame imagined from the imagined past (closed loop in the
model, as in an evaluation). The imagined episode succeeds when the env's success judge fires (the env's own
rule: the judge's window of recent frames, its threshold) at or before the last recorded action. The same judge
is also run on the recorded (real) frames with the same rule, so the table separates the judge's own errors from
the world model's. Paired episodes of a privileged policy (the scripted expert, with or without action noise, cut
short, random, ...) from the same start: whether the imagined env's verdicts can stand in for the real ones.

    python benchmarks/judge_imagined.py --world-model runs/wm_t0/model --judge runs/judge_t0/ other_judge/ \\
        --data data/t0_heldout data/t0_wm_heldout --out results/judge_imagined_t0.json

Episodes of similar length are stepped together in one ``WorldVLA-Imagined-v0`` vector env (one batched
world-model call per step) for all their recorded actions, without a judge; each judge then scores the
imagined frames with the env's own rule (window of recent frames, threshold, first step that fires), which is
exactly when the env would have ended the episode with that judge (the judge does not change what is
imagined). So several judges are compared on one replay. Writes per-episode rows and the confusion tables per
judge as JSON (``bench_io``: machine, load, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_io import BenchRecord  # noqa: E402


def _confusion(pred: list[bool], real: list[bool]) -> dict:
    from wvla_gym.judge import binary_metrics

    return binary_metrics(np.asarray(pred, dtype=bool), np.asarray(real, dtype=bool))


def _episodes(data: list[str], max_per_file: int | None = None) -> list[dict]:
    from wvla_gym.data.hdf5 import LiberoFile
    from wvla_gym.training.joint_data import expand_files

    out = []
    for path in expand_files(data):
        with LiberoFile(path) as f:
            instruction = f.instruction
            for demo in f.demos[:max_per_file]:
                attrs = f.demo(demo).attrs
                behaviour = attrs.get("behaviour_name", attrs.get("behaviour", "expert"))
                out.append({"file": path, "demo": demo, "instruction": instruction, "real_success": f.success(demo),
                            "behaviour": behaviour.decode() if isinstance(behaviour, bytes) else str(behaviour),
                            "frames": np.ascontiguousarray(f.frames(demo)), "actions": np.asarray(f.actions(demo))})
    return out


def real_verdict(judge, frames: np.ndarray, instruction: str) -> int | None:
    """First step (1-based, as the env counts) at which the judge fires on the recorded frames, else None."""
    from wvla_gym.judge import judge_threshold, judge_window, score_many

    w, thr = judge_window(judge), judge_threshold(judge)
    # after step t the env's window holds frames max(0, t + 1 - w) .. t; recorded frame t is the obs before action t
    windows = [frames[max(0, t + 1 - w) : t + 1] for t in range(1, len(frames))]
    scores = score_many(judge, windows, [instruction] * len(windows)) if windows else []
    hit = [t + 1 for t, s in enumerate(scores) if s >= thr]
    return hit[0] if hit else None


def imagined_frames(runtime, group: list[dict], resolution: int, imagine_from: str = "frames") -> list[np.ndarray]:
    """Replay a group of episodes together (no judge: every recorded action); per episode its imagined frames
    ``(T + 1, R, R, 3)``, the start frame first."""
    from envs.imagined_vector import ImaginedVectorEnv
    from wvla_gym.utils.images import resize_uint8

    n = len(group)
    steps = max(len(e["actions"]) for e in group)
    venv = ImaginedVectorEnv(n, runtime=runtime, autoreset_mode="Disabled", success_judge=None,
                             resolution=resolution, wrist=False, max_episode_steps=steps + 1,
                             instruction=group[0]["instruction"], imagine_from=imagine_from)
    starts = [resize_uint8(e["frames"][:1], resolution)[0] for e in group]
    obs, _ = venv.reset(seed=0, options={"image": starts})
    frames = [[obs["image"][i]] for i in range(n)]
    for t in range(steps):
        acts = np.zeros((n, 7), dtype=np.float64)  # finished rows repeat a no-op; their frames are not kept
        for i, e in enumerate(group):
            if t < len(e["actions"]):
                acts[i] = e["actions"][t]
        obs, *_ = venv.step(acts)
        for i, e in enumerate(group):
            if t < len(e["actions"]):
                frames[i].append(obs["image"][i])
    venv.close()
    return [np.stack(f) for f in frames]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world-model", required=True, help="world-model checkpoint folder (or Hub id)")
    p.add_argument("--judge", nargs="+", required=True,
                   help="judge folders (judge_config.json + model.safetensors), each scored on the same replays")
    p.add_argument("--data", nargs="+", required=True, help="recorded HDF5 files or folders (held-out episodes)")
    p.add_argument("--batch-size", type=int, default=16, help="episodes stepped together")
    p.add_argument("--max-episodes-per-file", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--imagine-from", choices=["frames", "codes"], default="codes",
                   help="the imagined env's imagine_from: re-encode decoded frames, or feed back generated codes")
    p.add_argument("--out", type=Path, default=Path("results/judge_imagined.json"))
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size {args.batch_size}: expected an int >= 1")
    import torch

    torch.set_num_threads(args.threads)
    rec = BenchRecord("judge_imagined")
    from wvla_gym.judge import ClassifierJudge
    from wvla_gym.runtime import WorldVLARuntime
    from wvla_gym.utils.images import resize_uint8

    runtime = WorldVLARuntime.from_pretrained(args.world_model)
    judges = {j: ClassifierJudge.from_pretrained(j) for j in args.judge}
    res = int(runtime.resolution)
    eps = _episodes(args.data, args.max_episodes_per_file)
    if not eps:
        p.error(f"--data {args.data}: no episodes found")
    t0 = time.perf_counter()
    order = sorted(range(len(eps)), key=lambda i: (eps[i]["instruction"], len(eps[i]["actions"])))
    imagined: dict[int, np.ndarray] = {}
    for b in range(0, len(order), args.batch_size):
        idx = order[b : b + args.batch_size]
        # one vector env per instruction: the imagined env is built for one task
        for instr in dict.fromkeys(eps[i]["instruction"] for i in idx):
            sub = [i for i in idx if eps[i]["instruction"] == instr]
            for i, v in zip(sub, imagined_frames(runtime, [eps[i] for i in sub], res, args.imagine_from), strict=True):
                imagined[i] = v
        print(f"[judge_imagined] {min(b + args.batch_size, len(order))}/{len(order)} episodes, "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    replay_s = time.perf_counter() - t0
    rows = []
    for i, e in enumerate(eps):
        row = {"file": os.path.basename(e["file"]), "demo": e["demo"], "behaviour": e["behaviour"],
               "steps": len(e["actions"]), "real_success": bool(e["real_success"])}
        for name, judge in judges.items():
            row[name] = {"judge_on_real_frames_step": real_verdict(judge, resize_uint8(e["frames"], res), e["instruction"]),
                         "imagined_success_step": real_verdict(judge, imagined[i], e["instruction"])}
        rows.append(row)
    real = [r["real_success"] for r in rows]
    per_judge = {}
    for name in judges:
        hit = [r[name]["imagined_success_step"] is not None for r in rows]
        per_judge[name] = {
            "imagined_vs_real": _confusion(hit, real),
            "judge_on_real_frames_vs_real": _confusion([r[name]["judge_on_real_frames_step"] is not None for r in rows], real),
            # per behaviour: episodes, real successes, imagined successes (random and zero must stay at 0)
            "by_behaviour": {b: {"episodes": sum(r["behaviour"] == b for r in rows),
                                 "real_successes": sum(r["behaviour"] == b and r["real_success"] for r in rows),
                                 "imagined_successes": sum(r["behaviour"] == b and h for r, h in zip(rows, hit, strict=True))}
                             for b in sorted({r["behaviour"] for r in rows})},
        }
    report = {
        **rec.facts(),
        "world_model": args.world_model, "judges": args.judge, "data": args.data, "episodes": len(rows),
        "imagine_from": args.imagine_from, "real_successes": int(sum(real)), "judged": per_judge,
        "replay_wall_s": round(replay_s, 1), "wall_s": round(time.perf_counter() - t0, 1), "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, block in per_judge.items():
        for key in ("imagined_vs_real", "judge_on_real_frames_vs_real"):
            m = block[key]
            print(f"{name} {key}: precision {m['precision']:.2f} recall {m['recall']:.2f} accuracy {m['accuracy']:.2f} "
                  f"kappa {m['cohen_kappa']:.2f} (tp {m['tp']} fp {m['fp']} fn {m['fn']} tn {m['tn']})")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
