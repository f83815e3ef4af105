"""The ``vector`` backend: protocol episodes on ``gymnasium.vector.AsyncVectorEnv`` workers.

Each worker hosts an :class:`EpisodeSlot`, a small env that owns one real/imagined env at a time and
switches task or kind when the runner hands it a new job through ``reset(options={"jobs": [...]})``
(Gymnasium passes one options dict to every worker, so each slot picks its own entry). Autoreset is
disabled: the runner resets exactly the slots whose episode ended. Exceptions inside a worker are caught
there and reported in ``info`` (with the worker's own traceback) so one bad episode neither kills the worker
nor the other episodes. The main process keeps one :class:`~wvla_gym.evaluation.episode.EpisodeRun` per slot,
so records equal the sync backend's; main-process policies are built per slot and act through
:func:`~wvla_gym.evaluation.policies.act_policies` (one batched call for WorldVLA agents).
"""

from __future__ import annotations

import json
import traceback
from typing import Any

import gymnasium as gym
import numpy as np

from wvla_gym.evaluation.claims import JobQueue
from wvla_gym.evaluation.config import EpisodeJob, EvalConfig
from wvla_gym.evaluation.episode import EnvCache, EpisodeRun, RemoteEpisodeError, jsonable_start
from wvla_gym.evaluation.policies import act_policies, check_policy, reset_policy
from wvla_gym.policy import PolicyFactory


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
        self._action_shape = tuple(self.action_space.shape)
        self._job: EpisodeJob | None = None
        self._obs: Any = None

    def _info(self, **kw: Any) -> dict[str, Any]:
        # Every key in every info, so the vector env batches them into aligned arrays.
        base = {"slot_error": None, "slot_traceback": None, "is_success": False, "task_description": None,
                "init_state_id": -1, "start_json": None, "gl_backend": None, "idle": self._job is None,
                "action": np.zeros(self._action_shape, np.float64)}
        base.update(kw)
        return base

    def _fail(self, exc: BaseException) -> dict[str, Any]:
        kind = self._job.kind if self._job else None
        self._job = None
        if kind is not None:
            self.cache.drop(kind)  # rebuilt on the next job: its state may be corrupt
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return self._info(slot_error=f"{type(exc).__name__}: {exc}", slot_traceback=tb, idle=False)

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
            obs, info = env.reset(seed=job.reset_seed, options=job.reset_options())
            self._obs = obs
            got = info.get("init_state_id", job.init_state_id)
            start = {k: info[k] for k in ("placement", "sim_state") if info.get(k) is not None}
            return obs, self._info(
                task_description=info.get("task_description"),
                init_state_id=-1 if got is None else int(got),  # -1: a sampled placement (no init state)
                # off-protocol starts as one JSON string: vector infos batch plain values best
                start_json=json.dumps(jsonable_start(start)) if start else None,
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
            taken = np.asarray(action, dtype=np.float64).reshape(self._action_shape)
            obs, reward, terminated, truncated, info = env.step(action)
            self._obs = obs
            if terminated or truncated:
                self._job = None
            return obs, float(reward), bool(terminated), bool(truncated), self._info(
                is_success=bool(info.get("is_success", terminated)), idle=False, action=taken
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


def _merge(old: Any, new: Any, mask: np.ndarray) -> Any:
    if isinstance(old, dict):
        return {k: _merge(old[k], new[k], mask) for k in old}
    out = np.array(old, copy=True)
    out[mask] = np.asarray(new)[mask]
    return out


class _VectorRunner:
    def __init__(self, policy_factory: PolicyFactory, config: EvalConfig, queue: JobQueue, first: EpisodeJob,
                 sink, step_cap: int) -> None:
        from gymnasium.vector import AsyncVectorEnv
        from gymnasium.vector.vector_env import AutoresetMode

        self.factory, self.config, self.queue, self.sink, self.step_cap = policy_factory, config, queue, sink, step_cap
        self.n = min(config.num_envs, len(queue) + 1)
        self.in_workers = config.policy_in_workers
        fns = [_slot_fn(i, config, first, policy_factory if self.in_workers else None) for i in range(self.n)]
        self.venv = AsyncVectorEnv(fns, context=config.vector_context, autoreset_mode=AutoresetMode.DISABLED,
                                   shared_memory=False)
        self.slots: list[EpisodeRun | None] = [None] * self.n
        self.policies: dict[tuple[int, str, int], Any] = {}
        self.obs: Any = None
        self._first: EpisodeJob | None = first

    def _next_job(self) -> EpisodeJob | None:
        if self._first is not None:
            job, self._first = self._first, None
            return job
        return self.queue.pop()

    def _finish(self, i: int, exc: BaseException | None = None, gl: str | None = None) -> None:
        ep = self.slots[i]
        self.slots[i] = None
        if exc is not None and not self.in_workers:
            self.policies.pop((i, ep.job.kind, ep.job.task_id), None)  # rebuilt: its state may be corrupt
        self.sink(ep.finish(exc, gl_backend=gl), ep.frames)

    def assign(self, mask: np.ndarray) -> None:
        """Reset the masked slots onto their next jobs (``None`` parks a slot)."""
        todo: list[EpisodeJob | None] = [None] * self.n
        for i in np.flatnonzero(mask):
            todo[i] = self._next_job()
        new_obs, infos = self.venv.reset(options={"reset_mask": mask, "jobs": todo})
        self.obs = new_obs if self.obs is None else _merge(self.obs, new_obs, mask)
        for i in np.flatnonzero(mask):
            job = todo[i]
            if job is None:
                continue
            ep = EpisodeRun(job, self.config, step_cap=self.step_cap)
            self.slots[i] = ep
            gl = infos["gl_backend"][i]
            if infos["slot_error"][i] is not None:
                self._finish(i, RemoteEpisodeError(infos["slot_error"][i], infos["slot_traceback"][i]), gl)
                continue
            try:
                got = int(infos["init_state_id"][i])
                ep.started(_index(self.obs, i), {"task_description": infos["task_description"][i],
                                                 "init_state_id": None if got < 0 else got,
                                                 **json.loads(infos["start_json"][i] or "{}")})
                if not self.in_workers:
                    key = (int(i), job.kind, job.task_id)
                    if key not in self.policies:
                        handle = EnvHandle(self.venv.single_observation_space, self.venv.single_action_space,
                                           job.kind, job.suite, job.task_id, ep.rec["task_description"])
                        policy = self.factory(handle)
                        check_policy(policy)
                        self.policies[key] = policy
                    reset_policy(self.policies[key], job.policy_seed)
            except Exception as exc:
                self._finish(i, exc, gl)

    def run(self) -> None:
        self.assign(np.ones(self.n, dtype=bool))
        while True:
            idle = np.array([s is None for s in self.slots])
            if idle.any() and (self.queue or self._first is not None):
                self.assign(idle)
                continue
            live = [i for i in range(self.n) if self.slots[i] is not None]
            if not live:
                return
            actions = np.zeros((self.n, *self.venv.single_action_space.shape), dtype=np.float32)
            if not self.in_workers:
                acted = act_policies([self.policies[(i, self.slots[i].job.kind, self.slots[i].job.task_id)]
                                      for i in live], [_index(self.obs, i) for i in live])
                for i, action in zip(live, acted, strict=True):
                    try:
                        if isinstance(action, BaseException):
                            raise action
                        actions[i] = np.asarray(action, dtype=np.float32)
                    except Exception as exc:
                        self._finish(i, exc)  # its env is mid-episode; the slot's next reset starts afresh
            self.obs, _, term, trunc, infos = self.venv.step(actions)
            for i in live:
                ep = self.slots[i]
                if ep is None:
                    continue
                if infos["slot_error"][i] is not None:
                    self._finish(i, RemoteEpisodeError(infos["slot_error"][i], infos["slot_traceback"][i]))
                    continue
                try:
                    ep.acted(infos["action"][i])
                    if ep.stepped(_index(self.obs, i), bool(term[i]), bool(trunc[i]),
                                  {"is_success": bool(infos["is_success"][i])}):
                        self._finish(i)
                except Exception as exc:  # the hard step cap
                    self._finish(i, exc)
            idle = np.array([s is None for s in self.slots])
            if idle.any() and not (self.queue or self._first is not None) and any(s is not None for s in self.slots):
                # Park finished slots so they stop stepping their (ended) env.
                self.venv.reset(options={"reset_mask": idle, "jobs": [None] * self.n})

    def close(self) -> None:
        self.venv.close()


def run_vector(policy_factory: PolicyFactory, config: EvalConfig, queue: JobQueue, sink, step_cap: int) -> None:
    first = queue.pop()
    if first is None:
        return
    runner = _VectorRunner(policy_factory, config, queue, first, sink, step_cap)
    try:
        runner.run()
    finally:
        runner.close()
