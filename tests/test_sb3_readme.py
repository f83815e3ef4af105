"""The README's SB3 snippet (``evaluate_policy`` on a WorldVLA agent) runs as written, on a tiny checkpoint.

SB3's ``evaluate_policy`` hands the policy observations only and SB3 observations cannot carry text, so the
agent would raise "no instruction"; ``envs.sb3.with_task_instructions`` passes each sub-env's task on.
"""

from __future__ import annotations

import importlib.util
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
if importlib.util.find_spec("libero") is None:  # the imagined env reads the task's instruction from LIBERO
    pytest.skip("needs the [libero] extra", allow_module_level=True)

from agents.worldvla import WorldVLAAgent  # noqa: E402
from wvla_gym.model.tiny import make_tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RES = 32
INSTR = "pick up the alphabet soup and place it in the basket"

#: Verbatim the README's snippet (after the Quickstart, which defines ``agent``).
README_SNIPPET = textwrap.dedent('''\
    from stable_baselines3.common.evaluation import evaluate_policy
    from envs.sb3 import make_sb3_vec_env, with_task_instructions

    vec_env = make_sb3_vec_env(4, runtime=agent.runtime, task_suite="libero_object", task_id=0, wrist=False)
    policy = with_task_instructions(agent, vec_env)  # SB3 hands the policy observations only: this adds the task
    mean_reward, std_reward = evaluate_policy(policy, vec_env, n_eval_episodes=8)  # reward 1 on success
''')

#: Test-only knobs: random start frames instead of rendering LIBERO's, and 3-step episodes.
SHORTEN = ("wrist=False)", "wrist=False, init_frames=frames, max_episode_steps=3)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_sb3"), resolution=RES, downsample=8, seed=0)
    return WorldVLAAgent.from_pretrained(path, constrain_actions=True)


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(7).integers(0, 256, (4, RES, RES, 3), dtype=np.uint8)


def _run(snippet: str, **names):
    ns = dict(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3's "not wrapped with a Monitor" notice
        exec(compile(snippet, "<README SB3 snippet>", "exec"), ns)
    return ns


def test_readme_snippet_runs(agent, frames):
    assert SHORTEN[0] in README_SNIPPET
    ns = _run(README_SNIPPET.replace(*SHORTEN), agent=agent, frames=frames)
    assert 0.0 <= ns["mean_reward"] <= 1.0
    assert agent.timing["queries"] > 0
    assert ns["vec_env"].get_attr("task_description") == [INSTR] * 4
    ns["vec_env"].close()


def test_readme_holds_the_same_snippet():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    if "with_task_instructions" not in readme:
        pytest.skip("README's SB3 snippet not merged yet")
    assert README_SNIPPET.strip() in readme


def test_bare_agent_needs_the_wrapper(agent, frames):
    """Without the wrapper the agent has no instruction (the bug this snippet avoids)."""
    from stable_baselines3.common.evaluation import evaluate_policy

    from envs.sb3 import make_sb3_vec_env

    bare = WorldVLAAgent(agent.runtime, constrain_actions=True)
    vec_env = make_sb3_vec_env(2, runtime=agent.runtime, wrist=False, init_frames=frames, max_episode_steps=2)
    with warnings.catch_warnings(), pytest.raises(ValueError, match="no instruction"):
        warnings.simplefilter("ignore")
        evaluate_policy(bare, vec_env, n_eval_episodes=2)
    vec_env.close()


def test_each_sub_env_gets_its_own_instruction(agent, frames):
    """A DummyVecEnv over two tasks: every sub-env's instruction reaches the agent, through Gymnasium wrappers."""
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs.sb3 import with_task_instructions

    seen: list[list[str]] = []

    class Spy:
        def reset(self, **kw):
            agent.reset(**kw)

        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            seen.append(list(obs["instruction"]))
            return agent.predict(obs, state, episode_start, deterministic)

    def make(task_id):
        return lambda: Monitor(gym.make("WorldVLA-Imagined-v0", runtime=agent.runtime, task_id=task_id, wrist=False,
                                        init_frames=frames, max_episode_steps=2))

    vec_env = DummyVecEnv([make(0), make(1)])
    expected = [vec_env.envs[i].unwrapped.task_description for i in range(2)]
    assert expected[0] != expected[1]
    evaluate_policy(with_task_instructions(Spy(), vec_env), vec_env, n_eval_episodes=2)
    assert seen and all(s == expected for s in seen)
    vec_env.close()


def test_non_dict_observations_are_refused(agent):
    from envs.sb3 import with_task_instructions

    class FakeVec:
        def get_attr(self, name):
            return [INSTR]

    with pytest.raises(ValueError, match="Dict observations"):
        with_task_instructions(agent, FakeVec()).predict(np.zeros((1, RES, RES, 3), np.uint8))
    with pytest.raises(TypeError, match="predict"):
        with_task_instructions(object(), FakeVec())


@pytest.mark.libero
def test_real_libero_dummy_vec_env(agent):
    """The same wrapper on real LIBERO (32 px, one 3-step episode) through SB3's DummyVecEnv and Monitor."""
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs.sb3 import with_task_instructions

    vec_env = DummyVecEnv([lambda: Monitor(gym.make("WorldVLA-LIBERO-v0", task_suite="libero_object", task_id=0,
                                                    resolution=agent.resolution, wrist=False, max_episode_steps=3))])
    try:
        rewards, lengths = evaluate_policy(with_task_instructions(agent, vec_env), vec_env, n_eval_episodes=1,
                                           return_episode_rewards=True)
        assert lengths == [3] and rewards == [0.0]
    finally:
        vec_env.close()
