"""THE policy contract of wvla-gym: what evaluation, recording, the demo and the SB3 glue call.

A policy acts in one episode at a time and keeps that episode's state (frame histories, action queues)::

    reset(*, seed: int | None = None) -> None     # start an episode; ``seed`` makes a stochastic policy reproduce
    act(obs: dict) -> np.ndarray                  # (7,) float action in [-1, 1] for this observation

Optional hooks, used when present:

* ``act_chunk(obs) -> (K, 7)``: a fresh chunk of actions (chunked policies);
* ``batch_key() -> Hashable`` and the classmethod ``act_group(policies, observations) -> list[action |
  BaseException]``: backends that step several episodes together serve every slot whose policies share a key
  with ONE call; each slot keeps its own state and an exception ends only its own episode.

Policies are made by factories, one NEW policy per env slot (weights are shared, state never is)::

    PolicyFactory = Callable[[env], Policy]

Anything a policy needs beyond the observation (the instruction, privileged simulator state of a scripted
expert) it reads from the env handed to its factory.

Implementations live in ``agents``: ``agents.base.ChunkQueuePolicy`` (act over a chunk queue),
``agents.adapters`` (an SB3 model or a plain function as a policy), ``agents.registry.resolve_policy`` (policy
spec strings such as ``worldvla`` or ``sb3:PATH`` -> factories). The evaluation's runner resets policies through
``wvla_gym.evaluation.policies.reset_policy``, which still accepts a plain ``reset()`` of older user code.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["BatchedPolicy", "ChunkedPolicy", "Policy", "PolicyFactory"]


@runtime_checkable
class Policy(Protocol):
    """``reset(*, seed=None)`` then ``act(obs) -> (7,)`` per step (see the module docstring)."""

    def reset(self, *, seed: int | None = None) -> None: ...

    def act(self, obs: dict[str, Any]) -> np.ndarray: ...


@runtime_checkable
class ChunkedPolicy(Policy, Protocol):
    """A policy that can also return a fresh ``(K, 7)`` chunk."""

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray: ...


@runtime_checkable
class BatchedPolicy(Policy, Protocol):
    """A policy whose slots can be served together by one ``act_group`` call."""

    def batch_key(self) -> Hashable: ...

    @classmethod
    def act_group(cls, policies: Sequence[Any], observations: Sequence[Any]) -> list[Any]: ...


PolicyFactory = Callable[[Any], Policy]
