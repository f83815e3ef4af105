"""Stable-Baselines3 glue for the WorldVLA envs: flat observation spaces and a VecEnv over the batched imagined env.

SB3 cannot batch ``Text`` spaces and expects its own ``VecEnv`` API (auto-reset with
``infos[i]["terminal_observation"]``, a list of info dicts). :class:`SB3Compat` wraps any single env
(real or imagined); :class:`SB3VecEnvAdapter` exposes a Gymnasium ``VectorEnv`` in ``SAME_STEP`` autoreset
mode (such as :class:`envs.imagined.ImaginedVectorEnv`) as an SB3 ``VecEnv``, keeping its one batched
world-model call per step. :func:`with_task_instructions` hands each sub-env's task instruction to a
language-conditioned policy (such as ``WorldVLAAgent``) under SB3's ``evaluate_policy``, which passes the policy
observations only.

Stable-Baselines3 is optional (``pip install 'wvla-gym[sb3]'``): it is imported when an SB3 class is first
needed, so :class:`SB3Compat` and this module import without it.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv
    from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

__all__ = [
    "SB3_SPACES",
    "SB3Compat",
    "SB3VecEnvAdapter",  # noqa: F822 - built on first access by __getattr__ (needs stable_baselines3)
    "TaskInstructionPredictor",
    "make_sb3_vec_env",
    "sb3_observation_space",
    "vector_info_to_list",
    "with_task_instructions",
]

#: Spaces SB3 policies can take as (Dict entries of) observations.
SB3_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def sb3_observation_space(space: spaces.Space, keys: Sequence[str] | None = None, unwrap_single: bool = True):
    """The SB3-usable part of an observation space, and the kept keys (``None`` for a non-Dict space).

    ``keys`` selects Dict entries (default: every SB3-supported one, which drops ``instruction``); with
    ``unwrap_single`` a single kept key gives its own space (e.g. a ``Box`` image for ``CnnPolicy``).
    """
    if not isinstance(space, spaces.Dict):
        if not isinstance(space, SB3_SPACES):
            raise ValueError(f"SB3 cannot use an observation space of type {type(space).__name__}")
        return space, None
    if keys is None:
        keys = [k for k, s in space.spaces.items() if isinstance(s, SB3_SPACES)]
    keys = list(keys)
    missing = [k for k in keys if k not in space.spaces]
    if missing or not keys:
        raise ValueError(f"keys {missing or keys} are not in the observation space (keys: {list(space.spaces)})")
    bad = [k for k in keys if not isinstance(space.spaces[k], SB3_SPACES)]
    if bad:
        raise ValueError(f"SB3 cannot use observation keys {bad} (Text/Sequence/Graph spaces); drop them")
    if unwrap_single and len(keys) == 1:
        return space.spaces[keys[0]], keys
    return spaces.Dict({k: space.spaces[k] for k in keys}), keys


def _select(obs: Any, keys: list[str] | None, single: bool) -> Any:
    if keys is None:
        return obs
    if single:
        return obs[keys[0]]
    return {k: obs[k] for k in keys}


class SB3Compat(gym.ObservationWrapper):
    """Flat, SB3-supported observations for a real or imagined WorldVLA env.

        env = SB3Compat(gym.make("WorldVLA-Imagined-v0", ...), keys=["image"])   # Box image -> CnnPolicy
        env = SB3Compat(gym.make("WorldVLA-LIBERO-v0", instruction_in_obs=True))  # Dict without the Text key

    ``keys`` (default: all Box/Discrete entries) picks the Dict entries; one key is unwrapped to its own
    space unless ``unwrap_single=False``. Actions, rewards and infos pass through unchanged.
    """

    def __init__(self, env: gym.Env, keys: Sequence[str] | None = None, unwrap_single: bool = True) -> None:
        super().__init__(env)
        self.observation_space, self._keys = sb3_observation_space(env.observation_space, keys, unwrap_single)
        self._single = self._keys is not None and not isinstance(self.observation_space, spaces.Dict)

    def observation(self, observation: Any) -> Any:
        return _select(observation, self._keys, self._single)


def vector_info_to_list(info: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's vectorised info (arrays with ``_key`` masks) as one dict per sub-env."""
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get("_" + key, np.ones(num_envs, dtype=bool))
        if isinstance(value, dict):
            sub = vector_info_to_list(value, num_envs)
            for i in np.flatnonzero(mask):
                out[i][key] = sub[i]
        else:
            for i in np.flatnonzero(mask):
                v = value[i]
                out[i][key] = v.item() if isinstance(v, np.generic) else v
    return out


def _sb3_vec_env_base() -> type:
    """SB3's ``VecEnv`` base class, or an ``ImportError`` that names the extra to install."""
    try:
        from stable_baselines3.common.vec_env import VecEnv
    except ImportError as e:
        raise ImportError(
            "SB3VecEnvAdapter needs Stable-Baselines3, an optional dependency: pip install 'wvla-gym[sb3]'"
        ) from e
    return VecEnv


class _SB3VecEnvAdapterBody:
    """An SB3 ``VecEnv`` over a Gymnasium ``VectorEnv`` in ``SAME_STEP`` autoreset mode.

        venv = ImaginedVectorEnv(8, autoreset_mode="SameStep", checkpoint=path)
        model = PPO("CnnPolicy", SB3VecEnvAdapter(venv, keys=["image"]))

    ``step`` returns ``(obs, rewards, dones, infos)`` with ``infos[i]["terminal_observation"]`` and
    ``infos[i]["TimeLimit.truncated"]`` for ended sub-envs (whose returned obs is already the next
    episode's first), plus the env's own keys (``is_success``, ``success_score``, ...). ``seed()`` and
    ``set_options()`` apply at the next ``reset()``, as in SB3. ``keys``/``unwrap_single`` as in
    :class:`SB3Compat`.
    """

    def __init__(self, venv: gym.vector.VectorEnv, keys: Sequence[str] | None = None, unwrap_single: bool = True) -> None:
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if AutoresetMode(mode) != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3VecEnvAdapter needs a vector env in SAME_STEP autoreset mode (SB3's semantics); got {mode}. "
                "Build it with autoreset_mode='SameStep' (or use make_sb3_vec_env)."
            )
        self.venv = venv
        obs_space, self._keys = sb3_observation_space(venv.single_observation_space, keys, unwrap_single)
        self._single = self._keys is not None and not isinstance(obs_space, spaces.Dict)
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, obs_space, venv.single_action_space)

    def reset(self) -> VecEnvObs:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        options = self._merged_options()
        obs, info = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = vector_info_to_list(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return _select(obs, self._keys, self._single)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        infos = vector_info_to_list({k: v for k, v in info.items() if k not in ("final_obs", "_final_obs")}, self.num_envs)
        dones = np.logical_or(terminated, truncated)
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = _select(info["final_obs"][i], self._keys, self._single)
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            # SB3's callbacks read the ended episode's keys (e.g. is_success) at the top level
            infos[i].update(infos[i].get("final_info", {}))
        return _select(obs, self._keys, self._single), rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    def _sub_envs(self, indices: VecEnvIndices) -> list[Any]:
        envs = getattr(self.venv.unwrapped, "envs", None)
        if envs is None:
            raise AttributeError("the wrapped vector env does not expose its sub-envs (.envs)")
        return [envs[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [getattr(self.venv, "render_mode", None)] * len(list(self._get_indices(indices)))
        return [getattr(e, attr_name) for e in self._sub_envs(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for e in self._sub_envs(indices):
            setattr(e, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        return [getattr(e, method_name)(*method_args, **method_kwargs) for e in self._sub_envs(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))  # sub-envs are bare ImaginedEnv instances

    def _merged_options(self) -> dict[str, Any] | None:
        opts = self._options
        if all(not o for o in opts):
            return None
        keys = set().union(*opts)
        # one value per sub-env (None = not set), the vector env's per-env option format
        return {k: [o.get(k) for o in opts] for k in keys}


_ADAPTER_CLASS: type | None = None


def _adapter_class() -> type:
    """``SB3VecEnvAdapter``: the body above on SB3's ``VecEnv``, built once, when SB3 is first needed."""
    global _ADAPTER_CLASS
    if _ADAPTER_CLASS is None:

        def body(ns: dict[str, Any]) -> None:
            ns.update(__module__=__name__, __qualname__="SB3VecEnvAdapter", __doc__=_SB3VecEnvAdapterBody.__doc__)

        _ADAPTER_CLASS = types.new_class("SB3VecEnvAdapter", (_SB3VecEnvAdapterBody, _sb3_vec_env_base()), exec_body=body)
    return _ADAPTER_CLASS


def __getattr__(name: str) -> Any:
    if name == "SB3VecEnvAdapter":
        return _adapter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_sb3_vec_env(
    num_envs: int, keys: Sequence[str] | None = None, unwrap_single: bool = True, **env_kwargs: Any
) -> VecEnv:
    """A batched imagined env as an SB3 ``VecEnv`` (``env_kwargs`` go to :class:`~envs.imagined.ImaginedVectorEnv`)."""
    from envs.imagined_vector import ImaginedVectorEnv

    adapter = _adapter_class()  # before building the env: fail fast without SB3
    venv = ImaginedVectorEnv(num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs)
    return adapter(venv, keys=keys, unwrap_single=unwrap_single)


class TaskInstructionPredictor:
    """An SB3 ``PolicyPredictor`` that adds each sub-env's instruction to the observations it hands on.

    SB3's ``evaluate_policy(model, env)`` calls ``model.predict(obs, state, episode_start, deterministic)`` and
    nothing else, and an SB3 observation cannot carry text, so a language-conditioned policy never sees the
    task. This wrapper reads ``vec_env.get_attr(attr)`` (``task_description`` of every WorldVLA env, real or
    imagined, through any Gymnasium wrappers) when an episode starts and passes the Dict observation on with
    an ``"instruction"`` entry (one str per sub-env), which ``WorldVLAAgent.predict`` reads. Sub-envs may run
    different tasks. On its first call it also calls ``policy.reset(num_envs=...)`` when the policy has one,
    so one agent can be evaluated on VecEnvs of different widths. Build it with :func:`with_task_instructions`.
    """

    def __init__(self, policy: Any, vec_env: VecEnv, attr: str = "task_description") -> None:
        if not callable(getattr(policy, "predict", None)):
            raise TypeError(f"policy must have an SB3-style predict() method, got {type(policy).__name__}")
        self.policy = policy
        self.vec_env = vec_env
        self.attr = attr
        self._instructions: list[str] | None = None

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        if not isinstance(observation, Mapping):
            raise ValueError(
                f"observations are a {type(observation).__name__}; the instruction can only be added to Dict "
                "observations: build the VecEnv without keys= (or with keys=['image', ...] and unwrap_single=False)"
            )
        if self._instructions is None and callable(getattr(self.policy, "reset", None)):
            # a new evaluation: size the agent's per-env state (queues, histories) to this VecEnv
            self.policy.reset(num_envs=len(next(iter(observation.values()))))
        if self._instructions is None or (episode_start is not None and np.any(episode_start)):
            self._instructions = [str(t) for t in self.vec_env.get_attr(self.attr)]  # re-read at episode starts
        return self.policy.predict(
            {**observation, "instruction": self._instructions}, state=state, episode_start=episode_start,
            deterministic=deterministic,
        )

    def __getattr__(self, name: str) -> Any:  # the wrapped policy's other attributes (timing, knobs, ...)
        if name == "policy":
            raise AttributeError(name)
        return getattr(self.policy, name)


def with_task_instructions(policy: Any, vec_env: VecEnv, attr: str = "task_description") -> TaskInstructionPredictor:
    """``evaluate_policy(with_task_instructions(agent, vec_env), vec_env)``: every sub-env's task reaches the agent."""
    return TaskInstructionPredictor(policy, vec_env, attr)
