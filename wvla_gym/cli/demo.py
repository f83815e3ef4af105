"""``wvla-gym demo``: the main demo behind the README's first command.

With a WorldVLA checkpoint (``--checkpoint``, or the embedded default once the package ships one) it runs the
WorldVLA agent on a libero_object task in real LIBERO *and* in imagination from the same init state and writes
one side-by-side mp4 (real | imagined) with the success of both. Without a checkpoint it runs the scripted
LIBERO expert in real MuJoCo (the policy that records our training data) and writes its video.

Each episode shows a progress bar (steps, then its outcome) on stderr. The video is upscaled (nearest
neighbour) to at least 256 px tall, each half labelled ("real LIBERO" / "imagined (world model)") with its step
counter and, once it ended, its outcome. The final JSON line records the torch thread count, the wall time and
the machine's load average (before and after), since on a shared CPU the time means little without it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro

from wvla_gym.evaluation.episode import EpisodeObserver, play_episode

#: torch threads: 1 beat 2 on this project's loaded 2-core CPU (benchmarks/demo_threads.py, results/demo_threads.json)
DEFAULT_THREADS = 1
FPS = 20  # LIBERO's control rate


@dataclass
class DemoArgs:
    """Run the main demo and write an mp4."""

    checkpoint: str | None = None
    """WorldVLA checkpoint folder or Hub id; None = the embedded default if present, else the scripted expert"""
    world_model: str | None = None
    """world-model checkpoint (folder or Hub id) for the imagined half; None = the agent's own checkpoint, or for
    the embedded default agent the default's world model (assets/default/world_model). Its judge/ folder, if it
    has one, judges the imagined episode (else the agent checkpoint's judge/)"""
    imagine_from: str = "codes"
    """the imagined env's imagine_from: "frames" (re-encode each decoded frame) or "codes" (feed back the
    world model's generated codes)"""
    task_suite: str = "libero_object"
    task_id: int = 0
    init_state_id: int = 0
    resolution: int = 128
    """camera resolution for the scripted-expert demo (a checkpoint fixes its own)"""
    max_steps: int | None = None
    """step limit (default: the suite's LIBERO limit)"""
    out: str = "videos/demo.mp4"
    threads: int = DEFAULT_THREADS
    """torch threads (1 measured faster than 2 on a loaded 2-core CPU: benchmarks/results/demo_threads.json)"""
    video_height: int = 256
    """minimum video height: frames are upscaled (nearest neighbour) by an integer factor to reach it"""
    constrain_actions: bool | None = None
    """force well-formed action blocks when decoding (None: the checkpoint's config; the embedded default sets it)"""
    progress: bool = True
    """a progress bar per episode on stderr"""


def _write(path: Path, clips: list[tuple[str, list[np.ndarray], str]], args: DemoArgs) -> None:
    from wvla_gym.evaluation.video import labelled_side_by_side, write_video

    # hold the final composite for 2 s so both outcomes stay readable at the end
    frames = labelled_side_by_side(clips, min_height=args.video_height, hold_frames=2 * FPS)
    write_video(path, frames, FPS)


def _outcome(success: bool, steps: int) -> str:
    return f"success in {steps} steps" if success else f"no success ({steps} steps)"


class _DemoWatch(EpisodeObserver):
    """Observer of the episode loop: collects each view's frames and advances a progress bar; ``on_reset`` (if
    given) gets the reset's info (the agent takes its instruction from it)."""

    def __init__(self, views: tuple[str, ...], bar: Any, on_reset: Callable[[dict], None] | None = None) -> None:
        self.views, self.bar, self._on_reset = views, bar, on_reset
        self.frames: dict[str, list[np.ndarray]] = {v: [] for v in views}

    def on_reset(self, obs: Any, info: Any) -> None:
        for v in self.views:
            self.frames[v].append(obs[v])
        if self._on_reset is not None:
            self._on_reset(info)

    def on_step(self, obs: Any, action: Any, reward: float, terminated: bool, truncated: bool, info: Any) -> None:
        for v in self.views:
            self.frames[v].append(obs[v])
        self.bar.update(1)


def _episode(env, policy, name: str, args: DemoArgs, views: tuple[str, ...] = ("image",),
             on_reset: Callable[[dict], None] | None = None):
    """One episode (THE episode loop, ``play_episode``) with a tqdm bar; returns (frames per view, success,
    steps, info)."""
    from tqdm import tqdm

    limit = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else None
    limit = limit or getattr(env.unwrapped, "max_episode_steps", None)
    with tqdm(total=limit, desc=name, unit="step", disable=not args.progress, dynamic_ncols=True) as bar:
        watch = _DemoWatch(views, bar, on_reset)
        end = play_episode(env, policy, seed=0, options={"init_state_id": args.init_state_id}, observers=[watch])
        bar.set_postfix_str(_outcome(end.success, end.steps))
    env.close()
    return watch.frames, end.success, end.steps, end.info


def _run_expert(args: DemoArgs) -> dict:
    import gymnasium as gym

    import wvla_gym  # noqa: F401
    from agents.scripted import ScriptedLiberoExpert

    kw = {"max_episode_steps": args.max_steps} if args.max_steps else {}
    env = gym.make("WorldVLA-LIBERO-v0", task_suite=args.task_suite, task_id=args.task_id,
                   resolution=args.resolution, wrist=True, **kw)
    expert = ScriptedLiberoExpert(env)
    frames, success, steps, info = _episode(env, expert, "real LIBERO (expert)", args, views=("image", "wrist_image"))
    outcome = _outcome(success, steps)
    _write(Path(args.out), [("real LIBERO: agent view", frames["image"], outcome),
                            ("wrist camera", frames["wrist_image"], outcome)], args)
    return {"policy": "scripted expert", "env": "real", "task": info["task_description"],
            "success": success, "steps": steps}


def _run_agent(args: DemoArgs, checkpoint: str | None) -> dict:
    import gymnasium as gym

    import wvla_gym  # noqa: F401
    from agents.worldvla import WorldVLAAgent
    from wvla_gym.runtime import DEFAULT_ASSET_DIR
    from wvla_gym.runtime_cache import checkpoint_judge, default_world_model, load_runtime

    # None: the checkpoint's config decides (the small embedded default forces well-formed action blocks)
    agent = WorldVLAAgent.from_pretrained(checkpoint, constrain_actions=args.constrain_actions)
    agent_dir = checkpoint or DEFAULT_ASSET_DIR
    world, world_model = agent.runtime, args.world_model
    if world_model is None and checkpoint is None:
        world_model = default_world_model()  # the embedded default's own world model, when it ships one
    if world_model is not None:
        world = load_runtime(world_model)
        if world.resolution != agent.resolution:
            raise SystemExit(f"--world-model {world_model}: its images are {world.resolution} px but the agent's "
                             f"are {agent.resolution} px; expected a world model at the agent's resolution")
    # the world model's judge/ (judged on its own rendering), else the agent checkpoint's
    judge = (checkpoint_judge(world_model) if world_model else None) or checkpoint_judge(agent_dir)
    kw = {"max_episode_steps": args.max_steps} if args.max_steps else {}
    common = dict(task_suite=args.task_suite, task_id=args.task_id, resolution=agent.resolution, wrist=False)
    envs = {"real": gym.make("WorldVLA-LIBERO-v0", **common, **kw),
            "imagined": gym.make("WorldVLA-Imagined-v0", runtime=world, success_judge=judge,
                                 imagine_from=args.imagine_from, **common, **kw)}
    labels = {"real": "real LIBERO", "imagined": "imagined (world model)"}
    clips, result = [], {"policy": "WorldVLA agent", "checkpoint": checkpoint or "embedded default",
                         "world_model": world_model or checkpoint or "embedded default"}
    for kind, env in envs.items():
        t0 = time.perf_counter()
        frames, success, steps, info = _episode(
            env, agent, labels[kind], args, on_reset=lambda info: agent.reset(instruction=info["task_description"]))
        clips.append((labels[kind], frames["image"], _outcome(success, steps)))  # the shorter one holds its last frame
        result[kind] = {"success": success, "steps": steps, "wall_s": round(time.perf_counter() - t0, 1)}
        result["task"] = info["task_description"]
    _write(Path(args.out), clips, args)
    return result


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(DemoArgs, args=argv)
    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: expected an int >= 1")
    import torch

    torch.set_num_threads(args.threads)
    from wvla_gym.runtime import DEFAULT_ASSET_DIR

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    has_default = (Path(DEFAULT_ASSET_DIR) / "config.json").exists()
    if args.world_model is not None and not (args.checkpoint or has_default):
        raise SystemExit("--world-model needs a WorldVLA agent: pass --checkpoint (no embedded default here)")
    if args.checkpoint or has_default:
        print(f"[demo] WorldVLA agent ({args.checkpoint or 'embedded default'}) on {args.task_suite} task "
              f"{args.task_id}, init state {args.init_state_id}: real LIBERO, then imagined; "
              f"{args.threads} torch thread(s), load average {load_before[0]:.1f} on {os.cpu_count()} CPUs",
              file=sys.stderr, flush=True)
        result = _run_agent(args, args.checkpoint)
    else:
        print("[demo] no WorldVLA checkpoint given and no embedded default yet: running the scripted expert")
        result = _run_expert(args)
    result.update(video=args.out, wall_s=round(time.perf_counter() - t0, 1), torch_threads=torch.get_num_threads(),
                  cpus=os.cpu_count(), load_avg_1_5_15_before=[round(x, 2) for x in load_before],
                  load_avg_1_5_15_after=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(result))
    return 0
