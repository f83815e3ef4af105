"""WorldVLAAgent: chunk queue, frame history (the reference protocol), batching, SB3, errors."""

from __future__ import annotations

import numpy as np
import pytest

from agents.worldvla import WorldVLAAgent
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime

K = 3
RES = 32
INSTR = "pick up the alphabet soup and place it in the basket"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), resolution=RES, action_chunk=K, history=2)
    return WorldVLARuntime.from_pretrained(path)


class Spy:
    """Records every model query the agent makes, then runs the real runtime."""

    def __init__(self, runtime):
        self.rt = runtime
        self.calls: list[dict] = []
        self.action_chunk, self.history, self.resolution = runtime.action_chunk, runtime.history, runtime.resolution

    def predict_action_chunk(self, image_history, instruction, **kw):
        out = self.rt.predict_action_chunk(image_history, instruction, **kw)
        self.calls.append({"history": [[int(f[0, 0, 0]) for f in seq] for seq in image_history],
                           "instruction": list(instruction), "kw": kw, "out": out.copy()})
        return out


def frame(t: int) -> np.ndarray:
    """A frame whose pixel (0,0,0) encodes the env step t, so prompts can be read back."""
    rng = np.random.default_rng(t)
    f = rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)
    f[0, 0, 0] = t
    return f


def test_queue_and_history_follow_the_protocol(runtime):
    spy = Spy(runtime)
    agent = WorldVLAAgent(spy, instruction=INSTR, constrain_actions=True)
    assert agent.n_action_steps == K and agent.history_len == 2
    acts = [agent.act({"image": frame(t)}) for t in range(2 * K + 2)]
    # Queries only when the queue is empty: steps 0, K, 2K.
    assert len(spy.calls) == 3
    # Step 0: only the current frame; step K: the previous env step's frame and the current one.
    assert [c["history"] for c in spy.calls] == [[[0]], [[K - 1, K]], [[2 * K - 1, 2 * K]]]
    assert all(c["instruction"] == [INSTR] for c in spy.calls)
    # Actions are served in chunk order, each exactly once.
    served = np.stack(acts[:2 * K])
    expected = np.concatenate([spy.calls[0]["out"][0], spy.calls[1]["out"][0]])
    np.testing.assert_array_equal(served, expected)
    assert acts[0].shape == (7,) and acts[0].dtype == np.float32


def test_reset_clears_queue_and_history(runtime):
    spy = Spy(runtime)
    agent = WorldVLAAgent(spy, instruction=INSTR, constrain_actions=True)
    agent.act({"image": frame(1)})
    agent.act({"image": frame(2)})
    agent.reset()
    agent.act({"image": frame(9)})
    assert [c["history"] for c in spy.calls] == [[[1]], [[9]]]  # re-queried at once, with one frame


def test_n_action_steps_override_and_act_chunk(runtime):
    spy = Spy(runtime)
    agent = WorldVLAAgent(spy, instruction=INSTR, n_action_steps=2, constrain_actions=True)
    chunk = agent.act_chunk({"image": frame(4)})
    assert chunk.shape == (2, 7)
    assert spy.calls[0]["kw"]["n_actions"] == 2
    # The same query made directly on the runtime gives the same chunk (greedy decoding).
    direct = runtime.predict_action_chunk([[frame(4)]], INSTR, n_actions=2, constrain_actions=True)[0]
    np.testing.assert_array_equal(chunk, direct)


def test_act_batch_equals_independent_agents(runtime):
    batch_agent = WorldVLAAgent(runtime, instruction=INSTR, constrain_actions=True)
    singles = [WorldVLAAgent(runtime, instruction=INSTR, constrain_actions=True) for _ in range(3)]
    for t in range(K + 1):
        obs = {"image": np.stack([frame(10 * i + t) for i in range(3)])}
        got = batch_agent.act_batch(obs)
        want = np.stack([a.act({"image": frame(10 * i + t)}) for i, a in enumerate(singles)])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_instruction_sources(runtime):
    spy = Spy(runtime)
    agent = WorldVLAAgent(spy, constrain_actions=True)
    with pytest.raises(ValueError, match="no instruction"):
        agent.act({"image": frame(0)})
    agent.reset()
    agent.act({"image": frame(0)}, {"task_description": "open the drawer"})
    agent.reset()
    agent.act({"image": frame(0), "instruction": "close the drawer"})
    assert [c["instruction"] for c in spy.calls] == [["open the drawer"], ["close the drawer"]]


@pytest.mark.parametrize(
    "obs, match",
    [
        ({"wrist_image": np.zeros((RES, RES, 3), np.uint8)}, "key 'image'"),
        ({"image": np.zeros((RES, RES, 3), np.float32)}, "uint8"),
        ({"image": np.zeros((64, 64, 3), np.uint8)}, r"\(32, 32, 3\)"),
        ({"image": np.zeros((RES, RES), np.uint8)}, "shape"),
        (np.zeros((RES, RES, 3), np.uint8), "must be a dict"),
    ],
)
def test_bad_observations(runtime, obs, match):
    agent = WorldVLAAgent(runtime, instruction=INSTR)
    with pytest.raises(ValueError, match=match):
        agent.act(obs)


def test_bad_constructor_args(runtime):
    with pytest.raises(ValueError, match="n_action_steps"):
        WorldVLAAgent(runtime, n_action_steps=0)
    with pytest.raises(ValueError, match="decode"):
        WorldVLAAgent(runtime, decode="beam")


def test_from_pretrained_local_folder(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "ckpt", resolution=RES, action_chunk=4)
    agent = WorldVLAAgent.from_pretrained(path, instruction=INSTR, constrain_actions=True)
    assert agent.n_action_steps == 4 and agent.resolution == RES
    assert agent.act({"image": frame(0)}).shape == (7,)


def test_predict_resets_sub_envs_on_episode_start(runtime):
    spy = Spy(runtime)
    agent = WorldVLAAgent(spy, instruction=INSTR, constrain_actions=True)
    obs = {"image": np.stack([frame(1), frame(2)])}
    a, state = agent.predict(obs, episode_start=np.array([True, True]))
    assert a.shape == (2, 7) and state is None
    agent.predict({"image": np.stack([frame(3), frame(4)])}, episode_start=np.array([False, True]))
    # env 1 was reset: re-queried with only its current frame; env 0 still serves its queue
    assert spy.calls[-1]["history"] == [[4]]


@pytest.mark.libero
def test_sb3_evaluate_policy_on_real_libero(runtime):
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    import wvla_gym  # noqa: F401

    def make():
        return Monitor(gym.make("WorldVLA-LIBERO-v0", task_suite="libero_object", task_id=0, resolution=RES,
                                wrist=False, max_episode_steps=2 * K + 1))

    venv = DummyVecEnv([make])
    try:
        instruction = venv.envs[0].unwrapped.task_description
        agent = WorldVLAAgent(runtime, instruction=instruction, constrain_actions=True)
        rewards, lengths = evaluate_policy(agent, venv, n_eval_episodes=1, return_episode_rewards=True)
        assert lengths == [2 * K + 1] and rewards == [0.0]
        assert agent.timing["queries"] == 3  # steps 0, K, 2K
    finally:
        venv.close()


def test_constrain_actions_default_comes_from_the_checkpoint(runtime, monkeypatch):
    assert WorldVLAAgent(runtime).constrain_actions is False  # released behaviour: unconstrained
    monkeypatch.setattr(runtime.config, "constrain_actions", True, raising=False)
    assert WorldVLAAgent(runtime).constrain_actions is True
    assert WorldVLAAgent(runtime, constrain_actions=False).constrain_actions is False
