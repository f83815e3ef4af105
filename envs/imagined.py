"""The WorldVLA world model as a Gymnasium environment: every transition is imagined, not simulated.

``WorldVLA-Imagined-v0`` has exactly the observation and action spaces of ``WorldVLA-LIBERO-v0``, so any
policy runs in both from the same start frame. The pieces live in one place each:

* :class:`ImaginedEnv` (here): one imagined episode;
* :class:`envs.imagined_vector.ImaginedVectorEnv` (the id's ``vector_entry_point``): N episodes batched into
  one world-model call per step;
* :mod:`envs.init_frames`: start frames (rendered LIBERO init states and their cache, datasets, HDF5 files);
* :mod:`envs.imagined_runtime`: loading (and sharing) the world model and its judge.

The names of those modules are re-exported here, so ``from envs.imagined import ...`` keeps working.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.imagined_runtime import checkpoint_judge, load_runtime
from envs.init_frames import (
    INIT_FRAME_SEED,
    cache_dir,
    init_frame_cache_key,
    init_frame_path,
    libero_task_description,
    load_init_frames,
    render_init_frames,
    render_start_frame,
    start_frame_path,
)
from envs.libero import INSTRUCTION_CHARSET, INSTRUCTION_MAX_LENGTH
from wvla_gym.judge import SuccessJudge, judge_threshold, judge_window, score_many
from wvla_gym.protocol import (
    ACTION_DIM,
    CONTROL_FPS,
    NUM_INIT_STATES,
    NUM_STEPS_WAIT,
    STATE_DIM,
    SUITE_MAX_STEPS,
    check_action,
    validate_suite_task,
)

__all__ = [
    "INIT_FRAME_SEED",
    "RESET_OPTION_KEYS",
    "UNPREDICTED_KEYS",
    "ImaginedEnv",
    "ImaginedVectorEnv",  # noqa: F822 - lazily re-exported by __getattr__
    "cache_dir",
    "checkpoint_judge",
    "init_frame_cache_key",
    "init_frame_path",
    "libero_task_description",
    "load_init_frames",
    "load_runtime",
    "render_init_frames",
]

#: Observation keys the world model does not predict, and how they are filled.
UNPREDICTED_KEYS = ("wrist_image", "state")
#: Reset option keys; at most one of the start sources ``init_state_id`` / ``image`` / ``frame_id``, the real
#: env's start options ``placement`` / ``perturb_radius`` / ``sim_state`` rendered in LIBERO (see reset()).
RESET_OPTION_KEYS = ("init_state_id", "image", "wrist_image", "state", "frame_id", "placement", "perturb_radius",
                     "sim_state")
#: The options that start from a state the real env makes (rendered once in LIBERO, then cached).
LIBERO_START_KEYS = ("placement", "perturb_radius", "sim_state")


def __getattr__(name: str) -> Any:
    # ImaginedVectorEnv lives in envs.imagined_vector (which imports this module): re-exported lazily.
    if name == "ImaginedVectorEnv":
        from envs.imagined_vector import ImaginedVectorEnv

        return ImaginedVectorEnv
    raise AttributeError(f"module 'envs.imagined' has no attribute {name!r}")


def _check_frame(x: Any, name: str, resolution: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.uint8 or a.shape != (resolution, resolution, 3):
        raise ValueError(
            f"{name} must be a uint8 array of shape ({resolution}, {resolution}, 3) (HWC, rotated 180° like the real "
            f"env's obs); got dtype {a.dtype} and shape {a.shape}"
        )
    return np.ascontiguousarray(a)


def _check_state(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.shape != (STATE_DIM,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite float array of shape ({STATE_DIM},); got shape {a.shape}")
    return a


class ImaginedEnv(gym.Env):
    """A LIBERO task whose transitions are imagined by the WorldVLA world model.

    Registered as ``WorldVLA-Imagined-v0`` (also ``wvla_gym:WorldVLA-Imagined-v0``)::

        env = gym.make("WorldVLA-Imagined-v0", task_suite="libero_object", task_id=0, checkpoint=path)
        obs, info = env.reset(seed=0, options={"init_state_id": 3})   # same start as the real env
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    ## Observation space
    Identical to ``WorldVLA-LIBERO-v0`` at the checkpoint's resolution ``R`` (flat ``Dict``):

    | key | space | source here |
    |---|---|---|
    | ``image`` | ``Box(0, 255, (R, R, 3), uint8)`` | predicted by the world model (agent view, rotated 180°) |
    | ``wrist_image`` | same (only with ``wrist=True``) | **not predicted**: carried from the start frame, or zeros |
    | ``state`` | ``Box(-inf, inf, (8,), float32)`` | **not predicted**: carried from the start frame, or zeros |
    | ``instruction`` | ``Text`` (only with ``instruction_in_obs=True``) | the task's instruction |

    ``info["unpredicted_keys"]`` says for each unpredicted key whether it is ``"carried"`` (from the start
    frame: a rendered init state, a dataset row or ``options["state"]``/``options["wrist_image"]``) or
    ``"zeros"``; it stays the same for the whole episode.

    ## Action space
    ``Box(-1, 1, (7,), float32)`` (LIBERO OSC_POSE deltas, gripper -1 open / +1 close). Out-of-range or
    non-finite actions raise ``ValueError``, as in the real env.

    ## Starting state
    ``reset(options=...)`` takes one start source:

    * ``{"init_state_id": k}``: the real env's first observation for init state ``k`` (after the settle
      steps), rendered once in MuJoCo and cached in ``$WVLA_GYM_CACHE`` (default ``~/.cache/wvla-gym``;
      keyed by the MuJoCo/robosuite/LIBERO versions, settle steps and seed, see :mod:`envs.init_frames`);
    * ``{"image": ndarray}``: any uint8 ``(R, R, 3)`` frame (optionally with ``"wrist_image"`` / ``"state"``);
    * ``{"frame_id": i}``: row ``i`` of the ``init_frames`` dataset;
    * the real env's other starts, ``{"placement": "sampled"}``, ``{"init_state_id": k, "perturb_radius": r}``
      or ``{"sim_state": state}`` (see :mod:`envs.placement`): the real env's first frame for the same
      ``reset(seed=s, options=...)``, rendered once in LIBERO and cached like init states, so a paired
      imagined episode starts where its real twin did. ``info["placement"]`` names the mode and seed.

    Without options a dataset row is drawn from ``np_random`` when ``init_frames`` is given, else LIBERO
    init states are cycled like the real env (a seeded reset restarts the cycle at init state 0, so
    ``reset(seed=s)`` always gives the same start). ``init_frames`` may be a LIBERO-layout HDF5 file, ours or
    official: its first frames come out in the env's orientation either way. Sources ``image`` and ``frame_id`` work without LIBERO
    installed (then pass ``instruction=``).

    ## Rewards and episode end
    WorldVLA has no reward head: after each step ``success_judge`` scores the most recent frames
    (``info["success_score"]`` in [0, 1]); success is ``score >= threshold`` and gives reward 1.0 and
    ``terminated=True`` (``info["is_success"]``). Without a judge the score is 0.0 and episodes only
    truncate, at the suite's LIBERO limit unless ``max_episode_steps`` is given. ``info["imagined"]`` is
    always ``True``; the real env's keys (``task_description``, ``task_suite``, ``task_id``,
    ``init_state_id`` (-1 when the start was not an init state), ``elapsed_steps``) are there too, plus
    ``start_source`` (``"init_state"``, ``"image"`` or ``"dataset"``) and ``unpredicted_keys``.

    ## Determinism
    The sampler's ``torch.Generator`` is re-seeded from ``np_random`` at every reset. Greedy decoding
    (``do_sample=False``, the default) is bit-identical on CPU for the same seed; with sampling, the same
    seed gives the same rollout on the same device.

    ## Arguments
    ``checkpoint`` (path or Hub id; ``None`` = the embedded default model), ``runtime`` (an already loaded
    ``WorldVLARuntime`` to share, e.g. with a ``WorldVLAAgent``), ``task_suite``, ``task_id``,
    ``resolution`` (must equal the checkpoint's; default: the checkpoint's), ``wrist``,
    ``instruction_in_obs``, ``instruction`` (override the task's text; required without LIBERO),
    ``success_judge``, ``success_threshold`` (default: the judge's ``threshold``), ``max_episode_steps``,
    ``init_frames`` (dataset of start frames), ``do_sample``/``temperature``, ``device``, ``render_mode``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FPS}

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        task_suite: str = "libero_object",
        task_id: int = 0,
        resolution: int | None = None,
        *,
        runtime: Any = None,
        wrist: bool = True,
        instruction_in_obs: bool = False,
        instruction: str | None = None,
        success_judge: SuccessJudge | None = None,
        success_threshold: float | None = None,
        max_episode_steps: int | None = None,
        init_frames: Any = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        device: str = "cpu",
        render_mode: str | None = None,
    ) -> None:
        validate_suite_task(task_suite, task_id)
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps={max_episode_steps!r}; expected None or an int >= 1")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; expected None or one of {self.metadata['render_modes']}")
        if success_judge is not None and not callable(getattr(success_judge, "score", None)):
            raise ValueError("success_judge must have a score(frames, instruction) -> float method (see wvla_gym.judge)")
        if not (temperature > 0):
            raise ValueError(f"temperature={temperature!r}; expected > 0")
        if runtime is not None and checkpoint is not None:
            raise ValueError("pass either checkpoint= or runtime=, not both")

        self.runtime = runtime if runtime is not None else load_runtime(checkpoint, device)
        rt_res = int(self.runtime.resolution)
        if resolution is None:
            resolution = rt_res
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or int(resolution) != rt_res:
            raise ValueError(
                f"resolution={resolution!r}, but the world model predicts {rt_res}x{rt_res} frames; "
                f"pass resolution={rt_res} (or None) and build the real env at the same resolution"
            )

        self.task_suite = task_suite
        self.task_id = int(task_id)
        self.resolution = rt_res
        self.wrist = bool(wrist)
        self.instruction_in_obs = bool(instruction_in_obs)
        self.max_episode_steps = int(max_episode_steps or SUITE_MAX_STEPS[task_suite])
        self.render_mode = render_mode
        if success_judge is None:
            success_judge = checkpoint_judge(self.runtime)
        self.success_judge = success_judge
        self.success_threshold = (
            float(success_threshold) if success_threshold is not None else judge_threshold(success_judge)
        )
        if not 0.0 <= self.success_threshold <= 1.0:
            raise ValueError(f"success_threshold={self.success_threshold!r}; expected a float in [0, 1]")
        self.do_sample = bool(do_sample)
        self.temperature = float(temperature)
        self.init_frames = None if init_frames is None else load_init_frames(init_frames, self.resolution)
        if instruction is not None:
            self.task_description: str = str(instruction)
        else:
            try:
                self.task_description = libero_task_description(task_suite, self.task_id)
            except ImportError as e:
                raise ValueError(
                    "LIBERO is not installed, so the task's instruction is unknown: pass instruction='...' "
                    "(or install the [libero] extra)"
                ) from e
        if len(self.task_description) > INSTRUCTION_MAX_LENGTH:
            raise ValueError(f"instruction is longer than {INSTRUCTION_MAX_LENGTH} characters")

        img = spaces.Box(0, 255, (self.resolution, self.resolution, 3), np.uint8)
        obs_spaces: dict[str, spaces.Space] = {"image": img}
        if self.wrist:
            obs_spaces["wrist_image"] = img
        obs_spaces["state"] = spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        if self.instruction_in_obs:
            obs_spaces["instruction"] = spaces.Text(INSTRUCTION_MAX_LENGTH, charset=INSTRUCTION_CHARSET)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        self._window: deque[np.ndarray] = deque(maxlen=judge_window(success_judge))
        self._frame: np.ndarray | None = None
        self._past: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=0)
        self._placement: dict[str, Any] | None = None
        self._wrist: np.ndarray | None = None
        self._state: np.ndarray | None = None
        self._fill: dict[str, str] = {}
        self._elapsed = 0
        self._needs_reset = True
        self._next_init_state_id = 0
        self._libero_env = None  # real env kept for rendering uncached init states
        self._generator = None
        self.init_state_id: int | None = None
        self.frame_id: int | None = None
        self.start_source: str | None = None

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - set(RESET_OPTION_KEYS)
        if unknown:
            raise ValueError(f"options has unknown keys {sorted(unknown)}; expected some of {list(RESET_OPTION_KEYS)}")
        sources = [k for k in ("init_state_id", "image", "frame_id") if k in options]
        libero_start = [k for k in LIBERO_START_KEYS if k in options]
        if libero_start and ("image" in options or "frame_id" in options):
            raise ValueError(f"options {libero_start} start from a real-env state; they cannot be combined with "
                             f"{[k for k in ('image', 'frame_id') if k in options]}")
        if len(sources) > 1:
            raise ValueError(f"options give more than one start source {sources}; pass one of them")
        self._placement = None
        if ("wrist_image" in options or "state" in options) and "image" not in options:
            raise ValueError("options 'wrist_image' / 'state' are only valid together with 'image'")

        if "image" in options:
            start = {"image": _check_frame(options["image"], "options['image']", self.resolution)}
            if "wrist_image" in options:
                start["wrist_image"] = _check_frame(options["wrist_image"], "options['wrist_image']", self.resolution)
            if "state" in options:
                start["state"] = _check_state(options["state"], "options['state']")
            self.start_source, self.init_state_id, self.frame_id = "image", None, None
        elif libero_start:
            start = self._libero_start(seed, {k: options[k] for k in ("init_state_id", *LIBERO_START_KEYS) if k in options})
        elif "frame_id" in options or ("init_state_id" not in options and self.init_frames is not None):
            if self.init_frames is None:
                raise ValueError("options['frame_id'] needs a dataset: construct the env with init_frames=...")
            n = len(self.init_frames["image"])
            i = options["frame_id"] if "frame_id" in options else int(self.np_random.integers(n))
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < n:
                raise ValueError(f"options['frame_id']={i!r}; expected an int in [0, {n - 1}]")
            start = {k: v[int(i)] for k, v in self.init_frames.items()}
            self.start_source, self.init_state_id, self.frame_id = "dataset", None, int(i)
        else:
            # Like the real env: a seeded reset restarts the init-state cycle, so reset(seed=s) is deterministic.
            k = options.get("init_state_id", 0 if seed is not None else self._next_init_state_id)
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) < NUM_INIT_STATES:
                raise ValueError(f"options['init_state_id']={k!r}; expected an int in [0, {NUM_INIT_STATES - 1}]")
            k = int(k)
            start = self._init_state_frame(k)
            self._next_init_state_id = (k + 1) % NUM_INIT_STATES
            self.start_source, self.init_state_id, self.frame_id = "init_state", k, None

        self._frame = start["image"].copy()
        self._fill = {}
        if self.wrist:
            self._fill["wrist_image"] = "carried" if "wrist_image" in start else "zeros"
            self._wrist = start["wrist_image"].copy() if "wrist_image" in start else np.zeros_like(self._frame)
        self._fill["state"] = "carried" if "state" in start else "zeros"
        self._state = start["state"].astype(np.float32) if "state" in start else np.zeros(STATE_DIM, np.float32)
        self._window.clear()
        self._window.append(self._frame)
        # past (frame, action) pairs for a world model with a history (world_history - 1 of them)
        self._past = deque(maxlen=max(int(getattr(self.runtime, "world_history", 1)) - 1, 0))
        self._generator = self._make_generator()
        self._elapsed = 0
        self._needs_reset = False
        return self._obs(), self._info(False, 0.0)

    def step(self, action):
        a = self.begin_step(action)
        frames, actions = self.world_inputs(a)
        frame = self.runtime.imagine(
            frames[None],
            actions[None],
            do_sample=self.do_sample,
            temperature=self.temperature,
            generator=self._generator,
        )[0]
        self.push_frame(frame, a)
        score = score_many(self.success_judge, [self.judge_frames()], [self.task_description])[0]
        return self.end_step(score)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._frame is None:
            raise RuntimeError("render() needs a reset() first")
        return self._frame.copy()

    def close(self) -> None:
        if self._libero_env is not None:
            try:
                self._libero_env.close()
            finally:
                self._libero_env = None

    # ------------------------------------------------------------------ pieces of step() the vector env batches
    # ImaginedVectorEnv runs begin_step -> one batched imagine over every sub-env's `frame` -> push_frame
    # -> (batched judge over judge_frames) -> end_step, so a batched step equals N single steps.
    @property
    def frame(self) -> np.ndarray | None:
        """The current (last imagined or start) frame, ``(R, R, 3)`` uint8; None before the first reset."""
        return self._frame

    def _make_generator(self):
        import torch

        g = torch.Generator()  # the runtime samples on CPU whatever the model's device
        # Drawn from np_random so that reset(seed=s) fixes the whole rollout, sampling included.
        g.manual_seed(int(self.np_random.integers(0, 2**63 - 1)))
        return g

    def begin_step(self, action: Any) -> np.ndarray:
        """Validate ``action`` (and that an episode is running); returns it as float32."""
        if self._needs_reset:
            raise RuntimeError("ImaginedEnv.step() called before reset() (or after the episode ended); call reset() first")
        return check_action(action)

    def world_inputs(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The world model's input for this step: frames ``(T, R, R, 3)`` and actions ``(T, 7)``, oldest first,
        the last pair being the current frame and ``action``; T = 1 unless the world model has a history
        (``world_history`` H: up to H - 1 past pairs of this episode come first)."""
        frames = [f for f, _ in self._past] + [self._frame]
        actions = [a for _, a in self._past] + [np.asarray(action, dtype=np.float32)]
        return np.stack(frames), np.stack(actions)

    def push_frame(self, frame: np.ndarray, action: np.ndarray | None = None) -> None:
        """Make the world model's prediction the current frame (and add it to the judge's window); ``action``
        (the one that led to it) joins the world model's history with the frame it was taken in."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != self._frame.shape:
            raise RuntimeError(f"world model returned {frame.dtype} {frame.shape}; expected uint8 {self._frame.shape}")
        if action is not None and self._past.maxlen:
            self._past.append((self._frame, np.asarray(action, dtype=np.float32)))
        self._frame = np.ascontiguousarray(frame)
        self._window.append(self._frame)

    def judge_frames(self) -> np.ndarray:
        """The frames the judge scores: the most recent ``window`` frames, oldest first, ``(T, R, R, 3)``."""
        return np.stack(self._window)

    def end_step(self, score: float):
        """Count the step and turn the judge's ``score`` into ``(obs, reward, terminated, truncated, info)``."""
        self._elapsed += 1
        score = float(score)
        success = bool(self.success_judge is not None and score >= self.success_threshold)
        truncated = bool(not success and self._elapsed >= self.max_episode_steps)
        self._needs_reset = success or truncated
        return self._obs(), float(success), success, truncated, self._info(success, score)

    def _obs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {"image": self._frame.copy()}
        if self.wrist:
            obs["wrist_image"] = self._wrist.copy()
        obs["state"] = self._state.copy()
        if self.instruction_in_obs:
            obs["instruction"] = self.task_description
        return obs

    def _info(self, success: bool, score: float) -> dict[str, Any]:
        return {
            "is_success": success,
            "success_score": score,
            "imagined": True,
            "task_description": self.task_description,
            "task_suite": self.task_suite,
            "task_id": self.task_id,
            "init_state_id": -1 if self.init_state_id is None else self.init_state_id,
            "start_source": self.start_source,
            **({"placement": dict(self._placement)} if self._placement is not None else {}),
            "elapsed_steps": self._elapsed,
            "unpredicted_keys": dict(self._fill),
        }

    def _libero_start(self, seed: int | None, opts: dict[str, Any]) -> dict[str, np.ndarray]:
        """Start from a real-env start other than a plain init state (placement, perturbation, sim_state)."""
        from envs.placement import parse_reset_options

        req = parse_reset_options(opts, NUM_INIT_STATES)
        if req.source == "init_state" and "init_state_id" not in opts:  # cycle like the real env
            opts["init_state_id"] = 0 if seed is not None else self._next_init_state_id
            req.init_state_id = opts["init_state_id"]
        if req.init_state_id is not None:
            self._next_init_state_id = (int(req.init_state_id) + 1) % NUM_INIT_STATES
        # the real env's episode seed: the reset seed, else one drawn from the env's generator
        episode_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        start = self._render_start(opts, episode_seed)
        self.start_source = "sim_state" if req.source == "sim_state" else "placement"
        self.init_state_id, self.frame_id = req.init_state_id, None
        self._placement = {"mode": {"sampled": "sampled", "sim_state": "sim_state"}.get(req.source, "fixed"),
                           "seed": episode_seed, "perturb_radius": req.perturb_radius}
        return start

    def _init_state_frame(self, k: int) -> dict[str, np.ndarray]:
        return self._render_start({"init_state_id": k}, INIT_FRAME_SEED)

    def _render_start(self, opts: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
        path = start_frame_path(self.task_suite, self.task_id, self.resolution, opts, seed, settle_steps=NUM_STEPS_WAIT)
        try:
            if not path.exists() and self._libero_env is None:
                from envs.libero import LiberoEnv

                self._libero_env = LiberoEnv(self.task_suite, self.task_id, resolution=self.resolution, wrist=True,
                                             num_steps_wait=NUM_STEPS_WAIT)
            if set(opts) == {"init_state_id"}:
                return render_init_frames(self.task_suite, self.task_id, self.resolution, [opts["init_state_id"]],
                                          libero_env=self._libero_env, settle_steps=NUM_STEPS_WAIT)[0]
            return render_start_frame(self.task_suite, self.task_id, self.resolution, opts, seed,
                                      libero_env=self._libero_env, settle_steps=NUM_STEPS_WAIT)
        except ImportError as e:
            what = f"init state {opts['init_state_id']}" if set(opts) == {"init_state_id"} else f"start {opts} (seed {seed})"
            raise ValueError(
                f"{what} of {self.task_suite}/{self.task_id} at {self.resolution}px is not cached "
                f"({path}) and LIBERO is not installed to render it; start from options={{'image': frame}} or "
                "a dataset (init_frames=...) instead"
            ) from e
