"""``wvla-gym eval``: run the LIBERO protocol for one policy on real, imagined or both envs.

Example::

    wvla-gym eval --policy scripted --suite libero_object --tasks 0,1 --trials 50 --env real --out results/
    wvla-gym eval --policy worldvla --checkpoint ckpt/ --env both --video --backend vector --num-envs 4
    wvla-gym eval --policy random --world-model ckpt/ --env imagined --backend batched --num-envs 16
    wvla-gym eval --policy worldvla --checkpoint ckpt/ --placement sampled --trials 10     # fresh placements
    wvla-gym eval --policy worldvla --checkpoint ckpt/ --perturb-radius 0.03 --trials 10   # objects shifted 3 cm

Re-running the same command resumes: finished episodes are skipped, errored ones retried.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from wvla_gym.evaluation.config import EvalConfig
from wvla_gym.evaluation.runner import evaluate
from wvla_gym.protocol import NUM_INIT_STATES, parse_tasks
from wvla_gym.utils.run_identity import RunIdentityError, path_digest


@dataclass
class EvalArgs:
    """Evaluate a policy on the LIBERO protocol (trial k = init state k, 10 settle steps, suite step limits)."""

    policy: str
    """worldvla | scripted | random | zero | sb3:PATH | sb3:ALGO:PATH | openpi:HOST:PORT (a policy server) |
    module:callable (callable(env) -> policy)"""
    checkpoint: str | None = None
    """WorldVLA checkpoint (folder or Hub id) for --policy worldvla; also the world model unless --world-model."""
    world_model: str | None = None
    """Checkpoint of the imagined env's world model (default: --checkpoint, else the embedded default's world model)."""
    suite: str = "libero_object"
    tasks: str = "all"
    """'all' or comma-separated task ids, e.g. '0,3,7'."""
    trials: int = NUM_INIT_STATES
    placement: Literal["init_state", "sampled"] = "init_state"
    """init_state: trial k starts from LIBERO's fixed init state k (the protocol). sampled: from a fresh
    placement drawn by LIBERO's own sampler, seeded per task and trial (the robustness column)."""
    perturb_radius: float = 0.0
    """Shift every movable object by a seeded offset within this radius (metres, e.g. 0.03), on either start."""
    env: Literal["real", "imagined", "both"] = "real"
    out: Path = Path("results")
    name: str | None = None
    """Policy name in the results (default derived from --policy, --checkpoint and --noise-std, plus
    '@sampled' / '@perturb0.03' for other starts, so each start mode is its own row in one --out folder)."""
    seed: int = 0
    resolution: int = 256
    wrist: bool = False
    """Render the wrist camera too (WorldVLA-256 uses the agent view only; rendering dominates step cost)."""
    max_episode_steps: int | None = None
    """Override the suite step limit (quick looks only; results are then not protocol numbers)."""
    noise_std: float = 0.0
    """Gaussian action noise of the scripted expert."""
    backend: Literal["sync", "vector", "ray", "batched"] = "sync"
    """sync: one env, episodes one after another. vector: --num-envs worker processes. ray: --num-envs Ray
    actors. batched (--env imagined only): --num-envs imagined episodes of a task stepped together, one
    batched world-model call per step (same records as sync, several times the throughput on CPU)."""
    num_envs: int = 1
    """Workers for vector/ray; batch width for batched (1, the default, means 16 there)."""
    ray_address: str | None = None
    video: bool = False
    record_actions: bool = False
    """Store every episode's per-step actions in its record (episodes.jsonl)."""
    retry_errors: bool = True
    progress: bool = True
    policy_kwargs: str = "{}"
    """JSON dict passed to the policy loader (e.g. WorldVLAAgent.from_pretrained)."""
    imagined_kwargs: str = "{}"
    """JSON dict of extra WorldVLA-Imagined-v0 kwargs (e.g. {"success_threshold": 0.5})."""
    threads: int = 1
    """torch intra-op threads (recorded in the summary and the run identity: greedy rollouts can differ
    between thread counts). 1 holds up best on a shared 2-core machine."""
    restart: bool = False
    """Delete this policy's earlier records in --out and start over (by default a resume with other settings
    is refused, naming them)."""


def _parse_json(flag: str, text: str) -> dict:
    try:
        val = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--{flag} {text!r} is not JSON; expected a JSON object like '{{\"key\": 1}}'") from e
    if not isinstance(val, dict):
        raise ValueError(f"--{flag} {text!r}; expected a JSON object")
    return val


def build_config(args: EvalArgs) -> tuple[EvalConfig, object]:
    from agents.registry import resolve_policy

    tasks = parse_tasks(args.tasks, args.suite, arg="--tasks")
    resolved = resolve_policy(args.policy, checkpoint=args.checkpoint, noise_std=args.noise_std,
                              policy_kwargs=_parse_json("policy-kwargs", args.policy_kwargs))
    if resolved.privileged and args.env != "real":
        raise ValueError(f"--policy {args.policy} reads simulator state, so it only runs with --env real")
    knobs = dict(resolved.knobs)
    imagined_kwargs = _parse_json("imagined-kwargs", args.imagined_kwargs)
    world_model = args.world_model or args.checkpoint
    if args.env != "real":
        if world_model is None and "checkpoint" not in imagined_kwargs:
            from wvla_gym.runtime_cache import default_world_model

            world_model = default_world_model()  # the embedded default's world model (None: the default itself)
        imagined_kwargs.setdefault("checkpoint", world_model)
        knobs["world_model"] = world_model
    if args.checkpoint:
        knobs["checkpoint"] = args.checkpoint
    # Content hashes make a retrained checkpoint at the same path a different run (see the run identity).
    for key in ("checkpoint", "world_model"):
        p = knobs.get(key)
        if p and Path(p).exists():
            knobs[f"{key}_digest"] = path_digest(p)
    cfg = EvalConfig(
        suite=args.suite, tasks=tasks, trials=args.trials, env=args.env, seed=args.seed,
        placement=args.placement, perturb_radius=args.perturb_radius,
        policy_name=args.name or resolved.name + start_suffix(args.placement, args.perturb_radius), out=args.out, resolution=args.resolution, wrist=args.wrist,
        max_episode_steps=args.max_episode_steps, backend=args.backend, num_envs=args.num_envs,
        policy_in_workers=resolved.privileged, ray_address=args.ray_address, video=args.video,
        retry_errors=args.retry_errors, progress=args.progress, imagined_env_kwargs=imagined_kwargs, knobs=knobs,
        restart=args.restart, record_actions=args.record_actions,
    )
    cfg.validate()
    return cfg, resolved.factory


def start_suffix(placement: str, perturb_radius: float) -> str:
    """``""`` for the protocol's starts, else e.g. ``"@sampled"``, ``"@perturb0.03"``, ``"@sampled@perturb0.03"``."""
    return ("@sampled" if placement == "sampled" else "") + (f"@perturb{perturb_radius:g}" if perturb_radius else "")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = tyro.cli(EvalArgs, args=argv, prog="wvla-gym eval")
    if isinstance(args.threads, bool) or args.threads < 1:
        print(f"error: --threads {args.threads!r}; expected an int >= 1", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    try:
        cfg, factory = build_config(args)
        summary = evaluate(factory, cfg)
    except (ValueError, RunIdentityError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = summary["results"].get(cfg.policy_name, {})
    for kind, block in res.items():
        for suite, s in block["suites"].items():
            rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.1f}%"
            ci = "" if s["ci95"] is None else f" [95% CI {100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f}]"
            print(f"{cfg.policy_name} {kind} {suite}: {rate}{ci} over {s['n']} episodes, {s['errors']} errors")
    print(f"results: {Path(cfg.out) / 'episodes.jsonl'}, summary: {Path(cfg.out) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
