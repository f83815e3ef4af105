"""LiberoEnv step time vs LIBERO's own OffScreenRenderEnv step, same task, resolution and actions, one run.

Both envs step in alternating blocks so that machine load affects them alike; the ratio is of median
per-step times. Prints a table, then one JSON object as the last line. Target: step_ratio <= 1.05.

    python benchmarks/env_overhead.py --resolution 256 --steps 60
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import tyro


@dataclass
class Args:
    task_suite: str = "libero_object"
    task_id: int = 0
    resolution: int = 256
    steps: int = 60
    """steps per env (split into blocks of `block`)"""
    block: int = 10
    wrist: bool = True
    seed: int = 0
    json_out: str | None = None
    """Also write the result with machine/load/version facts: a path, or 'default' for
    benchmarks/results/env_overhead.json."""


def main(args: Args) -> dict:
    from bench_io import BenchRecord

    record = BenchRecord("env_overhead")
    if not 1 <= args.steps <= 250:
        raise ValueError(f"--steps={args.steps}; expected 1..250 (one episode, inside every suite's step limit)")
    import gymnasium as gym

    import wvla_gym  # noqa: F401
    from wvla_gym.utils.libero_setup import prepare_libero, stack_versions

    prepare_libero()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        suite = benchmark.get_benchmark_dict()[args.task_suite]()
    task = suite.get_task(args.task_id)
    cams = ["agentview", "robot0_eye_in_hand"] if args.wrist else ["agentview"]
    raw = OffScreenRenderEnv(
        bddl_file_name=os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file),
        camera_heights=args.resolution, camera_widths=args.resolution, camera_names=cams,
    )
    ours = gym.make("WorldVLA-LIBERO-v0", task_suite=args.task_suite, task_id=args.task_id,
                    resolution=args.resolution, wrist=args.wrist, max_episode_steps=10_000)
    init = suite.get_task_init_states(args.task_id)[0]
    raw.seed(args.seed)
    raw.reset()
    raw.set_init_state(init)
    ours.reset(seed=args.seed, options={"init_state_id": 0})

    rng = np.random.default_rng(args.seed)
    # small random motions keep the arm in the workspace for the whole run
    actions = (rng.uniform(-0.3, 0.3, size=(args.steps, 7))).astype(np.float32)
    t_raw, t_ours = [], []
    for start in range(0, args.steps, args.block):
        for a in actions[start:start + args.block]:
            t0 = time.perf_counter()
            raw.step(a.astype(np.float64))
            t_raw.append(time.perf_counter() - t0)
        for a in actions[start:start + args.block]:
            t0 = time.perf_counter()
            ours.step(a)
            t_ours.append(time.perf_counter() - t0)
    raw.close()
    ours.close()

    med_raw, med_ours = float(np.median(t_raw)), float(np.median(t_ours))
    out = {
        "raw_step_ms": round(1e3 * med_raw, 2),
        "wrapper_step_ms": round(1e3 * med_ours, 2),
        "step_ratio": round(med_ours / med_raw, 4),
        "resolution": args.resolution,
        "steps": args.steps,
        "wrist": args.wrist,
        "task": f"{args.task_suite}/{args.task_id}",
        "versions": stack_versions(),
    }
    print(f"{'env':<28}{'median step (ms)':>18}")
    print(f"{'LIBERO OffScreenRenderEnv':<28}{out['raw_step_ms']:>18.2f}")
    print(f"{'wvla_gym LiberoEnv':<28}{out['wrapper_step_ms']:>18.2f}")
    print(f"{'ratio':<28}{out['step_ratio']:>18.4f}")
    record.save(out, args.json_out)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
