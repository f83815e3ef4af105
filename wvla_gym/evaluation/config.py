"""What an evaluation is: its configuration, its episodes (jobs) and the envs they run in.

The bottom of the evaluation package: every backend and the runner import from here, never the reverse.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from wvla_gym.protocol import (
    NUM_INIT_STATES,
    NUM_STEPS_WAIT,
    SUITE_MAX_STEPS,
    SUITE_NUM_TASKS,
)
from wvla_gym.starts import check_perturb_radius

EnvKind = Literal["real", "imagined"]
ENV_CHOICES = ("real", "imagined", "both")
BACKENDS = ("sync", "vector", "ray", "batched")
PLACEMENTS = ("init_state", "sampled")
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
    #: Where trial k starts: "init_state" (the protocol: LIBERO's fixed init state k) or "sampled" (a fresh
    #: placement from LIBERO's own sampler, seeded per task and trial; the robustness column).
    placement: Literal["init_state", "sampled"] = "init_state"
    #: Shift every movable object by a seeded offset within this radius (metres; 0 = off), on either start.
    perturb_radius: float = 0.0
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
    #: Extra facts for the summary and the run identity: checkpoint path and hash, K, M, decode mode, ...
    knobs: dict[str, Any] = field(default_factory=dict)
    #: Delete this policy's earlier records in ``out`` and start over (instead of refusing other settings).
    restart: bool = False

    def validate(self) -> None:
        if self.suite not in SUITE_NUM_TASKS:
            raise ValueError(f"suite={self.suite!r}; expected one of {sorted(SUITE_NUM_TASKS)}")
        n_tasks = SUITE_NUM_TASKS[self.suite]
        for t in self.task_ids():
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < n_tasks:
                raise ValueError(f"tasks contains {t!r}; expected ints in [0, {n_tasks - 1}] for {self.suite}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 1 <= self.trials <= NUM_INIT_STATES:
            raise ValueError(f"trials={self.trials!r}; expected an int in [1, {NUM_INIT_STATES}] (trial k = init state k)")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement={self.placement!r}; expected one of {PLACEMENTS}")
        check_perturb_radius("perturb_radius", self.perturb_radius)  # the bound the envs' reset options use
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

    def identity(self, kind: str) -> dict[str, Any]:
        """Everything that changes the records of this policy's ``kind`` episodes (see ``run_identity``).

        Tasks, trials, backend, worker count, videos and progress are left out: records are identical across
        backends, and adding tasks or trials to a finished run is a resume, not another run.
        """
        env_id, kwargs = env_spec_for(self, kind, 0)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("task_id", "task_suite")}
        return {
            "policy_name": self.policy_name,
            "env": kind,
            "env_id": env_id,
            "env_kwargs": {k: _jsonable(v) for k, v in sorted(kwargs.items())},
            "suite": self.suite,
            "seed": self.seed,
            "step_limit": self.step_limit(),
            "record_actions": self.record_actions,
            # only when off the protocol, so result folders made before these options still resume
            **({"placement": self.placement} if self.placement != "init_state" else {}),
            **({"perturb_radius": float(self.perturb_radius)} if self.perturb_radius else {}),
            "torch_threads": torch_threads(),
            "knobs": {k: _jsonable(v) for k, v in sorted(self.knobs.items())},
        }

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
    """One episode to run: env kind, task, init state (= trial index), env seed and start mode."""

    kind: str
    suite: str
    task_id: int
    init_state_id: int
    seed: int
    placement: str = "init_state"
    perturb_radius: float = 0.0

    @property
    def protocol_start(self) -> bool:
        return self.placement == "init_state" and not self.perturb_radius

    @property
    def reset_seed(self) -> int:
        """The env's reset seed: the protocol's seed, or for placements / perturbations one per (task, trial),
        since it also draws the placement (real and imagined twins use the same one)."""
        if self.protocol_start:
            return self.seed
        return int(np.random.SeedSequence([self.seed, self.task_id, self.init_state_id, 0x51AC]).generate_state(1)[0]
                   % (2**31 - 1))

    def reset_options(self) -> dict[str, Any]:
        """``reset(options=...)`` of this episode (the same for the real env and the imagined env)."""
        opts: dict[str, Any] = ({"placement": "sampled"} if self.placement == "sampled"
                                else {"init_state_id": self.init_state_id})
        if self.perturb_radius:
            opts["perturb_radius"] = float(self.perturb_radius)
        return opts

    @property
    def policy_seed(self) -> int:
        # Depends on the trial only, so real and imagined twins (and resumed runs) draw the same noise.
        return int(np.random.SeedSequence([self.seed, self.task_id, self.init_state_id]).generate_state(1)[0])


def plan_jobs(config: EvalConfig) -> list[EpisodeJob]:
    """All episodes of an evaluation in protocol order (task, trial, then real before imagined)."""
    return [
        EpisodeJob(kind, config.suite, t, k, config.seed, config.placement, float(config.perturb_radius))
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


def _jsonable(v: Any) -> Any:
    """Plain values as they are; a live object (a loaded runtime, a judge) by its ``knobs()`` or its type."""
    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    knobs = getattr(v, "knobs", None)
    if callable(knobs):
        return {"type": type(v).__name__, **{k: _jsonable(x) for k, x in knobs().items()}}
    return f"<{type(v).__name__}>"


def torch_threads() -> int:
    """The intra-op thread count torch uses here: greedy rollouts may differ between thread counts."""
    import torch

    return int(torch.get_num_threads())


def make_env(env_id: str, kwargs: dict[str, Any]):
    import gymnasium as gym

    import wvla_gym  # noqa: F401  (registers the ids in this process / worker)

    return gym.make(env_id, **kwargs)
