"""The policy protocol of the runner, and two trivial baseline policies.

A policy is anything with::

    reset(self) -> None            # or reset(self, *, seed: int | None = None): the runner then passes a
                                   # per-episode seed, so noisy policies reproduce under resume/parallelism
    act(self, obs: dict) -> np.ndarray   # (7,) action in [-1, 1]

``act`` gets the observation only (the Gymnasium obs dict). Anything else a policy needs (the instruction,
privileged simulator state for scripted experts) it reads from the env handed to its factory::

    policy_factory(env) -> policy

The factory is called once per environment instance and backend slot (per task and env kind), not per
episode, so load weights outside it and share them (e.g. one ``WorldVLARuntime`` captured in a closure), but
return a NEW policy object every call: policies keep episode state (histories, queues), and the vector,
batched and Ray backends run several episodes at once, one policy per slot.

Batched acting (optional): a policy may offer ``batch_key() -> Hashable`` and a classmethod
``act_group(policies, observations) -> list[np.ndarray | BaseException]``. Backends that step several
episodes together (``batched``, ``vector``) then serve all slots whose policies share a key with ONE
``act_group`` call (``WorldVLAAgent`` batches the model call over the slots whose chunk queues are empty);
each slot keeps its own state, and an exception in the list ends only that slot's episode.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from wvla_gym.protocol import ACTION_DIM, DUMMY_ACTION


@runtime_checkable
class Policy(Protocol):
    def reset(self) -> None: ...

    def act(self, obs: dict[str, Any]) -> np.ndarray: ...


PolicyFactory = Callable[[Any], Policy]


def reset_policy(policy: Policy, seed: int | None) -> None:
    """Call ``policy.reset``, passing ``seed`` only when the policy's reset accepts it."""
    try:
        params = inspect.signature(policy.reset).parameters
    except (TypeError, ValueError):
        params = {}
    if "seed" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
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
            "expected an object with reset() and act(obs) -> np.ndarray of shape (7,)"
        )


class ZeroPolicy:
    """Holds still with the gripper open (LIBERO's settle action): a 0 % baseline."""

    def reset(self) -> None:
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

    def reset(self) -> None:
        self._queue = None  # the env's init state is known only after its reset, i.e. at the first act

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self._queue is None:
            key = (int(self.env.task_id), int(self.env.init_state_id))
            if key not in self.actions:
                raise ValueError(f"no recorded actions for (task_id, init_state_id)={key}")
            self._queue = [np.asarray(a, dtype=np.float32) for a in self.actions[key]]
        return self._queue.pop(0) if self._queue else DUMMY_ACTION.copy()
