"""The ``batched`` backend: imagined episodes in lockstep on one vector env, one world-model call per step.

Design (see also the runner's module docstring):

* Jobs are grouped by task, because the imagined vector env (``WorldVLA-Imagined-v0``'s
  ``vector_entry_point``, :class:`envs.imagined.ImaginedVectorEnv`) hosts one task: ``task_id`` is a
  constructor argument shared by every sub-env. For each task one vector env of
  ``width = min(num_envs, pending jobs of the task)`` sub-envs is built with ``gym.make_vec`` and
  ``autoreset_mode=DISABLED``.
* Every sub-env is a *slot*. A slot runs one episode at a time; when it ends (success, truncation or an
  error) the slot is refilled at once with the task's next pending job by a partial reset
  (``reset(seed=[..], options={"reset_mask": one-hot, "init_state_id": [..]})``). Slots are reset one at a
  time so a failing reset (e.g. a missing init frame) errors only its own episode.
* Finished sub-envs are frozen by the vector env (``DISABLED`` autoreset) and left out of its world-model
  batch, so they cost nothing. A slot whose episode ended *without* the env ending it (its policy raised)
  and that has no job left keeps getting a valid no-op action and its outputs are ignored; such slots are
  rare (errors only) and cost one extra row of an already batched call.
* One policy per slot: ``policy_factory(sub_env)`` gets that slot's :class:`ImaginedEnv` (so
  ``env.unwrapped.task_id`` / ``init_state_id`` work, e.g. for ``ReplayPolicy``), and is reset per episode
  with the episode's seed (:func:`reset_policy`), exactly like the sync backend. After an error the slot's
  policy is rebuilt, as the sync backend rebuilds its env and policy. Slots whose policies share a
  ``batch_key`` act through one ``act_group`` call (:func:`act_policies`): for ``WorldVLAAgent`` slots that
  is one batched model call for every slot whose chunk queue is empty.
* Per-episode semantics equal the sync backend's: same env seed and init state per trial, same step limit
  (sync's ``gym.make(..., max_episode_steps=k)`` is a ``TimeLimit`` over the env's suite limit, so the
  batched envs get ``min(k, suite limit)``), same success flag, same record fields. With greedy decoding the
  records (success, steps, frames) are bit-identical to the sync backend's, because the vector env's
  batched output equals N single envs (its VQ runs frame by frame). With ``do_sample=True`` one generator
  samples the whole batch: runs are reproducible for the same configuration but differ from sync's.
* Errors: a policy exception (or an invalid action, which the single env would reject in ``step``) ends
  only that slot's episode. An exception inside the batched env step itself cannot be attributed to one
  sub-env, so every episode in flight is recorded as an error and a fresh vector env takes the remaining
  jobs. ``wall_time_s`` of a record is the wall time from its reset to its end (shared with its batch).
* ``record_actions`` and ``video`` work as in the sync backend (videos get the same frames: the reset
  observation and every step's).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from wvla_gym.evaluation.claims import JobQueue
from wvla_gym.evaluation.config import EvalConfig, env_spec_for
from wvla_gym.evaluation.episode import EpisodeRun, gl_backend_of
from wvla_gym.evaluation.policies import act_policies, check_policy, reset_policy
from wvla_gym.policy import PolicyFactory
from wvla_gym.protocol import DUMMY_ACTION, SUITE_MAX_STEPS, check_action

logger = logging.getLogger(__name__)

#: Sub-envs per vector env when ``num_envs`` is left at its default of 1.
DEFAULT_BATCH = 16


def batch_width(config: EvalConfig) -> int:
    """How many sub-envs the batched backend runs at most: ``num_envs``, or :data:`DEFAULT_BATCH` when it is 1."""
    return config.num_envs if config.num_envs > 1 else DEFAULT_BATCH


def make_batched_env(config: EvalConfig, task_id: int, num_envs: int) -> Any:
    """The imagined vector env of one task (autoreset disabled) through its ``vector_entry_point``."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    import wvla_gym  # noqa: F401  (registers the ids)

    env_id, kwargs = env_spec_for(config, "imagined", task_id)
    limit = kwargs.pop("max_episode_steps", None)
    if limit is not None:
        # The sync backend passes this to gym.make, i.e. a TimeLimit on top of the env's own suite limit.
        kwargs["max_episode_steps"] = min(int(limit), SUITE_MAX_STEPS[config.suite])
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                        autoreset_mode=AutoresetMode.DISABLED, **kwargs)
    subs = getattr(venv.unwrapped, "envs", None)
    if subs is None or len(subs) != num_envs:
        venv.close()
        raise ValueError(
            f"backend='batched' needs a vector env that exposes its {num_envs} sub-envs as .envs (like "
            f"ImaginedVectorEnv); {env_id!r} built {type(venv.unwrapped).__name__}"
        )
    return venv


def _slot_obs(batch: Any, i: int) -> Any:
    if isinstance(batch, dict):
        return {k: _slot_obs(v, i) for k, v in batch.items()}
    v = batch[i]
    return np.array(v, copy=True) if isinstance(v, np.ndarray) else v


def _slot_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s entries of a vector env's info dict (keys it did not report are left out)."""
    out: dict[str, Any] = {}
    for key, val in infos.items():
        if key.startswith("_") or (f"_{key}" in infos and not bool(infos[f"_{key}"][i])):
            continue
        if isinstance(val, dict):  # a nested info dict is batched the same way
            out[key] = _slot_info(val, i)
            continue
        v = val[i]
        out[key] = v.item() if isinstance(v, np.generic) else v
    return out


class _TaskRunner:
    """Runs the claimed jobs of one task on one vector env (see the module docstring)."""

    def __init__(self, policy_factory: PolicyFactory, config: EvalConfig, venv: Any, queue: JobQueue,
                 task_id: int, sink, step_cap: int) -> None:
        self.factory, self.config, self.venv, self.queue = policy_factory, config, venv, queue
        self.task_id, self.sink, self.step_cap = task_id, sink, step_cap
        self.subs = list(venv.unwrapped.envs)
        self.n = len(self.subs)
        self.slots: list[EpisodeRun | None] = [None] * self.n
        self.policies: list[Any] = [None] * self.n
        self.obs: Any = None

    def _finish(self, i: int, exc: BaseException | None = None) -> None:
        ep = self.slots[i]
        assert ep is not None
        self.slots[i] = None
        if exc is not None:
            self.policies[i] = None  # rebuilt for the next episode: its state may be corrupt
        rec = ep.finish(exc, gl_backend=gl_backend_of(self.subs[i]))
        self.sink(rec, ep.frames)

    def _start(self, i: int) -> None:
        """Start the next claimed job in slot ``i``; jobs that fail to start are recorded and skipped."""
        while self.slots[i] is None:
            job = self.queue.pop_task(self.task_id)
            if job is None:
                return
            ep = EpisodeRun(job, self.config, step_cap=self.step_cap)
            self.slots[i] = ep
            try:
                if self.policies[i] is None:
                    policy = self.factory(self.subs[i])
                    check_policy(policy)
                    self.policies[i] = policy
                reset_policy(self.policies[i], job.policy_seed)
                mask = np.zeros(self.n, dtype=np.bool_)
                mask[i] = True
                seeds: list[int | None] = [None] * self.n
                seeds[i] = job.reset_seed
                per_slot: dict[str, list] = {}
                for key, value in job.reset_options().items():  # this slot's value, None for the others
                    per_slot[key] = [value if j == i else None for j in range(self.n)]
                self.obs, infos = self.venv.reset(seed=seeds, options={"reset_mask": mask, **per_slot})
                ep.started(_slot_obs(self.obs, i), _slot_info(infos, i))
            except Exception as exc:  # recorded, never silent
                self._finish(i, exc)

    def begin(self) -> None:
        """The vector env's first reset, which must reset every sub-env: a blank start (real starts follow
        one slot at a time, so a failing start errors only its own episode)."""
        image_shape = self.venv.single_observation_space["image"].shape
        self.obs, _ = self.venv.reset(options={"image": np.zeros(image_shape, np.uint8)})

    def run(self) -> bool:
        """Run until the task's jobs are done; ``False`` when the vector env broke (the caller builds a new one)."""
        noop = np.asarray(DUMMY_ACTION, dtype=np.float32)
        while True:
            for i in range(self.n):
                if self.slots[i] is None:
                    self._start(i)
            live = [i for i in range(self.n) if self.slots[i] is not None]
            if not live:
                return True
            actions = np.tile(noop, (self.n, 1))
            acted = act_policies([self.policies[i] for i in live], [_slot_obs(self.obs, i) for i in live])
            for i, action in zip(live, acted, strict=True):
                try:
                    if isinstance(action, BaseException):
                        raise action
                    self.slots[i].acted(action)
                    # The single env rejects a bad action in step(); here it must not fail the whole batch.
                    actions[i] = check_action(action)
                except Exception as exc:
                    self._finish(i, exc)
            live = [i for i in live if self.slots[i] is not None]
            if not live:
                continue
            try:
                self.obs, _, terminated, truncated, infos = self.venv.step(actions)
            except Exception as exc:
                for i in live:
                    self._finish(i, exc)
                return False
            for i in live:
                try:
                    if self.slots[i].stepped(_slot_obs(self.obs, i), bool(terminated[i]), bool(truncated[i]),
                                             _slot_info(infos, i)):
                        self._finish(i)
                except Exception as exc:  # the hard step cap
                    self._finish(i, exc)


def run_batched(policy_factory: PolicyFactory, config: EvalConfig, queue: JobQueue, sink, step_cap: int) -> None:
    """Run the queue's imagined jobs task by task on batched vector envs; every claimed job ends as one record."""
    width = batch_width(config)
    for task_id in queue.task_ids():
        while queue.count_task(task_id):
            venv = None
            try:
                venv = make_batched_env(config, task_id, min(width, queue.count_task(task_id)))
                runner = _TaskRunner(policy_factory, config, venv, queue, task_id, sink, step_cap)
                runner.begin()
            except Exception as exc:
                # Building fails the same way for every job of the task: record them all (sync would retry each).
                _close(venv)
                while (job := queue.pop_task(task_id)) is not None:
                    sink(EpisodeRun(job, config, step_cap=step_cap).finish(exc), [])
                break
            try:
                runner.run()  # returns early when the env broke; a fresh one then takes the rest of the queue
            finally:
                _close(venv)


def _close(venv: Any) -> None:
    if venv is None:
        return
    try:
        venv.close()
    except Exception:  # closing a broken env must not hide the original error
        logger.warning("closing the batched imagined env failed", exc_info=True)
