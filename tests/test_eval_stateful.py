"""Stateful policies through every evaluation backend: per-slot agents, identical records and frames.

The defect this guards against: one WorldVLA agent shared by every slot, so concurrent episodes popped each
other's action queues and mixed their frame histories. Stateless policies cannot see that, so both policies
here carry episode state: the WorldVLA agent (M-frame history + K-action queue, on a tiny checkpoint through
the CLI's own ``--policy worldvla`` resolution) and a counting fake whose actions depend on its step count
and on every frame it has seen.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import wvla_gym.evaluation.video as video_mod
from agents.registry import resolve_policy
from wvla_gym.evaluation import EvalConfig, evaluate, read_records
from wvla_gym.evaluation.policies import act_policies
from wvla_gym.model.tiny import make_tiny_checkpoint

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import eval_fakes  # noqa: E402

RES = 32
TRIALS = 3
STEPS = 7
INSTR = "pick up the alphabet soup and place it in the basket"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def init_frame_cache(tmp_path_factory):
    """Rendered-init-state cache entries (what real LIBERO would write), random frames."""
    with eval_fakes.init_frame_cache(tmp_path_factory.mktemp("wvla_cache"), tasks=(0,), n_init=TRIALS,
                                     resolution=RES) as root:
        yield root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), resolution=RES, action_chunk=3, history=2))


class FrameCapture:
    """Stands in for VideoSink: keeps every episode's raw frames (mp4 is lossy), keyed by run folder."""

    frames: dict[tuple, list[np.ndarray]] = {}

    def __init__(self, out, config) -> None:
        self.out = str(out)

    def write(self, rec, frames) -> str:
        FrameCapture.frames[(self.out, rec["task_id"], rec["init_state_id"])] = [np.array(f) for f in frames]
        return "captured.mp4"


def _config(out: Path, name: str, checkpoint: str, **kw) -> EvalConfig:
    # No judge in the tiny checkpoint: every imagined episode runs to the step limit, so all STEPS actions and
    # frames of every episode are compared.
    base = dict(suite="libero_object", tasks=[0], trials=TRIALS, env="imagined", resolution=RES,
                max_episode_steps=STEPS, policy_name=name, out=out, progress=False, video=True, record_actions=True,
                imagined_env_kwargs={"checkpoint": checkpoint, "instruction": INSTR})
    base.update(kw)
    return EvalConfig(**base)


def _records(cfg: EvalConfig) -> dict[tuple[int, int], dict]:
    recs = read_records(Path(cfg.out) / "episodes.jsonl")
    out = {(r["task_id"], r["init_state_id"]): r for r in recs}
    assert len(out) == len(recs), "an episode ran twice"
    return out


def _strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("wall_time_s", "video")}


BACKENDS = [("sync", 1), ("batched", 3), ("vector", 2), ("ray", 2)]


@pytest.fixture
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
                                       "WVLA_GYM_CACHE": os.environ["WVLA_GYM_CACHE"], "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["worldvla", "counting"])
def test_stateful_policies_give_identical_records_on_every_backend(tmp_path, checkpoint, policy, monkeypatch,
                                                                   ray_cluster):
    monkeypatch.setattr(video_mod, "VideoSink", FrameCapture)
    if policy == "worldvla":
        resolved = resolve_policy("worldvla", checkpoint=checkpoint, policy_kwargs={"constrain_actions": True})
        factory, name = resolved.factory, resolved.name
        assert resolved.knobs["K"] == 3 and resolved.knobs["M"] == 2 and resolved.knobs["decode"] == "parallel"
    else:
        factory, name = eval_fakes.counting_factory, "counting"
    runs = {}
    for backend, n in BACKENDS:
        # spawn: a forkserver started by an earlier test would hand workers its old WVLA_GYM_CACHE.
        cfg = _config(tmp_path / backend, name, checkpoint, backend=backend, num_envs=n, vector_context="spawn")
        evaluate(factory, cfg)
        runs[backend] = (cfg, _records(cfg))
    ref_cfg, ref = runs["sync"]
    assert len(ref) == TRIALS and all(r["error"] is None for r in ref.values()), [r["error"] for r in ref.values()]
    # The episodes differ from each other (different start frames), so a mixed-up slot would show.
    assert len({tuple(map(tuple, r["actions"])) for r in ref.values()}) == TRIALS
    for backend, (cfg, got) in runs.items():
        assert got.keys() == ref.keys(), backend
        for key, r in ref.items():
            assert _strip(got[key]) == _strip(r), (backend, key)
            fr = FrameCapture.frames[(str(ref_cfg.out), *key)]
            fg = FrameCapture.frames[(str(cfg.out), *key)]
            assert len(fg) == len(fr) == r["steps"] + 1
            for t, (a, b) in enumerate(zip(fr, fg, strict=True)):
                np.testing.assert_array_equal(a, b, err_msg=f"{backend} {key} frame {t}")


def test_worldvla_slots_own_their_state_and_share_one_model_call(checkpoint):
    """Per-slot agents from the CLI factory: one runtime, separate queues, one batched model call."""
    from agents.worldvla import WorldVLAAgent

    resolved = resolve_policy("worldvla", checkpoint=checkpoint, policy_kwargs={"constrain_actions": True})

    class Env:
        task_description = INSTR
        unwrapped = property(lambda self: self)

    slots = [resolved.factory(Env()) for _ in range(3)]
    assert len({id(a) for a in slots}) == 3 and len({id(a.runtime) for a in slots}) == 1
    calls = []
    rt = slots[0].runtime
    real = rt.predict_action_chunk

    def spy(histories, instructions, **kw):
        calls.append(len(histories))
        return real(histories, instructions, **kw)

    rt.predict_action_chunk = spy
    try:
        rng = np.random.default_rng(0)
        obs = [{"image": rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)} for _ in range(3)]
        # Reference: each agent alone (fresh agents, same runtime).
        alone = [WorldVLAAgent(rt, instruction=INSTR, constrain_actions=True) for _ in range(3)]
        for a in slots + alone:
            a.reset()
        expected = [[a.act(o) for _ in range(4)] for a, o in zip(alone, obs, strict=True)]
        calls.clear()
        got = [act_policies(slots, obs) for _ in range(4)]
        # K=3: queries at steps 0 and 3, each ONE call for all three slots.
        assert calls == [3, 3]
        for t in range(4):
            for i in range(3):
                np.testing.assert_array_equal(got[t][i], expected[i][t])
        # Resetting one slot clears only its own queue.
        slots[1].reset()
        assert len(slots[1]._queues[0]) == 0 and len(slots[0]._queues[0]) == 2
    finally:
        rt.predict_action_chunk = real


def test_counting_fake_through_sync_vector_ray_on_the_fake_real_env(tmp_path, ray_cluster):
    """The counting fake on the real-kind fake env: vector workers (main-process and in-worker policies) and
    Ray equal sync."""
    base = dict(suite="libero_object", tasks=[0, 1], trials=4, real_env_id="eval_fakes:EvalFake-v0",
                max_episode_steps=9, policy_name="counting", progress=False, resolution=16, record_actions=True)
    ref = None
    for backend, n, in_workers in [("sync", 1, False), ("vector", 3, False), ("vector", 2, True), ("ray", 2, False)]:
        cfg = EvalConfig(out=tmp_path / f"{backend}{in_workers}", backend=backend, num_envs=n,
                         policy_in_workers=in_workers, **base)
        evaluate(eval_fakes.counting_factory, cfg)
        got = _records(cfg)
        if ref is None:
            ref = got
            # Success needs the counted pushes, so a policy whose count was reset by a neighbour would fail.
            assert [r["success"] for r in ref.values()] == [True] * 8
        assert {k: _strip(r) for k, r in got.items()} == {k: _strip(r) for k, r in ref.items()}, backend
