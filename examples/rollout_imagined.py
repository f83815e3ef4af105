"""The WorldVLA agent acting inside the WorldVLA world model, from a real LIBERO init state; writes an mp4.

    python examples/rollout_imagined.py --checkpoint PATH --task-suite libero_object --task-id 0 --init-state-id 3
    python examples/rollout_imagined.py --tiny        # smoke path: a tiny random model, a few steps

One runtime serves both roles: the agent predicts action chunks, the env imagines the next frame per action.
The start frame is the real env's first observation for that init state (rendered once in MuJoCo, cached).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import tyro

from agents.worldvla import WorldVLAAgent
from envs.imagined import ImaginedEnv
from wvla_gym.judge import ClassifierJudge
from wvla_gym.runtime import WorldVLARuntime


@dataclass
class Args:
    checkpoint: str | None = None
    """WorldVLA checkpoint (folder or Hub id) used as policy and world model; None = the embedded default"""
    task_suite: str = "libero_object"
    task_id: int = 0
    init_state_id: int = 0
    """LIBERO init state to start from (the same start as WorldVLA-LIBERO-v0 with this id)"""
    start_image: str | None = None
    """optional .npy uint8 (R, R, 3) start frame instead of the init state"""
    judge: str | None = None
    """folder of a saved ClassifierJudge; without one the episode only truncates"""
    max_steps: int | None = None
    """step limit (default: the suite's LIBERO limit)"""
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    """torch CPU threads (0 = torch's default)"""
    constrain_actions: bool = False
    """force well-formed action blocks (needed for untrained models; --tiny turns it on)"""
    out: str = "videos/rollout_imagined.mp4"
    tiny: bool = False
    """smoke path: tiny random model in a temp dir, a synthetic start frame, 4 steps"""


def main(args: Args) -> dict:
    if args.tiny and not args.threads:
        args.threads = 1  # tiny models are latency-bound; more threads only contend on a shared CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint
    start = None
    if args.tiny:
        from wvla_gym.model.tiny import make_tiny_checkpoint

        checkpoint = str(make_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="wvla_tiny_")), resolution=32))
        args.max_steps = args.max_steps or 4
    runtime = WorldVLARuntime.from_pretrained(checkpoint, device=args.device)
    if args.tiny and args.start_image is None:
        start = np.random.default_rng(args.seed).integers(0, 256, (runtime.resolution,) * 2 + (3,), dtype=np.uint8)
    elif args.start_image is not None:
        start = np.load(args.start_image)

    judge = ClassifierJudge.from_pretrained(args.judge, device=args.device) if args.judge else None
    # instruction_in_obs: the agent reads the task text from the observation
    env = ImaginedEnv(
        runtime=runtime, task_suite=args.task_suite, task_id=args.task_id, success_judge=judge,
        max_episode_steps=args.max_steps, instruction_in_obs=True, render_mode="rgb_array",
        instruction="pick up the object and place it in the basket" if args.tiny else None,
    )
    agent = WorldVLAAgent(runtime=runtime, constrain_actions=args.constrain_actions or args.tiny)
    options = {"image": start} if start is not None else {"init_state_id": args.init_state_id}
    obs, info = env.reset(seed=args.seed, options=options)
    agent.reset()
    frames = [env.render()]
    t0 = time.perf_counter()
    steps, success = 0, False
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs))
        frames.append(env.render())
        steps += 1
        if terminated or truncated:
            success = bool(info["is_success"])
            break
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(out, frames, fps=env.metadata["render_fps"], macro_block_size=1)
    summary = {
        "task": env.task_description, "start": info["start_source"], "steps": steps, "success": success,
        "last_score": info["success_score"], "seconds_per_step": wall / steps, "video": str(out),
    }
    env.close()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
