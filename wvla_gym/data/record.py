"""Record successful policy rollouts in real LIBERO as LIBERO-layout HDF5 files, resumably.

The recorder never imports ``agents`` or ``envs``: it builds envs through ``gym.make("WorldVLA-LIBERO-v0")``
(registered by ``wvla_gym``) and takes a ``policy_factory`` callable.

Resumability: every episode is first written atomically to ``<out>/.staging/<task>/ep_<slot>.hdf5`` (or a
``ep_<slot>.failed.json`` marker when all attempts fail), so a kill loses at most the episode in progress and
can never leave a torn or duplicated one. When all slots of a task exist they are assembled (atomically) into
``<out>/<task_name>_demo.hdf5`` and the staging folder is removed. ``manifest.json`` is rewritten atomically
after every episode; it is a report derived from the files, which are the source of truth.

Episode slots: slot ``i`` uses the fixed init state ``(first_init_state + i) % n_init``. Its first attempt is
unperturbed when ``first_init_state + i < n_init`` (this is what the expert success rate measures); retries and
slots past the last fixed init state are perturbed (seeded action noise via the policy factory, and a different
reset seed). ``first_init_state`` keeps evaluation init states out of the training data (e.g. record on 20-49,
evaluate on 0-19).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wvla_gym.data.hdf5 import (
    ROTATED_ATTR,
    Episode,
    _h5py,
    atomic_write_hdf5,
    demo_names,
    read_demo,
    write_demo,
    write_file_attrs,
)
from wvla_gym.protocol import NUM_INIT_STATES, SUITE_NUM_TASKS, validate_suite_task

NOOP_THRESHOLD = 1e-4
MANIFEST_NAME = "manifest.json"
ENV_ID = "WorldVLA-LIBERO-v0"


class Policy(Protocol):
    def reset(self) -> None: ...

    def act(self, obs: Any) -> np.ndarray: ...


#: ``policy_factory(env, seed, perturbed)`` -> a policy for this env. ``perturbed`` asks for a diverse
#: (e.g. noisy) variant seeded by ``seed``; an unperturbed policy must be deterministic.
PolicyFactory = Callable[[Any, int, bool], Policy]


def noop_mask(actions: np.ndarray, threshold: float = NOOP_THRESHOLD) -> np.ndarray:
    """WorldVLA's no-op filter: True for actions to keep.

    An action is a no-op when ‖a[:6]‖₂ < ``threshold`` and its gripper equals the gripper of the previous
    *kept* action; the very first action is judged by the norm test alone.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 7:
        raise ValueError(f"actions must have shape (T, 7); got {a.shape}")
    keep = np.zeros(len(a), dtype=bool)
    prev_gripper: float | None = None
    for i, act in enumerate(a):
        small = float(np.linalg.norm(act[:6])) < threshold
        noop = small if prev_gripper is None else (small and act[6] == prev_gripper)
        if not noop:
            keep[i] = True
            prev_gripper = float(act[6])
    return keep


def _quat_xyzw_to_axis_angle(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64).copy()
    w = float(np.clip(q[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if den < 1e-12:
        return np.zeros(3)
    return q[:3] * 2.0 * np.arccos(w) / den


@dataclass
class EpisodeResult:
    success: bool
    steps: int
    episode: Episode


def rollout(env: Any, policy: Policy, *, seed: int, init_state_id: int) -> EpisodeResult:
    """Run one episode and record observations (taken before each action), states and actions."""
    u = env.unwrapped
    obs, info = env.reset(seed=seed, options={"init_state_id": init_state_id})
    policy.reset()
    rec: dict[str, list] = {k: [] for k in ("a", "s", "rs", "img", "wrist", "ee", "grip", "joint")}
    success = False
    while True:
        raw = u.raw_observation
        rec["s"].append(np.asarray(u.get_sim_state(), dtype=np.float64))
        rec["rs"].append(np.concatenate([raw["robot0_gripper_qpos"], raw["robot0_eef_pos"], raw["robot0_eef_quat"]]))
        rec["ee"].append(np.concatenate([raw["robot0_eef_pos"], _quat_xyzw_to_axis_angle(raw["robot0_eef_quat"])]))
        rec["grip"].append(np.asarray(raw["robot0_gripper_qpos"], dtype=np.float64))
        rec["joint"].append(np.asarray(raw["robot0_joint_pos"], dtype=np.float64))
        rec["img"].append(obs["image"])
        if "wrist_image" in obs:
            rec["wrist"].append(obs["wrist_image"])
        a = np.asarray(policy.act(obs), dtype=np.float32)
        rec["a"].append(a.astype(np.float64))
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            success = bool(info.get("is_success", False))
            break
    ep = Episode(
        actions=np.stack(rec["a"]),
        states=np.stack(rec["s"]),
        robot_states=np.stack(rec["rs"]),
        agentview_rgb=np.stack(rec["img"]),
        eye_in_hand_rgb=np.stack(rec["wrist"]) if rec["wrist"] else None,
        ee_states=np.stack(rec["ee"]),
        gripper_states=np.stack(rec["grip"]),
        joint_states=np.stack(rec["joint"]),
        attrs={"init_state_id": int(init_state_id), "seed": int(seed)},
    )
    return EpisodeResult(success, len(ep), ep)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _slot_seed(base_seed: int, task_id: int, slot: int, attempt: int) -> int:
    # Distinct, stable seeds per (task, slot, attempt): resuming reproduces the same episodes.
    return int(base_seed) * 1_000_003 + task_id * 100_000 + slot * 100 + attempt


@dataclass
class RecordConfig:
    suite: str
    tasks: Sequence[int]
    episodes_per_task: int
    resolution: int
    out: Path
    max_attempts: int = 3
    seed: int = 0
    wrist: bool = True
    noop_filter: bool = True
    compression: str | None = "gzip"
    first_init_state: int = 0  # slot i starts from fixed init state (first_init_state + i) % n_init
    policy_info: dict[str, Any] | None = None  # reported in the manifest (e.g. the expert's name and noise)


def _validate(cfg: RecordConfig) -> None:
    if cfg.suite not in SUITE_NUM_TASKS:
        raise ValueError(f"suite={cfg.suite!r}; expected one of {sorted(SUITE_NUM_TASKS)}")
    for t in cfg.tasks:
        validate_suite_task(cfg.suite, t)
    if isinstance(cfg.episodes_per_task, bool) or not isinstance(cfg.episodes_per_task, int) or cfg.episodes_per_task < 1:
        raise ValueError(f"episodes_per_task={cfg.episodes_per_task!r}; expected an int >= 1")
    if not isinstance(cfg.max_attempts, int) or cfg.max_attempts < 1:
        raise ValueError(f"max_attempts={cfg.max_attempts!r}; expected an int >= 1")
    if isinstance(cfg.resolution, bool) or not isinstance(cfg.resolution, int) or cfg.resolution < 16:
        raise ValueError(f"resolution={cfg.resolution!r}; expected an int >= 16")
    if isinstance(cfg.first_init_state, bool) or not isinstance(cfg.first_init_state, int) or not (
        0 <= cfg.first_init_state < NUM_INIT_STATES
    ):
        raise ValueError(f"first_init_state={cfg.first_init_state!r}; expected an int in [0, {NUM_INIT_STATES})")


def parse_tasks(spec: str | Iterable[int], suite: str) -> list[int]:
    """``"all"``, ``"0,3,5"``, ``"0-4"`` or a list of ints -> sorted task ids of ``suite``."""
    if suite not in SUITE_NUM_TASKS:
        raise ValueError(f"suite={suite!r}; expected one of {sorted(SUITE_NUM_TASKS)}")
    n = SUITE_NUM_TASKS[suite]
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "all":
            return list(range(n))
        ids: list[int] = []
        try:
            for part in s.split(","):
                if "-" in part:
                    lo, hi = part.split("-")
                    ids.extend(range(int(lo), int(hi) + 1))
                elif part:
                    ids.append(int(part))
        except ValueError as e:
            raise ValueError(f"tasks={spec!r}; expected 'all', a comma list like '0,3,5' or a range like '0-4'") from e
    else:
        ids = [int(t) for t in spec]
    for t in ids:
        validate_suite_task(suite, t)
    return sorted(set(ids))


class Recorder:
    """Records ``episodes_per_task`` successful episodes per task (see the module docstring).

    Args:
        config: what to record and where.
        policy_factory: ``policy_factory(env, seed, perturbed) -> policy`` with ``reset()``/``act(obs)``.
        make_env: optional ``make_env(suite, task_id, resolution, wrist) -> env`` (defaults to ``gym.make``).
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        config: RecordConfig,
        policy_factory: PolicyFactory,
        *,
        make_env: Callable[..., Any] | None = None,
        progress: bool = True,
    ) -> None:
        _validate(config)
        if not callable(policy_factory):
            raise ValueError("policy_factory must be callable as policy_factory(env, seed, perturbed)")
        self.cfg = config
        self.cfg.out = Path(config.out)
        self.policy_factory = policy_factory
        self.make_env = make_env or self._gym_make
        self.progress = progress

    @staticmethod
    def _gym_make(suite: str, task_id: int, resolution: int, wrist: bool) -> Any:
        import gymnasium as gym

        import wvla_gym  # noqa: F401  (registers the env id)

        return gym.make(ENV_ID, task_suite=suite, task_id=task_id, resolution=resolution, wrist=wrist)

    # ------------------------------------------------------------------ paths
    @property
    def manifest_path(self) -> Path:
        return self.cfg.out / MANIFEST_NAME

    def _staging(self, task_name: str) -> Path:
        return self.cfg.out / ".staging" / task_name

    def final_path(self, task_name: str) -> Path:
        return self.cfg.out / f"{task_name}_demo.hdf5"

    # ------------------------------------------------------------------ manifest
    def _load_manifest(self) -> dict[str, Any]:
        if self.manifest_path.exists():
            m = json.loads(self.manifest_path.read_text())
            for key in ("suite", "resolution", "episodes_per_task", "seed", "first_init_state"):
                if m.get(key, 0 if key == "first_init_state" else None) != getattr(self.cfg, key):
                    raise ValueError(
                        f"{self.manifest_path} was recorded with {key}={m.get(key)!r}, this run asks for "
                        f"{getattr(self.cfg, key)!r}; use another --out or the same settings to resume"
                    )
            return m
        from wvla_gym import __version__
        from wvla_gym.utils.libero_setup import stack_versions

        return {
            "suite": self.cfg.suite,
            "resolution": self.cfg.resolution,
            "episodes_per_task": self.cfg.episodes_per_task,
            "max_attempts": self.cfg.max_attempts,
            "seed": self.cfg.seed,
            "first_init_state": self.cfg.first_init_state,
            "wrist": self.cfg.wrist,
            "noop_filter": self.cfg.noop_filter,
            "policy": self.cfg.policy_info or {},
            "images_rotated_180": True,
            "wvla_gym_version": __version__,
            "versions": stack_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "tasks": {},
        }

    @staticmethod
    def _task_summary(slots: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """Counts and expert success rates from per-slot attempt logs."""
        first = [s["attempts"][0] for s in slots.values() if s["attempts"]]
        first = [a for a in first if not a["perturbed"]]
        every = [a for s in slots.values() for a in s["attempts"]]
        ok_first = sum(a["success"] for a in first)
        ok_all = sum(a["success"] for a in every)
        return {
            "episodes_kept": sum(1 for s in slots.values() if s["kept"]),
            "slots_failed": sorted(i for i, s in slots.items() if not s["kept"]),
            "expert_success_fixed_init": {
                "successes": ok_first, "trials": len(first), "rate": ok_first / len(first) if first else None,
                "init_state_ids": sorted(a["init_state_id"] for a in first),
            },
            "expert_success_all_attempts": {
                "successes": ok_all, "trials": len(every), "rate": ok_all / len(every) if every else None,
            },
            "steps_kept": sum(s.get("steps_kept", 0) for s in slots.values()),
            "noop_dropped": sum(s.get("noop_dropped", 0) for s in slots.values()),
        }

    # ------------------------------------------------------------------ staging
    @staticmethod
    def _read_slots(staging: Path) -> dict[int, dict[str, Any]]:
        """Completed slots found on disk (episode files and failure markers)."""
        h5py = _h5py()
        slots: dict[int, dict[str, Any]] = {}
        if not staging.exists():
            return slots
        for p in staging.iterdir():
            if p.name.startswith("."):
                continue  # a temporary file left by a kill
            if p.name.endswith(".failed.json"):
                slots[int(p.name[3:8])] = json.loads(p.read_text())
            elif p.suffix == ".hdf5":
                with h5py.File(p, "r") as f:
                    slots[int(p.name[3:8])] = json.loads(f["data"].attrs["slot_info"])
        return slots

    def _assemble(self, task_name: str, staging: Path, file_attrs: dict[str, Any]) -> int:
        h5py = _h5py()
        files = sorted(p for p in staging.glob("ep_*.hdf5") if not p.name.startswith("."))

        def fill(f):
            data = f.create_group("data")
            total = 0
            for i, p in enumerate(files):
                with h5py.File(p, "r") as src:
                    src.copy(src["data"]["demo_0"], data, name=f"demo_{i}")
                    total += int(src["data"]["demo_0"].attrs["num_samples"])
            write_file_attrs(data, {**file_attrs, "num_demos": len(files), "total": total})

        atomic_write_hdf5(self.final_path(task_name), fill)
        return len(files)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        """Record all tasks (resuming whatever is already on disk); returns the manifest."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        manifest = self._load_manifest()
        total = len(cfg.tasks) * cfg.episodes_per_task
        bar = tqdm(total=total, desc=f"record {cfg.suite}", unit="ep", disable=not self.progress)
        try:
            for task_id in cfg.tasks:
                self._run_task(task_id, manifest, bar)
        finally:
            bar.close()
        return manifest

    def _run_task(self, task_id: int, manifest: dict[str, Any], bar: Any) -> None:
        cfg = self.cfg
        entry = manifest["tasks"].get(str(task_id))
        if entry and entry.get("complete") and Path(cfg.out / entry["file"]).exists():
            # A kill between the manifest update and the clean-up can leave the staging folder behind.
            shutil.rmtree(self._staging(entry["task_name"]), ignore_errors=True)
            bar.update(cfg.episodes_per_task)
            return
        env = self.make_env(cfg.suite, task_id, cfg.resolution, cfg.wrist)
        try:
            u = env.unwrapped
            task_name, instruction = u.task_name, u.task_description
            staging = self._staging(task_name)
            staging.mkdir(parents=True, exist_ok=True)
            n_init = len(u.init_states) if hasattr(u, "init_states") else NUM_INIT_STATES
            slots = self._read_slots(staging)
            bar.update(len([i for i in slots if i < cfg.episodes_per_task]))
            file_attrs = {
                "language_instruction": instruction,
                "task_name": task_name,
                "task_suite": cfg.suite,
                "task_id": task_id,
                "problem_info": {"language_instruction": instruction, "problem_name": task_name},
                "env_name": ENV_ID,
                "resolution": cfg.resolution,
                ROTATED_ATTR: True,
                "noop_filtered": cfg.noop_filter,
            }
            for slot in range(cfg.episodes_per_task):
                if slot in slots:
                    continue
                slots[slot] = self._record_slot(env, task_id, slot, n_init, staging)
                bar.update(1)
                self._write_manifest(manifest, task_id, task_name, instruction, slots, complete=False)
            self._assemble(task_name, staging, file_attrs)
            self._write_manifest(manifest, task_id, task_name, instruction, slots, complete=True)
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.parent.rmdir()  # only succeeds once every task is assembled
        finally:
            env.close()

    def _write_manifest(self, manifest, task_id, task_name, instruction, slots, *, complete: bool) -> None:
        manifest["tasks"][str(task_id)] = {
            "task_name": task_name,
            "instruction": instruction,
            "file": self.final_path(task_name).name,
            "complete": complete,
            **self._task_summary(slots),
        }
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _atomic_json(self.manifest_path, manifest)

    def _record_slot(self, env: Any, task_id: int, slot: int, n_init: int, staging: Path) -> dict[str, Any]:
        cfg = self.cfg
        init_id = (cfg.first_init_state + slot) % n_init
        attempts: list[dict[str, Any]] = []
        for attempt in range(cfg.max_attempts):
            perturbed = cfg.first_init_state + slot >= n_init or attempt > 0
            seed = _slot_seed(cfg.seed, task_id, slot, attempt)
            policy = self.policy_factory(env, seed, perturbed)
            res = rollout(env, policy, seed=seed, init_state_id=init_id)
            attempts.append({"seed": seed, "perturbed": perturbed, "init_state_id": init_id,
                             "success": res.success, "steps": res.steps})
            if not res.success:
                continue
            ep = res.episode
            n_raw = len(ep)
            if cfg.noop_filter:
                ep = ep.subset(noop_mask(ep.actions))
            info = {"slot": slot, "kept": True, "attempts": attempts, "steps_raw": n_raw,
                    "steps_kept": len(ep), "noop_dropped": n_raw - len(ep)}
            ep.attrs.update({"slot": slot, "perturbed": perturbed, "steps_raw": n_raw})

            def fill(f, ep=ep, info=info):
                data = f.create_group("data")
                data.attrs["slot_info"] = json.dumps(info)
                write_demo(data.create_group("demo_0"), ep, success=True, compression=cfg.compression)

            atomic_write_hdf5(staging / f"ep_{slot:05d}.hdf5", fill)
            return info
        info = {"slot": slot, "kept": False, "attempts": attempts}
        _atomic_json(staging / f"ep_{slot:05d}.failed.json", info)
        return info


def record(
    suite: str,
    tasks: str | Iterable[int],
    episodes_per_task: int,
    resolution: int,
    out: str | os.PathLike,
    policy_factory: PolicyFactory,
    **kwargs: Any,
) -> dict[str, Any]:
    """Functional shortcut for :class:`Recorder`; returns the manifest."""
    progress = kwargs.pop("progress", True)
    make_env = kwargs.pop("make_env", None)
    cfg = RecordConfig(suite, parse_tasks(tasks, suite), episodes_per_task, resolution, Path(out), **kwargs)
    return Recorder(cfg, policy_factory, make_env=make_env, progress=progress).run()


# ---------------------------------------------------------------------- replay
def replay_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    resolution: int,
    suite: str,
    task_id: int,
    wrist: bool = True,
    make_env: Callable[..., Any] | None = None,
    progress: bool = True,
) -> int:
    """Re-render a demo file's images from its ``states`` at another resolution (atomic; skips if done).

    Works on our files and on official LIBERO files (whose images are upside down: the output is rotated
    like the env's observations and marked so). Returns the number of demos written.
    """
    from tqdm.auto import tqdm

    h5py = _h5py()
    dst = Path(dst)
    if dst.exists():
        with h5py.File(dst, "r") as f:
            return len(demo_names(f["data"]))
    env = (make_env or Recorder._gym_make)(suite, task_id, resolution, wrist)
    try:
        u = env.unwrapped
        env.reset(seed=0, options={"init_state_id": 0})  # builds the simulator
        with h5py.File(src, "r") as fsrc:
            names = demo_names(fsrc["data"])
            src_attrs = {k: fsrc["data"].attrs[k] for k in fsrc["data"].attrs}

            def fill(f):
                data = f.create_group("data")
                for n in tqdm(names, desc=f"replay {Path(src).name}", unit="demo", disable=not progress):
                    ep = read_demo(fsrc["data"][n])
                    imgs, wrists = [], []
                    for s in ep.states:
                        obs = u.set_sim_state(s)
                        imgs.append(obs["image"])
                        if "wrist_image" in obs:
                            wrists.append(obs["wrist_image"])
                    ep.agentview_rgb = np.stack(imgs)
                    ep.eye_in_hand_rgb = np.stack(wrists) if wrists else None
                    write_demo(data.create_group(n), ep, success=bool(np.asarray(fsrc["data"][n]["dones"])[-1]))
                write_file_attrs(data, {k: v for k, v in src_attrs.items()})
                data.attrs["resolution"] = resolution
                data.attrs[ROTATED_ATTR] = True
                data.attrs["replayed_from"] = str(Path(src).name)

            atomic_write_hdf5(dst, fill)
        return len(names)
    finally:
        env.close()
