"""The ``batched`` eval backend: imagined episodes in lockstep on one ImaginedVectorEnv, equal to ``sync``.

Tiny random world model (32 px), init frames written into a temporary ``$WVLA_GYM_CACHE`` (no MuJoCo), a
frame-checksum judge (success depends on the generated pixels, so records agree only if frames agree).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import wvla_gym.evaluation.video as video_mod
from wvla_gym.evaluation import EvalConfig, evaluate, read_records
from wvla_gym.evaluation.policies import RandomPolicy, ReplayPolicy, ZeroPolicy
from wvla_gym.judge import CallableJudge
from wvla_gym.model.tiny import make_tiny_checkpoint
from wvla_gym.runtime import WorldVLARuntime

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_fakes  # noqa: E402

RES = 32
TRIALS = 4
INSTR = "pick up the alphabet soup and place it in the basket"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def init_frame_cache(tmp_path_factory):
    """Rendered-init-state cache entries (what real LIBERO would write), random frames."""
    with eval_fakes.init_frame_cache(tmp_path_factory.mktemp("wvla_cache"), tasks=(0, 1), n_init=TRIALS,
                                     resolution=RES) as root:
        yield root


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_wm"), resolution=RES))


class CountingRuntime:
    """Delegates to the real runtime and records the batch size of every ``imagine`` call."""

    def __init__(self, rt):
        self.rt, self.calls = rt, []
        self.resolution, self.device = rt.resolution, rt.device
        self.image_tokenizer = rt.image_tokenizer  # the envs encode start frames with it (imagine_from="codes")

    def imagine(self, images, actions, **kw):
        self.calls.append(len(images if images is not None else kw["codes"]))
        return self.rt.imagine(images, actions, **kw)


def checksum_judge() -> CallableJudge:
    # ~1 in 5 generated frames "succeeds": a mix of successes and truncations over 6 steps.
    return CallableJudge(lambda f, _: float(int(f[-1].astype(np.int64).sum()) % 5 == 0), threshold=0.5)


class FrameCapture:
    """Stands in for VideoSink: keeps every episode's raw frames (mp4 would be lossy) under the run's out."""

    frames: dict[tuple, list[np.ndarray]] = {}

    def __init__(self, out, config) -> None:
        self.out = str(out)

    def write(self, rec, frames) -> str:
        FrameCapture.frames[(self.out, rec["task_id"], rec["init_state_id"])] = [np.array(f) for f in frames]
        return f"{rec['task_id']}_{rec['init_state_id']}.mp4"


def _config(tmp_path, name, rt, **kw) -> EvalConfig:
    imagined = {"runtime": rt, "instruction": INSTR, "success_judge": checksum_judge()}
    imagined.update(kw.pop("imagined", {}))
    base = dict(suite="libero_object", tasks=[0, 1], trials=TRIALS, env="imagined", resolution=RES,
                max_episode_steps=6, policy_name="p", out=tmp_path / name, progress=False, imagined_env_kwargs=imagined)
    base.update(kw)
    return EvalConfig(**base)


def _by_trial(cfg) -> dict[tuple[int, int], dict]:
    recs = read_records(cfg.out / "episodes.jsonl")
    out = {(r["task_id"], r["init_state_id"]): r for r in recs}
    assert len(out) == len(recs), "duplicate records"
    return out


def _strip(rec, *keys) -> dict:
    return {k: v for k, v in rec.items() if k not in ("wall_time_s", *keys)}


def random_factory(env):
    return RandomPolicy(scale=0.8)


# ------------------------------------------------------------------------------------------------ equality
def test_batched_records_and_frames_equal_sync(tmp_path, runtime, monkeypatch):
    monkeypatch.setattr(video_mod, "VideoSink", FrameCapture)
    FrameCapture.frames.clear()
    sync = _config(tmp_path, "sync", runtime, video=True, record_actions=True)
    evaluate(random_factory, sync)
    ref = _by_trial(sync)
    assert len(ref) == 2 * TRIALS and all(r["error"] is None for r in ref.values())
    outcomes = {(r["success"], r["steps"]) for r in ref.values()}
    assert any(s for s, _ in outcomes) and (False, 6) in outcomes  # successes and truncations both occur

    for width in (2, 3):  # 3: uneven groups, a slot is refilled while the others run on
        counting = CountingRuntime(runtime)
        cfg = _config(tmp_path, f"b{width}", counting, backend="batched", num_envs=width, video=True,
                      record_actions=True)
        summary = evaluate(random_factory, cfg)
        got = _by_trial(cfg)
        assert got.keys() == ref.keys()
        for key, r in ref.items():
            assert _strip(got[key]) == _strip(r), key
            fr, fg = FrameCapture.frames[(str(sync.out), *key)], FrameCapture.frames[(str(cfg.out), *key)]
            assert len(fg) == len(fr) == r["steps"] + 1
            for t, (a, b) in enumerate(zip(fr, fg, strict=True)):
                np.testing.assert_array_equal(a, b, err_msg=f"{key} frame {t}")
        # Really batched, and ended episodes cost no generation: one row per episode step, no more.
        assert max(counting.calls) == width
        assert sum(counting.calls) == sum(r["steps"] for r in got.values())
        assert len(counting.calls) < sum(r["steps"] for r in got.values())
        assert summary["results"]["p"]["imagined"]["overall"]["n"] == 2 * TRIALS

    # ReplayPolicy (reads env.unwrapped.task_id / init_state_id of its slot's sub-env) replays the same episodes.
    recs = list(ref.values())
    replay = _config(tmp_path, "replay", runtime, backend="batched", num_envs=3, video=True, policy_name="replay")
    evaluate(lambda env: ReplayPolicy.from_records(env, recs), replay)
    for key, r in _by_trial(replay).items():
        assert (r["success"], r["steps"], r["error"]) == (ref[key]["success"], ref[key]["steps"], None)
        for a, b in zip(FrameCapture.frames[(str(sync.out), *key)], FrameCapture.frames[(str(replay.out), *key)],
                        strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------ resume
def test_resume_runs_only_the_new_trials(tmp_path, runtime):
    built: list[int] = []

    def factory(env):
        built.append(env.unwrapped.task_id)
        return ZeroPolicy()

    cfg = _config(tmp_path, "res", CountingRuntime(runtime), tasks=[0], trials=2, backend="batched", num_envs=3)
    evaluate(factory, cfg)
    first = read_records(cfg.out / "episodes.jsonl")
    assert [r["init_state_id"] for r in first] == [0, 1] and built == [0, 0]  # width capped by the 2 pending jobs

    cfg.trials = 4
    counting = CountingRuntime(runtime)
    cfg.imagined_env_kwargs["runtime"] = counting
    evaluate(factory, cfg)
    recs = read_records(cfg.out / "episodes.jsonl")
    assert recs[:2] == first  # untouched, not re-run
    assert sorted(r["init_state_id"] for r in recs[2:]) == [2, 3]
    assert len({(r["task_id"], r["init_state_id"]) for r in recs}) == len(recs) == 4
    assert sum(counting.calls) == sum(r["steps"] for r in recs[2:])
    evaluate(factory, cfg)  # nothing left: no episode, no record
    assert len(read_records(cfg.out / "episodes.jsonl")) == 4


# ------------------------------------------------------------------------------------------------ errors
class FlakyPolicy:
    """Random actions; raises in trial 1 at its 2nd step, and returns an out-of-range action in trial 2."""

    def __init__(self, env):
        self.env = env.unwrapped
        self.inner = RandomPolicy(scale=0.8)

    def reset(self, *, seed=None):
        self.inner.reset(seed=seed)
        self.t = 0

    def act(self, obs):
        self.t += 1
        k = int(self.env.init_state_id)
        if k == 1 and self.t == 2:
            raise RuntimeError("policy bug in trial 1")
        a = self.inner.act(obs)
        if k == 2 and self.t == 1:
            a[0] = 3.0
        return a


def test_policy_error_ends_only_its_episode_like_sync(tmp_path, runtime):
    sync = _config(tmp_path, "sync", runtime, tasks=[0], record_actions=True)
    evaluate(FlakyPolicy, sync)
    ref = _by_trial(sync)
    cfg = _config(tmp_path, "batched", runtime, tasks=[0], backend="batched", num_envs=TRIALS, record_actions=True)
    summary = evaluate(FlakyPolicy, cfg)
    got = _by_trial(cfg)
    assert got[(0, 1)]["error"] == "RuntimeError: policy bug in trial 1" and got[(0, 1)]["steps"] == 1
    assert "policy bug in trial 1" in got[(0, 1)]["traceback"] and "in act" in got[(0, 1)]["traceback"]
    assert got[(0, 2)]["error"].startswith("ValueError: action must lie in [-1, 1]") and got[(0, 2)]["steps"] == 0
    assert got[(0, 0)]["error"] is None and got[(0, 3)]["error"] is None
    for key, r in ref.items():
        assert _strip(got[key], "traceback") == _strip(r, "traceback"), key
    block = summary["results"]["p"]["imagined"]["overall"]
    assert (block["n"], block["errors"]) == (2, 2)


def test_broken_vector_step_errors_the_batch_and_continues(tmp_path, runtime):
    class BreaksOnce(CountingRuntime):
        def imagine(self, images, actions, **kw):
            if len(self.calls) == 2:
                self.calls.append(-1)
                raise RuntimeError("world model crashed")
            return super().imagine(images, actions, **kw)

    cfg = _config(tmp_path, "broken", BreaksOnce(runtime), tasks=[0], backend="batched", num_envs=2,
                  imagined={"success_judge": None})  # no judge: nothing ends before the crash at step 3
    evaluate(lambda env: ZeroPolicy(), cfg)
    recs = _by_trial(cfg)
    errs = sorted(k for k, r in recs.items() if r["error"] is not None)
    assert errs == [(0, 0), (0, 1)]  # the batch in flight at the crash
    assert all(recs[k]["error"] == "RuntimeError: world model crashed" for k in errs)
    assert all(recs[k]["steps"] == 2 and "world model crashed" in recs[k]["traceback"] for k in errs)
    assert all(recs[(0, k)]["error"] is None for k in (2, 3))  # a fresh vector env ran the rest


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("env", ["real", "both"])
def test_batched_needs_the_imagined_env(tmp_path, env):
    cfg = EvalConfig(env=env, backend="batched", out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"backend='batched'.*env="):
        cfg.validate()
    with pytest.raises(ValueError, match="backend='batched'"):
        evaluate(lambda e: ZeroPolicy(), cfg)


def test_cli_accepts_batched(tmp_path):
    from wvla_gym.cli.eval import EvalArgs, build_config

    args = EvalArgs(policy="zero", world_model=str(tmp_path), env="imagined", backend="batched", num_envs=5,
                    tasks="0", trials=2, out=tmp_path / "o")
    cfg, _ = build_config(args)
    assert (cfg.backend, cfg.num_envs, cfg.env) == ("batched", 5, "imagined")
    args.env = "real"
    with pytest.raises(ValueError, match="backend='batched'"):
        build_config(args)


# ------------------------------------------------------------------------------------------------ limits
def test_max_episode_steps_truncates(tmp_path, runtime):
    cfg = _config(tmp_path, "limit", runtime, tasks=[1], trials=3, max_episode_steps=4, backend="batched",
                  num_envs=2, imagined={"success_judge": None})
    evaluate(lambda env: ZeroPolicy(), cfg)
    recs = read_records(cfg.out / "episodes.jsonl")
    assert len(recs) == 3
    assert all((r["success"], r["steps"], r["error"]) == (False, 4, None) for r in recs)
