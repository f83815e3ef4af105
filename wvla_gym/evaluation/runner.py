"""The LIBERO protocol runner: real, imagined or paired (both) episodes, resumable, parallel, crash-honest.

Protocol (WorldVLA/OpenVLA ``eval_solver_libero``): for every task of the suite, trial ``k`` starts from the
benchmark's fixed init state ``k`` (k < 50), the env runs ``num_steps_wait`` settle steps that do not count
against the suite's step limit, and the episode ends on success (terminated) or at the limit (truncated).
Every episode of one evaluation uses the same env seed (the reference calls ``env.seed(0)``).

Unlike the reference loop, an exception (policy or env) is recorded as an *error* with its traceback and is
excluded from success rates; it is never counted as a failure. Finished episodes are appended to
``<out>/episodes.jsonl`` (fsync per line) and skipped when the same command runs again.

Backends:

* ``sync``: one env per kind in this process (``policy_factory(env)`` gets the real env object).
* ``vector``: ``gymnasium.vector.AsyncVectorEnv`` with ``num_envs`` workers (``forkserver``/``spawn``, so each
  worker creates its own simulator and GL context). Policies run in this process by default and their
  factory receives an :class:`EnvHandle` (spaces, suite, task, instruction; no simulator). Policies that read
  privileged simulator state (scripted experts) need ``policy_in_workers=True``: the factory is then
  pickled (cloudpickle) into each worker and gets the real env there.
* ``ray``: one Ray actor per worker; each episode is one actor task that returns its record to this process,
  which writes the same results layout. See :mod:`wvla_gym.evaluation.ray_backend`.
* ``batched`` (``env="imagined"`` only): the imagined episodes run in lockstep on ONE imagined vector env per
  task (``gym.make_vec(imagined_env_id, vectorization_mode="vector_entry_point")``), so each step is one
  batched world-model call and one batched judge call for all running episodes; a slot whose episode ends
  is refilled with the task's next pending episode. ``num_envs`` is the batch width (the default 1 means
  16), capped by the task's pending episodes. One policy per slot, built with ``policy_factory(sub_env)``
  (the slot's real ``ImaginedEnv``). Records equal the sync backend's (bit-identical with greedy decoding);
  a policy error ends only its own episode. See :mod:`wvla_gym.evaluation.batched`.

Every backend writes the same records, so results resume across backends and ``wvla-gym agreement`` reads
them all alike.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wvla_gym.evaluation.policies import PolicyFactory, check_policy, reset_policy
from wvla_gym.evaluation.results import (
    EPISODES_FILE,
    SUMMARY_FILE,
    ResultsWriter,
    episode_key,
    read_records,
    summarize,
    write_summary,
)
from wvla_gym.protocol import NUM_INIT_STATES, NUM_STEPS_WAIT, SUITE_MAX_STEPS, SUITE_NUM_TASKS

logger = logging.getLogger(__name__)

EnvKind = Literal["real", "imagined"]
ENV_CHOICES = ("real", "imagined", "both")
BACKENDS = ("sync", "vector", "ray", "batched")
REAL_ENV_ID = "WorldVLA-LIBERO-v0"
IMAGINED_ENV_ID = "WorldVLA-Imagined-v0"


@dataclass
class EvalConfig:
    """Every knob of an evaluation; all of it is written to the summary."""

    suite: str = "libero_object"
    #: Task ids; ``None`` = every task of the suite.
    tasks: Sequence[int] | None = None
    #: Trials per task; trial k uses init state k, so at most 50.
    trials: int = NUM_INIT_STATES
    env: Literal["real", "imagined", "both"] = "real"
    #: Env seed of every episode (the reference protocol seeds 0 for all episodes).
    seed: int = 0
    policy_name: str = "policy"
    out: str | os.PathLike = "results"
    resolution: int = 256
    wrist: bool = True
    num_steps_wait: int = NUM_STEPS_WAIT
    #: Override of the suite's step limit (tests, quick looks); ``None`` = protocol limit.
    max_episode_steps: int | None = None
    backend: Literal["sync", "vector", "ray", "batched"] = "sync"
    #: Workers (``vector``/``ray``) or batch width (``batched``; 1 = 16 there).
    num_envs: int = 1
    vector_context: Literal["forkserver", "spawn"] = "forkserver"
    policy_in_workers: bool = False
    ray_address: str | None = None
    video: bool = False
    video_fps: int = 30
    #: Store each episode's actions in its record, to replay them in the other env kind (sync, batched, ray).
    record_actions: bool = False
    #: Re-run episodes whose last record is an error (finished, error-free episodes are always skipped).
    retry_errors: bool = True
    progress: bool = True
    real_env_id: str = REAL_ENV_ID
    imagined_env_id: str = IMAGINED_ENV_ID
    real_env_kwargs: dict[str, Any] = field(default_factory=dict)
    imagined_env_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Extra facts for the summary: checkpoint path and hash, K, M, decode mode, ...
    knobs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.suite not in SUITE_NUM_TASKS:
            raise ValueError(f"suite={self.suite!r}; expected one of {sorted(SUITE_NUM_TASKS)}")
        n_tasks = SUITE_NUM_TASKS[self.suite]
        for t in self.task_ids():
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < n_tasks:
                raise ValueError(f"tasks contains {t!r}; expected ints in [0, {n_tasks - 1}] for {self.suite}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 1 <= self.trials <= NUM_INIT_STATES:
            raise ValueError(f"trials={self.trials!r}; expected an int in [1, {NUM_INIT_STATES}] (trial k = init state k)")
        if self.env not in ENV_CHOICES:
            raise ValueError(f"env={self.env!r}; expected one of {ENV_CHOICES}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}; expected one of {BACKENDS}")
        if self.backend == "batched" and self.env != "imagined":
            raise ValueError(
                f"backend='batched' runs imagined episodes only (one batched world-model call per step), but "
                f"env={self.env!r}; use env='imagined', or backend 'sync'/'vector'/'ray' for real or paired episodes"
            )
        if isinstance(self.num_envs, bool) or not isinstance(self.num_envs, int) or self.num_envs < 1:
            raise ValueError(f"num_envs={self.num_envs!r}; expected an int >= 1")
        if self.vector_context not in ("forkserver", "spawn"):
            raise ValueError(
                f"vector_context={self.vector_context!r}; expected 'forkserver' or 'spawn' (fork breaks EGL contexts)"
            )
        if self.max_episode_steps is not None and (
            isinstance(self.max_episode_steps, bool) or not isinstance(self.max_episode_steps, int) or self.max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps={self.max_episode_steps!r}; expected None or an int >= 1")
        # batched runs in this process, so live objects (a loaded runtime, a judge) are fine there.
        if self.backend == "vector" and self.num_envs > 1 or self.backend == "ray":
            live = [k for k, v in {**self.real_env_kwargs, **self.imagined_env_kwargs}.items()
                    if not isinstance(v, (str, int, float, bool, type(None), os.PathLike))]
            if live:
                raise ValueError(
                    f"env kwargs {live} hold live objects, which cannot be shipped to {self.backend} workers; "
                    "pass a checkpoint path (each worker loads its own model) or use backend='sync'"
                )
        if not self.policy_name or any(c in self.policy_name for c in "\n\r"):
            raise ValueError(f"policy_name={self.policy_name!r}; expected a non-empty single-line string")

    def task_ids(self) -> list[int]:
        return list(range(SUITE_NUM_TASKS[self.suite])) if self.tasks is None else [int(t) for t in self.tasks]

    def kinds(self) -> list[str]:
        return ["real", "imagined"] if self.env == "both" else [self.env]

    def step_limit(self) -> int:
        return self.max_episode_steps or SUITE_MAX_STEPS[self.suite]

    def as_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies values, and env kwargs may hold a loaded runtime.
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["knobs"] = dict(self.knobs)
        d["out"] = str(self.out)
        d["tasks"] = self.task_ids()
        d["step_limit"] = self.step_limit()
        # Live objects (a runtime, a judge) are recorded by type only.
        for k in ("real_env_kwargs", "imagined_env_kwargs"):
            d[k] = {n: (v if isinstance(v, (str, int, float, bool, type(None))) else f"<{type(v).__name__}>") for n, v in d[k].items()}
        return d


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to run: env kind, task, init state (= trial index) and env seed."""

    kind: str
    suite: str
    task_id: int
    init_state_id: int
    seed: int

    @property
    def policy_seed(self) -> int:
        # Depends on the trial only, so real and imagined twins (and resumed runs) draw the same noise.
        return int(np.random.SeedSequence([self.seed, self.task_id, self.init_state_id]).generate_state(1)[0])


def plan_jobs(config: EvalConfig) -> list[EpisodeJob]:
    """All episodes of an evaluation in protocol order (task, trial, then real before imagined)."""
    return [
        EpisodeJob(kind, config.suite, t, k, config.seed)
        for t in config.task_ids()
        for k in range(config.trials)
        for kind in config.kinds()
    ]


def env_spec_for(config: EvalConfig, kind: str, task_id: int) -> tuple[str, dict[str, Any]]:
    """The ``gym.make`` id and kwargs of one env kind for one task."""
    if kind == "real":
        kwargs: dict[str, Any] = {
            "task_suite": config.suite,
            "task_id": task_id,
            "resolution": config.resolution,
            "wrist": config.wrist,
            "num_steps_wait": config.num_steps_wait,
            "max_episode_steps": config.max_episode_steps,
        }
        kwargs.update(config.real_env_kwargs)
        return config.real_env_id, kwargs
    kwargs = {"task_suite": config.suite, "task_id": task_id, "resolution": config.resolution}
    if config.max_episode_steps is not None:
        # Paired episodes must share a limit, otherwise the comparison is biased.
        kwargs["max_episode_steps"] = config.max_episode_steps
    kwargs.update(config.imagined_env_kwargs)
    return config.imagined_env_id, kwargs


def make_env(env_id: str, kwargs: dict[str, Any]):
    import gymnasium as gym

    import wvla_gym  # noqa: F401  (registers the ids in this process / worker)

    return gym.make(env_id, **kwargs)


# --------------------------------------------------------------------------- one episode
def _base_record(job: EpisodeJob, policy_name: str) -> dict[str, Any]:
    return {
        "policy": policy_name,
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


def _error_fields(exc: BaseException) -> dict[str, str]:
    """A record's ``error`` and ``traceback`` (from the exception itself, so it also works outside ``except``)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": tb}


def run_episode(env: Any, policy: Any, job: EpisodeJob, policy_name: str, *, record_frames: bool = False,
                hard_step_cap: int | None = None, record_actions: bool = False) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Run one protocol episode; never raises for policy/env errors (they go into the record)."""
    rec = _base_record(job, policy_name)
    actions: list[list[float]] | None = [] if record_actions else None
    frames: list[np.ndarray] = []
    t0 = time.perf_counter()
    try:
        reset_policy(policy, job.policy_seed)
        obs, info = env.reset(seed=job.seed, options={"init_state_id": job.init_state_id})
        rec["task_description"] = info.get("task_description")
        got = info.get("init_state_id", job.init_state_id)
        if got is not None and int(got) != job.init_state_id:
            raise RuntimeError(f"env reset to init state {got}, expected {job.init_state_id}")
        if record_frames:
            frames.append(np.asarray(obs["image"]))
        cap = hard_step_cap or 100_000
        while True:
            action = policy.act(obs)
            if actions is not None:
                actions.append(np.asarray(action, dtype=np.float64).round(6).tolist())
            obs, _, terminated, truncated, info = env.step(action)
            rec["steps"] += 1
            if record_frames:
                frames.append(np.asarray(obs["image"]))
            if terminated or truncated:
                rec["success"] = bool(info.get("is_success", terminated))
                break
            if rec["steps"] >= cap:
                raise RuntimeError(f"env did not end the episode within {cap} steps (its step limit is not enforced)")
    except Exception as exc:  # recorded, never silent: see module docstring
        rec.update(_error_fields(exc))
        rec["success"] = False
    rec["wall_time_s"] = round(time.perf_counter() - t0, 4)
    if actions is not None:
        rec["actions"] = actions
    gl = getattr(getattr(env, "unwrapped", env), "gl_backend", None)
    if gl is not None:
        rec["gl_backend"] = gl
    return rec, frames


class EnvCache:
    """At most one open env per kind; an env is rebuilt after an error (its state may be corrupt)."""

    def __init__(self, config: EvalConfig, policy_factory: PolicyFactory | None) -> None:
        self.config = config
        self.policy_factory = policy_factory
        self._open: dict[str, tuple[int, Any, Any]] = {}

    def get(self, kind: str, task_id: int) -> tuple[Any, Any]:
        cur = self._open.get(kind)
        if cur is not None and cur[0] == task_id:
            return cur[1], cur[2]
        self.drop(kind)
        env_id, kwargs = env_spec_for(self.config, kind, task_id)
        env = make_env(env_id, kwargs)
        policy = None
        if self.policy_factory is not None:
            policy = self.policy_factory(env)
            check_policy(policy)
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


def run_job(cache: EnvCache, job: EpisodeJob, policy_name: str, record_frames: bool, step_cap: int):
    """Run one job through an env cache (used by the sync backend and Ray workers)."""
    try:
        env, policy = cache.get(job.kind, job.task_id)
    except Exception as exc:
        rec = _base_record(job, policy_name)
        rec.update(_error_fields(exc))
        cache.drop(job.kind)
        return rec, []
    rec, frames = run_episode(env, policy, job, policy_name, record_frames=record_frames, hard_step_cap=step_cap,
                              record_actions=cache.config.record_actions)
    if rec["error"] is not None:
        cache.drop(job.kind)
    return rec, frames


# --------------------------------------------------------------------------- the evaluation
class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.counts: dict[str, list[int]] = {}
        self.errors = 0
        self.bar = None
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True)

    def update(self, rec: dict[str, Any]) -> None:
        if rec["error"] is not None:
            self.errors += 1
        else:
            c = self.counts.setdefault(rec["env"], [0, 0])
            c[0] += int(bool(rec["success"]))
            c[1] += 1
        if self.bar is not None:
            post = {k: f"{s / n:.2f} ({s}/{n})" for k, (s, n) in self.counts.items()}
            post["errors"] = str(self.errors)
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def pending_jobs(config: EvalConfig, records: list[dict[str, Any]]) -> list[EpisodeJob]:
    """Planned jobs minus those already finished in ``records`` (errors are redone when ``retry_errors``)."""
    done = set()
    for r in records:
        if r.get("policy") != config.policy_name:
            continue
        if r.get("error") is None or not config.retry_errors:
            done.add(episode_key(r))
    return [
        j
        for j in plan_jobs(config)
        if (config.policy_name, j.kind, j.suite, j.task_id, j.init_state_id, j.seed) not in done
    ]


def evaluate(policy_factory: PolicyFactory, config: EvalConfig) -> dict[str, Any]:
    """Run (or resume) an evaluation and return the summary (also written to ``<out>/summary.json``).

    ``policy_factory(env) -> policy``: see :mod:`wvla_gym.evaluation.policies` for the policy protocol.
    """
    if not callable(policy_factory):
        raise ValueError(f"policy_factory={policy_factory!r}; expected a callable env -> policy")
    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    episodes_path = out / EPISODES_FILE
    jobs = pending_jobs(config, read_records(episodes_path))
    n_planned = len(plan_jobs(config))
    logger.info("%d of %d episodes to run (%d already finished)", len(jobs), n_planned, n_planned - len(jobs))

    from wvla_gym.evaluation.video import VideoSink

    videos = VideoSink(out, config) if config.video else None
    progress = _Progress(len(jobs), config.progress, f"{config.policy_name} {config.suite}")
    # A safety net only: the envs enforce the protocol limit themselves.
    step_cap = 4 * config.step_limit() + 100
    start = time.time()
    with ResultsWriter(episodes_path) as writer:

        def sink(rec: dict[str, Any], frames: list[np.ndarray]) -> None:
            if videos is not None and frames:
                try:
                    rec["video"] = videos.write(rec, frames)
                except Exception as exc:  # a broken video writer must not lose the episode result
                    rec["video_error"] = f"{type(exc).__name__}: {exc}"
            writer.write(rec)
            progress.update(rec)

        try:
            if config.backend == "ray":
                from wvla_gym.evaluation.ray_backend import run_ray

                run_ray(policy_factory, config, jobs, sink, step_cap)
            elif config.backend == "batched":
                from wvla_gym.evaluation.batched import run_batched

                run_batched(policy_factory, config, jobs, sink, step_cap)
            elif config.backend == "vector" and config.num_envs > 1:
                from wvla_gym.evaluation.vector import run_vector

                run_vector(policy_factory, config, jobs, sink, step_cap)
            else:
                _run_sync(policy_factory, config, jobs, sink, step_cap)
        finally:
            progress.close()
    summary = build_summary(config, read_records(episodes_path), started=start)
    write_summary(out / SUMMARY_FILE, summary)
    return summary


def _run_sync(policy_factory: PolicyFactory, config: EvalConfig, jobs: list[EpisodeJob], sink, step_cap: int) -> None:
    cache = EnvCache(config, policy_factory)
    try:
        for job in jobs:
            rec, frames = run_job(cache, job, config.policy_name, config.video, step_cap)
            sink(rec, frames)
    finally:
        cache.close()


def build_summary(config: EvalConfig, records: list[dict[str, Any]], started: float | None = None) -> dict[str, Any]:
    """The summary JSON: results of every policy in the file, plus this run's config, knobs and versions.

    Earlier runs' configs in an existing summary are kept under ``runs`` (one entry per policy name).
    """
    import json

    from wvla_gym.utils.libero_setup import stack_versions

    path = Path(config.out) / SUMMARY_FILE
    runs: dict[str, Any] = {}
    if path.exists():
        try:
            runs = dict(json.loads(path.read_text()).get("runs", {}))
        except (json.JSONDecodeError, AttributeError):
            logger.warning("%s is unreadable; rewriting it", path)
    gl = sorted({str(r["gl_backend"]) for r in records if r.get("policy") == config.policy_name and r.get("gl_backend")})
    runs[config.policy_name] = {
        "config": config.as_json(),
        "knobs": dict(config.knobs),
        "versions": stack_versions(),
        "gl_backend": gl,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": None if started is None else round(time.time() - started, 2),
    }
    return {"results": summarize(records), "runs": runs}


def iter_records(out: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Records of every ``episodes.jsonl`` below ``out`` (recursive), for reports over many runs."""
    root = Path(out)
    if root.is_file():
        yield from read_records(root)
        return
    for p in sorted(root.rglob(EPISODES_FILE)):
        yield from read_records(p)
