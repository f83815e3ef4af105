"""The evaluation's side of the policy protocol (:mod:`wvla_gym.policy`), and trivial baseline policies.

Policies follow :class:`wvla_gym.policy.Policy`: ``reset(*, seed=None)`` then ``act(obs) -> (7,)``, made by a
``policy_factory(env)`` that returns a NEW policy per call. The runner calls the factory once per environment
instance and backend slot (per task and env kind), not per episode, and resets the policy with a per-episode
seed, so noisy policies reproduce under resume and parallelism.

Batched acting (optional): a policy may offer ``batch_key() -> Hashable`` and a classmethod
``act_group(policies, observations) -> list[np.ndarray | BaseException]``. Backends that step several
episodes together (``batched``, ``vector``) then serve all slots whose policies share a key with ONE
``act_group`` call (:func:`act_policies`; ``WorldVLAAgent`` batches the model call over the slots whose chunk
queues are empty); each slot keeps its own state, and an exception in the list ends only that slot's episode.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from wvla_gym.policy import Policy
from wvla_gym.protocol import ACTION_DIM, DUMMY_ACTION

__all__ = [
    "RandomPolicy",
    "ReplayPolicy",
    "ZeroPolicy",
    "act_policies",
    "batch_key",
    "check_policy",
    "random_policy_factory",
    "reset_policy",
    "zero_policy_factory",
]


def _reset_takes_seed(policy: Any) -> bool:
    try:
        params = inspect.signature(policy.reset).parameters
    except (TypeError, ValueError):
        return False
    return "seed" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def reset_policy(policy: Policy, seed: int | None) -> None:
    """``policy.reset(seed=seed)``; a policy written before the protocol had ``seed`` gets ``reset()``.

    Every policy in this package takes ``seed``; the plain ``reset()`` of user policies is still accepted so
    that existing policy code keeps running (it just cannot reproduce per-episode noise).
    """
    if _reset_takes_seed(policy):
        policy.reset(seed=seed)
    else:
        policy.reset()


def batch_key(policy: Any) -> Hashable | None:
    """The policy's batching group, or ``None`` when it acts alone (see the module docstring)."""
    fn = getattr(policy, "batch_key", None)
    if not callable(fn) or not callable(getattr(type(policy), "act_group", None)):
        return None
    return fn()


def act_policies(policies: Sequence[Any], observations: Sequence[Any]) -> list[Any]:
    """Each policy's action for its observation; an exception is returned in place of its action.

    Policies sharing a :func:`batch_key` are served by one ``act_group`` call; the others by ``act``.
    """
    out: list[Any] = [None] * len(policies)
    groups: dict[Hashable, list[int]] = {}
    for i, p in enumerate(policies):
        key = batch_key(p)
        if key is None:
            try:
                out[i] = p.act(observations[i])
            except Exception as exc:  # the caller records it for this slot only
                out[i] = exc
        else:
            groups.setdefault(key, []).append(i)
    for idx in groups.values():
        members = [policies[i] for i in idx]
        try:
            results = type(members[0]).act_group(members, [observations[i] for i in idx])
            if len(results) != len(idx):
                raise RuntimeError(f"act_group returned {len(results)} results for {len(idx)} policies")
        except Exception as exc:  # the whole group call failed: every member's episode records it
            results = [exc] * len(idx)
        for i, r in zip(idx, results, strict=True):
            out[i] = r
    return out


def check_policy(policy: Any) -> None:
    """Raise ``ValueError`` when an object lacks the policy protocol."""
    missing = [m for m in ("reset", "act") if not callable(getattr(policy, m, None))]
    if missing:
        raise ValueError(
            f"policy_factory returned {type(policy).__name__}, which lacks {missing}; "
            "expected a wvla_gym.policy.Policy: reset(*, seed=None) and act(obs) -> np.ndarray of shape (7,)"
        )


class ZeroPolicy:
    """Holds still with the gripper open (LIBERO's settle action): a 0 % baseline."""

    def reset(self, *, seed: int | None = None) -> None:
        pass

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return DUMMY_ACTION.copy()


class RandomPolicy:
    """Uniform random actions in ``[-scale, scale]`` (gripper uniform in [-1, 1]), seeded per episode."""

    def __init__(self, scale: float = 1.0, seed: int = 0) -> None:
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale={scale!r}; expected a float in (0, 1]")
        self.scale = float(scale)
        self._rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        a = self._rng.uniform(-self.scale, self.scale, ACTION_DIM).astype(np.float32)
        a[-1] = self._rng.uniform(-1.0, 1.0)
        return a


def zero_policy_factory(env: Any) -> ZeroPolicy:
    return ZeroPolicy()


def random_policy_factory(env: Any) -> RandomPolicy:
    return RandomPolicy()


class ReplayPolicy:
    """Replays recorded actions of the same (task, init state); holds still once they run out.

    Used to pair a privileged policy (the scripted expert, real env only) with its imagined twin: the world
    model sees exactly the action sequence that the expert executed in the real simulator.
    """

    def __init__(self, env: Any, actions: dict[tuple[int, int], Any]) -> None:
        self.env = getattr(env, "unwrapped", env)
        self.actions = actions
        self._queue: list[np.ndarray] | None = None

    @classmethod
    def from_records(cls, env: Any, records: list[dict[str, Any]]) -> ReplayPolicy:
        acts = {(int(r["task_id"]), int(r["init_state_id"])): r["actions"] for r in records if r.get("actions") is not None}
        if not acts:
            raise ValueError("records carry no 'actions'; expected records written with EvalConfig(record_actions=True)")
        return cls(env, acts)

    def reset(self, *, seed: int | None = None) -> None:
        self._queue = None  # the env's init state is known only after its reset, i.e. at the first act

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self._queue is None:
            key = (int(self.env.task_id), int(self.env.init_state_id))
            if key not in self.actions:
                raise ValueError(f"no recorded actions for (task_id, init_state_id)={key}")
            self._queue = [np.asarray(a, dtype=np.float32) for a in self.actions[key]]
        return self._queue.pop(0) if self._queue else DUMMY_ACTION.copy()
