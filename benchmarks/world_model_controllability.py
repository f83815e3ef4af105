"""Does the world model still obey the action? Probe actions from the same state in real LIBERO and in imagination.

The default agent runs ``--at`` steps from an init state, in real LIBERO and (closed loop, its own imagined frames)
in the world model. From each of three states, every probe action (+x, +y, +z, -z with the gripper closed, +z
with it open, zero) is held for ``--hold`` steps:

* ``real``: the real state, in real LIBERO;
* ``imagined_from_real``: the world model started from that real frame (no history);
* ``imagined_closed_loop``: the world model continuing its own closed-loop episode at that step (a copy of the
  imagined env's episode state, so every probe starts from the same imagined past).

The agent's commanded actions on the way (``agent_actions_before_probes``, real and imagined) show where the
imagined episode leaves the real one. Reported per probe: mean absolute pixel change of the last frame against the first step's frame (0-255
scale; how far the scene moved over the hold), and for ``imagined_from_real`` the PSNR of its last frame against
the real one and ``motion_cosine``: the cosine between the imagined and the real change images (last frame minus
the first step's frame), 1 when the imagined scene moves where the real one does, ~0 when it moves elsewhere. A world
model that stopped obeying actions shows the same small change for every probe.

    python benchmarks/world_model_controllability.py --init-state 0 --at 50 --hold 12
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_io import BenchRecord  # noqa: E402

PROBES = {
    "+x closed": [1, 0, 0, 0, 0, 0, 1],
    "+y closed": [0, 1, 0, 0, 0, 0, 1],
    "+z closed": [0, 0, 1, 0, 0, 0, 1],
    "-z closed": [0, 0, -1, 0, 0, 0, 1],
    "+z open": [0, 0, 1, 0, 0, 0, -1],
    "zero closed": [0, 0, 0, 0, 0, 0, 1],
}


def _change(frames: list[np.ndarray]) -> float:
    # from the first step's frame, not the start frame: an imagined start from a real frame is followed by VQ
    # decodes, whose reconstruction error alone (~4 on this scale) would otherwise count as motion
    return round(float(np.abs(frames[-1].astype(np.float64) - frames[1].astype(np.float64)).mean()), 2)


def _motion_cosine(imagined: list[np.ndarray], real: list[np.ndarray]) -> float:
    di = (imagined[-1].astype(np.float64) - imagined[1].astype(np.float64)).ravel()
    dr = (real[-1].astype(np.float64) - real[1].astype(np.float64)).ravel()
    n = np.linalg.norm(di) * np.linalg.norm(dr)
    return round(float(di @ dr / n), 3) if n > 0 else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init-state", type=int, default=0)
    p.add_argument("--at", type=int, default=50, help="agent steps before the probes")
    p.add_argument("--hold", type=int, default=12, help="steps each probe action is held")
    p.add_argument("--world-model", default=None, help="world-model checkpoint (default: the shipped one)")
    p.add_argument("--action-guidance", type=float, default=1.0, help="the imagined env's action_guidance")
    p.add_argument("--out", default="default", help='results file ("default": benchmarks/results/<name>.json)')
    args = p.parse_args()
    import gymnasium as gym
    import torch

    import wvla_gym  # noqa: F401
    from agents.worldvla import WorldVLAAgent
    from wvla_gym.runtime_cache import load_world_model
    from wvla_gym.utils.images import psnr_per_image

    torch.set_num_threads(1)
    rec = BenchRecord("world_model_controllability")
    agent = WorldVLAAgent.from_pretrained()
    common = dict(task_suite="libero_object", task_id=0, resolution=64, wrist=False)
    real = gym.make("WorldVLA-LIBERO-v0", **common).unwrapped
    imagined = gym.make("WorldVLA-Imagined-v0", runtime=load_world_model(args.world_model), success_judge=None,
                        max_episode_steps=10_000, action_guidance=args.action_guidance, **common).unwrapped

    commanded: dict[str, list[list[float]]] = {}

    def advance(env, key):
        obs, info = env.reset(seed=0, options={"init_state_id": args.init_state})
        agent.reset(instruction=info["task_description"])
        commanded[key] = []
        for _ in range(args.at):
            a = agent.act(obs)
            commanded[key].append([round(float(x), 3) for x in a])
            obs, *_ = env.step(a)
        return obs

    real_obs = advance(real, "real")
    sim_state = real.get_sim_state()
    advance(imagined, "imagined")
    # the imagined episode's whole state (frames, codes, history, counters), restored before every probe
    snapshot = copy.deepcopy({k: v for k, v in vars(imagined).items() if k.startswith("_") and k != "_np_random"})

    out: dict[str, dict[str, dict[str, float]]] = {"real": {}, "imagined_from_real": {}, "imagined_closed_loop": {}}
    for name, action in PROBES.items():
        a = np.asarray(action, np.float32)
        real.set_sim_state(sim_state)
        frames_r = [real_obs["image"]]
        for _ in range(args.hold):
            o, *_ = real.step(a)
            frames_r.append(o["image"])
        o, _ = imagined.reset(seed=0, options={"image": real_obs["image"]})
        frames_i = [o["image"]]
        for _ in range(args.hold):
            o, *_ = imagined.step(a)
            frames_i.append(o["image"])
        vars(imagined).update(copy.deepcopy(snapshot))
        frames_c = [imagined._obs()["image"]]
        for _ in range(args.hold):
            o, *_ = imagined.step(a)
            frames_c.append(o["image"])
        out["real"][name] = {"pixel_change": _change(frames_r)}
        out["imagined_from_real"][name] = {
            "pixel_change": _change(frames_i),
            "psnr_vs_real": round(float(psnr_per_image(frames_i[-1][None], frames_r[-1][None])[0]), 2),
            "motion_cosine": _motion_cosine(frames_i, frames_r),
        }
        out["imagined_closed_loop"][name] = {"pixel_change": _change(frames_c)}
        print(name, {k: v[name] for k, v in out.items()}, flush=True)
    rec.save({"init_state": args.init_state, "at": args.at, "hold": args.hold,
              "world_model": args.world_model or "shipped default", "action_guidance": args.action_guidance,
              "probes": out,
              # what the agent commanded on its way to the probe state, in each env (x, y, z, ..., gripper)
              "agent_actions_before_probes": commanded}, args.out)


if __name__ == "__main__":
    main()
