"""``wvla-gym record``: scripted-expert demonstrations in real LIBERO, written in LIBERO's HDF5 layout.

    wvla-gym record --suite libero_object --tasks all --episodes-per-task 50 --resolution 128 --out data/obj128
    wvla-gym record --replay data/obj128 --resolution 256 --out data/obj256     # re-render from states

Resumable: rerun the same command after a kill; finished tasks and episodes are not redone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro


@dataclass
class RecordArgs:
    """Record successful scripted-expert episodes (or re-render recorded ones with --replay)."""

    out: Path
    """Output folder: one <task_name>_demo.hdf5 per task plus manifest.json."""
    suite: str = "libero_object"
    tasks: str = "all"
    """'all', a comma list '0,3,5' or a range '0-4'."""
    episodes_per_task: int = 50
    resolution: int = 128
    noise_std: float = 0.05
    """Action noise of perturbed attempts (retries, and episodes beyond the 50 fixed init states)."""
    max_attempts: int = 3
    seed: int = 0
    first_init_state: int = 0
    """Slot i records from fixed init state (first + i) % 50: e.g. 20 keeps the eval states 0-19 held out."""
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


def _replay(args: RecordArgs) -> int:
    from wvla_gym.data.hdf5 import _h5py
    from wvla_gym.data.record import replay_file

    src = args.replay
    files = sorted(src.glob("*_demo.hdf5")) if src.is_dir() else [src]
    if not files:
        print(f"error: --replay {src} holds no *_demo.hdf5 files")
        return 2
    h5py = _h5py()
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
            print(f"error: --replay {args.replay} does not exist; expected a *_demo.hdf5 file or a folder of them")
            return 2
        return _replay(args)
    from wvla_gym.data.record import record

    try:
        manifest = record(
            args.suite, args.tasks, args.episodes_per_task, args.resolution, args.out,
            _expert_factory(args.noise_std), max_attempts=args.max_attempts, seed=args.seed, wrist=args.wrist,
            first_init_state=args.first_init_state,
            noop_filter=args.noop_filter, progress=args.progress,
            policy_info={"name": "agents.scripted.ScriptedLiberoExpert", "noise_std_perturbed": args.noise_std},
        )
    except ValueError as e:
        print(f"error: {e}")
        return 2
    rows = [
        (tid, t["task_name"], t["episodes_kept"], t["expert_success_fixed_init"]["rate"])
        for tid, t in sorted(manifest["tasks"].items(), key=lambda kv: int(kv[0]))
    ]
    for tid, name, kept, rate in rows:
        print(f"task {tid:>2} {name[:60]:<60} kept {kept:>3}  expert success {rate if rate is None else f'{rate:.0%}'}")
    print(json.dumps({"out": str(args.out), "manifest": str(args.out / "manifest.json")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
