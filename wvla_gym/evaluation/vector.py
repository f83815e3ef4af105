"""The ``vector`` backend: protocol episodes on ``gymnasium.vector.AsyncVectorEnv`` workers.

Each worker hosts an :class:`EpisodeSlot`, a small env that owns one real/imagined env at a time and
switches task or kind when the runner hands it a new job through ``reset(options={"jobs": [...]})``
(Gymnasium passes one options dict to every worker, so each slot picks its own entry). Autoreset is
disabled: the runner resets exactly the slots whose episode ended. Exceptions inside a worker are caught
there and reported in ``info`` so one bad episode neither kills the worker nor the other episodes.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

import gymnasium as gym
import numpy as np

from wvla_gym.evaluation.policies import PolicyFactory, check_policy, reset_policy
from wvla_gym.evaluation.runner import (
    EnvCache,
    EpisodeJob,
    EvalConfig,
    _base_record,
)


def _zeros(space: gym.Space) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: _zeros(s) for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Box):
        return np.zeros(space.shape, space.dtype)
    if isinstance(space, gym.spaces.Text):
        return ""
    raise ValueError(f"observation space {space!r} is not supported by the vector backend; use backend='sync'")


class EnvHandle:
    """What a main-process policy factory gets in the vector backend: spaces and task facts, no simulator."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, kind: str, suite: str,
                 task_id: int, task_description: str | None) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.kind = kind
        self.task_suite = suite
        self.task_id = task_id
        self.task_description = task_description

    @property
    def unwrapped(self) -> EnvHandle:
        return self

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"{name!r} is not available: in the vector backend the env lives in a worker process. "
            "Use policy_in_workers=True (policies built inside the workers) or backend='sync'/'ray'."
        )


class EpisodeSlot(gym.Env):
    """One AsyncVectorEnv worker: runs jobs on cached envs; idle slots return zero observations."""

    metadata = {"render_modes": []}

    def __init__(self, slot: int, config: EvalConfig, first_job: EpisodeJob,
                 policy_factory: PolicyFactory | None = None) -> None:
        self.slot = slot
        self.cache = EnvCache(config, policy_factory)
        env, _ = self.cache.get(first_job.kind, first_job.task_id)
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self._zero = _zeros(self.observation_space)
        self._job: EpisodeJob | None = None
        self._obs: Any = None

    def _info(self, **kw: Any) -> dict[str, Any]:
        # Every key in every info, so the vector env batches them into aligned arrays.
        base = {"slot_error": None, "slot_traceback": None, "is_success": False, "task_description": None,
                "init_state_id": -1, "gl_backend": None, "idle": self._job is None}
        base.update(kw)
        return base

    def _fail(self, exc: BaseException):
        kind = self._job.kind if self._job else None
        self._job = None
        if kind is not None:
            self.cache.drop(kind)  # rebuilt on the next job: its state may be corrupt
        return self._info(slot_error=f"{type(exc).__name__}: {exc}", slot_traceback=traceback.format_exc(), idle=False)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        jobs = (options or {}).get("jobs")
        self._job = None if jobs is None else jobs[self.slot]
        if self._job is None:
            return self._zero, self._info()
        job = self._job
        try:
            env, policy = self.cache.get(job.kind, job.task_id)
            if policy is not None:
                reset_policy(policy, job.policy_seed)
            obs, info = env.reset(seed=job.seed, options={"init_state_id": job.init_state_id})
            self._obs = obs
            return obs, self._info(
                task_description=info.get("task_description"),
                init_state_id=int(info.get("init_state_id", job.init_state_id)),
                gl_backend=getattr(env.unwrapped, "gl_backend", None),
            )
        except Exception as exc:
            return self._zero, self._fail(exc)

    def step(self, action):
        if self._job is None:
            return self._zero, 0.0, False, False, self._info()
        try:
            env, policy = self.cache.get(self._job.kind, self._job.task_id)
            if policy is not None:
                action = policy.act(self._obs)
            obs, reward, terminated, truncated, info = env.step(action)
            self._obs = obs
            if terminated or truncated:
                self._job = None
            return obs, float(reward), bool(terminated), bool(truncated), self._info(
                is_success=bool(info.get("is_success", terminated)), idle=False
            )
        except Exception as exc:
            return self._zero, 0.0, False, True, self._fail(exc)

    def close(self) -> None:
        self.cache.close()


def _slot_fn(slot: int, config: EvalConfig, first_job: EpisodeJob, factory: PolicyFactory | None):
    def make() -> EpisodeSlot:
        return EpisodeSlot(slot, config, first_job, factory)

    return make


def _index(batch: Any, i: int) -> Any:
    if isinstance(batch, dict):
        return {k: _index(v, i) for k, v in batch.items()}
    return batch[i]


def run_vector(policy_factory: PolicyFactory, config: EvalConfig, jobs: list[EpisodeJob], sink, step_cap: int) -> None:
    from gymnasium.vector import AsyncVectorEnv
    from gymnasium.vector.vector_env import AutoresetMode

    if not jobs:
        return
    n = min(config.num_envs, len(jobs))
    in_workers = config.policy_in_workers
    fns = [_slot_fn(i, config, jobs[0], policy_factory if in_workers else None) for i in range(n)]
    venv = AsyncVectorEnv(fns, context=config.vector_context, autoreset_mode=AutoresetMode.DISABLED,
                          shared_memory=False)
    queue = list(jobs)
    active: list[dict[str, Any] | None] = [None] * n  # per slot: job, record, frames, policy, t0
    policies: dict[tuple[int, str, int], Any] = {}
    try:
        obs = None

        def assign(mask: np.ndarray) -> None:
            nonlocal obs
            todo: list[EpisodeJob | None] = [None] * n
            for i in np.flatnonzero(mask):
                todo[i] = queue.pop(0) if queue else None
            new_obs, infos = venv.reset(options={"reset_mask": mask, "jobs": todo})
            obs = new_obs if obs is None else _merge(obs, new_obs, mask)
            for i in np.flatnonzero(mask):
                job = todo[i]
                if job is None:
                    active[i] = None
                    continue
                rec = _base_record(job, config.policy_name)
                st = {"job": job, "rec": rec, "frames": [], "t0": time.perf_counter(), "policy": None}
                active[i] = st
                if infos["slot_error"][i] is not None:
                    _finish(st, infos, i, error=True)
                    continue
                rec["task_description"] = infos["task_description"][i]
                if infos["gl_backend"][i] is not None:
                    rec["gl_backend"] = infos["gl_backend"][i]
                if config.video:
                    st["frames"].append(np.asarray(_index(obs, i)["image"]))
                if not in_workers:
                    try:
                        key = (i, job.kind, job.task_id)
                        if key not in policies:
                            handle = EnvHandle(venv.single_observation_space, venv.single_action_space, job.kind,
                                               job.suite, job.task_id, rec["task_description"])
                            policies[key] = policy_factory(handle)
                            check_policy(policies[key])
                        st["policy"] = policies[key]
                        reset_policy(st["policy"], job.policy_seed)
                    except Exception as exc:
                        _finish(st, None, i, exc=exc)

        def _finish(st: dict[str, Any], infos: Any, i: int, error: bool = False, exc: BaseException | None = None):
            rec = st["rec"]
            if exc is not None:
                rec["error"], rec["traceback"] = f"{type(exc).__name__}: {exc}", traceback.format_exc()
            elif error:
                rec["error"], rec["traceback"] = infos["slot_error"][i], infos["slot_traceback"][i]
            if rec["error"] is not None:
                rec["success"] = False
            rec["wall_time_s"] = round(time.perf_counter() - st["t0"], 4)
            sink(rec, st["frames"])
            st["done"] = True

        assign(np.ones(n, dtype=bool))
        while True:
            # Slots whose episode already ended (error at reset/policy) get their next job first.
            ended = np.array([a is not None and a.get("done", False) for a in active])
            if ended.any() and queue:
                assign(ended)
                continue
            for i, a in enumerate(active):
                if a is not None and a.get("done"):
                    active[i] = None
            if all(a is None for a in active):
                break
            actions = np.zeros((n, *venv.single_action_space.shape), dtype=np.float32)
            for i, a in enumerate(active):
                if a is None or in_workers:
                    continue
                try:
                    actions[i] = np.asarray(a["policy"].act(_index(obs, i)), dtype=np.float32)
                except Exception as exc:
                    _finish(a, None, i, exc=exc)
                    # Its env is mid-episode; the next reset of this slot starts a fresh one.
            obs, _, term, trunc, infos = venv.step(actions)
            for i, a in enumerate(active):
                if a is None or a.get("done"):
                    continue
                if infos["slot_error"][i] is not None:
                    _finish(a, infos, i, error=True)
                    continue
                a["rec"]["steps"] += 1
                if config.video:
                    a["frames"].append(np.asarray(_index(obs, i)["image"]))
                if term[i] or trunc[i]:
                    a["rec"]["success"] = bool(infos["is_success"][i])
                    _finish(a, infos, i)
                elif a["rec"]["steps"] >= step_cap:
                    _finish(a, None, i, exc=RuntimeError(f"env did not end the episode within {step_cap} steps"))
            ended = np.array([a is not None and a.get("done", False) for a in active])
            if ended.any():
                if queue:
                    assign(ended)
                else:
                    for i in np.flatnonzero(ended):
                        active[i] = None
                    if any(a is not None for a in active):
                        # Park finished slots so they stop stepping their (ended) env.
                        venv.reset(options={"reset_mask": ended, "jobs": [None] * n})
    finally:
        venv.close()


def _merge(old: Any, new: Any, mask: np.ndarray) -> Any:
    if isinstance(old, dict):
        return {k: _merge(old[k], new[k], mask) for k in old}
    out = np.array(old, copy=True)
    out[mask] = np.asarray(new)[mask]
    return out
