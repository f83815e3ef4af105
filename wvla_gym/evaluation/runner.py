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

Every backend runs the same episode code (:mod:`wvla_gym.evaluation.episode`) and writes the same records,
so results resume across backends and ``wvla-gym agreement`` reads them all alike. Policies are built per
slot (``policy_factory`` is called once per env instance), so stateful agents never share their histories.

Run identity: a folder may hold several policies (and both env kinds of each); for every (policy, env kind)
the settings that change its records (``EvalConfig.identity``: checkpoint hashes, resolution, step limit,
env kwargs, decoding knobs, torch threads, ...) are stored under ``<out>/runs/``, and resuming with other
settings raises :class:`~wvla_gym.utils.run_identity.RunIdentityError` naming them (``restart=True`` deletes
that policy's records instead). Episodes are claimed atomically (:mod:`wvla_gym.evaluation.claims`), so
two evaluations writing into one folder never run an episode twice.

Module order (no cycles): ``config`` <- ``policies`` <- ``episode`` <- ``claims`` <- backends
(``batched``, ``vector``, ``ray_backend``) <- ``runner``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from wvla_gym.evaluation.claims import JobQueue
from wvla_gym.evaluation.config import (
    BACKENDS,
    ENV_CHOICES,
    IMAGINED_ENV_ID,
    REAL_ENV_ID,
    EpisodeJob,
    EvalConfig,
    env_spec_for,
    plan_jobs,
    torch_threads,
)
from wvla_gym.evaluation.episode import EnvCache, run_job, step_cap_for
from wvla_gym.evaluation.results import (
    EPISODES_FILE,
    SUMMARY_FILE,
    ResultsWriter,
    dumps_record,
    episode_key,
    read_records,
    summarize,
    write_summary,
)
from wvla_gym.policy import PolicyFactory
from wvla_gym.utils.io import atomic_write_text
from wvla_gym.utils.run_identity import claim_run

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "ENV_CHOICES",
    "IMAGINED_ENV_ID",
    "REAL_ENV_ID",
    "EpisodeJob",
    "EvalConfig",
    "build_summary",
    "env_spec_for",
    "evaluate",
    "iter_records",
    "pending_jobs",
    "plan_jobs",
]


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


def _finished_keys(config: EvalConfig, records: list[dict[str, Any]]) -> set[tuple]:
    done = set()
    for r in records:
        if r.get("policy") != config.policy_name:
            continue
        if r.get("error") is None or not config.retry_errors:
            done.add(episode_key(r))
    return done


def _job_key(config: EvalConfig, j: EpisodeJob) -> tuple:
    return (config.policy_name, j.kind, j.suite, j.task_id, j.init_state_id, j.seed)


def pending_jobs(config: EvalConfig, records: list[dict[str, Any]]) -> list[EpisodeJob]:
    """Planned jobs minus those already finished in ``records`` (errors are redone when ``retry_errors``)."""
    done = _finished_keys(config, records)
    return [j for j in plan_jobs(config) if _job_key(config, j) not in done]


def _run_dir(out: Path, policy_name: str, kind: str) -> Path:
    import hashlib

    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in policy_name)[:60]
    return out / "runs" / f"{slug}-{hashlib.sha1(policy_name.encode()).hexdigest()[:8]}" / kind


def _drop_policy_records(out: Path, config: EvalConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``restart``: remove this policy's records of the configured env kinds (other policies stay); returns
    the records kept."""
    path = out / EPISODES_FILE
    kinds = set(config.kinds())
    keep = [r for r in records if not (r.get("policy") == config.policy_name and r.get("env") in kinds)]
    atomic_write_text(path, "".join(dumps_record(r) for r in keep))
    claims = out / "claims"
    if claims.is_dir():
        for p in claims.glob("*.json"):
            try:
                held = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if held.get("policy") == config.policy_name:
                p.unlink(missing_ok=True)
    return keep


def claim_identity(config: EvalConfig) -> list[dict[str, Any]]:
    """Store or check the run identity of every env kind of this evaluation (see the module docstring);
    returns the folder's records as they stand after it (this policy's dropped on ``restart``)."""
    out = Path(config.out)
    records = read_records(out / EPISODES_FILE)
    if config.restart:
        records = _drop_policy_records(out, config, records)
    for kind in config.kinds():
        mine = any(r.get("policy") == config.policy_name and r.get("env") == kind for r in records)
        claim_run(_run_dir(out, config.policy_name, kind), "eval", config.identity(kind), restart=config.restart,
                  has_results=lambda _p, mine=mine: mine)
    return records


def evaluate(policy_factory: PolicyFactory, config: EvalConfig) -> dict[str, Any]:
    """Run (or resume) an evaluation and return the summary (also written to ``<out>/summary.json``).

    ``policy_factory(env) -> policy``: see :mod:`wvla_gym.evaluation.policies` for the policy protocol.
    """
    if not callable(policy_factory):
        raise ValueError(f"policy_factory={policy_factory!r}; expected a callable env -> policy")
    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    records = claim_identity(config)
    episodes_path = out / EPISODES_FILE
    jobs = pending_jobs(config, records)
    n_planned = len(plan_jobs(config))
    logger.info("%d of %d episodes to run (%d already finished)", len(jobs), n_planned, n_planned - len(jobs))

    def is_finished(job: EpisodeJob) -> bool:
        return _job_key(config, job) in _finished_keys(config, read_records(episodes_path))

    queue = JobQueue(out, config.policy_name, jobs, is_finished)
    from wvla_gym.evaluation.video import VideoSink

    videos = VideoSink(out, config) if config.video else None
    progress = _Progress(len(jobs), config.progress, f"{config.policy_name} {config.suite}")
    step_cap = step_cap_for(config)
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

                run_ray(policy_factory, config, queue, sink, step_cap)
            elif config.backend == "batched":
                from wvla_gym.evaluation.batched import run_batched

                run_batched(policy_factory, config, queue, sink, step_cap)
            elif config.backend == "vector" and config.num_envs > 1:
                from wvla_gym.evaluation.vector import run_vector

                run_vector(policy_factory, config, queue, sink, step_cap)
            else:
                _run_sync(policy_factory, config, queue, sink, step_cap)
        finally:
            progress.close()
    if queue.skipped:
        logger.info("%d episodes were running in another process and were left to it", len(queue.skipped))
    summary = build_summary(config, read_records(episodes_path), started=start)
    write_summary(out / SUMMARY_FILE, summary)
    return summary


def _run_sync(policy_factory: PolicyFactory, config: EvalConfig, queue: JobQueue, sink, step_cap: int) -> None:
    cache = EnvCache(config, policy_factory)
    try:
        while (job := queue.pop()) is not None:
            rec, frames = run_job(cache, job, step_cap)
            sink(rec, frames)
    finally:
        cache.close()


def build_summary(config: EvalConfig, records: list[dict[str, Any]], started: float | None = None) -> dict[str, Any]:
    """The summary JSON: results of every policy in the file, plus each run's config, knobs and versions.

    Earlier runs' configs in an existing summary are kept under ``runs`` (one entry per policy name; the run
    identity guarantees a policy name stands for one set of settings per folder).
    """
    from wvla_gym.utils.libero_setup import stack_versions

    path = Path(config.out) / SUMMARY_FILE
    runs: dict[str, Any] = {}
    if path.exists():
        try:
            runs = dict(json.loads(path.read_text()).get("runs", {}))
        except (json.JSONDecodeError, AttributeError):
            logger.warning("%s is unreadable; rewriting it", path)
    gl = sorted({str(r["gl_backend"]) for r in records if r.get("policy") == config.policy_name and r.get("gl_backend")})
    prev = runs.get(config.policy_name, {})
    kinds = sorted(set(prev.get("env_kinds", [])) | set(config.kinds()))
    runs[config.policy_name] = {
        "config": config.as_json(),
        "knobs": dict(config.knobs),
        "identity": {k: config.identity(k) for k in config.kinds()} | {
            k: v for k, v in prev.get("identity", {}).items() if k not in config.kinds()
        },
        "env_kinds": kinds,
        "torch_threads": torch_threads(),
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
