"""The ``ray`` backend: episodes as Ray actor tasks, results written by the driver in the same layout.

One actor per worker keeps its envs and policies between episodes (env creation and the first simulator
reset are the expensive part). Each episode is one actor task returning its record (and frames when videos
are on), so the driver writes exactly one fsync'ed line per finished episode: a killed driver loses only
episodes still in flight, and a rerun resumes like every other backend. ``policy_factory`` travels to the
workers with cloudpickle; functions defined in a module the workers cannot import must be registered with
``ray.cloudpickle.register_pickle_by_value(module)``.

Requires ``pip install 'wvla-gym[ray]'``. Uses an already initialised Ray, else ``ray.init(address=...)``
(``None`` starts a local cluster with ``num_envs`` CPUs).
"""

from __future__ import annotations

from typing import Any

from wvla_gym.evaluation.claims import JobQueue
from wvla_gym.evaluation.config import EpisodeJob, EvalConfig
from wvla_gym.evaluation.episode import EnvCache, EpisodeRun, RemoteEpisodeError, run_job
from wvla_gym.policy import PolicyFactory


class EpisodeWorker:
    """The actor body (wrapped with ``ray.remote`` at run time so importing this module needs no Ray)."""

    def __init__(self, config: EvalConfig, policy_factory: PolicyFactory) -> None:
        self.config = config
        self.cache = EnvCache(config, policy_factory)

    def run(self, job: EpisodeJob, step_cap: int) -> tuple[dict[str, Any], list[Any]]:
        return run_job(self.cache, job, step_cap)

    def close(self) -> None:
        self.cache.close()


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError("backend='ray' needs Ray: pip install 'wvla-gym[ray]' (or pip install ray)") from e
    return ray


def run_ray(policy_factory: PolicyFactory, config: EvalConfig, queue: JobQueue, sink, step_cap: int) -> None:
    ray = _import_ray()
    if not queue:
        return
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": config.ray_address, "log_to_driver": False}
        if config.ray_address is None:
            kwargs["num_cpus"] = config.num_envs
        ray.init(**kwargs)
        started_here = True
    try:
        actor_cls = ray.remote(num_cpus=1)(EpisodeWorker)
        n = min(config.num_envs, len(queue))
        actors = [actor_cls.remote(config, policy_factory) for _ in range(n)]
        in_flight: dict[Any, tuple[int, EpisodeJob]] = {}
        for i, actor in enumerate(actors):
            job = queue.pop()
            if job is not None:
                in_flight[actor.run.remote(job, step_cap)] = (i, job)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            i, job = in_flight.pop(ref)
            try:
                rec, frames = ray.get(ref)
            except Exception as exc:  # the actor died (e.g. OOM-killed): record it, replace the actor
                remote = RemoteEpisodeError(f"{type(exc).__name__}: {exc}", str(exc))
                rec, frames = EpisodeRun(job, config, step_cap=step_cap).finish(remote), []
                actors[i] = actor_cls.remote(config, policy_factory)
            sink(rec, frames)
            nxt = queue.pop()
            if nxt is not None:
                in_flight[actors[i].run.remote(nxt, step_cap)] = (i, nxt)
        ray.get([a.close.remote() for a in actors])
    finally:
        if started_here:
            ray.shutdown()
