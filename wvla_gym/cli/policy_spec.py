"""Resolve ``--policy`` strings to policy factories (the CLI layer may import ``agents``).

Accepted forms:

* ``zero`` / ``random``: baselines from :mod:`wvla_gym.evaluation.policies`.
* ``scripted``: ``agents.scripted.ScriptedLiberoExpert`` (privileged; ``noise_std`` applies). Only on the real
  env; in the vector backend it runs inside the workers.
* ``worldvla``: one ``agents.worldvla.WorldVLAAgent`` per env slot, all sharing one ``WorldVLARuntime``
  loaded once per process (weights once; histories and queues per slot).
* ``sb3:PATH`` or ``sb3:ALGO:PATH``: a Stable-Baselines3 ``.zip`` (``model.predict(obs, deterministic=True)``).
* ``module:callable``: ``callable(env) -> policy`` importable from ``module``.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wvla_gym.evaluation.policies import RandomPolicy, ZeroPolicy

SB3_ALGOS = ("PPO", "SAC", "TD3", "A2C", "DDPG", "DQN")


@dataclass
class ResolvedPolicy:
    factory: Any
    name: str
    #: The factory reads privileged simulator state (must run next to the env).
    privileged: bool = False
    knobs: dict[str, Any] = field(default_factory=dict)


class SeededScripted:
    """ScriptedLiberoExpert rebuilt per episode from the runner's per-episode seed (resume-stable noise)."""

    def __init__(self, env: Any, noise_std: float) -> None:
        from agents.scripted import ScriptedLiberoExpert

        self._cls, self.env, self.noise_std = ScriptedLiberoExpert, env, noise_std
        self.inner = ScriptedLiberoExpert(env, noise_std=noise_std, seed=0)

    def reset(self, *, seed: int | None = None) -> None:
        self.inner = self._cls(self.env, noise_std=self.noise_std, seed=seed)
        self.inner.reset()

    def act(self, obs: Any) -> np.ndarray:
        return self.inner.act(obs)


def _scripted_factory(env: Any, noise_std: float) -> SeededScripted:
    return SeededScripted(env, noise_std)


#: ``WorldVLARuntime.from_pretrained`` keyword arguments; the rest go to ``WorldVLAAgent``.
_RUNTIME_KWARGS = ("device", "dtype", "attn_implementation", "decode_backend", "vq_batch")


@functools.lru_cache(maxsize=4)
def _load_runtime(checkpoint: str | None, runtime_items: tuple[tuple[str, Any], ...]) -> Any:
    """One runtime per (checkpoint, loading options) and process: it holds weights, never episode state."""
    from wvla_gym.runtime import WorldVLARuntime

    return WorldVLARuntime.from_pretrained(checkpoint, **dict(runtime_items))


def _split_kwargs(kwargs_items: tuple[tuple[str, Any], ...]) -> tuple[tuple, dict[str, Any]]:
    runtime = tuple((k, v) for k, v in kwargs_items if k in _RUNTIME_KWARGS)
    agent = {k: v for k, v in kwargs_items if k not in _RUNTIME_KWARGS}
    return runtime, agent


def _worldvla_factory(env: Any, checkpoint: str | None, kwargs_items: tuple[tuple[str, Any], ...]) -> Any:
    """A fresh agent for this env slot (its own history and queue) on the shared runtime."""
    from agents.worldvla import WorldVLAAgent

    runtime_items, agent_kwargs = _split_kwargs(kwargs_items)
    instruction = getattr(env.unwrapped, "task_description", None)
    return WorldVLAAgent(_load_runtime(checkpoint, runtime_items), instruction=instruction, **agent_kwargs)


class _NoEnv:
    """Stands in for an env when an agent is built only to validate options and read its knobs."""

    task_description = None

    @property
    def unwrapped(self) -> _NoEnv:
        return self


class SB3Policy:
    def __init__(self, model: Any) -> None:
        self.model = model

    def reset(self) -> None:
        pass

    def act(self, obs: Any) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(action, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _load_sb3(algo: str | None, path: str) -> Any:
    import stable_baselines3 as sb3

    algos = [algo] if algo else list(SB3_ALGOS)
    errors = []
    for name in algos:
        cls = getattr(sb3, name, None)
        if cls is None:
            raise ValueError(f"--policy sb3:{algo}:... names no SB3 algorithm; expected one of {SB3_ALGOS}")
        try:
            return cls.load(path, device="cpu")
        except Exception as e:  # try the next algorithm class
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise ValueError(f"could not load {path!r} as any of {algos}: " + "; ".join(errors))


def _sb3_factory(env: Any, algo: str | None, path: str) -> SB3Policy:
    return SB3Policy(_load_sb3(algo, path))


def resolve_policy(spec: str, *, checkpoint: str | None = None, noise_std: float = 0.0,
                   policy_kwargs: dict[str, Any] | None = None, load_now: bool = True) -> ResolvedPolicy:
    """Turn a ``--policy`` string into a factory; ValueError names the accepted forms on bad input."""
    policy_kwargs = dict(policy_kwargs or {})
    if spec == "zero":
        return ResolvedPolicy(lambda env: ZeroPolicy(), "zero")
    if spec == "random":
        return ResolvedPolicy(lambda env: RandomPolicy(**policy_kwargs), "random", knobs=policy_kwargs)
    if spec == "scripted":
        if not noise_std >= 0:
            raise ValueError(f"noise_std={noise_std!r}; expected a float >= 0")
        name = "scripted" if noise_std == 0 else f"scripted_noise{noise_std:g}"
        return ResolvedPolicy(functools.partial(_scripted_factory, noise_std=float(noise_std)), name,
                              privileged=True, knobs={"noise_std": noise_std})
    if spec == "worldvla":
        items = tuple(sorted(policy_kwargs.items()))
        knobs: dict[str, Any] = dict(policy_kwargs)
        if load_now:  # fail fast on a bad checkpoint or agent option, and record the agent's real knobs
            knobs.update(_worldvla_factory(_NoEnv(), checkpoint, items).knobs())
        name = "worldvla" if not checkpoint else f"worldvla:{checkpoint.rstrip('/').split('/')[-1]}"
        return ResolvedPolicy(functools.partial(_worldvla_factory, checkpoint=checkpoint, kwargs_items=items), name,
                              knobs=knobs)
    if spec.startswith("sb3:"):
        rest = spec[4:]
        algo, path = (rest.split(":", 1) if rest.split(":", 1)[0] in SB3_ALGOS else (None, rest))
        if not path:
            raise ValueError(f"--policy {spec!r}; expected sb3:PATH or sb3:ALGO:PATH (ALGO one of {SB3_ALGOS})")
        if load_now:
            _load_sb3(algo, path)
        return ResolvedPolicy(functools.partial(_sb3_factory, algo=algo, path=path), f"sb3:{path}")
    if ":" in spec:
        mod, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--policy {spec!r}: cannot import {attr!r} from {mod!r} ({e})") from e
        if not callable(fn):
            raise ValueError(f"--policy {spec!r} is not callable; expected module:callable with callable(env) -> policy")
        return ResolvedPolicy(fn, spec)
    raise ValueError(
        f"--policy {spec!r} is not recognised; expected one of worldvla, scripted, random, zero, sb3:PATH, module:callable"
    )
