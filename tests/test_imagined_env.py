"""WorldVLA-Imagined-v0 on a tiny random WorldVLA checkpoint: checkers, batching, determinism, schema, errors."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import wvla_gym  # noqa: F401  (registers the ids)
from envs.imagined import ImaginedEnv
from envs.imagined_vector import ImaginedVectorEnv
from envs.init_frames import init_frame_cache_key, init_frame_path
from wvla_gym.judge import CallableJudge
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import ImaginedFrames, WorldVLARuntime

RES = 32
INSTR = "pick up the alphabet soup and place it in the basket"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_wm"), resolution=RES, downsample=8, seed=0)


@pytest.fixture(scope="module")
def runtime(ckpt):
    return WorldVLARuntime.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (6, RES, RES, 3), dtype=np.uint8)


class CountingRuntime:
    """Delegates to the real runtime and records the batch size of every ``imagine`` call."""

    def __init__(self, rt):
        self.rt, self.calls = rt, []
        self.resolution, self.device = rt.resolution, rt.device
        self.image_tokenizer = rt.image_tokenizer  # the envs encode start frames with it (imagine_from="codes")

    def imagine(self, images, actions, **kw):
        self.calls.append(len(images if images is not None else kw["codes"]))
        return self.rt.imagine(images, actions, **kw)


def checksum_judge(threshold: float = 0.5) -> CallableJudge:
    # A frame-content-dependent judge (~1 in 4 frames "succeed"): envs agree on success only if frames agree.
    return CallableJudge(lambda f, _: float(int(f[-1].astype(np.int64).sum()) % 4 == 0), threshold=threshold)


def make_env(runtime, frames, **kw) -> ImaginedEnv:
    kw.setdefault("instruction", INSTR)
    return ImaginedEnv(runtime=runtime, init_frames=frames, **kw)


def rollout(env, actions, seed, options=None):
    obs, info = env.reset(seed=seed, options=options)
    out = [(obs, 0.0, False, False)]
    for a in actions:
        obs, r, te, tr, info = env.step(a)
        out.append((obs, r, te, tr))
        if te or tr:
            break
    return out


def actions(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 7)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ checkers
def test_gymnasium_and_sb3_check_env_pass(runtime, frames):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("WorldVLA-Imagined-v0", runtime=runtime, init_frames=frames, instruction=INSTR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker complaint other than these known, documented ones fails
        warnings.filterwarnings("ignore", message=".*(infinity|too low|too high).*")  # state is unbounded, like real
        warnings.filterwarnings("ignore", message=".*minimal resolution.*")  # 32 px tiny model
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
        # gym.make's PassiveEnvChecker warns on any out-of-space obs or bad step return
        env.reset(seed=0)
        for a in actions(3):
            env.step(a)


def test_step_generates_a_new_frame_from_the_world_model(runtime, frames):
    env = make_env(runtime, frames)
    obs, info = env.reset(seed=0, options={"frame_id": 2})
    np.testing.assert_array_equal(obs["image"], frames[2])
    a = actions(1)[0]
    obs1, r, te, tr, info1 = env.step(a)
    expected = runtime.imagine(frames[2][None], a[None])[0]
    np.testing.assert_array_equal(obs1["image"], expected)
    assert (r, te, tr) == (0.0, False, False)
    assert info1["imagined"] is True and info1["is_success"] is False and info1["success_score"] == 0.0
    assert info1["elapsed_steps"] == 1 and info1["task_description"] == INSTR


# ------------------------------------------------------------------------------------------------ schema
def test_observation_and_action_spaces_equal_the_real_env(runtime):
    pytest.importorskip("libero")
    from envs.libero import LiberoEnv

    for kw in ({"wrist": True}, {"wrist": False}, {"wrist": True, "instruction_in_obs": True}):
        real = LiberoEnv(task_suite="libero_object", task_id=0, resolution=RES, **kw)
        imag = ImaginedEnv(runtime=runtime, task_suite="libero_object", task_id=0, **kw)
        assert imag.observation_space == real.observation_space, kw
        assert list(imag.observation_space.spaces) == list(real.observation_space.spaces)
        assert imag.action_space == real.action_space
        assert imag.task_description == real.task_description  # looked up from LIBERO when not given
        assert imag.max_episode_steps == real.max_episode_steps == 280  # libero_object limit
        assert imag.metadata["render_fps"] == real.metadata["render_fps"]


def test_unpredicted_keys_are_filled_consistently_and_reported(runtime):
    env = make_env(runtime, None, instruction_in_obs=True)
    img = np.full((RES, RES, 3), 9, np.uint8)
    state = np.arange(8, dtype=np.float32)
    obs, info = env.reset(seed=0, options={"image": img, "state": state})
    assert info["unpredicted_keys"] == {"wrist_image": "zeros", "state": "carried"}
    assert info["start_source"] == "image"
    for _ in range(3):
        np.testing.assert_array_equal(obs["state"], state)
        np.testing.assert_array_equal(obs["wrist_image"], np.zeros((RES, RES, 3), np.uint8))
        assert obs["instruction"] == INSTR and env.observation_space.contains(obs)
        obs, *_, info = env.step(np.zeros(7, np.float32))
        assert info["unpredicted_keys"] == {"wrist_image": "zeros", "state": "carried"}
    # a dataset with wrist frames carries them
    wrist = np.full((2, RES, RES, 3), 77, np.uint8)
    env2 = make_env(runtime, {"image": wrist[:, ::-1].copy(), "wrist_image": wrist})
    obs, info = env2.reset(seed=0)
    assert info["unpredicted_keys"] == {"wrist_image": "carried", "state": "zeros"}
    obs, *_ = env2.step(np.zeros(7, np.float32))
    assert (obs["wrist_image"] == 77).all() and (obs["state"] == 0).all()


def test_init_state_start_is_read_from_the_cache(runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path))
    path = init_frame_path("libero_object", 0, RES, 4)
    assert path == tmp_path / "init_frames" / "libero_object" / "0" / str(RES) / init_frame_cache_key() / "4.npz"
    assert init_frame_cache_key().startswith("settle10-seed0-")
    path.parent.mkdir(parents=True)
    img = np.random.default_rng(1).integers(0, 256, (RES, RES, 3), dtype=np.uint8)
    np.savez(path, image=img, wrist_image=img[::-1], state=np.ones(8, np.float32))
    env = make_env(runtime, None)
    obs, info = env.reset(seed=0, options={"init_state_id": 4})
    np.testing.assert_array_equal(obs["image"], img)
    np.testing.assert_array_equal(obs["wrist_image"], img[::-1])
    assert info["init_state_id"] == 4 and info["start_source"] == "init_state"
    assert info["unpredicted_keys"] == {"wrist_image": "carried", "state": "carried"}


def test_seeded_reset_restarts_the_init_state_cycle_like_the_real_env(runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path))
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, (3, RES, RES, 3), dtype=np.uint8)
    for k in range(3):  # what real LIBERO would have rendered for init states 0..2
        path = init_frame_path("libero_object", 0, RES, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, image=imgs[k], wrist_image=imgs[k], state=np.full(8, k, np.float32))
    env = make_env(runtime, None)
    starts = []
    for seed in (123, None, None, 123, 7):
        obs, info = env.reset(seed=seed)
        starts.append(info["init_state_id"])
        np.testing.assert_array_equal(obs["image"], imgs[info["init_state_id"]])
    # seeded resets start the cycle at 0 (whatever came before), unseeded ones continue it
    assert starts == [0, 1, 2, 0, 0]
    a = actions(2)
    first = rollout(env, a, seed=123)
    env.reset()  # disturb the cycle and the generator
    second = rollout(env, a, seed=123)
    for (oa, *ra), (ob, *rb) in zip(first, second, strict=True):
        assert ra == rb
        np.testing.assert_array_equal(oa["image"], ob["image"])


@pytest.mark.libero
def test_default_env_passes_gymnasium_and_sb3_checkers(tmp_path_factory, monkeypatch):
    """gym.make("WorldVLA-Imagined-v0") with no arguments: embedded default model, init frames from LIBERO."""
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from envs.init_frames import render_init_frames
    from envs.sb3 import SB3Compat

    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path_factory.mktemp("default_cache")))
    env = gym.make("WorldVLA-Imagined-v0")
    assert env.unwrapped.resolution == 64 and env.unwrapped.task_suite == "libero_object"
    # Render the init states the checkers visit first: importing LIBERO warns (outside the checkers' scope).
    render_init_frames("libero_object", 0, 64, range(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker complaint other than the known, documented one fails
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # third-party import-time notices
        warnings.filterwarnings("ignore", message=".*(infinity|too low|too high).*")  # unbounded state, like real
        warnings.filterwarnings("ignore", message=".*minimal resolution.*")  # 64 px model
        check_env(env.unwrapped)
        sb3_check_env(SB3Compat(env.unwrapped))
    o1, _ = env.reset(seed=123)
    env.reset()
    o2, _ = env.reset(seed=123)
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    env.close()


@pytest.mark.libero
def test_init_state_frame_equals_the_real_envs_first_observation(runtime, tmp_path, monkeypatch):
    from envs.libero import LiberoEnv

    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path))
    imag = ImaginedEnv(runtime=runtime, task_suite="libero_object", task_id=0)
    obs_i, _ = imag.reset(seed=123, options={"init_state_id": 1})
    imag.close()
    assert init_frame_path("libero_object", 0, RES, 1).exists()
    real = LiberoEnv(task_suite="libero_object", task_id=0, resolution=RES)
    try:
        obs_r, _ = real.reset(seed=0, options={"init_state_id": 1})
    finally:
        real.close()
    for k in ("image", "wrist_image", "state"):
        np.testing.assert_array_equal(obs_i[k], obs_r[k])


# ------------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_rollouts_greedy_and_sampled(runtime, frames):
    acts = actions(6)
    for kw in ({}, {"do_sample": True, "temperature": 1.0}):
        a = rollout(make_env(runtime, frames, **kw), acts, seed=3)
        b = rollout(make_env(runtime, frames, **kw), acts, seed=3)
        assert len(a) == len(b) == 7
        for (oa, *ra), (ob, *rb) in zip(a, b, strict=True):
            assert ra == rb
            for k in oa:
                np.testing.assert_array_equal(oa[k], ob[k])
    # sampling really uses the seeded generator: another seed, same start frame -> another rollout
    env = make_env(runtime, frames, do_sample=True)
    c = rollout(env, acts, seed=3, options={"frame_id": 0})
    d = rollout(env, acts, seed=4, options={"frame_id": 0})
    assert any(not np.array_equal(x[0]["image"], y[0]["image"]) for x, y in zip(c[1:], d[1:], strict=True))


# ------------------------------------------------------------------------------------------------ vector env
class PerRowRuntime(CountingRuntime):
    """The real runtime called one row at a time: batch-invariant by construction."""

    def imagine(self, images, actions, codes=None, **kw):
        rows = images if images is not None else codes
        self.calls.append(len(rows))
        outs = [self.rt.imagine(None if images is None else images[i : i + 1], actions[i : i + 1],
                                codes=None if codes is None else codes[i : i + 1], **kw) for i in range(len(rows))]
        if kw.get("return_info"):
            return ImaginedFrames(np.concatenate([o.frames for o in outs]),
                                  dataclasses.replace(outs[0].info, codes=torch.cat([o.info.codes for o in outs])))
        return np.concatenate(outs)


def test_vector_env_logic_matches_single_envs(runtime, frames):
    # Same comparison as below, with batching taken out of the model call: checks the vector env's own
    # seeding, autoreset, judge and info bookkeeping independently of the runtime's batch invariance.
    _compare_vec_with_singles(PerRowRuntime(runtime), frames)


def test_make_vec_matches_three_single_envs_step_by_step(runtime, frames):
    _compare_vec_with_singles(runtime, frames)


def _compare_vec_with_singles(runtime, frames):
    n, steps = 3, 9
    kw = dict(runtime=runtime, init_frames=frames, instruction=INSTR, max_episode_steps=3, success_judge=checksum_judge())
    venv = gym.make_vec("WorldVLA-Imagined-v0", num_envs=n, vectorization_mode="vector_entry_point", **kw)
    assert isinstance(venv.unwrapped, ImaginedVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    # The env itself, not gym.make: make() consumes max_episode_steps into a TimeLimit wrapper, whose truncation
    # also fires on a success at the limit, while the env (and the vector env) let a success win, as LIBERO does.
    singles = [ImaginedEnv(**kw) for _ in range(n)]
    acts = actions(steps * n, seed=1).reshape(steps, n, 7)

    vobs, vinfo = venv.reset(seed=10)
    sres = [e.reset(seed=10 + i) for i, e in enumerate(singles)]
    for i in range(n):
        np.testing.assert_array_equal(vobs["image"][i], sres[i][0]["image"])
    needs_reset = [False] * n
    n_ended = 0
    for t in range(steps):
        vobs, vr, vte, vtr, vinfo = venv.step(acts[t])
        for i, e in enumerate(singles):
            if needs_reset[i]:  # NEXT_STEP: the step after an episode end is the reset
                obs, info = e.reset()
                r, te, tr = 0.0, False, False
            else:
                obs, r, te, tr, info = e.step(acts[t, i])
            needs_reset[i] = te or tr
            n_ended += te or tr
            for k in obs:
                np.testing.assert_array_equal(vobs[k][i], obs[k], err_msg=f"t={t} env={i} key={k}")
            assert (vr[i], vte[i], vtr[i]) == (r, te, tr), f"t={t} env={i}"
            assert vinfo["is_success"][i] == info["is_success"]
            assert vinfo["success_score"][i] == info["success_score"]
    assert n_ended >= n  # the run did cross episode boundaries


def test_one_batched_call_per_step_and_finished_envs_cost_nothing(runtime, frames):
    counting = CountingRuntime(runtime)
    venv = ImaginedVectorEnv(
        3, runtime=counting, init_frames=frames, instruction=INSTR, max_episode_steps=2,
        autoreset_mode=AutoresetMode.DISABLED,
    )
    venv.reset(seed=0)
    acts = np.zeros((3, 7), np.float32)
    venv.step(acts)
    last, r, te, tr, _ = venv.step(acts)
    assert counting.calls == [3, 3] and tr.all() and not te.any()
    obs, r, te, tr, _ = venv.step(acts)  # all frozen: no generation at all, the ending flags repeat
    assert counting.calls == [3, 3] and venv.last_batch_size == 0
    assert tr.all() and not r.any()
    np.testing.assert_array_equal(obs["image"], last["image"])
    venv.reset(options={"reset_mask": np.array([False, True, False])})
    obs2, r, te, tr, _ = venv.step(acts)
    assert counting.calls == [3, 3, 1]  # only the reset sub-env is generated
    assert list(tr) == [True, False, True] and list(r) == [0.0, 0.0, 0.0]
    for i in (0, 2):
        np.testing.assert_array_equal(obs2["image"][i], last["image"][i])


def test_same_step_autoreset_reports_final_obs(runtime, frames):
    venv = ImaginedVectorEnv(
        2, runtime=runtime, init_frames=frames, instruction=INSTR, max_episode_steps=1,
        autoreset_mode="SameStep",
    )
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    venv.reset(seed=0, options={"frame_id": [1, 2]})
    a = actions(2)
    obs, r, te, tr, info = venv.step(a)
    assert tr.all()
    expected = runtime.imagine(frames[[1, 2]], a)
    for i in range(2):
        np.testing.assert_array_equal(info["final_obs"][i]["image"], expected[i])
        assert info["final_info"]["elapsed_steps"][i] == 1
        # already the next episode's start: a row of the dataset, step counter back to 0
        assert any(np.array_equal(obs["image"][i], f) for f in frames)
        assert info["elapsed_steps"][i] == 0


def test_vector_reset_options_per_env(runtime, frames):
    venv = ImaginedVectorEnv(3, runtime=runtime, instruction=INSTR, wrist=False)
    imgs = frames[:3]
    obs, info = venv.reset(seed=0, options={"image": imgs, "state": np.ones(8, np.float32)})
    np.testing.assert_array_equal(obs["image"], imgs)
    assert (obs["state"] == 1).all() and "wrist_image" not in obs
    obs, _ = venv.reset(options={"image": frames[4]})
    assert all(np.array_equal(obs["image"][i], frames[4]) for i in range(3))
    with pytest.raises(ValueError, match="entries"):
        venv.reset(options={"image": frames[:2]})
    with pytest.raises(ValueError, match=r"shape \(3, 7\)"):
        venv.step(np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="range|lie in"):
        venv.step(np.full((3, 7), 2.0, np.float32))


# ------------------------------------------------------------------------------------------------ judge hook
def test_success_judge_terminates_with_reward_one(runtime, frames):
    env = make_env(runtime, frames, success_judge=CallableJudge(lambda f, i: 0.9, threshold=0.8))
    env.reset(seed=0)
    obs, r, te, tr, info = env.step(np.zeros(7, np.float32))
    assert (r, te, tr, info["is_success"], info["success_score"]) == (1.0, True, False, True, 0.9)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(7, np.float32))
    env = make_env(runtime, frames, success_judge=CallableJudge(lambda f, i: 0.9, threshold=0.8), success_threshold=0.95)
    env.reset(seed=0)
    assert env.step(np.zeros(7, np.float32))[2] is False
    env = make_env(runtime, frames, success_judge=CallableJudge(lambda f, i: 1.5))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        env.step(np.zeros(7, np.float32))


def test_judge_window_gets_the_recent_frames(runtime, frames):
    seen = []
    env = make_env(runtime, frames, success_judge=CallableJudge(lambda f, i: seen.append(f.shape) or 0.0, window=3))
    env.reset(seed=0)
    for _ in range(4):
        env.step(np.zeros(7, np.float32))
    assert seen == [(2, RES, RES, 3), (3, RES, RES, 3), (3, RES, RES, 3), (3, RES, RES, 3)]


def test_truncates_at_max_episode_steps_and_render(runtime, frames):
    env = make_env(runtime, frames, max_episode_steps=2, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs["image"])
    assert env.step(np.zeros(7, np.float32))[3] is False
    obs, r, te, tr, info = env.step(np.zeros(7, np.float32))
    assert (te, tr, info["elapsed_steps"]) == (False, True, 2)
    np.testing.assert_array_equal(env.render(), obs["image"])


# ------------------------------------------------------------------------------------------------ loading
def test_make_by_checkpoint_path_and_module_prefixed_id(ckpt, frames):
    env = gym.make("wvla_gym:WorldVLA-Imagined-v0", checkpoint=str(ckpt), init_frames=frames, instruction=INSTR)
    env2 = gym.make("WorldVLA-Imagined-v0", checkpoint=ckpt, init_frames=frames, instruction=INSTR)
    assert env.unwrapped.runtime is env2.unwrapped.runtime  # loaded once, shared
    assert env.observation_space["image"].shape == (RES, RES, 3)


def test_missing_default_checkpoint_error_names_what_to_pass(monkeypatch, tmp_path):
    import wvla_gym.runtime as r

    monkeypatch.setattr(r, "DEFAULT_ASSET_DIR", tmp_path / "no_default")  # an install without the default
    with pytest.raises(FileNotFoundError, match="checkpoint=.*runtime=.*make_tiny_checkpoint"):
        ImaginedEnv(instruction=INSTR)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros(6, np.float32), "shape"),
        (np.array([0, 0, 0, 0, 0, 0, np.nan], np.float32), "NaN"),
        (np.array([0, 0, 1.5, 0, 0, 0, 0], np.float32), r"\[-1, 1\]"),
        ("left", "numeric"),
    ],
)
def test_bad_actions_raise_value_error(runtime, frames, action, match):
    env = make_env(runtime, frames)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"bogus": 1}, "unknown keys"),
        ({"init_state_id": 50}, r"\[0, 49\]"),
        ({"init_state_id": True}, "init_state_id"),
        ({"frame_id": 6}, r"\[0, 5\]"),
        ({"image": np.zeros((RES, RES, 3), np.float32)}, "uint8"),
        ({"image": np.zeros((16, 16, 3), np.uint8)}, "shape"),
        ({"image": np.zeros((RES, RES, 3), np.uint8), "frame_id": 0}, "more than one"),
        ({"state": np.zeros(8)}, "only valid together"),
        ({"image": np.zeros((RES, RES, 3), np.uint8), "state": np.zeros(3)}, "shape"),
    ],
)
def test_bad_reset_options_raise_value_error(runtime, frames, options, match):
    env = make_env(runtime, frames)
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)


def test_bad_constructor_arguments(runtime, ckpt, frames):
    with pytest.raises(ValueError, match="resolution"):
        make_env(runtime, frames, resolution=64)
    with pytest.raises(ValueError, match="not both"):
        ImaginedEnv(checkpoint=ckpt, runtime=runtime, instruction=INSTR)
    with pytest.raises(ValueError, match="max_episode_steps"):
        make_env(runtime, frames, max_episode_steps=0)
    with pytest.raises(ValueError, match="init_frames"):
        make_env(runtime, frames[:, :16])
    with pytest.raises(ValueError, match="task_id"):
        make_env(runtime, frames, task_id=10)
    with pytest.raises(ValueError, match="frame_id.*init_frames"):
        make_env(runtime, None).reset(options={"frame_id": 0})
    with pytest.raises(RuntimeError, match="reset"):
        make_env(runtime, frames).step(np.zeros(7, np.float32))


# ------------------------------------------------------------------------------------------------ SB3
def test_sb3_compat_wrapper_drops_text_and_passes_sb3_checker(runtime, frames):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from envs.sb3 import SB3Compat

    env = make_env(runtime, frames, instruction_in_obs=True)
    with pytest.raises(ValueError, match="Text"):
        SB3Compat(env, keys=["image", "instruction"])
    wrapped = SB3Compat(env)
    assert list(wrapped.observation_space.spaces) == ["image", "state", "wrist_image"]
    image_only = SB3Compat(make_env(runtime, frames), keys=["image"])
    assert image_only.observation_space == env.observation_space["image"]
    obs, _ = image_only.reset(seed=0, options={"frame_id": 1})
    np.testing.assert_array_equal(obs, frames[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 32 px and unbounded-state notices, as above
        sb3_check_env(wrapped)
        sb3_check_env(image_only)


def test_sb3_vec_env_adapter_autoresets_like_sb3(runtime, frames):
    from envs.sb3 import SB3VecEnvAdapter, make_sb3_vec_env

    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnvAdapter(ImaginedVectorEnv(2, runtime=runtime, init_frames=frames, instruction=INSTR))
    venv = make_sb3_vec_env(2, keys=["image"], runtime=runtime, init_frames=frames, instruction=INSTR, max_episode_steps=2)
    venv.seed(5)
    obs = venv.reset()
    singles = [make_env(runtime, frames, max_episode_steps=2) for _ in range(2)]
    starts = [e.reset(seed=5 + i)[0]["image"] for i, e in enumerate(singles)]
    np.testing.assert_array_equal(obs, np.stack(starts))  # seed s -> sub-env i seeded s + i
    a = actions(2)
    obs, r, dones, infos = venv.step(a)
    assert not dones.any() and r.dtype == np.float32 and infos[0]["imagined"] is True
    obs, r, dones, infos = venv.step(a)
    assert dones.all()
    for i, e in enumerate(singles):
        e.step(a[i])
        last = e.step(a[i])[0]["image"]
        np.testing.assert_array_equal(infos[i]["terminal_observation"], last)
        assert infos[i]["TimeLimit.truncated"] is True and infos[i]["is_success"] is False
        assert infos[i]["elapsed_steps"] == 2  # the ended episode's info, not the new one's
    assert venv.get_attr("task_description") == [INSTR, INSTR]
    venv.set_options({"frame_id": 3})
    np.testing.assert_array_equal(venv.reset(), np.stack([frames[3], frames[3]]))
    venv.close()


def test_init_frames_from_npz_and_libero_hdf5(runtime, tmp_path):
    import h5py

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (2, 5, RES, RES, 3), dtype=np.uint8)  # 2 demos x 5 steps, unrotated like LIBERO
    with h5py.File(tmp_path / "demo.hdf5", "w") as f:
        for d in range(2):
            obs = f.create_group(f"data/demo_{d}/obs")
            obs["agentview_rgb"] = raw[d]
            obs["eye_in_hand_rgb"] = raw[d][:, ::-1]
            obs["ee_states"] = np.full((5, 6), d, np.float64)
            obs["gripper_states"] = np.full((5, 2), 10 + d, np.float64)
    env = make_env(runtime, str(tmp_path / "demo.hdf5"))
    obs, info = env.reset(seed=0, options={"frame_id": 1})
    np.testing.assert_array_equal(obs["image"], raw[1, 0, ::-1, ::-1])  # first frame, rotated 180°
    np.testing.assert_array_equal(obs["wrist_image"], raw[1, 0, ::-1][::-1, ::-1])
    np.testing.assert_array_equal(obs["state"], [1] * 6 + [11] * 2)
    assert info["unpredicted_keys"] == {"wrist_image": "carried", "state": "carried"}
    # our layout (images_rotated_180): the stored frames are already the env's, taken as they are
    with h5py.File(tmp_path / "ours.hdf5", "w") as f:
        f.create_group("data").attrs["images_rotated_180"] = True
        for d in range(2):
            f.create_group(f"data/demo_{d}/obs")["agentview_rgb"] = raw[d]
    env = make_env(runtime, str(tmp_path / "ours.hdf5"))
    obs, info = env.reset(seed=0, options={"frame_id": 1})
    np.testing.assert_array_equal(obs["image"], raw[1, 0])
    assert info["unpredicted_keys"] == {"wrist_image": "zeros", "state": "zeros"}
    np.savez(tmp_path / "f.npz", image=raw[0], state=np.zeros((5, 8), np.float32))
    env = make_env(runtime, tmp_path / "f.npz")
    assert len(env.init_frames["image"]) == 5 and "wrist_image" not in env.init_frames
    with pytest.raises(ValueError, match="does not exist"):
        make_env(runtime, tmp_path / "missing.npz")


def test_checkpoint_ships_its_judge(tmp_path, frames):
    """A checkpoint folder with judge/ (like the embedded default) gives the env that judge by default."""
    import shutil

    from wvla_gym.judge import ClassifierJudge

    ckpt = make_tiny_checkpoint(tmp_path / "with_judge", resolution=RES, downsample=8, seed=0)
    judge = ClassifierJudge(input_size=16, threshold=0.25)
    judge.save_pretrained(ckpt / "judge")
    env = ImaginedEnv(checkpoint=ckpt, init_frames=frames, instruction=INSTR)
    assert isinstance(env.success_judge, ClassifierJudge)
    assert env.success_threshold == 0.25
    shutil.rmtree(ckpt / "judge")
    bare = ImaginedEnv(runtime=WorldVLARuntime.from_pretrained(ckpt), init_frames=frames, instruction=INSTR)
    assert bare.success_judge is None
