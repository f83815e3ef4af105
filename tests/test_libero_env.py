"""Real-MuJoCo tests of ``WorldVLA-LIBERO-v0`` (short episodes, low resolution)."""

from __future__ import annotations

import contextlib
import io
import os

import gymnasium as gym
import numpy as np
import pytest

import wvla_gym  # noqa: F401  (registers the ids)
from wvla_gym.protocol import SUITE_MAX_STEPS

pytestmark = pytest.mark.libero

RES = 64
ZERO = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)


@pytest.fixture(scope="module")
def env():
    e = gym.make("WorldVLA-LIBERO-v0", task_suite="libero_object", task_id=0, resolution=RES, wrist=True)
    yield e
    e.close()


def _raw_libero_env(task_suite: str, task_id: int, res: int):
    """LIBERO's own OffScreenRenderEnv, built without our wrapper (the independent reference)."""
    from wvla_gym.utils.libero_setup import prepare_libero

    prepare_libero()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        suite = benchmark.get_benchmark_dict()[task_suite]()
    task = suite.get_task(task_id)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    raw = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=res, camera_widths=res)
    return raw, suite.get_task_init_states(task_id), task.language


def test_spaces_and_metadata(env):
    u = env.unwrapped
    assert set(u.observation_space.spaces) == {"image", "wrist_image", "state"}
    assert u.observation_space["image"].shape == (RES, RES, 3)
    assert u.observation_space["image"].dtype == np.uint8
    assert u.observation_space["state"].shape == (8,)
    assert u.observation_space["state"].dtype == np.float32
    assert u.action_space.shape == (7,) and u.action_space.dtype == np.float32
    assert np.all(u.action_space.low == -1) and np.all(u.action_space.high == 1)
    assert u.metadata["render_fps"] == 20
    assert u.task_description == "pick up the alphabet soup and place it in the basket"
    assert u.max_episode_steps == 280


def test_matches_raw_libero_protocol(env):
    """Our reset = LIBERO's seed + reset + set_init_state + 10 no-op steps, images rotated 180°."""
    obs, info = env.reset(seed=7, options={"init_state_id": 3})
    raw, init_states, language = _raw_libero_env("libero_object", 0, RES)
    try:
        raw.seed(7)
        raw.reset()
        r = raw.set_init_state(init_states[3])
        for _ in range(10):
            r, _, _, _ = raw.step([0, 0, 0, 0, 0, 0, -1])
        np.testing.assert_array_equal(obs["image"], r["agentview_image"][::-1, ::-1])
        np.testing.assert_array_equal(obs["wrist_image"], r["robot0_eye_in_hand_image"][::-1, ::-1])
        # The rotation is not the identity on these frames.
        assert not np.array_equal(obs["image"], r["agentview_image"])
        np.testing.assert_allclose(obs["state"][:3], r["robot0_eef_pos"], atol=1e-6)
        np.testing.assert_allclose(obs["state"][6:], r["robot0_gripper_qpos"], atol=1e-6)
        # axis-angle of the eef quaternion: rotating by it reproduces the quaternion (up to sign)
        aa = obs["state"][3:6].astype(np.float64)
        angle = np.linalg.norm(aa)
        q = np.concatenate([np.sin(angle / 2) * aa / angle, [np.cos(angle / 2)]])
        qr = r["robot0_eef_quat"]
        assert min(np.abs(q - qr).max(), np.abs(q + qr).max()) < 1e-4
        assert info["task_description"] == language
        assert info["init_state_id"] == 3 and info["is_success"] is False
        # one more identical step on both
        a = np.array([0.3, -0.2, 0.1, 0.0, 0.05, 0.0, 1.0], dtype=np.float32)
        o2, *_ = env.step(a)
        r2, *_ = raw.step(a.astype(np.float64))
        np.testing.assert_array_equal(o2["image"], r2["agentview_image"][::-1, ::-1])
    finally:
        raw.close()


def test_init_state_reproducibility_and_cycling(env):
    o1, _ = env.reset(seed=1, options={"init_state_id": 5})
    o2, _ = env.reset(seed=1, options={"init_state_id": 5})
    np.testing.assert_array_equal(o1["image"], o2["image"])
    np.testing.assert_array_equal(o1["state"], o2["state"])
    o3, i3 = env.reset(seed=1, options={"init_state_id": 6})
    assert not np.array_equal(o1["image"], o3["image"])
    # without the option, init states cycle per episode; a seed restarts the cycle at 0
    _, i4 = env.reset()
    assert i4["init_state_id"] == 7
    _, i5 = env.reset(seed=2)
    _, i6 = env.reset()
    assert (i5["init_state_id"], i6["init_state_id"]) == (0, 1)
    assert len(env.unwrapped.init_states) == 50


def test_step_limit_truncates():
    """The env truncates itself at the suite limit (no TimeLimit wrapper needed); settle steps are not counted."""
    from envs.libero import LiberoEnv

    assert SUITE_MAX_STEPS == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300,
                               "libero_10": 520, "libero_90": 400}
    e = LiberoEnv(task_suite="libero_spatial", task_id=0, resolution=32, wrist=False)
    try:
        assert e.max_episode_steps == 220
        e.reset(seed=0, options={"init_state_id": 0})
        flags = [e.step(ZERO)[2:4] for _ in range(220)]
        assert flags[:219] == [(False, False)] * 219 and flags[219] == (False, True)
        with pytest.raises(RuntimeError, match="reset"):
            e.step(ZERO)
    finally:
        e.close()


def test_max_episode_steps_override():
    from envs.libero import LiberoEnv

    e = LiberoEnv(task_suite="libero_goal", task_id=0, resolution=32, wrist=False, max_episode_steps=2)
    try:
        e.reset(seed=0)
        assert [e.step(ZERO)[3] for _ in range(2)] == [False, True]
    finally:
        e.close()
    # Through gym.make, max_episode_steps is Gymnasium's own TimeLimit argument.
    w = gym.make("WorldVLA-LIBERO-v0", task_suite="libero_goal", task_id=0, resolution=32, wrist=False,
                 max_episode_steps=2)
    try:
        w.reset(seed=0)
        assert [w.step(ZERO)[3] for _ in range(2)] == [False, True]
    finally:
        w.close()


def test_success_terminates_with_reward(env):
    """Put the soup into the basket through the simulator: the BDDL goal holds -> reward 1, terminated."""
    env.reset(seed=0, options={"init_state_id": 0})
    u = env.unwrapped
    target = u.get_site_pos("basket_1_contain_region")
    addr = u.sim.model.get_joint_qpos_addr("alphabet_soup_1_joint0")
    u.sim.data.qpos[addr[0]:addr[0] + 3] = target + np.array([0.0, 0.0, 0.05])
    u.sim.forward()
    _, reward, terminated, truncated, info = env.step(ZERO)
    assert (reward, terminated, truncated, info["is_success"]) == (1.0, True, False, True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task_suite": "libero_100"}, "task_suite"),
        ({"task_id": 10}, r"task_id.*\[0, 9\]"),
        ({"task_suite": "libero_90", "task_id": 90}, r"\[0, 89\]"),
        ({"resolution": 8}, "resolution"),
        ({"render_mode": "ansi"}, "render_mode"),
    ],
)
def test_bad_constructor_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make("WorldVLA-LIBERO-v0", **kwargs)


@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros(6, np.float32), "shape"),
        (np.array([0, 0, 0, 0, 0, 0, np.nan], np.float32), "NaN"),
        (np.array([0, 0, 1.5, 0, 0, 0, 0], np.float32), r"\[-1, 1\]"),
        ("left", "numeric"),
    ],
)
def test_bad_actions(env, action, match):
    env.reset(seed=0, options={"init_state_id": 0})
    with pytest.raises(ValueError, match=match):
        env.unwrapped.step(action)


def test_bad_reset_options(env):
    with pytest.raises(ValueError, match="init_state_id"):
        env.reset(options={"init_state_id": 50})
    with pytest.raises(ValueError, match="unknown keys"):
        env.reset(options={"init_state": 1})


@pytest.mark.parametrize("task_suite", ["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"])
def test_check_env_every_suite(task_suite):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    e = gym.make("WorldVLA-LIBERO-v0", task_suite=task_suite, task_id=0, resolution=48, wrist=False)
    try:
        check_env(e.unwrapped, skip_render_check=True)
        sb3_check_env(e.unwrapped, warn=True)
    finally:
        e.close()


def test_async_vector_env_steps():
    def make(i):
        # forkserver workers start fresh: the module-prefixed id imports wvla_gym (and registers) there
        return lambda: gym.make("wvla_gym:WorldVLA-LIBERO-v0", task_suite="libero_object", task_id=i,
                                resolution=32, wrist=False)

    envs = gym.vector.AsyncVectorEnv([make(0), make(1)], context="forkserver")
    try:
        obs, info = envs.reset(seed=[0, 1], options={"init_state_id": 2})
        assert obs["image"].shape == (2, 32, 32, 3)
        assert list(info["init_state_id"]) == [2, 2]
        obs, rew, term, trunc, info = envs.step(np.tile(ZERO, (2, 1)))
        assert obs["state"].shape == (2, 8) and rew.shape == (2,)
        descs = envs.get_attr("task_description")
        assert descs[0] != descs[1]
    finally:
        envs.close()


def test_render_rgb_array():
    e = gym.make("WorldVLA-LIBERO-v0", task_suite="libero_goal", task_id=0, resolution=32, wrist=False,
                 render_mode="rgb_array")
    try:
        obs, _ = e.reset(seed=0)
        np.testing.assert_array_equal(e.render(), obs["image"])
    finally:
        e.close()


def test_reset_leaves_global_rngs_alone():
    """A reset (the first one builds the simulator) reseeds numpy's global RNG for LIBERO, then restores it:
    user draws from np.random / random / torch are the same with or without the reset in between."""
    import random

    import torch

    def draws():
        return np.random.rand(3), random.random(), torch.rand(2)

    np.random.seed(123), random.seed(123), torch.manual_seed(123)
    np.random.rand(3)
    expected = draws()

    e = gym.make("WorldVLA-LIBERO-v0", resolution=32, wrist=False)
    try:
        np.random.seed(123), random.seed(123), torch.manual_seed(123)
        np.random.rand(3)
        first, _ = e.reset(seed=0, options={"init_state_id": 0})  # builds the simulator, then resets
        got = draws()
        assert np.array_equal(got[0], expected[0]) and got[1] == expected[1] and torch.equal(got[2], expected[2])

        for options in ({"init_state_id": 1}, {"placement": "sampled"}, {"init_state_id": 2, "perturb_radius": 0.02}):
            state = np.random.get_state()
            e.reset(seed=7, options=options)
            after = np.random.get_state()
            assert np.array_equal(state[1], after[1]) and state[2] == after[2], options

        # the env's own determinism still holds: same seed + init state -> identical first observation
        np.random.seed(999)
        again, _ = e.reset(seed=0, options={"init_state_id": 0})
        for key in first:
            np.testing.assert_array_equal(first[key], again[key])
    finally:
        e.close()


def test_fallback_config_dir_is_stable_across_processes():
    """The user-cache config folder must not depend on PYTHONHASHSEED (it did with hash(sys.prefix))."""
    import subprocess
    import sys

    code = "from wvla_gym.utils.libero_setup import fallback_config_dir; print(fallback_config_dir())"
    out = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert out[0] == out[1] and out[0].strip()
    from wvla_gym.utils.libero_setup import fallback_config_dir

    assert str(fallback_config_dir()) == out[0].strip()
    assert fallback_config_dir("/a") != fallback_config_dir("/b")


def test_init_states_load_without_running_pickles(tmp_path):
    """LIBERO's .init files load under weights_only=True (numpy globals only) exactly like a full unpickle,
    and a crafted file is refused before its code runs."""
    import pickle

    import torch

    from envs.libero import LiberoEnv, load_init_states

    env = LiberoEnv(task_suite="libero_object", task_id=0, resolution=32, wrist=False)
    path = env.unwrapped._init_states_path
    np.testing.assert_array_equal(load_init_states(path), np.asarray(torch.load(path, weights_only=False)))
    assert env.unwrapped.init_states.shape[0] == 50

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.init"
    bad.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="evil.init"):
        load_init_states(bad)
    assert not marker.exists()
