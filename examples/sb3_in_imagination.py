"""Train PPO (CNN policy on the agent-view image) inside the world model, then evaluate it in both envs.

    python examples/sb3_in_imagination.py --checkpoint PATH --judge JUDGE_DIR --total-timesteps 20000
    python examples/sb3_in_imagination.py --tiny     # smoke path: tiny random model, a few PPO steps

Training uses the batched imagined env through SB3's VecEnv API (one world-model call per step for all
envs). Rewards come from the success judge. Evaluation runs the same policy from the same init states in
imagination and, unless --no-eval-real, in real LIBERO, and reports both success rates.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from stable_baselines3 import PPO

from envs.imagined import ImaginedEnv
from envs.sb3 import SB3Compat, make_sb3_vec_env
from wvla_gym.judge import CallableJudge, ClassifierJudge
from wvla_gym.runtime import WorldVLARuntime


@dataclass
class Args:
    checkpoint: str | None = None
    """WorldVLA world-model checkpoint (folder or Hub id); None = the embedded default"""
    judge: str | None = None
    """saved ClassifierJudge folder (the reward); required outside --tiny"""
    task_suite: str = "libero_object"
    task_id: int = 0
    num_envs: int = 8
    total_timesteps: int = 20_000
    n_steps: int = 64
    batch_size: int = 128
    max_episode_steps: int = 60
    """imagined episodes are kept short: world-model error grows with the horizon"""
    eval_episodes: int = 5
    """evaluation episodes per env; episode k starts from init state k in both envs"""
    eval_real: bool | None = None
    """evaluate in real LIBERO too (default: yes, except with --tiny)"""
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    out: str = "runs/ppo_imagined"
    tiny: bool = False
    """smoke path: tiny random model at 64 px (NatureCNN needs >= 36), a toy brightness judge, 16 steps"""


def evaluate(model: PPO, env, episodes: int, seed: int, start_options) -> float:
    wins = 0
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k, options=start_options(k))
        while True:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                wins += bool(info["is_success"])
                break
    return wins / episodes


def main(args: Args) -> dict:
    if args.tiny and not args.threads:
        args.threads = 1  # tiny models are latency-bound; more threads only contend on a shared CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint, instruction = args.checkpoint, None
    if args.tiny:
        from wvla_gym.model.tiny import make_tiny_checkpoint

        checkpoint = str(make_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="wvla_tiny_")), resolution=64))
        args.num_envs, args.total_timesteps, args.n_steps, args.batch_size = 2, 16, 4, 8
        args.max_episode_steps, args.eval_episodes = 3, 1
        instruction = "pick up the object and place it in the basket"
        # toy reward for the smoke path only: a bright frame counts as success
        judge = CallableJudge(lambda f, _: float(f[-1].mean() / 255.0), threshold=0.9)
    elif args.judge:
        judge = ClassifierJudge.from_pretrained(args.judge, device=args.device)
    else:
        raise SystemExit("pass --judge (a saved ClassifierJudge): WorldVLA has no reward head")
    eval_real = (not args.tiny) if args.eval_real is None else args.eval_real

    runtime = WorldVLARuntime.from_pretrained(checkpoint, device=args.device)
    kw = dict(task_suite=args.task_suite, task_id=args.task_id, max_episode_steps=args.max_episode_steps)
    # tiny: random start frames (no MuJoCo); otherwise LIBERO init states, cycled like the real env
    frames = None
    if args.tiny:
        rng = np.random.default_rng(args.seed)
        frames = rng.integers(0, 256, (4, runtime.resolution, runtime.resolution, 3), dtype=np.uint8)
    venv = make_sb3_vec_env(
        args.num_envs, keys=["image"], runtime=runtime, success_judge=judge, init_frames=frames,
        instruction=instruction, **kw,
    )
    model = PPO(
        "CnnPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=1 if args.tiny else 4,
        seed=args.seed, device=args.device, verbose=0,
    )
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps)
    train_s = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "ppo_imagined")
    venv.close()

    def start(k: int) -> dict:
        return {"frame_id": k % len(frames)} if frames is not None else {"init_state_id": k}

    imag = SB3Compat(
        ImaginedEnv(runtime=runtime, success_judge=judge, init_frames=frames, instruction=instruction, **kw),
        keys=["image"],
    )
    summary = {
        "timesteps": model.num_timesteps, "train_seconds": train_s,
        "imagined_success": evaluate(model, imag, args.eval_episodes, args.seed, start), "model": str(out / "ppo_imagined.zip"),
    }
    if eval_real:
        from envs.libero import LiberoEnv

        real = SB3Compat(LiberoEnv(resolution=runtime.resolution, **kw), keys=["image"])
        summary["real_success"] = evaluate(model, real, args.eval_episodes, args.seed, lambda k: {"init_state_id": k})
        real.close()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(tyro.cli(Args))
