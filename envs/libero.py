"""Real LIBERO tasks (MuJoCo + robosuite) as a Gymnasium 1.x environment, on the WorldVLA evaluation protocol."""

from __future__ import annotations

import contextlib
import io
import os
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import placement
from wvla_gym.protocol import (
    ACTION_DIM,
    CONTROL_FPS,
    DUMMY_ACTION,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    NUM_STEPS_WAIT,
    STATE_DIM,
    SUITE_MAX_STEPS,
    check_action,
    validate_suite_task,
)
from wvla_gym.starts import REAL_START_KEYS, StartRequest, check_options
from wvla_gym.utils.validation import check_bool, check_choice, check_int, check_str

#: Charset for the optional ``instruction`` Text key (Gymnasium's default has no spaces or punctuation).
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
INSTRUCTION_MAX_LENGTH = 256


def _libero_modules(gl_backend: str | None):
    """Import LIBERO lazily: MUJOCO_GL, the config and the assets must be in place first."""
    from wvla_gym.utils.libero_setup import prepare_libero

    backend = prepare_libero(gl_backend)
    # LIBERO's import chain prints gym's deprecation banner and robosuite notices; keep user output clean.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

    return benchmark, get_libero_path, OffScreenRenderEnv, backend


@contextlib.contextmanager
def _keep_global_numpy_rng():
    """Restore numpy's global RNG state on exit.

    LIBERO draws fixture poses and placements from ``np.random`` and so needs it seeded; without this, every
    reset would leave the global RNG at the same state and user code drawing from ``np.random`` would see the
    same numbers every episode. (LIBERO touches neither Python's ``random`` nor torch's RNG.)
    """
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) from an xyzw quaternion, the convention of LIBERO's state vector and RynnVLA's state tokens."""
    q = np.asarray(quat_xyzw, dtype=np.float64).copy()
    q[3] = np.clip(q[3], -1.0, 1.0)
    den = np.sqrt(1.0 - q[3] * q[3])
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return (q[:3] * 2.0 * np.arccos(q[3])) / den


def load_init_states(path: str | os.PathLike) -> np.ndarray:
    """LIBERO's ``.init`` files (pickled numpy arrays) through ``torch.load(weights_only=True)``.

    Only numpy's array-reconstruction globals are allowed, so a crafted file cannot run code; every init file of
    the pinned LIBERO stack loads this way, identical to an unrestricted load.
    """
    import torch

    allowed = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype("float64"))]
    try:
        with torch.serialization.safe_globals(allowed):
            return np.asarray(torch.load(path, weights_only=True))
    except Exception as e:
        raise ValueError(
            f"{path}: not a LIBERO init-state file of numpy arrays (refusing to load it with pickle: {e})"
        ) from e


class LiberoEnv(gym.Env):
    """A LIBERO task as a Gymnasium environment, exactly on the WorldVLA/OpenVLA evaluation protocol.

    Registered as ``WorldVLA-LIBERO-v0`` (also ``wvla_gym:WorldVLA-LIBERO-v0``)::

        env = gym.make("WorldVLA-LIBERO-v0", task_suite="libero_object", task_id=0)
        obs, info = env.reset(seed=0, options={"init_state_id": 3})

    ## Observation space
    A flat ``Dict`` (SB3 ``MultiInputPolicy`` reads it as is):

    | key | space | meaning |
    |---|---|---|
    | ``image`` | ``Box(0, 255, (R, R, 3), uint8)`` | agent-view camera, rotated 180° (``[::-1, ::-1]``) like WorldVLA's data |
    | ``wrist_image`` | same (only with ``wrist=True``) | eye-in-hand camera, same rotation |
    | ``state`` | ``Box(-inf, inf, (8,), float32)`` | eef position (3), eef axis-angle (3), gripper qpos (2) |
    | ``instruction`` | ``Text`` (only with ``instruction_in_obs=True``) | the task's language instruction |

    ## Action space
    ``Box(-1, 1, (7,), float32)``: LIBERO OSC_POSE deltas ``[dx, dy, dz, drx, dry, drz, gripper]``,
    gripper -1 = open, +1 = close. Out-of-range or non-finite actions raise ``ValueError`` (never clipped).

    ## Episodes
    ``reset(options={"init_state_id": k})`` loads the benchmark's fixed init state ``k`` (0..49; without the
    option, init states are cycled per episode, restarting at 0 whenever ``seed`` is given), then runs ``num_steps_wait`` settle steps
    ``[0, 0, 0, 0, 0, 0, -1]`` that do not count against the step limit. LIBERO re-samples fixture poses from
    numpy's global RNG, so it is seeded before every reset: same ``seed`` + same init state -> identical
    first observation. The global RNG's state is saved before and restored after (also when the simulator
    is built), so a reset leaves ``np.random`` as it found it; Python's ``random`` and torch's RNG are never
    touched. The episode terminates on success (reward 1.0, ``info["is_success"]``) and is
    truncated at the suite's limit (spatial 220, object 280, goal 300, libero_10 520, libero_90 400).

    Beyond the 50 fixed init states (details in :mod:`envs.placement`):
    ``options={"placement": "sampled"}`` draws a fresh object placement with LIBERO's own placement sampler
    (reproducible per ``seed``); ``options={"init_state_id": k, "perturb_radius": 0.03}`` shifts every movable
    object by a seeded, collision- and support-checked offset of at most 0.03 m in the table plane; and
    ``options={"sim_state": s}`` starts from a flattened MuJoCo state. These resets add ``info["sim_state"]``
    (the state before the settle steps: pass it back as ``sim_state`` to replay the start exactly) and
    ``info["placement"]`` (mode, seed, per-object shifts); ``info["init_state_id"]`` is ``None`` unless a
    fixed init state was used.

    ## Privileged access (for scripted controllers and recorders; never part of the observation)
    ``env.unwrapped`` offers :attr:`sim`, :attr:`raw_env`, :attr:`objects_of_interest`, :attr:`object_names`,
    :attr:`goal_state`, :meth:`get_object_pose`, :meth:`get_site_pos`, :meth:`get_eef_pose`,
    :meth:`get_sim_state`, :meth:`set_sim_state`, :attr:`init_states`, :attr:`raw_observation`.

    The simulator is created lazily on the first ``reset`` so that ``AsyncVectorEnv`` workers build their own
    GL context. The headless backend is EGL when Mesa's libEGL is present, else OSMesa (``gl_backend`` or
    ``MUJOCO_GL`` override it).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FPS}

    def __init__(
        self,
        task_suite: str = "libero_object",
        task_id: int = 0,
        resolution: int = 256,
        wrist: bool = True,
        num_steps_wait: int = NUM_STEPS_WAIT,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        instruction_in_obs: bool = False,
        gl_backend: str | None = None,
    ) -> None:
        # Every argument is checked before LIBERO is imported (errors name the argument and the expected form).
        check_str("task_suite", task_suite, hint="the name of a LIBERO suite")
        validate_suite_task(task_suite, task_id)
        resolution_hint = (
            "camera height = width in pixels; WorldVLA checkpoints use 256 or 512, and a frame costs 3*R^2 bytes "
            "and R^2 render time"
        )
        check_int("resolution", resolution, lo=MIN_RESOLUTION, hi=MAX_RESOLUTION, hint=resolution_hint)
        check_bool("wrist", wrist)
        check_bool("instruction_in_obs", instruction_in_obs)
        check_int("num_steps_wait", num_steps_wait, lo=0)
        check_int("max_episode_steps", max_episode_steps, lo=1, optional=True)
        check_str("gl_backend", gl_backend, optional=True, hint="such as 'egl' or 'osmesa'")
        check_choice("render_mode", render_mode, self.metadata["render_modes"], optional=True)

        self.task_suite = task_suite
        self.task_id = int(task_id)
        self.resolution = int(resolution)
        self.wrist = bool(wrist)
        self.num_steps_wait = int(num_steps_wait)
        self.max_episode_steps = int(max_episode_steps or SUITE_MAX_STEPS[task_suite])
        self.render_mode = render_mode
        self.instruction_in_obs = bool(instruction_in_obs)
        self._gl_backend_request = gl_backend
        self.gl_backend: str | None = None

        benchmark, get_libero_path, _, _ = _libero_modules(gl_backend)
        with contextlib.redirect_stdout(io.StringIO()):  # "[info] using task orders ..."
            suite = benchmark.get_benchmark_dict()[task_suite]()
        task = suite.get_task(self.task_id)
        self.task_name: str = task.name
        self.task_description: str = task.language
        self.bddl_file = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        self._init_states_path = Path(get_libero_path("init_states")) / task.problem_folder / task.init_states_file
        self._init_states: np.ndarray | None = None

        img = spaces.Box(0, 255, (self.resolution, self.resolution, 3), np.uint8)
        obs_spaces: dict[str, spaces.Space] = {"image": img}
        if self.wrist:
            obs_spaces["wrist_image"] = img
        obs_spaces["state"] = spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        if instruction_in_obs:
            obs_spaces["instruction"] = spaces.Text(INSTRUCTION_MAX_LENGTH, charset=INSTRUCTION_CHARSET)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        self._env = None  # the LIBERO OffScreenRenderEnv, created on first reset
        self._fixture_poses: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._raw_obs: dict[str, np.ndarray] | None = None
        self._elapsed = 0
        self._next_init_state_id = 0
        self._needs_reset = True
        self.init_state_id: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def _ensure_sim(self):
        if self._env is None:
            _, _, OffScreenRenderEnv, backend = _libero_modules(self._gl_backend_request)
            self.gl_backend = backend
            cameras = ["agentview", "robot0_eye_in_hand"] if self.wrist else ["agentview"]
            with _keep_global_numpy_rng():
                np.random.seed(0)  # construction samples placements from the global RNG too
                env = OffScreenRenderEnv(
                    bddl_file_name=str(self.bddl_file),
                    camera_heights=self.resolution,
                    camera_widths=self.resolution,
                    camera_names=cameras,
                    # robosuite raises past its own horizon; keep it beyond ours so truncation is ours alone.
                    horizon=self.max_episode_steps + self.num_steps_wait + 100,
                )
                # Fixtures (cabinets, stoves, ...) have no joints, so init states do not fix them, and LIBERO's
                # sampler places them relative to their previous pose at every hard reset: the official loop
                # lets them drift from episode to episode. We pin them to their poses in the first episode after
                # env.seed(0) (the official eval's setting), which makes every episode reproducible.
                env.seed(0)
                env.reset()
            inner = env.env
            self._fixture_poses = {
                name: (np.array(inner.sim.model.body_pos[bid]), np.array(inner.sim.model.body_quat[bid]))
                for name in inner.fixtures_dict
                for bid in [inner.sim.model.body_name2id(inner.fixtures_dict[name].root_body)]
            }
            self._env = env
        return self._env

    def _pin_fixtures(self) -> None:
        inner = self._env.env
        for name, (pos, quat) in self._fixture_poses.items():
            bid = inner.sim.model.body_name2id(inner.fixtures_dict[name].root_body)
            inner.sim.model.body_pos[bid] = pos
            inner.sim.model.body_quat[bid] = quat

    @property
    def init_states(self) -> np.ndarray:
        """The benchmark's fixed init states for this task, shape (50, n_qpos + n_qvel + 1)."""
        if self._init_states is None:
            self._init_states = load_init_states(self._init_states_path)
        return self._init_states

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        # Refuse a malformed options value before anything else (the init states load from disk below).
        check_options(options, REAL_START_KEYS)
        super().reset(seed=seed)
        n_init = len(self.init_states)
        req = placement.parse_reset_options(options, n_init, self.init_states.shape[1])
        if req.source == "init_state":
            if req.init_state_id is not None:
                k = req.init_state_id
            else:
                # Seeding restarts the cycle, so reset(seed=s) is deterministic as Gymnasium requires.
                k = 0 if seed is not None else self._next_init_state_id
            self._next_init_state_id = (k + 1) % n_init
            self.init_state_id = k
        else:
            self.init_state_id = None  # a sampled placement or a given sim_state: no fixed init state

        # numpy's global RNG is seeded below for LIBERO and restored afterwards: no lasting side effect.
        with _keep_global_numpy_rng():
            return self._reset_sim(seed, req)

    def _reset_sim(self, seed: int | None, req: StartRequest):
        env = self._ensure_sim()
        # LIBERO re-samples fixture poses from numpy's *global* RNG on reset: seed it every time, from the
        # episode seed when given, else from this env's own generator (reproducible under a seeded reset).
        episode_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        env.seed(episode_seed)
        env.reset()
        self._pin_fixtures()
        described: dict[str, Any] | None = None
        if req.source == "init_state":
            state = self.init_states[self.init_state_id]
        elif req.source == "sim_state":
            state = req.sim_state
            described = {"mode": "sim_state"}
        else:
            placement.sample_placement(env.env)  # LIBERO's own samplers, from the global RNG seeded above
            state = np.asarray(env.get_sim_state())
            described = {"mode": "sampled", "seed": episode_seed, "object_xy": placement.object_xy(env.env)}
        if req.perturb_radius > 0:
            env.set_init_state(state)
            shifts = placement.perturb_objects(env.env, np.random.default_rng([episode_seed, 0x9E27]), req.perturb_radius)
            state = np.asarray(env.get_sim_state())
            described = dict(described or {"mode": "fixed", "init_state_id": self.init_state_id})
            described.update({"perturb_radius": req.perturb_radius, "perturb_seed": episode_seed, "objects": shifts})
        if req.source == "sampled" or req.perturb_radius > 0:
            # Start the episode from the new state exactly as a replay of info["sim_state"] will (a fresh reset
            # leaves no trace of the sampling in the simulator, e.g. solver warm starts): bit-identical replays.
            env.seed(episode_seed)
            env.reset()
            self._pin_fixtures()
        raw = env.set_init_state(state)
        for _ in range(self.num_steps_wait):
            raw, _, _, _ = env.step(DUMMY_ACTION.astype(np.float64))
        self._raw_obs = raw
        self._elapsed = 0
        self._needs_reset = False
        info = self._info(False)
        if described is not None:
            info["sim_state"] = np.array(state, dtype=np.float64)  # before the settle steps, like init states
            info["placement"] = described
        return self._make_obs(raw), info

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("LiberoEnv.step() called before reset() (or after the episode ended); call reset() first")
        a = check_action(action)
        raw, reward, _, _ = self._env.step(a.astype(np.float64))
        self._raw_obs = raw
        self._elapsed += 1
        # LIBERO's sparse reward is 1.0 exactly when the BDDL goal holds (the same test as check_success()).
        success = bool(reward >= 1.0)
        truncated = bool(not success and self._elapsed >= self.max_episode_steps)
        self._needs_reset = success or truncated
        return self._make_obs(raw), float(success), success, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._raw_obs is None:
            raise RuntimeError("render() needs a reset() first")
        return np.ascontiguousarray(self._raw_obs["agentview_image"][::-1, ::-1])

    def close(self) -> None:
        if self._env is not None:
            try:
                self._env.close()
            finally:
                self._env = None

    # ------------------------------------------------------------------ helpers
    def _make_obs(self, raw: dict[str, np.ndarray]) -> dict[str, Any]:
        # The 180° rotation matches WorldVLA's training frames and eval loop.
        obs: dict[str, Any] = {"image": np.ascontiguousarray(raw["agentview_image"][::-1, ::-1])}
        if self.wrist:
            obs["wrist_image"] = np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1])
        obs["state"] = np.concatenate(
            [raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)
        if self.instruction_in_obs:
            obs["instruction"] = self.task_description
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "is_success": success,
            "task_description": self.task_description,
            "task_suite": self.task_suite,
            "task_id": self.task_id,
            "init_state_id": self.init_state_id,
            "elapsed_steps": self._elapsed,
        }

    # ------------------------------------------------------------------ privileged API
    @property
    def raw_env(self):
        """The underlying LIBERO ``OffScreenRenderEnv`` (created on first reset)."""
        return self._ensure_sim()

    @property
    def sim(self):
        """robosuite's ``MjSim`` (``sim.model``, ``sim.data``)."""
        return self._ensure_sim().sim

    @property
    def raw_observation(self) -> dict[str, np.ndarray]:
        """The last unrotated robosuite observation dict (joint, eef and gripper states, raw cameras)."""
        if self._raw_obs is None:
            raise RuntimeError("raw_observation needs a reset() first")
        return self._raw_obs

    @property
    def objects_of_interest(self) -> list[str]:
        """Names of the objects the BDDL goal is about, e.g. ``['alphabet_soup_1', 'basket_1']``."""
        return list(self._ensure_sim().obj_of_interest)

    @property
    def object_names(self) -> list[str]:
        """All movable objects and fixtures of the scene."""
        inner = self._ensure_sim().env
        return list(inner.objects_dict) + list(inner.fixtures_dict)

    @property
    def goal_state(self) -> list[tuple[str, ...]]:
        """The BDDL goal predicates, e.g. ``[('in', 'alphabet_soup_1', 'basket_1_contain_region')]``."""
        return [tuple(p) for p in self._ensure_sim().env.parsed_problem["goal_state"]]

    def get_object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and xyzw quaternion (4,) of an object or fixture body."""
        inner = self._ensure_sim().env
        if name not in inner.obj_body_id:
            raise ValueError(f"name={name!r} is not an object of this scene; expected one of {sorted(inner.obj_body_id)}")
        bid = inner.obj_body_id[name]
        wxyz = np.array(inner.sim.data.body_xquat[bid])
        return np.array(inner.sim.data.body_xpos[bid]), np.roll(wxyz, -1)

    def get_site_pos(self, name: str) -> np.ndarray:
        """World position of a MuJoCo site (BDDL regions such as ``basket_1_contain_region`` are sites)."""
        sim = self._ensure_sim().sim
        candidates = [n for n in sim.model.site_names if n == name or n.endswith(name)]
        if not candidates:
            raise ValueError(f"name={name!r} matches no site of this scene")
        return np.array(sim.data.site_xpos[sim.model.site_name2id(candidates[0])])

    def get_eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position (3,) and xyzw quaternion (4,) from the last observation."""
        raw = self.raw_observation
        return np.array(raw["robot0_eef_pos"]), np.array(raw["robot0_eef_quat"])

    def get_sim_state(self) -> np.ndarray:
        """Flattened MuJoCo state (time, qpos, qvel), LIBERO's ``states`` dataset row."""
        return np.asarray(self._ensure_sim().get_sim_state())

    def set_sim_state(self, state: np.ndarray) -> dict[str, Any]:
        """Set a flattened MuJoCo state (e.g. to re-render a recorded demo) and return the observation."""
        raw = self._ensure_sim().regenerate_obs_from_state(np.asarray(state, dtype=np.float64))
        self._raw_obs = raw
        return self._make_obs(raw)
