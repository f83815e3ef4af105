"""``ImaginedVectorEnv``: N imagined LIBERO episodes stepped with one batched world-model call per step.

The ``vector_entry_point`` of ``WorldVLA-Imagined-v0`` (see :class:`ImaginedVectorEnv`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from envs.imagined import ImaginedEnv, check_model_source
from wvla_gym.judge import score_many
from wvla_gym.protocol import ACTION_DIM, CONTROL_FPS
from wvla_gym.runtime_cache import load_world_model
from wvla_gym.starts import IMAGINED_START_KEYS, check_options
from wvla_gym.utils.validation import check_int, describe, fail

#: ``reset`` options: the imagined env's, each for all sub-envs or one per sub-env, and which sub-envs reset.
VECTOR_START_KEYS = (*IMAGINED_START_KEYS, "reset_mask")


class ImaginedVectorEnv(VectorEnv):
    """N imagined LIBERO episodes stepped together with one batched world-model call per step.

    The ``vector_entry_point`` of ``WorldVLA-Imagined-v0``::

        envs = gym.make_vec("WorldVLA-Imagined-v0", num_envs=16, vectorization_mode="vector_entry_point",
                            checkpoint=path, task_suite="libero_object", task_id=0)

    Takes the keyword arguments of :class:`ImaginedEnv` (the runtime is loaded once and shared) plus
    ``autoreset_mode`` (``metadata["autoreset_mode"]``):

    * ``NEXT_STEP`` (default, Gymnasium's): the step after an episode ends resets that sub-env, ignoring its
      action, and returns its first observation with reward 0;
    * ``SAME_STEP``: the ending step already returns the next episode's first observation, with the last
      one in ``info["final_obs"]`` / ``info["final_info"]`` (what SB3's ``VecEnv`` expects);
    * ``DISABLED``: ended sub-envs are frozen (same observation, reward 0, the ending flags repeated) until
      ``reset(options={"reset_mask": mask})`` resets them.

    Ended, resetting or frozen sub-envs are left out of the world-model batch, so they cost no generation.

    Reset options are those of :class:`ImaginedEnv`; each value applies to all sub-envs or is a sequence
    of ``num_envs`` values (``None`` = no value for that sub-env). ``reset(seed=s)`` seeds sub-env ``i`` with
    ``s + i``, so with greedy decoding sub-env ``i`` follows exactly the rollout of a single
    ``ImaginedEnv`` reset with ``seed=s + i``. With ``do_sample=True`` one generator (seeded from the
    vector env's ``np_random``) samples the whole batch.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FPS, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        checkpoint: str | os.PathLike | None = None,
        runtime: Any = None,
        device: str = "cpu",
        **env_kwargs: Any,
    ) -> None:
        # Every argument, the sub-envs' included, is checked before the world model loads.
        check_int("num_envs", num_envs, lo=1)
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError as e:
            raise fail("autoreset_mode", autoreset_mode, f"one of {[m.value for m in AutoresetMode]}") from e
        check_model_source(checkpoint, runtime, device)
        ImaginedEnv.check_arguments(**env_kwargs)
        self.runtime = runtime if runtime is not None else load_world_model(checkpoint, device)
        if int(getattr(self.runtime, "views", 1)) != 1:  # its steps batch one view per sub-env
            raise ValueError(
                "ImaginedVectorEnv takes one-view (WorldVLA) world models; this one (RynnVLA-002) imagines two views: "
                "use single WorldVLA-Imagined-v0 envs (gym.make, or gym.make_vec with vectorization_mode='sync')"
            )
        self.num_envs = int(num_envs)
        self.envs = [ImaginedEnv(runtime=self.runtime, **env_kwargs) for _ in range(self.num_envs)]
        first = self.envs[0]
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = first.render_mode
        self.do_sample, self.temperature = first.do_sample, first.temperature
        self.success_judge = first.success_judge
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self._obs: list[dict[str, Any] | None] = [None] * self.num_envs
        self._rewards = np.zeros(self.num_envs, dtype=np.float64)
        self._terminations = np.zeros(self.num_envs, dtype=np.bool_)
        self._truncations = np.zeros(self.num_envs, dtype=np.bool_)
        self._done = np.zeros(self.num_envs, dtype=np.bool_)  # ended at the previous step
        self._generator = None
        self._needs_reset = True
        #: How many frames each step generated (for tests and throughput accounting).
        self.last_batch_size = 0

    @property
    def task_description(self) -> str:
        return self.envs[0].task_description

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        seeds = self._split_seed(seed)
        # Checked before anything changes; each sub-env then parses its own share (wvla_gym.starts).
        options = check_options(options, VECTOR_START_KEYS)
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=np.bool_)
        else:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,) or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True")
            if self._needs_reset and not mask.all():
                raise ValueError("the first reset must reset every sub-env (no partial reset_mask)")
        per_env = self._split_options(options)
        for i in np.flatnonzero(mask):  # every sub-env's share is valid before any sub-env resets
            self.envs[i].start_request(per_env[i])
        # the vector env's own generator (batched sampling) follows sub-env 0's seed
        super().reset(seed=seeds[0])

        infos: dict[str, Any] = {}
        for i in np.flatnonzero(mask):
            self._obs[i], info = self.envs[i].reset(seed=seeds[i], options=per_env[i])
            self._rewards[i], self._terminations[i], self._truncations[i], self._done[i] = 0.0, False, False, False
            infos = self._add_info(infos, info, int(i))
        if self._generator is None or seeds[0] is not None:
            self._generator = self._make_generator()
        self._needs_reset = False
        return self._batch_obs(), infos

    def step(self, actions):
        if self._needs_reset:
            raise RuntimeError("ImaginedVectorEnv.step() called before reset(); call reset() first")
        try:
            acts = np.asarray(actions, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(f"actions must be a numeric array of shape ({self.num_envs}, 7)") from e
        if acts.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(f"actions must have shape ({self.num_envs}, 7); got {acts.shape}")

        mode = self.autoreset_mode
        infos: dict[str, Any] = {}
        env_infos: list[dict[str, Any] | None] = [None] * self.num_envs
        active = [i for i in range(self.num_envs) if not self._done[i]]
        for i in active:  # validate everything before any sub-env changes state
            acts[i] = self.envs[i].begin_step(acts[i])
        for i in np.flatnonzero(self._done):
            if mode == AutoresetMode.NEXT_STEP:
                self._obs[i], env_infos[i] = self.envs[i].reset()
                self._terminations[i], self._truncations[i] = False, False
            self._rewards[i] = 0.0  # DISABLED: frozen until reset(options={"reset_mask": ...})

        self.last_batch_size = len(active)
        if active:
            inputs = [self.envs[i].world_inputs(acts[i]) for i in active]  # rows' histories may differ in length
            from_codes = self.envs[0].imagine_from == "codes"
            res = self.runtime.imagine(
                None if from_codes else [f for f, _ in inputs],
                [a for _, a in inputs],
                codes=[self.envs[i].world_codes() for i in active] if from_codes else None,
                do_sample=self.do_sample,
                temperature=self.temperature,
                generator=self._generator,
                return_info=True,
                action_guidance=self.envs[0].action_guidance,
            )
            for j, i in enumerate(active):
                self.envs[i].push_frame(res.frames[j], acts[i], codes=res.info.codes[j])
            scores = score_many(
                self.success_judge,
                [self.envs[i].judge_frames() for i in active],
                [self.envs[i].task_description for i in active],
            )
            for j, i in enumerate(active):
                env = self.envs[i]
                self._obs[i], self._rewards[i], self._terminations[i], self._truncations[i], env_infos[i] = env.end_step(
                    scores[j]
                )
                if mode == AutoresetMode.SAME_STEP and (self._terminations[i] or self._truncations[i]):
                    infos = self._add_info(infos, {"final_obs": self._obs[i], "final_info": env_infos[i]}, i)
                    self._obs[i], env_infos[i] = env.reset()

        for i in range(self.num_envs):
            if env_infos[i] is not None:
                infos = self._add_info(infos, env_infos[i], i)
        ended = self._terminations | self._truncations
        # SAME_STEP has already reset; NEXT_STEP resets next step; DISABLED freezes.
        self._done = ended.copy() if mode != AutoresetMode.SAME_STEP else np.zeros(self.num_envs, dtype=np.bool_)
        return self._batch_obs(), self._rewards.copy(), self._terminations.copy(), self._truncations.copy(), infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array":
            return None
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call a method (or read an attribute) of every sub-env; LeRobot reads ``task_description`` this way."""
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values: Any) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr needs {self.num_envs} values; got {len(values)}")
        for env, v in zip(self.envs, values, strict=True):
            setattr(env, name, v)

    # ------------------------------------------------------------------ helpers
    def _make_generator(self):
        import torch

        g = torch.Generator()
        g.manual_seed(int(self.np_random.integers(0, 2**63 - 1)))
        return g

    def _split_seed(self, seed: Any) -> list[int | None]:
        """One seed per sub-env: ``s`` -> ``s + i``, or a sequence of ``num_envs`` ints / ``None``."""
        expected = f"None, an int >= 0 or a sequence of num_envs={self.num_envs} ints >= 0 / None"
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
            return [check_int("seed", seed, lo=0) + i for i in range(self.num_envs)]
        if not isinstance(seed, (list, tuple, np.ndarray)) or len(seed) != self.num_envs:
            raise fail("seed", seed, expected)
        return [check_int(f"seed[{i}]", s, lo=0, optional=True) for i, s in enumerate(seed)]

    def _split_options(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        per_env: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in options.items():
            try:
                if key in ("init_state_id", "frame_id", "perturb_radius"):
                    per = isinstance(value, (list, tuple)) or np.ndim(value) == 1
                elif key == "placement":
                    per = isinstance(value, (list, tuple))
                elif isinstance(value, (list, tuple)) and any(v is None for v in value):
                    per = True
                else:  # an array with one more axis than a single frame/state is one value per sub-env
                    per = np.ndim(value) == {"image": 3, "wrist_image": 3, "state": 1, "sim_state": 1}[key] + 1
            except ValueError as e:  # numpy cannot tell the shape of a ragged nested list
                raise fail(
                    f"options[{key!r}]",
                    value,
                    "one value for every sub-env or a sequence of num_envs values",
                    message=f"options[{key!r}]={describe(value)} has no regular shape ({e})",
                ) from e
            if per:
                values = list(value)
                if len(values) != self.num_envs:
                    raise ValueError(f"options[{key!r}] has {len(values)} entries; expected num_envs={self.num_envs}")
            else:
                values = [value] * self.num_envs
            for i, v in enumerate(values):
                if v is not None:
                    per_env[i][key] = v
        return per_env

    def _batch_obs(self):
        out = create_empty_array(self.single_observation_space, self.num_envs)
        return concatenate(self.single_observation_space, self._obs, out)
