"""``wvla-gym demo``: the main demo behind the README's first command.

With a WorldVLA checkpoint (``--checkpoint``, or the embedded default once the package ships one) it runs the
WorldVLA agent on a libero_object task in real LIBERO *and* in imagination from the same init state and writes
one side-by-side mp4 (real | imagined) with the success of both. Without a checkpoint it runs the scripted
LIBERO expert in real MuJoCo (the policy that records our training data) and writes its video.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro


@dataclass
class DemoArgs:
    """Run the main demo and write an mp4."""

    checkpoint: str | None = None
    """WorldVLA checkpoint folder or Hub id; None = the embedded default if present, else the scripted expert"""
    task_suite: str = "libero_object"
    task_id: int = 0
    init_state_id: int = 0
    resolution: int = 128
    """camera resolution for the scripted-expert demo (a checkpoint fixes its own)"""
    max_steps: int | None = None
    """step limit (default: the suite's LIBERO limit)"""
    out: str = "videos/demo.mp4"
    threads: int = 2


def _write(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, np.stack(frames), fps=fps, macro_block_size=1)


def _run_expert(args: DemoArgs) -> dict:
    import gymnasium as gym

    import wvla_gym  # noqa: F401
    from agents.scripted import ScriptedLiberoExpert

    kw = {"max_episode_steps": args.max_steps} if args.max_steps else {}
    env = gym.make("WorldVLA-LIBERO-v0", task_suite=args.task_suite, task_id=args.task_id,
                   resolution=args.resolution, wrist=True, **kw)
    expert = ScriptedLiberoExpert(env)
    obs, info = env.reset(seed=0, options={"init_state_id": args.init_state_id})
    expert.reset()
    frames = [np.concatenate([obs["image"], obs["wrist_image"]], axis=1)]
    done, steps = False, 0
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        frames.append(np.concatenate([obs["image"], obs["wrist_image"]], axis=1))
        steps += 1
        done = terminated or truncated
    env.close()
    _write(Path(args.out), frames, 20)
    return {"policy": "scripted expert", "env": "real", "task": info["task_description"],
            "success": bool(info["is_success"]), "steps": steps}


def _run_agent(args: DemoArgs, checkpoint: str | None) -> dict:
    import gymnasium as gym

    import wvla_gym  # noqa: F401
    from agents.worldvla import WorldVLAAgent
    from wvla_gym.judge import ClassifierJudge
    from wvla_gym.runtime import DEFAULT_ASSET_DIR

    # the small embedded default sometimes emits a malformed action block; force the block structure for it
    agent = WorldVLAAgent.from_pretrained(checkpoint, constrain_actions=checkpoint is None)
    # a model folder may ship its success judge in judge/ (the embedded default does); without one the
    # imagined episode can never succeed
    judge_dir = Path(checkpoint or DEFAULT_ASSET_DIR) / "judge"
    judge = ClassifierJudge.from_pretrained(judge_dir) if (judge_dir / "judge_config.json").exists() else None
    kw = {"max_episode_steps": args.max_steps} if args.max_steps else {}
    common = dict(task_suite=args.task_suite, task_id=args.task_id, resolution=agent.resolution, wrist=False)
    envs = {"real": gym.make("WorldVLA-LIBERO-v0", **common, **kw),
            "imagined": gym.make("WorldVLA-Imagined-v0", runtime=agent.runtime, success_judge=judge, **common, **kw)}
    videos, result = {}, {"policy": "WorldVLA agent", "checkpoint": checkpoint or "embedded default"}
    for kind, env in envs.items():
        obs, info = env.reset(seed=0, options={"init_state_id": args.init_state_id})
        agent.reset(instruction=info["task_description"])
        frames, done, steps = [obs["image"]], False, 0
        while not done:
            obs, _, terminated, truncated, info = env.step(agent.act(obs))
            frames.append(obs["image"])
            steps += 1
            done = terminated or truncated
        env.close()
        videos[kind] = frames
        result[kind] = {"success": bool(info["is_success"]), "steps": steps}
        result["task"] = info["task_description"]
    n = max(len(v) for v in videos.values())
    pad = {k: v + [v[-1]] * (n - len(v)) for k, v in videos.items()}  # the shorter episode holds its last frame
    _write(Path(args.out), [np.concatenate([r, i], axis=1) for r, i in zip(pad["real"], pad["imagined"], strict=True)], 20)
    return result


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(DemoArgs, args=argv)
    import torch

    torch.set_num_threads(args.threads)
    from wvla_gym.runtime import DEFAULT_ASSET_DIR

    t0 = time.perf_counter()
    has_default = (Path(DEFAULT_ASSET_DIR) / "config.json").exists()
    if args.checkpoint or has_default:
        result = _run_agent(args, args.checkpoint)
    else:
        print("[demo] no WorldVLA checkpoint given and no embedded default yet: running the scripted expert")
        result = _run_expert(args)
    result.update(video=args.out, wall_s=round(time.perf_counter() - t0, 1))
    print(json.dumps(result))
    return 0
