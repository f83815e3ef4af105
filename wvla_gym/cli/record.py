"""``wvla-gym record``: scripted-expert demonstrations in real LIBERO, written in LIBERO's HDF5 layout.

    wvla-gym record --suite libero_object --tasks all --episodes-per-task 50 --resolution 128 --out data/obj128
    wvla-gym record --replay data/obj128 --resolution 256 --out data/obj256     # re-render from states

World-model data (failures kept, wandering behaviours, fresh placements, no wrist, 64 px)::

    wvla-gym record --suite libero_object --tasks all --episodes-per-task 80 --resolution 64 --no-wrist \
        --keep-failures --behaviours expert,cut,burst,random,zero --noise-levels 0.1,0.3,0.6 \
        --placement sampled --perturb-radius 0.03 --out data/obj64_wm
    wvla-gym record --policy worldvla --checkpoint runs/model --keep-failures ...   # our model, closed loop

Resumable: rerun the same command after a kill; finished tasks and episodes are not redone. A rerun with a
setting that changes the output is refused naming it (``run_identity.json``); ``--restart`` starts over.
More tasks or a larger ``--episodes-per-task`` extend a recording.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro


@dataclass
class RecordArgs:
    """Record policy rollouts in real LIBERO (or re-render recorded ones with --replay)."""

    out: Path
    """Output folder: one <task_name>_demo.hdf5 per task plus manifest.json."""
    suite: str = "libero_object"
    tasks: str = "all"
    """'all', a comma list '0,3,5' or a range '0-4'."""
    episodes_per_task: int = 50
    resolution: int = 128
    noise_std: float = 0.05
    """Action noise of the expert's retries (attempts after a failure)."""
    max_attempts: int = 3
    seed: int = 0
    first_init_state: int = 0
    """Slot i records from fixed init state first + i, fresh sampled placements past 49 (never a wrap onto
    states below first): e.g. 20 keeps the eval states 0-19 held out."""
    keep_failures: bool = False
    """Write failed episodes too (rewards/dones all 0, demo attr success=False); one rollout per slot."""
    behaviours: str = "expert"
    """Comma list cycled over slots: expert, noise, cut, burst, random, zero, hold (see wvla_gym.data.behaviours)."""
    noise_levels: str = ""
    """Comma list of action-noise stds for the 'noise' behaviour (one behaviour per level), e.g. 0.1,0.3,0.6."""
    placement: str = "fixed"
    """'fixed' (init states from --first-init-state, then fresh placements) or 'sampled' (every slot fresh)."""
    perturb_radius: float = 0.0
    """Shift every movable object by up to this many metres (seeded, collision-checked); 0 = off."""
    policy: str = "expert"
    """'expert' (agents.scripted.ScriptedLiberoExpert) or 'worldvla' (agents.worldvla.WorldVLAAgent, closed loop)."""
    checkpoint: Path | None = None
    """The WorldVLA checkpoint for --policy worldvla (folder or file; its content digest joins the run identity)."""
    restart: bool = False
    """Delete this folder's recording (demo files, manifest, staging) and start over with these settings."""
    wrist: bool = True
    noop_filter: bool = True
    replay: Path | None = None
    """Re-render this demo file (or every *_demo.hdf5 in this folder) at --resolution into --out."""
    progress: bool = True


def _expert_factory(noise_std: float):
    from agents.scripted import ScriptedLiberoExpert

    def factory(env: Any, seed: int, perturbed: bool) -> ScriptedLiberoExpert:
        return ScriptedLiberoExpert(env, noise_std=noise_std if perturbed else 0.0, seed=seed)

    return factory


class _AgentPolicy:
    """A fresh WorldVLAAgent per episode (shared weights), reset with the task instruction; a
    :class:`wvla_gym.policy.Policy`."""

    def __init__(self, runtime: Any, env: Any, seed: int) -> None:
        from agents.worldvla import WorldVLAAgent

        self.agent = WorldVLAAgent(runtime)
        self.instruction = env.unwrapped.task_description
        self.seed = seed

    def reset(self, *, seed: int | None = None) -> None:
        import torch

        torch.manual_seed(self.seed if seed is None else seed)  # the recorder's slot seed unless told otherwise
        self.agent.reset(self.instruction)

    def act(self, obs: Any) -> Any:
        return self.agent.act(obs)


def _worldvla_factory(checkpoint: Path):
    from agents.worldvla import WorldVLAAgent

    runtime = WorldVLAAgent.from_pretrained(checkpoint).runtime  # loaded once, one agent per episode

    def factory(env: Any, seed: int, perturbed: bool) -> _AgentPolicy:
        return _AgentPolicy(runtime, env, seed)

    return factory


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"--{name} {text!r}; expected a comma list of floats like 0.1,0.3,0.6") from e


def _policy(args: RecordArgs) -> tuple[Any, dict[str, Any]]:
    """(factory, policy info for the run identity) of --policy."""
    if args.policy == "expert":
        if args.checkpoint is not None:
            raise ValueError("--checkpoint is only for --policy worldvla")
        info = {"name": "agents.scripted.ScriptedLiberoExpert", "noise_std_perturbed": args.noise_std}
        return _expert_factory(args.noise_std), info
    if args.policy == "worldvla":
        if args.checkpoint is None or not args.checkpoint.exists():
            raise ValueError(f"--policy worldvla needs --checkpoint PATH of an existing checkpoint; got {args.checkpoint}")
        from wvla_gym.utils.run_identity import path_digest

        info = {"name": "agents.worldvla.WorldVLAAgent", "checkpoint": str(args.checkpoint.resolve()),
                "checkpoint_digest": path_digest(args.checkpoint), "noise_std_perturbed": args.noise_std}
        return _worldvla_factory(args.checkpoint), info
    raise ValueError(f"--policy {args.policy!r}; expected 'expert' or 'worldvla'")


def _replay(args: RecordArgs) -> int:
    from wvla_gym.data.hdf5 import require_h5py
    from wvla_gym.data.replay import replay_file

    src = args.replay
    files = sorted(src.glob("*_demo.hdf5")) if src.is_dir() else [src]
    if not files:
        print(f"error: --replay {src} holds no *_demo.hdf5 files", file=sys.stderr)
        return 2
    h5py = require_h5py()
    args.out.mkdir(parents=True, exist_ok=True)
    for p in files:
        with h5py.File(p, "r") as f:
            attrs = f["data"].attrs
            suite = str(attrs.get("task_suite", args.suite))
            task_id = attrs.get("task_id")
        if task_id is None:
            task_id = _task_id_from_name(suite, p)
        n = replay_file(p, args.out / p.name, resolution=args.resolution, suite=suite, task_id=int(task_id),
                        wrist=args.wrist, progress=args.progress)
        print(f"{p.name}: {n} demos re-rendered at {args.resolution}px")
    return 0


def _task_id_from_name(suite: str, path: Path) -> int:
    """Official LIBERO files carry no task id: match the file name against the suite's task names."""
    import gymnasium as gym

    import wvla_gym  # noqa: F401
    from wvla_gym.protocol import SUITE_NUM_TASKS

    stem = path.name.removesuffix("_demo.hdf5")
    for t in range(SUITE_NUM_TASKS[suite]):
        env = gym.make("WorldVLA-LIBERO-v0", task_suite=suite, task_id=t, resolution=32, wrist=False)
        name = env.unwrapped.task_name
        env.close()
        if name == stem:
            return t
    raise ValueError(f"replay file {path.name!r} matches no task of suite={suite!r}; expected '<task_name>_demo.hdf5'")


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(RecordArgs, args=argv, prog="wvla-gym record")
    if args.replay is not None:
        if not args.replay.exists():
            print(f"error: --replay {args.replay} does not exist; expected a *_demo.hdf5 file or a folder of them", file=sys.stderr)
            return 2
        return _replay(args)
    from wvla_gym.data.record import record

    try:
        factory, policy_info = _policy(args)
        manifest = record(
            args.suite, args.tasks, args.episodes_per_task, args.resolution, args.out,
            factory, max_attempts=args.max_attempts, seed=args.seed, wrist=args.wrist,
            first_init_state=args.first_init_state,
            noop_filter=args.noop_filter, progress=args.progress,
            policy_info=policy_info, keep_failures=args.keep_failures,
            behaviours=[b for b in args.behaviours.split(",") if b.strip()],
            noise_levels=_floats(args.noise_levels, "noise-levels"), placement=args.placement,
            perturb_radius=args.perturb_radius, restart=args.restart,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [
        (tid, t["task_name"], t["episodes_kept"], t.get("episodes_failed_kept", 0), t["expert_success_fixed_init"]["rate"])
        for tid, t in sorted(manifest["tasks"].items(), key=lambda kv: int(kv[0]))
    ]
    for tid, name, kept, failed, rate in rows:
        print(f"task {tid:>2} {name[:60]:<60} kept {kept:>3} (failed {failed:>3})  "
              f"expert success {rate if rate is None else f'{rate:.0%}'}")
    print(json.dumps({"out": str(args.out), "manifest": str(args.out / "manifest.json")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
