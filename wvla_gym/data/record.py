"""Record policy rollouts in real LIBERO as LIBERO-layout HDF5 files, resumably.

The recorder never imports ``agents`` or ``envs``: it builds envs through ``gym.make("WorldVLA-LIBERO-v0")``
(registered by ``wvla_gym``) and takes a ``policy_factory`` callable. Each episode is THE episode loop
(:func:`wvla_gym.evaluation.episode.play_episode`) watched by :class:`wvla_gym.data.capture.DemoCapture`;
re-rendering files at another resolution is :mod:`wvla_gym.data.replay`.

Resumability: every episode is first written atomically to ``<out>/.staging/<task>/ep_<slot>.hdf5`` (or a
``ep_<slot>.failed.json`` marker when all attempts fail and failures are not kept), so a kill (even SIGKILL)
loses at most the episode in progress and can never leave a torn or duplicated one. When all slots of a task
exist they are assembled (atomically) into ``<out>/<task_name>_demo.hdf5`` and the staging folder is removed.
``manifest.json`` is rewritten atomically after every episode; it is a report derived from the files, which
are the source of truth.

Run identity (:func:`wvla_gym.utils.run_identity.claim_run`, ``<out>/run_identity.json``): every setting that
changes what an episode slot contains -- suite, resolution, wrist camera, no-op filter, seed, max attempts,
keep-failures, behaviours and noise levels, policy (name, noise, checkpoint path and content digest),
placement mode, perturbation radius, first init state, and the mujoco / robosuite / LIBERO versions -- must
match to resume; a mismatch raises naming the setting, and ``restart=True`` (``--restart``) deletes the
recording and starts over. Two settings are deliberately *not* part of the identity: the task list (each
task is its own file: adding tasks to a folder is allowed) and ``episodes_per_task`` (slot ``i`` does not
depend on the count: raising it extends finished tasks, whose files are unpacked back into staging and
re-assembled with the new slots appended; lowering it leaves finished tasks as they are). A folder written
by the recorder before identities existed is adopted when its manifest matches this run.

Episode slots and starts: slot ``i`` starts from the fixed init state ``first_init_state + i`` while that
exists (< 50); slots past the last fixed init state start from a fresh placement sampled by LIBERO's own
placement sampler (seeded by the slot), so they never wrap onto init states below ``first_init_state``
(e.g. record on 20-49 + fresh placements, evaluate on 0-19). ``placement="sampled"`` uses fresh placements
for every slot; ``perturb_radius > 0`` additionally shifts every movable object by up to that many metres
(``LiberoEnv`` reset options, see ``envs/placement.py``).

Behaviours (world-model data; slot ``i`` uses ``behaviours[i % len(behaviours)]``) are defined in
:mod:`wvla_gym.data.behaviours`. Each demo records its behaviour and plan (``behaviour``, ``noise_level``, ``plan`` with ``cut_step`` / ``tail`` / ``burst_start`` ...,
``segments``: ``[kind, start, end]`` in stored-step indices), its start (``init_state_id``, -1 for none;
``placement`` json; ``seed``), and ``success`` (LIBERO's flag; ``rewards``/``dones`` end in 1 only on
success). Without ``keep_failures`` only successes are kept (up to ``max_attempts`` tries per slot); with it,
each slot is one rollout, kept either way.

The no-op filter (:mod:`wvla_gym.data.noop`) drops policy no-ops only: steps that a deliberate ``zero`` segment
produced are kept.
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
from typing import Any

import numpy as np

from wvla_gym.data.behaviours import BehaviourPolicy, expand_behaviours
from wvla_gym.data.capture import ENV_ID, gym_make_env, rollout
from wvla_gym.data.hdf5 import (
    ROTATED_ATTR,
    atomic_write_hdf5,
    demo_names,
    require_h5py,
    write_demo,
    write_file_attrs,
)
from wvla_gym.data.noop import noop_mask
from wvla_gym.policy import Policy
from wvla_gym.protocol import (
    MAX_PERTURB_RADIUS,
    NUM_INIT_STATES,
    SUITE_NUM_TASKS,
    parse_tasks,
    validate_suite_task,
)
from wvla_gym.utils.io import atomic_write_json, read_json

MANIFEST_NAME = "manifest.json"
RUN_KIND = "record"

PLACEMENTS = ("fixed", "sampled")


#: ``policy_factory(env, seed, perturbed)`` -> a policy for this env. ``perturbed`` asks for a diverse
#: (e.g. noisy) variant seeded by ``seed``; an unperturbed policy must be deterministic.
PolicyFactory = Callable[[Any, int, bool], Policy]


def _segments(sources: Sequence[str]) -> list[list[Any]]:
    """Run-length ``[kind, start, end)`` of per-step sources."""
    out: list[list[Any]] = []
    for i, s in enumerate(sources):
        if out and out[-1][0] == s:
            out[-1][2] = i + 1
        else:
            out.append([s, i, i + 1])
    return out


def _slot_seed(base_seed: int, task_id: int, slot: int, attempt: int) -> int:
    # Distinct, stable seeds per (task, slot, attempt): resuming reproduces the same episodes.
    return int(base_seed) * 1_000_003 + task_id * 100_000 + slot * 100 + attempt


def _stack_versions() -> dict[str, Any]:
    """The simulator versions that change recorded episodes (mujoco, robosuite, LIBERO)."""
    from wvla_gym.utils.libero_setup import stack_versions

    v = stack_versions()
    return {k: v.get(k) for k in sorted(v) if k in ("mujoco", "robosuite") or "libero" in k}


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
    first_init_state: int = 0  # slot i starts from fixed init state first_init_state + i (fresh placements after)
    policy_info: dict[str, Any] | None = None  # identity + manifest (name, noise, checkpoint and its digest...)
    keep_failures: bool = False
    behaviours: Sequence[str] = ("expert",)
    noise_levels: Sequence[float] = ()
    placement: str = "fixed"
    perturb_radius: float = 0.0
    restart: bool = False


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
    if cfg.placement not in PLACEMENTS:
        raise ValueError(f"placement={cfg.placement!r}; expected one of {list(PLACEMENTS)}")
    r = cfg.perturb_radius
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not np.isfinite(r) or not 0 <= r <= MAX_PERTURB_RADIUS:
        raise ValueError(f"perturb_radius={r!r}; expected a float in [0, {MAX_PERTURB_RADIUS}] (metres)")
    expand_behaviours(cfg.behaviours, cfg.noise_levels)


class Recorder:
    """Records ``episodes_per_task`` episodes per task (see the module docstring).

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
        self.behaviours = expand_behaviours(config.behaviours, config.noise_levels)
        self.policy_factory = policy_factory
        self.make_env = make_env or gym_make_env
        self.progress = progress

    # ------------------------------------------------------------------ paths
    @property
    def manifest_path(self) -> Path:
        return self.cfg.out / MANIFEST_NAME

    def _staging(self, task_name: str) -> Path:
        return self.cfg.out / ".staging" / task_name

    def final_path(self, task_name: str) -> Path:
        return self.cfg.out / f"{task_name}_demo.hdf5"

    # ------------------------------------------------------------------ identity + manifest
    def identity(self) -> dict[str, Any]:
        """Every setting that changes a slot's content (not the task list, not the episode count)."""
        c = self.cfg
        return {
            "suite": c.suite,
            "resolution": c.resolution,
            "wrist": c.wrist,
            "noop_filter": c.noop_filter,
            "seed": c.seed,
            "max_attempts": c.max_attempts,
            "keep_failures": c.keep_failures,
            "behaviours": [b.key for b in self.behaviours],
            "placement": c.placement,
            "perturb_radius": float(c.perturb_radius),
            "first_init_state": c.first_init_state,
            "policy": c.policy_info or {},
            "versions": _stack_versions(),
        }

    def _legacy_compatible(self) -> bool:
        """A folder from the recorder before run identities: adopt it when its manifest matches this run."""
        if not self.manifest_path.exists():
            return False
        m = read_json(self.manifest_path)
        c = self.cfg
        same = all(m.get(k) == getattr(c, k) for k in ("suite", "resolution", "seed", "wrist", "noop_filter", "max_attempts"))
        same = same and m.get("first_init_state", 0) == c.first_init_state and m.get("policy", {}) == (c.policy_info or {})
        versions = m.get("versions", {})
        same = same and all(versions.get(k) == v for k, v in _stack_versions().items())
        defaults = not c.keep_failures and [b.key for b in self.behaviours] == ["expert"] and c.placement == "fixed"
        return bool(same and defaults and c.perturb_radius == 0)

    def _has_results(self, out: Path) -> bool:
        if self._legacy_compatible():
            return False
        return self.manifest_path.exists() or (out / ".staging").exists() or any(out.glob("*_demo.hdf5"))

    @staticmethod
    def _clear(out: Path) -> None:
        """``--restart``: delete what the recorder wrote (nothing else in the folder)."""
        shutil.rmtree(out / ".staging", ignore_errors=True)
        for p in [out / MANIFEST_NAME, *out.glob("*_demo.hdf5")]:
            p.unlink(missing_ok=True)

    def _claim(self) -> None:
        from wvla_gym.utils.run_identity import claim_run

        claim_run(self.cfg.out, RUN_KIND, self.identity(), restart=self.cfg.restart, clear=self._clear,
                  has_results=self._has_results)

    def _load_manifest(self) -> dict[str, Any]:
        from wvla_gym import __version__
        from wvla_gym.utils.libero_setup import stack_versions

        m: dict[str, Any] = {"tasks": {}}
        if self.manifest_path.exists():
            m = read_json(self.manifest_path)
            # Tasks finished before episodes_per_task was a per-task field carry the folder's old count.
            for entry in m.get("tasks", {}).values():
                entry.setdefault("episodes_per_task", m.get("episodes_per_task"))
        c = self.cfg
        m.update({
            "suite": c.suite,
            "resolution": c.resolution,
            "episodes_per_task": c.episodes_per_task,
            "max_attempts": c.max_attempts,
            "seed": c.seed,
            "first_init_state": c.first_init_state,
            "wrist": c.wrist,
            "noop_filter": c.noop_filter,
            "policy": c.policy_info or {},
            "keep_failures": c.keep_failures,
            "behaviours": [b.key for b in self.behaviours],
            "placement": c.placement,
            "perturb_radius": float(c.perturb_radius),
            "images_rotated_180": True,
            "wvla_gym_version": __version__,
            "versions": stack_versions(),
        })
        m.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        return m

    @staticmethod
    def _task_summary(slots: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """Counts, counts by behaviour and success, and expert success rates from per-slot attempt logs."""
        first = [s["attempts"][0] for s in slots.values() if s.get("attempts")]
        first = [a for a in first if not a["perturbed"] and a.get("behaviour", "expert") == "expert"
                 and a.get("placement_mode", "fixed") == "fixed" and a["init_state_id"] >= 0]
        every = [a for s in slots.values() for a in s.get("attempts", [])]
        ok_first = sum(a["success"] for a in first)
        ok_all = sum(a["success"] for a in every)
        by: dict[str, dict[str, int]] = {}
        for s in slots.values():
            if s.get("kept"):
                b = by.setdefault(s.get("behaviour", "expert"), {"episodes": 0, "successes": 0, "failures": 0})
                b["episodes"] += 1
                b["successes" if s.get("success", True) else "failures"] += 1
        return {
            "episodes_kept": sum(1 for s in slots.values() if s["kept"]),
            "episodes_failed_kept": sum(1 for s in slots.values() if s["kept"] and not s.get("success", True)),
            "slots_failed": sorted(i for i, s in slots.items() if not s["kept"]),
            "by_behaviour": by,
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
        h5py = require_h5py()
        slots: dict[int, dict[str, Any]] = {}
        if not staging.exists():
            return slots
        for p in staging.iterdir():
            if p.name.startswith("."):
                continue  # a temporary file left by a kill
            if p.name.endswith(".failed.json"):
                slots[int(p.name[3:8])] = read_json(p)
            elif p.suffix == ".hdf5":
                with h5py.File(p, "r") as f:
                    slots[int(p.name[3:8])] = json.loads(f["data"].attrs["slot_info"])
        return slots

    def _assemble(self, task_name: str, staging: Path, file_attrs: dict[str, Any],
                  slots: dict[int, dict[str, Any]], *, bddl_file_name: str | None = None) -> int:
        h5py = require_h5py()
        files = sorted(p for p in staging.glob("ep_*.hdf5") if not p.name.startswith("."))
        failed = [slots[i] for i in sorted(slots) if not slots[i]["kept"]]

        def fill(f):
            data = f.create_group("data")
            total = 0
            for i, p in enumerate(files):
                with h5py.File(p, "r") as src:
                    src.copy(src["data"]["demo_0"], data, name=f"demo_{i}")
                    data[f"demo_{i}"].attrs["slot_info"] = src["data"].attrs["slot_info"]
                    total += int(src["data"]["demo_0"].attrs["num_samples"])
            write_file_attrs(data, {**file_attrs, "num_demos": len(files), "total": total,
                                    "failed_slots": json.dumps(failed)}, bddl_file_name=bddl_file_name)

        atomic_write_hdf5(self.final_path(task_name), fill)
        return len(files)

    def _unpack(self, final: Path, staging: Path, entry: dict[str, Any]) -> None:
        """Extend a finished task: put its episodes (and failure markers) back into staging, atomically each."""
        h5py = require_h5py()
        staging.mkdir(parents=True, exist_ok=True)
        with h5py.File(final, "r") as f:
            data = f["data"]
            for n in demo_names(data):
                g = data[n]
                if "slot_info" in g.attrs:
                    info = json.loads(g.attrs["slot_info"])
                else:  # written before slot_info was stored per demo
                    slot = int(g.attrs["slot"])
                    info = {"slot": slot, "kept": True, "attempts": [], "steps_kept": int(g.attrs["num_samples"])}
                dst = staging / f"ep_{int(info['slot']):05d}.hdf5"
                if dst.exists():
                    continue

                def fill(out, g=g, info=info):
                    d = out.create_group("data")
                    d.attrs["slot_info"] = json.dumps(info)
                    f.copy(g, d, name="demo_0")

                atomic_write_hdf5(dst, fill)
            failed = json.loads(data.attrs["failed_slots"]) if "failed_slots" in data.attrs else [
                {"slot": int(i), "kept": False, "attempts": []} for i in entry.get("slots_failed", [])
            ]
        for info in failed:
            marker = staging / f"ep_{int(info['slot']):05d}.failed.json"
            if not marker.exists():
                atomic_write_json(marker, info, newline=False, indent=2, sort_keys=True)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        """Record all tasks (resuming whatever is already on disk); returns the manifest."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        self._claim()
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
            staging = self._staging(entry["task_name"])
            if int(entry.get("episodes_per_task") or 0) >= cfg.episodes_per_task:
                # A kill between the manifest update and the clean-up can leave the staging folder behind.
                shutil.rmtree(staging, ignore_errors=True)
                bar.update(cfg.episodes_per_task)
                return
            self._unpack(cfg.out / entry["file"], staging, entry)
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
                "keep_failures": cfg.keep_failures,
                "behaviours": [b.key for b in self.behaviours],
            }
            for slot in range(cfg.episodes_per_task):
                if slot in slots:
                    continue
                slots[slot] = self._record_slot(env, task_id, slot, n_init, staging)
                bar.update(1)
                self._write_manifest(manifest, task_id, task_name, instruction, slots, complete=False)
            # LIBERO's own readers (get_dataset_info) need the task's BDDL file name and content.
            bddl = getattr(u, "bddl_file", None)
            self._assemble(task_name, staging, file_attrs, slots, bddl_file_name=None if bddl is None else str(bddl))
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
            "episodes_per_task": max(len(slots), self.cfg.episodes_per_task) if complete else None,
            **self._task_summary(slots),
        }
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(self.manifest_path, manifest, newline=False, indent=2, sort_keys=True)

    def slot_start(self, slot: int, n_init: int) -> dict[str, Any]:
        """The reset options of a slot: a fixed init state while one is left, else a fresh placement."""
        cfg = self.cfg
        k = cfg.first_init_state + slot
        opts: dict[str, Any] = (
            {"init_state_id": k} if cfg.placement == "fixed" and k < n_init else {"placement": "sampled"}
        )
        if cfg.perturb_radius > 0:
            opts["perturb_radius"] = float(cfg.perturb_radius)
        return opts

    def _record_slot(self, env: Any, task_id: int, slot: int, n_init: int, staging: Path) -> dict[str, Any]:
        cfg = self.cfg
        behaviour = self.behaviours[slot % len(self.behaviours)]
        options = self.slot_start(slot, n_init)
        init_id = int(options.get("init_state_id", -1))
        mode = "sampled" if options.get("placement") == "sampled" else "fixed"
        attempts: list[dict[str, Any]] = []
        for attempt in range(cfg.max_attempts):
            perturbed = attempt > 0 and behaviour.name == "expert"
            seed = _slot_seed(cfg.seed, task_id, slot, attempt)
            base = None if behaviour.name in ("random", "zero") else self.policy_factory(env, seed, perturbed)
            policy = BehaviourPolicy(base, behaviour, seed)
            res = rollout(env, policy, seed=seed, options=dict(options))
            attempts.append({"seed": seed, "perturbed": perturbed, "init_state_id": init_id, "placement_mode": mode,
                             "behaviour": behaviour.key, "success": res.success, "steps": res.steps})
            if not (res.success or cfg.keep_failures):
                continue
            ep = res.episode
            n_raw = len(ep)
            sources = list(res.sources)
            if cfg.noop_filter:
                keep = noop_mask(ep.actions) | (np.asarray(sources) == "zero")
                if keep.any():
                    ep = ep.subset(keep)
                    sources = [s for s, k in zip(sources, keep, strict=True) if k]
            info = {"slot": slot, "kept": True, "success": res.success, "behaviour": behaviour.key,
                    "attempts": attempts, "steps_raw": n_raw, "steps_kept": len(ep), "noop_dropped": n_raw - len(ep)}
            placement = res.info.get("placement") or {"mode": "fixed", "init_state_id": init_id}
            ep.attrs.update({
                "slot": slot, "attempt": attempt, "perturbed": perturbed, "steps_raw": n_raw,
                "success": bool(res.success), "behaviour": behaviour.key, "behaviour_name": behaviour.name,
                "noise_level": float(behaviour.noise), "plan": json.dumps(policy.plan),
                "segments": json.dumps(_segments(sources)), "placement": json.dumps(placement, default=float),
                "placement_mode": mode, "perturb_radius": float(cfg.perturb_radius),
            })

            def fill(f, ep=ep, info=info, success=res.success):
                data = f.create_group("data")
                data.attrs["slot_info"] = json.dumps(info)
                write_demo(data.create_group("demo_0"), ep, success=success, compression=cfg.compression)

            atomic_write_hdf5(staging / f"ep_{slot:05d}.hdf5", fill)
            return info
        info = {"slot": slot, "kept": False, "behaviour": behaviour.key, "attempts": attempts}
        atomic_write_json(staging / f"ep_{slot:05d}.failed.json", info, newline=False, indent=2, sort_keys=True)
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
