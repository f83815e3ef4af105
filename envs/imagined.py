"""The WorldVLA world model as a Gymnasium environment: every transition is imagined, not simulated.

``WorldVLA-Imagined-v0`` has exactly the observation and action spaces of ``WorldVLA-LIBERO-v0``, so any
policy runs in both from the same start frame. :class:`ImaginedVectorEnv` (the id's ``vector_entry_point``)
batches the N sub-environments into one world-model call per step.
"""

from __future__ import annotations

import os
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

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

#: Observation keys the world model does not predict, and how they are filled.
UNPREDICTED_KEYS = ("wrist_image", "state")
#: Reset option keys; at most one of the start sources ``init_state_id`` / ``image`` / ``frame_id``.
RESET_OPTION_KEYS = ("init_state_id", "image", "wrist_image", "state", "frame_id")
#: Seed used when rendering an init state in real LIBERO for the on-disk cache (and by ``side_by_side``).
INIT_FRAME_SEED = 0


def cache_dir() -> Path:
    """Root of the on-disk cache (``$WVLA_GYM_CACHE`` or ``~/.cache/wvla-gym``)."""
    return Path(os.environ.get("WVLA_GYM_CACHE") or Path.home() / ".cache" / "wvla-gym")


def init_frame_path(task_suite: str, task_id: int, resolution: int, init_state_id: int) -> Path:
    """Where the rendered start frame of a LIBERO init state is cached."""
    return cache_dir() / "init_frames" / task_suite / str(int(task_id)) / str(int(resolution)) / f"{int(init_state_id)}.npz"


def render_init_frames(
    task_suite: str,
    task_id: int,
    resolution: int,
    init_state_ids: Sequence[int],
    *,
    overwrite: bool = False,
    libero_env: Any = None,
) -> list[dict[str, np.ndarray]]:
    """Render LIBERO init states after the settle steps (``reset(seed=0, options={"init_state_id": k})``).

    Frames are cached as ``.npz`` under :func:`init_frame_path`, so real LIBERO runs once per init state.
    Returns one dict per id with ``image``, ``wrist_image`` (uint8, rotated like the real env) and ``state``.
    """
    out: list[dict[str, np.ndarray]] = []
    own_env = None
    try:
        for k in init_state_ids:
            path = init_frame_path(task_suite, task_id, resolution, k)
            if path.exists() and not overwrite:
                with np.load(path) as z:
                    out.append({key: z[key] for key in ("image", "wrist_image", "state")})
                continue
            env = libero_env
            if env is None:
                if own_env is None:
                    from envs.libero import LiberoEnv  # lazy: MuJoCo only when a frame is missing

                    own_env = LiberoEnv(task_suite, task_id, resolution=resolution, wrist=True, num_steps_wait=NUM_STEPS_WAIT)
                env = own_env
            obs, _ = env.reset(seed=INIT_FRAME_SEED, options={"init_state_id": int(k)})
            frame = {"image": obs["image"], "wrist_image": obs["wrist_image"], "state": obs["state"]}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
            np.savez_compressed(tmp, **frame)
            os.replace(tmp, path)  # atomic, so parallel workers never read half a file
            out.append(frame)
    finally:
        if own_env is not None:
            own_env.close()
    return out


def libero_task_description(task_suite: str, task_id: int) -> str:
    """The LIBERO instruction of a task (imports LIBERO's benchmark registry, not the simulator)."""
    import contextlib
    import io

    from envs.libero import _libero_modules

    benchmark = _libero_modules(None)[0]
    with contextlib.redirect_stdout(io.StringIO()):
        suite = benchmark.get_benchmark_dict()[task_suite]()
    return suite.get_task(int(task_id)).language


# Loaded runtimes are shared by checkpoint, so gym.make in a loop (or SyncVectorEnv) loads the weights once.
_RUNTIMES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def checkpoint_judge(runtime: Any) -> SuccessJudge | None:
    """The success judge a checkpoint ships in ``judge/`` (the embedded default does), else ``None``."""
    ckpt = getattr(runtime, "checkpoint_dir", None)
    if ckpt is None or not (Path(ckpt) / "judge" / "judge_config.json").exists():
        return None
    from wvla_gym.judge import ClassifierJudge

    return ClassifierJudge.from_pretrained(Path(ckpt) / "judge")


def load_runtime(checkpoint: str | os.PathLike | None, device: str = "cpu") -> Any:
    """Load (or reuse) a :class:`wvla_gym.runtime.WorldVLARuntime`; ``None`` means the embedded default."""
    key = (None if checkpoint is None else os.fspath(checkpoint), str(device))
    rt = _RUNTIMES.get(key)
    if rt is not None:
        return rt
    from wvla_gym.runtime import WorldVLARuntime

    try:
        rt = WorldVLARuntime.from_pretrained(key[0], device=device)
    except FileNotFoundError as e:
        if checkpoint is not None:
            raise
        raise FileNotFoundError(
            "WorldVLA-Imagined-v0 has no embedded default world model in this install yet. Pass "
            "checkpoint=<local dir or Hub id of a WorldVLA world-model checkpoint> or runtime=<a loaded "
            "wvla_gym.runtime.WorldVLARuntime>; for tests, build a tiny random model with "
            "wvla_gym.model.tiny.make_tiny_checkpoint(out_dir) and pass checkpoint=out_dir."
        ) from e
    _RUNTIMES[key] = rt
    return rt


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


def load_init_frames(source: Any, resolution: int) -> dict[str, np.ndarray]:
    """Normalise a dataset of start frames to ``{"image": (N,R,R,3) uint8[, "wrist_image"][, "state": (N,8)]}``.

    ``source`` is an array of frames, a mapping with those keys, a ``.npz`` file with those keys, or a LIBERO
    HDF5 file (``data/<demo>/obs/agentview_rgb``; the first frame of every demo, rotated 180°).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"init_frames={os.fspath(path)!r} does not exist")
        if path.suffix in (".hdf5", ".h5"):
            import h5py

            frames: dict[str, list[np.ndarray]] = {"image": [], "wrist_image": [], "state": []}
            with h5py.File(path, "r") as f:
                for demo in sorted(f["data"], key=lambda s: (len(s), s)):
                    obs = f["data"][demo]["obs"]
                    frames["image"].append(obs["agentview_rgb"][0][::-1, ::-1])
                    if "eye_in_hand_rgb" in obs:
                        frames["wrist_image"].append(obs["eye_in_hand_rgb"][0][::-1, ::-1])
                    if {"ee_states", "gripper_states"} <= set(obs):
                        frames["state"].append(np.concatenate([obs["ee_states"][0], obs["gripper_states"][0]]))
            data = {k: np.stack(v) for k, v in frames.items() if len(v) == len(frames["image"]) and v}
        else:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
    elif isinstance(source, Mapping):
        data = {k: np.asarray(v) for k, v in source.items()}
    else:
        data = {"image": np.asarray(source)}
    if "image" not in data:
        raise ValueError(f"init_frames needs an 'image' array; got keys {sorted(data)}")
    images = data["image"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (resolution, resolution, 3) or not len(images):
        raise ValueError(
            f"init_frames['image'] must be uint8 (N, {resolution}, {resolution}, 3) with N >= 1; "
            f"got {images.dtype} {images.shape}"
        )
    out = {"image": np.ascontiguousarray(images)}
    if "wrist_image" in data:
        w = data["wrist_image"]
        if w.dtype != np.uint8 or w.shape != images.shape:
            raise ValueError(f"init_frames['wrist_image'] must be uint8 {images.shape}; got {w.dtype} {w.shape}")
        out["wrist_image"] = np.ascontiguousarray(w)
    if "state" in data:
        s = np.asarray(data["state"], dtype=np.float32)
        if s.shape != (len(images), STATE_DIM):
            raise ValueError(f"init_frames['state'] must have shape ({len(images)}, {STATE_DIM}); got {s.shape}")
        out["state"] = s
    return out


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
      steps), rendered once in MuJoCo and cached in ``$WVLA_GYM_CACHE`` (default ``~/.cache/wvla-gym``);
    * ``{"image": ndarray}``: any uint8 ``(R, R, 3)`` frame (optionally with ``"wrist_image"`` / ``"state"``);
    * ``{"frame_id": i}``: row ``i`` of the ``init_frames`` dataset.

    Without options a dataset row is drawn from ``np_random`` when ``init_frames`` is given, else LIBERO
    init states are cycled like the real env. Sources ``image`` and ``frame_id`` work without LIBERO
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
        if len(sources) > 1:
            raise ValueError(f"options give more than one start source {sources}; pass one of them")
        if ("wrist_image" in options or "state" in options) and "image" not in options:
            raise ValueError("options 'wrist_image' / 'state' are only valid together with 'image'")

        if "image" in options:
            start = {"image": _check_frame(options["image"], "options['image']", self.resolution)}
            if "wrist_image" in options:
                start["wrist_image"] = _check_frame(options["wrist_image"], "options['wrist_image']", self.resolution)
            if "state" in options:
                start["state"] = _check_state(options["state"], "options['state']")
            self.start_source, self.init_state_id, self.frame_id = "image", None, None
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
            k = options.get("init_state_id", self._next_init_state_id)
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
        self._generator = self._make_generator()
        self._elapsed = 0
        self._needs_reset = False
        return self._obs(), self._info(False, 0.0)

    def step(self, action):
        a = self._begin_step(action)
        frame = self.runtime.imagine(
            self._frame[None],
            a[None],
            do_sample=self.do_sample,
            temperature=self.temperature,
            generator=self._generator,
        )[0]
        self._push_frame(frame)
        score = score_many(self.success_judge, [self.judge_frames()], [self.task_description])[0]
        return self._end_step(score)

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

    # ------------------------------------------------------------------ pieces shared with the vector env
    def _make_generator(self):
        import torch

        g = torch.Generator()  # the runtime samples on CPU whatever the model's device
        # Drawn from np_random so that reset(seed=s) fixes the whole rollout, sampling included.
        g.manual_seed(int(self.np_random.integers(0, 2**63 - 1)))
        return g

    def _begin_step(self, action: Any) -> np.ndarray:
        if self._needs_reset:
            raise RuntimeError("ImaginedEnv.step() called before reset() (or after the episode ended); call reset() first")
        return check_action(action)

    def _push_frame(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != self._frame.shape:
            raise RuntimeError(f"world model returned {frame.dtype} {frame.shape}; expected uint8 {self._frame.shape}")
        self._frame = np.ascontiguousarray(frame)
        self._window.append(self._frame)

    def judge_frames(self) -> np.ndarray:
        """The frames the judge scores: the most recent ``window`` frames, oldest first, ``(T, R, R, 3)``."""
        return np.stack(self._window)

    def _end_step(self, score: float):
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
            "elapsed_steps": self._elapsed,
            "unpredicted_keys": dict(self._fill),
        }

    def _init_state_frame(self, k: int) -> dict[str, np.ndarray]:
        path = init_frame_path(self.task_suite, self.task_id, self.resolution, k)
        if not path.exists() and self._libero_env is None:
            try:
                from envs.libero import LiberoEnv

                self._libero_env = LiberoEnv(self.task_suite, self.task_id, resolution=self.resolution, wrist=True)
            except ImportError as e:
                raise ValueError(
                    f"init state {k} of {self.task_suite}/{self.task_id} at {self.resolution}px is not cached "
                    f"({path}) and LIBERO is not installed to render it; start from options={{'image': frame}} or "
                    "a dataset (init_frames=...) instead"
                ) from e
        return render_init_frames(self.task_suite, self.task_id, self.resolution, [k], libero_env=self._libero_env)[0]


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
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}; expected an int >= 1")
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError as e:
            raise ValueError(f"autoreset_mode={autoreset_mode!r}; expected one of {[m.value for m in AutoresetMode]}") from e
        if runtime is not None and checkpoint is not None:
            raise ValueError("pass either checkpoint= or runtime=, not both")
        self.runtime = runtime if runtime is not None else load_runtime(checkpoint, device)
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
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = [None if s is None else int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed has {len(seeds)} entries; expected num_envs={self.num_envs}")
        # the vector env's own generator (batched sampling) follows sub-env 0's seed
        super().reset(seed=seeds[0])
        options = dict(options or {})
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
            acts[i] = self.envs[i]._begin_step(acts[i])
        for i in np.flatnonzero(self._done):
            if mode == AutoresetMode.NEXT_STEP:
                self._obs[i], env_infos[i] = self.envs[i].reset()
                self._terminations[i], self._truncations[i] = False, False
            self._rewards[i] = 0.0  # DISABLED: frozen until reset(options={"reset_mask": ...})

        self.last_batch_size = len(active)
        if active:
            frames = self.runtime.imagine(
                np.stack([self.envs[i]._frame for i in active]),
                acts[active],
                do_sample=self.do_sample,
                temperature=self.temperature,
                generator=self._generator,
            )
            for j, i in enumerate(active):
                self.envs[i]._push_frame(frames[j])
            scores = score_many(
                self.success_judge,
                [self.envs[i].judge_frames() for i in active],
                [self.envs[i].task_description for i in active],
            )
            for j, i in enumerate(active):
                env = self.envs[i]
                self._obs[i], self._rewards[i], self._terminations[i], self._truncations[i], env_infos[i] = env._end_step(
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

    def _split_options(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        per_env: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in options.items():
            if key not in RESET_OPTION_KEYS:
                raise ValueError(f"options has unknown key {key!r}; expected some of {[*RESET_OPTION_KEYS, 'reset_mask']}")
            if key in ("init_state_id", "frame_id"):
                per = isinstance(value, (list, tuple)) or np.ndim(value) == 1
            elif isinstance(value, (list, tuple)) and any(v is None for v in value):
                per = True
            else:  # an array with one more axis than a single frame/state is one value per sub-env
                per = np.ndim(value) == {"image": 3, "wrist_image": 3, "state": 1}[key] + 1
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
