"""The WorldVLA agent in real LIBERO (MuJoCo): one episode on the evaluation protocol, written to mp4.

    python examples/rollout_real.py --checkpoint PATH_OR_HUB_ID --task-suite libero_object --task-id 0
    python examples/rollout_real.py --tiny        # smoke path: a tiny random model, a few steps

With a released checkpoint (``model_256/libero_object``) use ``--resolution 256`` (the env renders at the
checkpoint's resolution; the agent refuses frames of another size).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import torch
import tyro

import wvla_gym  # noqa: F401  (registers the env ids)
from agents.worldvla import WorldVLAAgent


@dataclass
class Args:
    checkpoint: str | None = None
    """checkpoint folder or Hub id; None = the embedded default model"""
    task_suite: str = "libero_object"
    task_id: int = 0
    init_state_id: int = 0
    seed: int = 0
    max_steps: int | None = None
    """step limit (default: the suite's LIBERO limit)"""
    decode: str = "parallel"
    """'parallel' (K blocks at once, same tokens) or 'sequential' (the official decode)"""
    constrain_actions: bool = False
    """restrict decoding to action ids (off to match the released behaviour)"""
    device: str = "cpu"
    threads: int = 0
    """torch CPU threads (0 = torch's default)"""
    out: str = "videos/rollout_real.mp4"
    tiny: bool = False
    """smoke path: tiny random model in a temp dir, 32 px, 6 steps"""


def main(args: Args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint, max_steps, constrain = args.checkpoint, args.max_steps, args.constrain_actions
    if args.tiny:
        from wvla_gym.model.tiny import make_tiny_checkpoint

        checkpoint = str(make_tiny_checkpoint(tempfile.mkdtemp(prefix="wvla_tiny_"), resolution=32))
        max_steps, constrain = max_steps or 6, True  # a random model needs the action-id constraint
    agent = WorldVLAAgent.from_pretrained(checkpoint, device=args.device, decode=args.decode,
                                          constrain_actions=constrain)
    env = gym.make("WorldVLA-LIBERO-v0", task_suite=args.task_suite, task_id=args.task_id,
                   resolution=agent.resolution, wrist=False, **({"max_episode_steps": max_steps} if max_steps else {}))
    t0 = time.perf_counter()
    obs, info = env.reset(seed=args.seed, options={"init_state_id": args.init_state_id})
    agent.reset(instruction=info["task_description"])
    frames, done, steps, success = [obs["image"]], False, 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs))
        frames.append(obs["image"])
        steps += 1
        success = bool(info["is_success"])
        done = terminated or truncated
    env.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(out, np.stack(frames), fps=env.metadata["render_fps"], macro_block_size=1)
    result = {"task": info["task_description"], "success": success, "steps": steps,
              "queries": agent.timing["queries"], "wall_s": round(time.perf_counter() - t0, 1), "video": str(out)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
