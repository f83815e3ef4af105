"""WorldVLAAgent's seams: every bad argument fails at once with its name, its value and the expected form."""

from __future__ import annotations

import numpy as np
import pytest

from agents.worldvla import WorldVLAAgent

RES = 8
INSTR = "open the drawer"


class FakeRuntime:
    """What the agent reads from a runtime; ``predict_action_chunk`` counts calls and can fail."""

    action_chunk, history, resolution = 2, 2, RES

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls = fail, 0

    def predict_action_chunk(self, histories, instructions, **kw):
        self.calls += 1
        if self.fail:
            raise RuntimeError("model failed")
        return np.stack([np.full((kw["n_actions"], 7), len(h) / 10, np.float32) for h in histories])


def frame(v: int = 0) -> np.ndarray:
    return np.full((RES, RES, 3), v, np.uint8)


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"constrain_actions": "no"}, ["constrain_actions='no'", "bool"]),
        ({"constrain_actions": 1}, ["constrain_actions=1", "bool"]),
        ({"n_action_steps": True}, ["n_action_steps=True", "int >= 1"]),
        ({"n_action_steps": 2.0}, ["n_action_steps=2.0", "int >= 1"]),
        ({"n_action_steps": 0}, ["n_action_steps=0", "int >= 1"]),
        ({"decode": "beam"}, ["decode='beam'", "'parallel', 'sequential'"]),
        ({"decode": 1}, ["decode=1", "'parallel'"]),
        ({"image_key": ""}, ["image_key=''", "non-empty str"]),
        ({"image_key": 3}, ["image_key=3", "str"]),
        ({"instruction": 5}, ["instruction=5", "str"]),
        ({"instruction": " "}, ["instruction", "empty"]),
    ],
)
def test_bad_constructor_arguments(kwargs, names):
    with pytest.raises(ValueError) as e:
        WorldVLAAgent(FakeRuntime(), **kwargs)
    for name in names:
        assert name in str(e.value)


@pytest.mark.parametrize("runtime", ["str", None, 5, object()])
def test_runtime_must_be_a_runtime(runtime):
    with pytest.raises(TypeError, match="runtime=.*expected a loaded wvla_gym.runtime.WorldVLARuntime"):
        WorldVLAAgent(runtime)


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"num_envs": -1}, ["num_envs=-1", "int >= 1"]),
        ({"num_envs": 0}, ["num_envs=0", "int >= 1"]),
        ({"num_envs": 1.5}, ["num_envs=1.5", "int >= 1"]),
        ({"num_envs": "2"}, ["num_envs='2'", "int >= 1"]),
        ({"seed": "0"}, ["seed='0'", "int"]),
        ({"instruction": 3}, ["instruction=3", "str"]),
    ],
)
def test_bad_reset_arguments(kwargs, names):
    agent = WorldVLAAgent(FakeRuntime(), instruction=INSTR)
    with pytest.raises(ValueError) as e:
        agent.reset(**kwargs)
    for name in names:
        assert name in str(e.value)


def test_reset_accepts_the_protocol_seed_and_numpy_ints():
    agent = WorldVLAAgent(FakeRuntime(), instruction=INSTR)
    agent.reset(seed=3)
    agent.reset(num_envs=np.int64(2))
    assert len(agent._queues) == 2


def test_act_batch_on_an_empty_batch_names_it():
    agent = WorldVLAAgent(FakeRuntime(), instruction=INSTR)
    with pytest.raises(ValueError, match=r"obs\['image'\] is an empty batch \(0, 8, 8, 3\); expected \(N, 8, 8, 3\) with N >= 1"):
        agent.act_batch({"image": np.zeros((0, RES, RES, 3), np.uint8)})
    with pytest.raises(ValueError, match="empty batch"):
        agent.predict({"image": np.zeros((0, RES, RES, 3), np.uint8)})


def test_act_with_a_non_dict_info_names_it():
    agent = WorldVLAAgent(FakeRuntime(), instruction=INSTR)
    with pytest.raises(ValueError, match="info=5; expected None or the env's info dict"):
        agent.act({"image": frame()}, 5)


@pytest.mark.parametrize("path", [5, 1.5, ["ckpt"], b"ckpt"])
def test_from_pretrained_names_a_bad_path(path):
    with pytest.raises(ValueError, match="path_or_hub_id=.*expected None .* a Hub id"):
        WorldVLAAgent.from_pretrained(path)


def test_a_failing_model_call_leaves_every_slot_as_it_was():
    rt = FakeRuntime()
    agents = [WorldVLAAgent(rt, instruction=INSTR) for _ in range(2)]
    for a in agents:
        a.act({"image": frame(1)})  # one frame in each history, one action left in each queue
        a.act({"image": frame(2)})  # queue now empty, history [1, 2]
    rt.fail = True
    out = WorldVLAAgent.act_group(agents, [{"image": frame(3)}, {"image": frame(4)}])
    assert all(isinstance(o, RuntimeError) for o in out)
    for a in agents:  # the full history did not lose its oldest frame
        assert [int(f[0, 0, 0]) for f in a._histories[0]] == [1, 2]
    single = agents[0]
    with pytest.raises(RuntimeError, match="model failed"):
        single.act({"image": frame(5)})
    assert [int(f[0, 0, 0]) for f in single._histories[0]] == [1, 2]


def test_every_entry_point_serves_the_same_actions():
    """act, act_batch, act_group and predict go through one step: same queries, same actions."""
    obs = [{"image": frame(i)} for i in range(3)]
    rt = FakeRuntime()
    single = [WorldVLAAgent(rt, instruction=INSTR).act(o) for o in obs]  # a fresh agent per observation
    batch = WorldVLAAgent(rt, instruction=INSTR).act_batch({"image": np.stack([o["image"] for o in obs])})
    group = WorldVLAAgent.act_group([WorldVLAAgent(rt, instruction=INSTR) for _ in obs], obs)
    pred, _ = WorldVLAAgent(rt, instruction=INSTR).predict({"image": np.stack([o["image"] for o in obs])})
    for got in (batch, np.stack(group), pred):
        np.testing.assert_array_equal(got, np.stack(single))
