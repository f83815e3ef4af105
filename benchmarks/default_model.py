"""The embedded default model's figures, measured and written in one run: ``benchmarks/results/default_model.json``.

What it measures (all in real MuJoCo LIBERO, 64 px like the model):

* real success of the default agent on held-out init states of each task (the LIBERO protocol, sync backend;
  the raw per-episode records go to ``<raw>/episodes.jsonl`` beside the JSON);
* optionally (``--wm-data``) the world model's open-loop PSNR/SSIM per horizon on recorded held-out episodes,
  beside the copy-the-start-frame baseline (``wvla-gym wm-eval``'s code);
* the asset itself (size, content digest, loading time) and its training reports (``assets/default/training``).

Usage (2-core CPU: about 15 s per real episode at 64 px)::

    python benchmarks/default_model.py --tasks 0 --trials 20 --json-out default
    python benchmarks/default_model.py --tasks 0 --trials 2 --max-episode-steps 20   # smoke run
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro
from bench_io import RESULTS_DIR, BenchRecord

from wvla_gym.utils.run_identity import path_digest


@dataclass
class Args:
    checkpoint: str | None = None
    """Model to measure; None = the embedded default."""
    tasks: list[int] = field(default_factory=lambda: [0])
    trials: int = 20
    """Init states 0..trials-1 (the default was trained on init states 20-49 only)."""
    max_episode_steps: int | None = None
    threads: int = 1
    wm_data: list[Path] = field(default_factory=list)
    """Held-out recorded episodes (HDF5) for the open-loop world-model metrics; empty skips them."""
    wm_horizon: int = 10
    raw: Path = RESULTS_DIR / "default_model"
    """Folder of the raw per-episode records (resumable: rerunning skips finished episodes)."""
    json_out: str | None = "default"
    """'default' = benchmarks/results/default_model.json; None prints only."""


def main(args: Args) -> dict:
    import torch

    from agents.registry import resolve_policy
    from wvla_gym.evaluation import EvalConfig, evaluate
    from wvla_gym.runtime import DEFAULT_ASSET_DIR
    from wvla_gym.runtime_cache import load_runtime

    record = BenchRecord("default_model")
    torch.set_num_threads(args.threads)
    ckpt = Path(args.checkpoint) if args.checkpoint else DEFAULT_ASSET_DIR
    t0 = time.perf_counter()
    rt = load_runtime(args.checkpoint)  # the policy below shares this load (one runtime cache)
    load_s = time.perf_counter() - t0
    resolved = resolve_policy("worldvla", checkpoint=args.checkpoint)
    knobs = {**resolved.knobs, "checkpoint_digest": path_digest(ckpt)}
    cfg = EvalConfig(suite="libero_object", tasks=args.tasks, trials=args.trials, env="real", seed=0,
                     policy_name=resolved.name, out=args.raw, resolution=rt.resolution, wrist=False,
                     max_episode_steps=args.max_episode_steps, knobs=knobs)
    summary = evaluate(resolved.factory, cfg)
    result: dict = {
        "asset": {"dir": str(ckpt), "bytes": sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file()),
                  "digest": knobs["checkpoint_digest"], "load_s": round(load_s, 3)},
        "real_success": summary["results"][resolved.name]["real"],
        "raw_records": str(args.raw / "episodes.jsonl"),
        "protocol": {"suite": "libero_object", "tasks": args.tasks, "init_states": list(range(args.trials)),
                     "step_limit": cfg.step_limit(), "resolution": rt.resolution},
    }
    training = ckpt / "training"
    if training.is_dir():
        result["training_reports"] = {p.name: json.loads(p.read_text()) for p in sorted(training.glob("*_report.json"))}
    if args.wm_data:
        import numpy as np

        from wvla_gym.data.hdf5 import iter_episodes
        from wvla_gym.evaluation.world_model_metrics import evaluate_open_loop

        episodes = [(ep.frames, ep.actions) for p in args.wm_data for ep in iter_episodes(p, size=rt.resolution)]
        result["world_model_open_loop"] = {
            "data": [str(p) for p in args.wm_data], "episodes": len(episodes),
            "model": evaluate_open_loop(episodes, lambda f, a: rt.imagine(f, a), args.wm_horizon, 5,
                                        history=rt.world_history),
            "copy_start_frame_baseline": evaluate_open_loop(episodes, lambda f, a: np.asarray(f).copy(),
                                                            args.wm_horizon, 5),
        }
    real = result["real_success"]["overall"]
    print(f"{resolved.name}: real success {real['successes']}/{real['n']} on init states 0-{args.trials - 1} "
          f"of tasks {args.tasks} ({real['errors']} errors); load {load_s:.2f} s")
    record.save(result, args.json_out)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
