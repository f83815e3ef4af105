"""The WorldVLA world model as a Gymnasium environment: every transition is imagined, not simulated.

``WorldVLA-Imagined-v0`` has exactly the observation and action spaces of ``WorldVLA-LIBERO-v0``, so any
policy runs in both from the same start frame. The pieces live in one place each:

* :class:`ImaginedEnv` (here): one imagined episode;
* :class:`envs.imagined_vector.ImaginedVectorEnv` (the id's ``vector_entry_point``): N episodes batched into
  one world-model call per step;
* :mod:`envs.init_frames`: start frames (rendered LIBERO init states and their cache, datasets, HDF5 files);
* :mod:`wvla_gym.runtime_cache`: loading (and sharing) the world model and finding its judge.

Each class has one import path: ``ImaginedVectorEnv`` from :mod:`envs.imagined_vector`, the start-frame helpers
from :mod:`envs.init_frames` (this module never imports the vector env; an import-linter contract keeps it so).
"""

from __future__ import annotations

import inspect
import os
from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.init_frames import (
    INIT_FRAME_SEED,
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
from wvla_gym.runtime_cache import checkpoint_judge, load_world_model
from wvla_gym.starts import IMAGINED_START_KEYS, LIBERO_START_KEYS, StartRequest, parse_start
from wvla_gym.utils.validation import check_bool, check_choice, check_float, check_int, check_str, fail

__all__ = ["UNPREDICTED_KEYS", "ImaginedEnv", "check_model_source"]

#: What the world model's prompt is built from at each imagined step (see ImaginedEnv's ``imagine_from``).
IMAGINE_FROM = ("codes", "frames")
#: Observation keys the world model does not predict, and how they are filled (a two-view RynnVLA-002 world
#: model predicts ``wrist_image`` too, leaving only ``state``).
UNPREDICTED_KEYS = ("wrist_image", "state")
#: ``world_action_norm=`` values (two-view world models): the statistics the input action is tokenised with.
WORLD_ACTION_NORMS = ("rynnvla", "worldvla")


def check_model_source(checkpoint: Any, runtime: Any, device: Any) -> None:
    """The world model's source, shared by the single and the vector env: a ``checkpoint`` (path or Hub id;
    ``None`` = the embedded default) loaded on ``device``, or an already loaded ``runtime``."""
    if runtime is not None and checkpoint is not None:
        raise ValueError("pass either checkpoint= or runtime=, not both")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise fail("checkpoint", checkpoint, "None, a checkpoint folder (str or path) or a Hub id")
    if runtime is not None and not (callable(getattr(runtime, "imagine", None)) and hasattr(runtime, "resolution")):
        raise fail("runtime", runtime, "None or a loaded WorldVLARuntime (an object with imagine() and resolution)")
    if not isinstance(device, str):
        import torch

        if not isinstance(device, torch.device):
            raise fail("device", device, "a torch device name such as 'cpu' or 'cuda:0' (or a torch.device)")


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
    ``init_frames`` (dataset of start frames), ``do_sample``/``temperature``, ``device``, ``render_mode``,
    ``imagine_from``: ``"codes"`` (default) keeps the VQ codes the world model generated (and the history's) and
    feeds them back, decoding only for the observation; ``"frames"`` re-encodes every decoded frame, as a
    policy's frames would be (README: "Imagine from codes" has the measured difference),
    ``action_guidance`` (one-view world models: classifier-free guidance of each step's action against the same
    step without pose motion, ``WorldVLARuntime.imagine``; 1 = off, the default; it doubles the decode batch).

    ## Two views (RynnVLA-002)
    A RynnVLA-002 checkpoint as the world model (``World_model_512/...``, ``Action_World_model_512/...``, or a
    ``VLA_model_256/...`` one, also trained on two-view world-model samples) imagines ``image`` *and*
    ``wrist_image`` each step (``[third_t, wrist_t, a_t] -> [third_{t+1}, wrist_{t+1}]``, constrained decoding,
    the training prompt); only ``state`` is carried. The start then needs a wrist frame (init states and
    ``init_frames`` with ``wrist_image`` have one; ``options={"image": ..., "wrist_image": ...}``).
    ``world_action_norm`` (``None`` = the checkpoint's, ``"worldvla"`` as the released world-model eval) chooses
    the statistics the input action is tokenised with (``"rynnvla"``: the VLA's). The batched
    ``ImaginedVectorEnv`` takes one-view world models only.
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
        imagine_from: str = "codes",
        world_action_norm: str | None = None,
        action_guidance: float = 1.0,
    ) -> None:
        self.check_arguments(
            checkpoint=checkpoint, task_suite=task_suite, task_id=task_id, resolution=resolution, runtime=runtime,
            wrist=wrist, instruction_in_obs=instruction_in_obs, instruction=instruction, success_judge=success_judge,
            success_threshold=success_threshold, max_episode_steps=max_episode_steps, init_frames=init_frames,
            do_sample=do_sample, temperature=temperature, device=device, render_mode=render_mode,
            imagine_from=imagine_from, world_action_norm=world_action_norm, action_guidance=action_guidance,
        )
        self.imagine_from = imagine_from
        self.action_guidance = float(action_guidance)

        self.runtime = runtime if runtime is not None else load_world_model(checkpoint, device)
        #: The world model predicts both camera views (a RynnVLA-002 checkpoint).
        self.two_view = int(getattr(self.runtime, "views", 1)) == 2
        if world_action_norm is not None and not self.two_view:
            raise fail("world_action_norm", world_action_norm, "None for this one-view (WorldVLA) world model",
                       "only two-view RynnVLA-002 world models choose their input action statistics")
        self.world_action_norm = world_action_norm
        if self.action_guidance != 1.0 and self.two_view:
            raise fail("action_guidance", action_guidance, "1 for a two-view (RynnVLA-002) world model",
                       "action guidance is implemented for one-view WorldVLA world models")
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
        if self.two_view and self.init_frames is not None and "wrist_image" not in self.init_frames:
            raise ValueError(
                "init_frames has no 'wrist_image': a two-view (RynnVLA-002) world model imagines the wrist view "
                "from the start's wrist frame; pass init_frames with 'image' and 'wrist_image'"
            )
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

    @classmethod
    def check_arguments(cls, **kwargs: Any) -> None:
        """Validate constructor arguments without building the env, before the world model loads.

        The vector env calls it for its sub-envs' arguments; an unknown name raises ``TypeError`` naming it.
        What needs the loaded world model (``resolution`` against the checkpoint's, ``init_frames``) is
        checked in the constructor.
        """
        try:
            bound = inspect.signature(cls.__init__).bind(None, **kwargs)
        except TypeError as e:
            raise TypeError(f"{cls.__name__}: {e}") from None
        bound.apply_defaults()
        a = bound.arguments
        check_str("task_suite", a["task_suite"], hint="the name of a LIBERO suite")
        validate_suite_task(a["task_suite"], a["task_id"])
        check_int("resolution", a["resolution"], lo=1, optional=True, hint="the checkpoint's frame size")
        check_int("max_episode_steps", a["max_episode_steps"], lo=1, optional=True)
        check_choice("render_mode", a["render_mode"], cls.metadata["render_modes"], optional=True)
        judge = a["success_judge"]
        if judge is not None and not callable(getattr(judge, "score", None)):
            raise fail("success_judge", judge, "None or a judge with a score(frames, instruction) -> float method "
                       "(see wvla_gym.judge)")
        check_float("success_threshold", a["success_threshold"], lo=0, hi=1, optional=True)
        for name in ("wrist", "instruction_in_obs", "do_sample"):
            check_bool(name, a[name])
        check_str("instruction", a["instruction"], optional=True)
        check_float("temperature", a["temperature"], gt=0)
        check_choice("imagine_from", a["imagine_from"], IMAGINE_FROM)
        check_choice("world_action_norm", a["world_action_norm"], WORLD_ACTION_NORMS, optional=True)
        check_float("action_guidance", a["action_guidance"], gt=0, hint="1 = the plain world model, e.g. 2")
        check_model_source(a["checkpoint"], a["runtime"], a["device"])

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        # Parsed before anything changes, so a bad request leaves the env (and its generator) as it was.
        seed = check_int("seed", seed, lo=0, optional=True)
        req = self.start_request(options)
        super().reset(seed=seed)
        self._placement = None

        if req.source == "image":
            start = {k: getattr(req, k) for k in ("image", "wrist_image", "state") if getattr(req, k) is not None}
            self.start_source, self.init_state_id, self.frame_id = "image", None, None
        elif req.libero_start:
            start = self._libero_start(seed, req)
        elif req.source == "dataset" or (not req.given and self.init_frames is not None):
            i = req.frame_id if req.frame_id is not None else int(self.np_random.integers(len(self.init_frames["image"])))
            start = {k: v[i] for k, v in self.init_frames.items()}
            self.start_source, self.init_state_id, self.frame_id = "dataset", None, i
        else:
            # Like the real env: a seeded reset restarts the init-state cycle, so reset(seed=s) is deterministic.
            k = req.init_state_id if req.init_state_id is not None else (0 if seed is not None else self._next_init_state_id)
            start = self._init_state_frame(k)
            self._next_init_state_id = (k + 1) % NUM_INIT_STATES
            self.start_source, self.init_state_id, self.frame_id = "init_state", k, None

        self._frame = start["image"].copy()
        self._fill = {}
        if self.two_view:  # predicted, never filled: the start has a wrist frame (checked in start_request)
            if "wrist_image" not in start:
                raise ValueError(f"the start ({self.start_source}) has no wrist frame, which a two-view world model needs")
            self._wrist = start["wrist_image"].copy()
        elif self.wrist:
            self._fill["wrist_image"] = "carried" if "wrist_image" in start else "zeros"
            self._wrist = start["wrist_image"].copy() if "wrist_image" in start else np.zeros_like(self._frame)
        self._fill["state"] = "carried" if "state" in start else "zeros"
        self._state = start["state"].astype(np.float32) if "state" in start else np.zeros(STATE_DIM, np.float32)
        self._window.clear()
        self._window.append(self._frame)
        # the start frame's codes, encoded once; later frames keep the codes the world model generated
        self._codes = self.encode_frame(self._frame) if self.imagine_from == "codes" else None
        self._wrist_codes = (self.encode_frame(self._wrist) if self.two_view and self.imagine_from == "codes"
                             else None)
        # past (frame, action) pairs for a world model with a history (world_history - 1 of them)
        self._past = deque(maxlen=max(int(getattr(self.runtime, "world_history", 1)) - 1, 0))
        self._generator = self._make_generator()
        self._elapsed = 0
        self._needs_reset = False
        return self._obs(), self._info(False, 0.0)

    def start_request(self, options: Mapping[str, Any] | None) -> StartRequest:
        """Validate ``reset`` options for this env (see :mod:`wvla_gym.starts`) without resetting it."""
        req = parse_start(
            options,
            accepted=IMAGINED_START_KEYS,
            n_init=NUM_INIT_STATES,
            resolution=self.resolution,
            n_frames=None if self.init_frames is None else len(self.init_frames["image"]),
        )
        if self.two_view and req.source == "image" and req.wrist_image is None:
            raise ValueError(
                "options has 'image' but no 'wrist_image': a two-view (RynnVLA-002) world model imagines the wrist "
                "view from the start's wrist frame; pass options={'image': ..., 'wrist_image': ...}"
            )
        return req

    def step(self, action):
        a = self.begin_step(action)
        if self.two_view:
            return self._step_two_views(a)
        frames, actions = self.world_inputs(a)
        res = self.runtime.imagine(
            None if self.imagine_from == "codes" else frames[None],
            actions[None],
            codes=self.world_codes()[None] if self.imagine_from == "codes" else None,
            do_sample=self.do_sample,
            temperature=self.temperature,
            generator=self._generator,
            return_info=True,
            action_guidance=self.action_guidance,
        )
        self.push_frame(res.frames[0], a, codes=res.info.codes[0])
        score = score_many(self.success_judge, [self.judge_frames()], [self.task_description])[0]
        return self.end_step(score)

    def _step_two_views(self, a: np.ndarray):
        """One step of a two-view world model: both current views and ``a`` -> both next views."""
        codes = self.imagine_from == "codes"
        res = self.runtime.imagine_views(
            None if codes else self._frame[None],
            None if codes else self._wrist[None],
            a[None],
            codes=self._codes[None] if codes else None,
            wrist_codes=self._wrist_codes[None] if codes else None,
            action_norm=self.world_action_norm,
            do_sample=self.do_sample,
            temperature=self.temperature,
            generator=self._generator,
            return_info=True,
        )
        self.push_frame(res.frames[0, 0], a, codes=res.info.codes[0, 0], wrist=res.frames[0, 1],
                        wrist_codes=res.info.codes[0, 1])
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
        frames = [p[0] for p in self._past] + [self._frame]
        actions = [p[1] for p in self._past] + [np.asarray(action, dtype=np.float32)]
        return np.stack(frames), np.stack(actions)

    def world_codes(self) -> np.ndarray:
        """With ``imagine_from="codes"``: the VQ codes ``(T, h, w)`` of :meth:`world_inputs`' frames."""
        return np.stack([p[2] for p in self._past] + [self._codes])

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        """The world model's VQ codes ``(h, w)`` of one frame."""
        return self.runtime.image_tokenizer.encode_codes(np.asarray(frame)[None]).numpy()[0]

    def push_frame(self, frame: np.ndarray, action: np.ndarray | None = None, codes: Any = None,
                   wrist: np.ndarray | None = None, wrist_codes: Any = None) -> None:
        """Make the world model's prediction the current frame (and add it to the judge's window); ``action``
        (the one that led to it) joins the world model's history with the frame it was taken in. ``codes``:
        the prediction's VQ codes (kept with ``imagine_from="codes"``; encoded from ``frame`` when not given).
        ``wrist`` / ``wrist_codes``: a two-view world model's predicted wrist frame and its codes."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != self._frame.shape:
            raise RuntimeError(f"world model returned {frame.dtype} {frame.shape}; expected uint8 {self._frame.shape}")
        if self.two_view:
            wrist = np.asarray(wrist)
            if wrist.dtype != np.uint8 or wrist.shape != self._frame.shape:
                raise RuntimeError(
                    f"world model returned a wrist frame {wrist.dtype} {wrist.shape}; expected uint8 {self._frame.shape}"
                )
        if action is not None and self._past.maxlen:
            self._past.append((self._frame, np.asarray(action, dtype=np.float32), self._codes))
        self._frame = np.ascontiguousarray(frame)
        if self.imagine_from == "codes":
            self._codes = self.encode_frame(self._frame) if codes is None else np.asarray(codes, dtype=np.int64)
        if self.two_view:
            self._wrist = np.ascontiguousarray(wrist)
            if self.imagine_from == "codes":
                self._wrist_codes = (self.encode_frame(self._wrist) if wrist_codes is None
                                     else np.asarray(wrist_codes, dtype=np.int64))
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

    def _libero_start(self, seed: int | None, req: StartRequest) -> dict[str, np.ndarray]:
        """Start from a real-env start other than a plain init state (placement, perturbation, sim_state)."""
        # The options exactly as given: they key the start-frame cache and are replayed in the real env.
        opts = {k: req.options[k] for k in ("init_state_id", *LIBERO_START_KEYS) if k in req.options}
        init_state_id = req.init_state_id
        if req.source == "init_state" and init_state_id is None:  # cycle like the real env
            init_state_id = opts["init_state_id"] = 0 if seed is not None else self._next_init_state_id
        if init_state_id is not None:
            self._next_init_state_id = (int(init_state_id) + 1) % NUM_INIT_STATES
        # the real env's episode seed: the reset seed, else one drawn from the env's generator
        episode_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        start = self._render_start(opts, episode_seed)
        self.start_source = "sim_state" if req.source == "sim_state" else "placement"
        self.init_state_id, self.frame_id = init_state_id, None
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
