"""THE policy registry: a policy spec string (``--policy``) -> a policy factory (one new policy per env slot).

Accepted forms:

* ``zero`` / ``random``: baselines from :mod:`wvla_gym.evaluation.policies`.
* ``scripted``: :class:`agents.scripted.ScriptedLiberoExpert` (privileged; ``noise_std`` applies, reseeded per
  episode). Only on the real env; in the vector backend it runs inside the workers.
* ``worldvla``: one :class:`agents.worldvla.WorldVLAAgent` per env slot, all on one ``WorldVLARuntime`` from
  the process's runtime cache (:mod:`wvla_gym.runtime_cache`), so an imagined env on the same checkpoint
  shares the weights (weights once; histories and queues per slot).
* ``sb3:PATH`` or ``sb3:ALGO:PATH``: a Stable-Baselines3 ``.zip`` (:class:`agents.adapters.SB3ModelPolicy`).
* ``bc:PATH``: a behaviour-cloning policy folder from ``wvla-gym train bc`` (:class:`agents.bc.BCPolicy`, one per
  env slot on one loaded model; kwarg ``replan_steps``).
* ``knn:PATH``: a nearest-neighbour index from ``wvla-gym train knn`` (:class:`agents.knn.KNNPolicy`, one per env
  slot on one loaded index and VQ; kwargs ``k``, ``temperature``, ``noise``, ``vq``, ``seed``).
* ``openpi:HOST:PORT``: a policy server speaking openpi's websocket protocol, one connection per env slot
  (:class:`agents.openpi_client.OpenpiClientPolicy`; kwargs ``replan_steps``, ``image_size``, ``timeout_s``).
* ``module:callable``: ``callable(env) -> policy`` importable from ``module``.

The CLI (``wvla-gym eval``), benchmarks and scripts all resolve specs here.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, field
from typing import Any

from agents.adapters import SB3_ALGOS, SB3ModelPolicy, load_sb3_model
from wvla_gym.evaluation.policies import RandomPolicy, ZeroPolicy
from wvla_gym.policy import Policy, PolicyFactory
from wvla_gym.runtime_cache import load_runtime

__all__ = ["POLICY_FORMS", "ResolvedPolicy", "WorldVLAFactory", "resolve_policy"]

#: The spec forms, for error messages and help texts.
POLICY_FORMS = "worldvla, scripted, random, zero, bc:PATH, knn:PATH, openpi:HOST:PORT, sb3:PATH, module:callable"


@dataclass
class ResolvedPolicy:
    factory: PolicyFactory
    name: str
    #: The factory reads privileged simulator state (must run next to the env).
    privileged: bool = False
    knobs: dict[str, Any] = field(default_factory=dict)


def _scripted_factory(env: Any, noise_std: float) -> Policy:
    from agents.scripted import ScriptedLiberoExpert

    return ScriptedLiberoExpert(env, noise_std=noise_std, seed=0)


#: ``WorldVLARuntime.from_pretrained`` keyword arguments; the rest go to ``WorldVLAAgent``.
_RUNTIME_KWARGS = ("device", "dtype", "attn_implementation", "decode_backend", "vq_batch")


class WorldVLAFactory:
    """``factory(env)`` -> a fresh :class:`WorldVLAAgent` for this env slot (its own history and queue) on the
    shared runtime of ``checkpoint``.

    The factory keeps its runtime alive between slots (the runtime cache holds runtimes weakly). It pickles
    without the runtime (Ray actors and vector workers load their own copy once per process).
    """

    def __init__(self, checkpoint: str | os.PathLike | None, **kwargs: Any) -> None:
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.runtime_kwargs = {k: v for k, v in kwargs.items() if k in _RUNTIME_KWARGS}
        self.agent_kwargs = {k: v for k, v in kwargs.items() if k not in _RUNTIME_KWARGS}
        self._runtime: Any = None

    def runtime(self) -> Any:
        if self._runtime is None:
            self._runtime = load_runtime(self.checkpoint, **self.runtime_kwargs)
        return self._runtime

    def __call__(self, env: Any) -> Any:
        from agents.worldvla import WorldVLAAgent

        instruction = getattr(getattr(env, "unwrapped", env), "task_description", None)
        return WorldVLAAgent(self.runtime(), instruction=instruction, **self.agent_kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runtime": None}


class _NoEnv:
    """Stands in for an env when an agent is built only to validate options and read its knobs."""

    task_description = None

    @property
    def unwrapped(self) -> _NoEnv:
        return self


def _sb3_factory(env: Any, algo: str | None, path: str) -> SB3ModelPolicy:
    return SB3ModelPolicy(load_sb3_model(path, algo))


def _resolve_folder_policy(spec: str, policy_kwargs: dict[str, Any], load_now: bool) -> ResolvedPolicy:
    """``bc:PATH`` / ``knn:PATH``: a factory sharing one loaded model / index between its slots."""
    kind, _, path = spec.partition(":")
    if not path:
        raise ValueError(f"--policy {spec!r}; expected {kind}:PATH (a folder written by `wvla-gym train {kind}`)")
    try:
        if kind == "bc":
            from agents.bc import BCFactory

            factory: Any = BCFactory(path, **policy_kwargs)
        else:
            from agents.knn import KNNFactory

            factory = KNNFactory(path, **policy_kwargs)
        knobs: dict[str, Any] = dict(policy_kwargs)
        if load_now:  # fail fast on a bad folder or option, and record the policy's real knobs
            knobs.update(factory(_NoEnv()).knobs(), digest=factory.digest())
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise ValueError(f"--policy {spec!r}: {e}") from e
    return ResolvedPolicy(factory, spec, knobs=knobs)


def resolve_policy(spec: str, *, checkpoint: str | None = None, noise_std: float = 0.0,
                   policy_kwargs: dict[str, Any] | None = None, load_now: bool = True) -> ResolvedPolicy:
    """Turn a policy spec into a factory; ValueError names the accepted forms on bad input.

    ``load_now`` loads weights at once (fail fast on a bad checkpoint or option, and record the agent's real
    knobs); otherwise the first factory call loads them.
    """
    if not isinstance(spec, str):
        raise ValueError(f"--policy {spec!r} is a {type(spec).__name__}; expected a str, one of {POLICY_FORMS}")
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
        factory = WorldVLAFactory(checkpoint, **dict(sorted(policy_kwargs.items())))
        knobs: dict[str, Any] = dict(policy_kwargs)
        if load_now:
            knobs.update(factory(_NoEnv()).knobs())
        name = "worldvla" if not checkpoint else f"worldvla:{checkpoint.rstrip('/').split('/')[-1]}"
        return ResolvedPolicy(factory, name, knobs=knobs)
    if spec.startswith("sb3:"):
        rest = spec[4:]
        algo, path = (rest.split(":", 1) if rest.split(":", 1)[0] in SB3_ALGOS else (None, rest))
        if not path:
            raise ValueError(f"--policy {spec!r}; expected sb3:PATH or sb3:ALGO:PATH (ALGO one of {SB3_ALGOS})")
        if load_now:
            load_sb3_model(path, algo)
        return ResolvedPolicy(functools.partial(_sb3_factory, algo=algo, path=path), f"sb3:{path}")
    if spec.startswith(("bc:", "knn:")):
        return _resolve_folder_policy(spec, policy_kwargs, load_now)
    if spec.startswith("openpi:"):
        from agents.openpi_client import OpenpiClientFactory, parse_openpi_spec

        host, port = parse_openpi_spec(spec)
        factory = OpenpiClientFactory(host, port, **policy_kwargs)
        # timeout_s changes no record, so it stays out of the run identity (a resume may raise it)
        knobs = {"replan_steps": 5, "image_size": None, **{k: v for k, v in policy_kwargs.items() if k != "timeout_s"}}
        if load_now:  # connect once: fail fast, and record the server's metadata in the run identity
            try:
                probe = factory(_NoEnv())
            except ConnectionError as e:
                raise ValueError(f"--policy {spec!r}: {e}") from e
            knobs = {**knobs, **probe.knobs()}
            probe.close()
        return ResolvedPolicy(factory, spec, knobs=knobs)
    if ":" in spec:
        mod, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--policy {spec!r}: cannot import {attr!r} from {mod!r} ({e})") from e
        if not callable(fn):
            raise ValueError(f"--policy {spec!r} is not callable; expected module:callable with callable(env) -> policy")
        return ResolvedPolicy(fn, spec)
    raise ValueError(f"--policy {spec!r} is not recognised; expected one of {POLICY_FORMS}")
