"""One episode, the same for every backend, the recorder and the demo.

:func:`play_episode` is THE episode loop (reset the env, then the policy; act and step until the env ends the
episode); whoever needs more than the loop watches it through :class:`EpisodeObserver` hooks instead of writing
another loop. :class:`EpisodeRun` is the evaluation's observer: it holds the protocol of one episode, its record
(the fields of ``results.RECORD_FIELDS``), the init-state check after reset, action recording, frames for
videos, the success flag, the hard step cap and error records carrying the exception's own traceback. Backends
only decide where and when its steps happen:

* :func:`run_episode` plays one env and one policy to the end (sync backend, Ray actors, vector workers);
* the batched backend keeps one :class:`EpisodeRun` per slot of a vector env and feeds it the slot's reset,
  action and step results.

So a step-cap message, an error record or ``record_actions`` cannot differ between backends. The recorder
(``wvla_gym.data.capture``) and ``wvla-gym demo`` are observers of the same loop.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wvla_gym.evaluation.config import EpisodeJob, EvalConfig, env_spec_for, make_env
from wvla_gym.evaluation.policies import act_policies, check_policy, reset_policy
from wvla_gym.policy import PolicyFactory

logger = logging.getLogger(__name__)


class RemoteEpisodeError(RuntimeError):
    """An error raised in another process (a vector worker, a Ray actor), with that process's traceback."""

    def __init__(self, error: str, traceback_text: str | None) -> None:
        super().__init__(error)
        self.error, self.traceback_text = error, traceback_text


def error_fields(exc: BaseException) -> dict[str, str | None]:
    """A record's ``error`` and ``traceback``, from the exception itself (valid outside ``except`` too)."""
    if isinstance(exc, RemoteEpisodeError):
        return {"error": exc.error, "traceback": exc.traceback_text}
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": tb}


def step_cap_error(cap: int) -> RuntimeError:
    return RuntimeError(f"env did not end the episode within {cap} steps (its step limit is not enforced)")


def step_cap_for(config: EvalConfig) -> int:
    """A safety net only: the envs enforce the protocol limit themselves."""
    return 4 * config.step_limit() + 100


class EpisodeObserver:
    """Hooks :func:`play_episode` calls; each does nothing unless overridden."""

    def on_reset(self, obs: Any, info: Any) -> None:
        """The env reset to ``obs, info`` (the policy is reset too)."""

    def on_action(self, obs: Any, action: Any) -> None:
        """The policy chose ``action`` for ``obs``; the env has not stepped yet (its state is still ``obs``'s)."""

    def on_step(self, obs: Any, action: Any, reward: float, terminated: bool, truncated: bool, info: Any) -> None:
        """The env stepped with ``action`` and returned ``obs, reward, terminated, truncated, info``."""

    def wants_stop(self) -> bool:
        """``True`` ends the episode before the next action (after at least one step; never a success)."""
        return False


def episode_success(terminated: bool, info: Any) -> bool:
    """The env's ``info["is_success"]`` when it reports one, else ``terminated``."""
    success = info.get("is_success") if isinstance(info, dict) else None
    return bool(terminated if success is None else success)


@dataclass
class EpisodeEnd:
    """How :func:`play_episode` ended: steps taken, success, the reset's and the last step's info."""

    steps: int
    success: bool
    reset_info: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False  # an observer ended the episode before the env did


def play_episode(env: Any, policy: Any, *, seed: int | None, options: dict[str, Any] | None,
                 policy_seed: int | None = None, observers: Sequence[EpisodeObserver] = ()) -> EpisodeEnd:
    """THE episode loop: reset the env, then the policy (it may read the new scene); act and step until the env
    ends the episode or an observer's ``wants_stop``. Policy and env errors propagate (callers record them)."""
    obs, info = env.reset(seed=seed, options=options)
    reset_info = dict(info) if isinstance(info, dict) else {}
    reset_policy(policy, policy_seed)
    for o in observers:
        o.on_reset(obs, info)
    steps = 0
    while True:
        if steps and any(o.wants_stop() for o in observers):
            return EpisodeEnd(steps, False, reset_info, dict(info) if isinstance(info, dict) else {}, stopped=True)
        action = act_policies([policy], [obs])[0]
        if isinstance(action, BaseException):
            raise action
        for o in observers:
            o.on_action(obs, action)
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        for o in observers:
            o.on_step(obs, action, reward, terminated, truncated, info)
        if terminated or truncated:
            return EpisodeEnd(steps, episode_success(terminated, info), reset_info,
                              dict(info) if isinstance(info, dict) else {})


class EpisodeRun(EpisodeObserver):
    """The record of one episode as it runs (see the module docstring)."""

    def __init__(self, job: EpisodeJob, config: EvalConfig, *, step_cap: int | None = None) -> None:
        self.job = job
        self.record_frames = bool(config.video)
        self.step_cap = step_cap_for(config) if step_cap is None else step_cap
        self.rec: dict[str, Any] = {
            "policy": config.policy_name,
            "env": job.kind,
            "suite": job.suite,
            "task_id": job.task_id,
            "init_state_id": job.init_state_id,
            "seed": job.seed,
            "success": False,
            "steps": 0,
            "wall_time_s": 0.0,
            "error": None,
            "traceback": None,
            "task_description": None,
            "policy_seed": job.policy_seed,
        }
        if not job.protocol_start:  # off the protocol: how the start was made, to replay it
            self.rec.update({"placement": job.placement, "perturb_radius": job.perturb_radius,
                             "reset_seed": job.reset_seed, "reset_options": job.reset_options()})
        self.actions: list[list[float]] | None = [] if config.record_actions else None
        self.frames: list[np.ndarray] = []
        self.done = False
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ the protocol
    def started(self, obs: Any, info: Any) -> None:
        """The env's reset returned ``obs, info``: check the init state, keep the first frame."""
        info = info if isinstance(info, dict) else {}
        self.rec["task_description"] = info.get("task_description")
        got = info.get("init_state_id", self.job.init_state_id)
        want = self.job.reset_options().get("init_state_id")
        if want is not None and got is not None and int(got) != want:
            raise RuntimeError(f"env reset to init state {got}, expected {want}")
        if not self.job.protocol_start:
            self.rec["start"] = jsonable_start(info.get("placement"))
            if info.get("sim_state") is not None:  # the real env's state before settling: replays it exactly
                self.rec["sim_state"] = np.asarray(info["sim_state"], dtype=np.float64).tolist()
        if self.record_frames:
            self.frames.append(np.asarray(obs["image"]))

    def acted(self, action: Any) -> None:
        if self.actions is not None:
            self.actions.append(np.asarray(action, dtype=np.float64).round(6).tolist())

    def stepped(self, obs: Any, terminated: bool, truncated: bool, info: Any) -> bool:
        """The env stepped; ``True`` when the episode is over. Raises past the hard step cap."""
        self.rec["steps"] += 1
        if self.record_frames:
            self.frames.append(np.asarray(obs["image"]))
        if terminated or truncated:
            self.rec["success"] = episode_success(terminated, info)
            return True
        if self.rec["steps"] >= self.step_cap:
            raise step_cap_error(self.step_cap)
        return False

    # ------------------------------------------------------------------ as an observer of play_episode
    def on_reset(self, obs: Any, info: Any) -> None:
        self.started(obs, info)

    def on_action(self, obs: Any, action: Any) -> None:
        self.acted(action)

    def on_step(self, obs: Any, action: Any, reward: float, terminated: bool, truncated: bool, info: Any) -> None:
        self.stepped(obs, terminated, truncated, info)  # raises past the hard step cap

    def finish(self, exc: BaseException | None = None, *, gl_backend: str | None = None) -> dict[str, Any]:
        """Close the record (an exception makes it an error, never a failure) and return it."""
        if exc is not None:
            self.rec.update(error_fields(exc))
            self.rec["success"] = False
        self.rec["wall_time_s"] = round(time.perf_counter() - self._t0, 4)
        if self.actions is not None:
            self.rec["actions"] = self.actions
        if gl_backend is not None:
            self.rec["gl_backend"] = gl_backend
        self.done = True
        return self.rec


def jsonable_start(d: Any) -> Any:
    """``info["placement"]`` as plain JSON (numpy scalars and arrays to Python numbers and lists)."""
    if isinstance(d, dict):
        return {str(k): jsonable_start(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [jsonable_start(v) for v in d]
    if isinstance(d, np.ndarray):
        return d.tolist()
    if isinstance(d, np.generic):
        return d.item()
    return d


def gl_backend_of(env: Any) -> str | None:
    return getattr(getattr(env, "unwrapped", env), "gl_backend", None)


def run_episode(env: Any, policy: Any, job: EpisodeJob, config: EvalConfig,
                step_cap: int | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Run one protocol episode to its end; policy/env errors go into the record, never raise."""
    ep = EpisodeRun(job, config, step_cap=step_cap)
    try:
        play_episode(env, policy, seed=job.reset_seed, options=job.reset_options(), policy_seed=job.policy_seed,
                     observers=[ep])
    except Exception as exc:  # recorded, never silent
        return ep.finish(exc, gl_backend=gl_backend_of(env)), ep.frames
    return ep.finish(gl_backend=gl_backend_of(env)), ep.frames


class EnvCache:
    """At most one open env (and its policy) per kind; rebuilt after an error, since its state may be corrupt."""

    def __init__(self, config: EvalConfig, policy_factory: PolicyFactory | None) -> None:
        self.config = config
        self.policy_factory = policy_factory
        self._open: dict[str, tuple[int, Any, Any]] = {}

    def get(self, kind: str, task_id: int) -> tuple[Any, Any]:
        cur = self._open.get(kind)
        if cur is not None and cur[0] == task_id:
            return cur[1], cur[2]
        self.drop(kind)
        env = make_env(*env_spec_for(self.config, kind, task_id))
        policy = None
        if self.policy_factory is not None:
            try:
                policy = self.policy_factory(env)
                check_policy(policy)
            except BaseException:
                env.close()
                raise
        self._open[kind] = (task_id, env, policy)
        return env, policy

    def drop(self, kind: str) -> None:
        cur = self._open.pop(kind, None)
        if cur is not None:
            try:
                cur[1].close()
            except Exception:  # closing a broken env must not hide the original error
                logger.warning("closing the %s env failed", kind, exc_info=True)

    def close(self) -> None:
        for kind in list(self._open):
            self.drop(kind)


def run_job(cache: EnvCache, job: EpisodeJob, step_cap: int | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One job through an env cache (sync backend, Ray actors): build or reuse the env, run the episode."""
    try:
        env, policy = cache.get(job.kind, job.task_id)
    except Exception as exc:
        cache.drop(job.kind)
        return EpisodeRun(job, cache.config, step_cap=step_cap).finish(exc), []
    rec, frames = run_episode(env, policy, job, cache.config, step_cap)
    if rec["error"] is not None:
        cache.drop(job.kind)
    return rec, frames
