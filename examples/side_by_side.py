"""Same agent, same LIBERO init state: the real simulator (left) and the world model's imagination (right).

    python examples/side_by_side.py --checkpoint PATH --task-suite libero_object --task-id 0 --init-state-id 0
    python examples/side_by_side.py --tiny           # smoke path: tiny random model, 32 px, 3 steps

Each env gets its own agent (its own frame history and action queue) on one shared runtime, so both
episodes are closed-loop. The mp4 holds both views per step; an ended episode holds its last frame.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
import tyro

from agents.worldvla import WorldVLAAgent
from envs.imagined import ImaginedEnv
from envs.libero import LiberoEnv
from wvla_gym.judge import ClassifierJudge
from wvla_gym.runtime import WorldVLARuntime


@dataclass
class Args:
    checkpoint: str | None = None
    """WorldVLA checkpoint (folder or Hub id); None = the embedded default"""
    task_suite: str = "libero_object"
    task_id: int = 0
    init_state_id: int = 0
    judge: str | None = None
    """saved ClassifierJudge for success in imagination"""
    max_steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    constrain_actions: bool = False
    """force well-formed action blocks (needed for untrained models; --tiny turns it on)"""
    out: str = "videos/side_by_side.mp4"
    tiny: bool = False
    """smoke path: tiny random model at 32 px, 3 steps"""


def main(args: Args) -> dict:
    if args.tiny and not args.threads:
        args.threads = 1  # tiny models are latency-bound; more threads only contend on a shared CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint
    if args.tiny:
        from wvla_gym.model.tiny import make_tiny_checkpoint

        checkpoint = str(make_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="wvla_tiny_")), resolution=32))
        args.max_steps = args.max_steps or 3
    runtime = WorldVLARuntime.from_pretrained(checkpoint, device=args.device)
    judge = ClassifierJudge.from_pretrained(args.judge, device=args.device) if args.judge else None
    kw = dict(task_suite=args.task_suite, task_id=args.task_id, max_episode_steps=args.max_steps, instruction_in_obs=True)
    real = LiberoEnv(resolution=runtime.resolution, **kw)
    imag = ImaginedEnv(runtime=runtime, success_judge=judge, **kw)
    envs = {"real": real, "imagined": imag}
    agents = {name: WorldVLAAgent(runtime=runtime, constrain_actions=args.constrain_actions or args.tiny) for name in envs}
    obs = {}
    for name, env in envs.items():
        obs[name], _ = env.reset(seed=args.seed, options={"init_state_id": args.init_state_id})
        agents[name].reset()
    same_start = bool(np.array_equal(obs["real"]["image"], obs["imagined"]["image"]))
    done = dict.fromkeys(envs, False)
    success = dict.fromkeys(envs, False)
    steps = dict.fromkeys(envs, 0)
    frames = [np.concatenate([obs["real"]["image"], obs["imagined"]["image"]], axis=1)]
    while not all(done.values()):
        for name, env in envs.items():
            if done[name]:
                continue
            obs[name], _, terminated, truncated, info = env.step(agents[name].act(obs[name]))
            steps[name] += 1
            if terminated or truncated:
                done[name], success[name] = True, bool(info["is_success"])
        frames.append(np.concatenate([obs["real"]["image"], obs["imagined"]["image"]], axis=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(out, frames, fps=real.metadata["render_fps"], macro_block_size=1)
    # pixel agreement of the final frames, a crude drift measure (higher = closer)
    mse = float(np.mean((frames[-1][:, : runtime.resolution].astype(np.float64) - frames[-1][:, runtime.resolution :]) ** 2))
    summary = {
        "task": real.task_description, "init_state_id": args.init_state_id, "same_start": same_start,
        "steps": steps, "success": success, "final_psnr_db": 10 * np.log10(255.0**2 / max(mse, 1e-10)),
        "video": str(out), "frame_shape": list(frames[0].shape),
    }
    for env in envs.values():
        env.close()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
