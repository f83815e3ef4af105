"""Where does a closed-loop imagined episode leave the real one? The default agent's first N steps in real
LIBERO and in the default's world model (same init state), and the real agent's actions replayed in imagination.

    python benchmarks/world_model_closed_loop.py --steps 25 --imagine-from codes

Prints and writes (``bench_io``) the agent's mean actions in both envs and the PSNR of the imagined replay of the
real actions against the real frames at a few steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_io import BenchRecord  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--init-state", type=int, default=0)
    p.add_argument("--imagine-from", choices=["frames", "codes"], default="codes")
    args = p.parse_args()
    import gymnasium as gym
    import torch

    import wvla_gym  # noqa: F401
    from agents.worldvla import WorldVLAAgent
    from wvla_gym.runtime_cache import load_world_model
    from wvla_gym.utils.images import psnr_per_image

    torch.set_num_threads(1)
    rec = BenchRecord("world_model_closed_loop")
    agent = WorldVLAAgent.from_pretrained()
    common = dict(task_suite="libero_object", task_id=0, resolution=64, wrist=False)
    real = gym.make("WorldVLA-LIBERO-v0", **common)
    imagined = gym.make("WorldVLA-Imagined-v0", runtime=load_world_model(), success_judge=None,
                        imagine_from=args.imagine_from, **common)

    def run(env, actions=None):
        obs, info = env.reset(seed=0, options={"init_state_id": args.init_state})
        agent.reset(instruction=info["task_description"])
        frames, acts = [obs["image"]], []
        for t in range(args.steps):
            a = agent.act(obs) if actions is None else actions[t]
            acts.append(a)
            obs, *_ = env.step(a)
            frames.append(obs["image"])
        return np.stack(frames), np.stack(acts)

    real_frames, real_acts = run(real)
    _, imagined_acts = run(imagined)
    replay_frames, _ = run(imagined, real_acts)
    at = [t for t in (1, 5, 10, 25, 50, 100) if t <= args.steps]
    out = {
        "steps": args.steps, "init_state": args.init_state, "imagine_from": args.imagine_from,
        "mean_action_xyz_real": real_acts[:, :3].mean(0).round(4).tolist(),
        "mean_action_xyz_imagined_closed_loop": imagined_acts[:, :3].mean(0).round(4).tolist(),
        "psnr_imagined_replay_vs_real": {t: round(float(psnr_per_image(replay_frames[[t]], real_frames[[t]])[0]), 2)
                                         for t in at},
        "psnr_real_t_vs_start": {t: round(float(psnr_per_image(real_frames[[t]], real_frames[[0]])[0]), 2) for t in at},
    }
    rec.save(out, "default")
    print(out)


if __name__ == "__main__":
    main()
