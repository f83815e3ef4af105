"""Evaluation from fresh placements and perturbed starts: jobs, records, backends, and paired real/imagined
starts in real LIBERO."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from wvla_gym.cli.eval import start_suffix
from wvla_gym.evaluation import EvalConfig, evaluate, read_records
from wvla_gym.evaluation.config import EpisodeJob, plan_jobs

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

import eval_fakes  # noqa: E402

FAKE = "eval_fakes:EvalFake-v0"


def _cfg(tmp_path: Path, **kw) -> EvalConfig:
    base = dict(suite="libero_object", tasks=[0, 1], trials=3, out=tmp_path / "res", real_env_id=FAKE,
                imagined_env_id=FAKE, imagined_env_kwargs={"kind": "imagined"}, max_episode_steps=5,
                policy_name="push", progress=False, resolution=16, placement="sampled")
    base.update(kw)
    return EvalConfig(**base)


def test_jobs_reset_options_and_seeds():
    proto = EpisodeJob("real", "libero_object", 2, 4, 0)
    assert proto.protocol_start and proto.reset_seed == 0 and proto.reset_options() == {"init_state_id": 4}
    s = EpisodeJob("real", "libero_object", 2, 4, 0, "sampled")
    assert s.reset_options() == {"placement": "sampled"}
    p = EpisodeJob("real", "libero_object", 2, 4, 0, "init_state", 0.03)
    assert p.reset_options() == {"init_state_id": 4, "perturb_radius": 0.03}
    sp = EpisodeJob("real", "libero_object", 2, 4, 0, "sampled", 0.03)
    assert sp.reset_options() == {"placement": "sampled", "perturb_radius": 0.03}
    # one seed per (seed, task, trial), shared by real and imagined twins, the same on every call
    twin = EpisodeJob("imagined", "libero_object", 2, 4, 0, "sampled")
    assert s.reset_seed == twin.reset_seed == EpisodeJob("real", "libero_object", 2, 4, 0, "sampled").reset_seed
    seeds = {EpisodeJob("real", "libero_object", t, k, 0, "sampled").reset_seed for t in range(10) for k in range(50)}
    assert len(seeds) == 500 and all(0 <= x < 2**31 - 1 for x in seeds)
    assert EpisodeJob("real", "libero_object", 2, 4, 1, "sampled").reset_seed != s.reset_seed
    # the policy's noise seed does not depend on the start mode
    assert s.policy_seed == proto.policy_seed


def test_config_validation_identity_and_names(tmp_path):
    cfg = _cfg(tmp_path, perturb_radius=0.03)
    assert all(j.placement == "sampled" and j.perturb_radius == 0.03 for j in plan_jobs(cfg))
    ident = cfg.identity("real")
    assert ident["placement"] == "sampled" and ident["perturb_radius"] == 0.03
    proto = _cfg(tmp_path, placement="init_state").identity("real")
    assert "placement" not in proto and "perturb_radius" not in proto  # older result folders still resume
    for kw, msg in (({"placement": "random"}, "placement='random'"), ({"perturb_radius": -0.01}, "perturb_radius=-0.01"),
                    ({"perturb_radius": 0.5}, r"perturb_radius=0.5; expected a float in \[0, 0.25\]")):
        with pytest.raises(ValueError, match=msg):
            _cfg(tmp_path, **kw).validate()
    assert start_suffix("init_state", 0.0) == ""
    assert start_suffix("sampled", 0.0) == "@sampled"
    assert start_suffix("init_state", 0.03) == "@perturb0.03"
    assert start_suffix("sampled", 0.03) == "@sampled@perturb0.03"


def _strip(recs):
    return [{k: v for k, v in r.items() if k not in ("wall_time_s", "gl_backend")} for r in recs]


@pytest.mark.parametrize("backend", ["vector"])
def test_sampled_starts_records_and_backends_agree(tmp_path, backend):
    evaluate(eval_fakes.push_factory, _cfg(tmp_path / "sync"))
    recs = read_records(tmp_path / "sync" / "res" / "episodes.jsonl")
    assert len(recs) == 6 and all(r["error"] is None for r in recs)
    for r in recs:
        job = EpisodeJob("real", "libero_object", r["task_id"], r["init_state_id"], 0, "sampled")
        assert r["placement"] == "sampled" and r["reset_seed"] == job.reset_seed
        assert r["reset_options"] == {"placement": "sampled"}
        # what the env reported about its start, and the state to replay it
        assert r["start"] == {"mode": "sampled", "seed": job.reset_seed, "perturb_radius": 0.0}
        assert r["sim_state"] == [float(job.reset_seed), float(r["task_id"])]
        # the fake succeeds on even layouts (reset seed % 50): the outcome follows the sampled start
        assert r["success"] == (job.reset_seed % 50 % 2 == 0)
    evaluate(eval_fakes.push_factory, _cfg(tmp_path / backend, backend=backend, num_envs=2, vector_context="spawn"))
    other = read_records(tmp_path / backend / "res" / "episodes.jsonl")
    key = lambda r: (r["task_id"], r["init_state_id"])  # noqa: E731
    assert _strip(sorted(other, key=key)) == _strip(sorted(recs, key=key))


def test_resume_with_another_start_mode_is_refused(tmp_path):
    evaluate(eval_fakes.push_factory, _cfg(tmp_path, tasks=[0], trials=1))
    with pytest.raises(Exception, match="placement"):
        evaluate(eval_fakes.push_factory, _cfg(tmp_path, tasks=[0], trials=1, placement="init_state"))


# ---- real LIBERO ------------------------------------------------------------------------------------------------
class _FirstFrame:
    """Logs the first observation of each episode and lifts the gripper."""

    def __init__(self, log):
        self.log, self.fresh = log, True

    def reset(self):
        self.fresh = True

    def act(self, obs):
        if self.fresh:
            self.log.append(obs["image"].copy())
            self.fresh = False
        return np.array([0, 0, 0.3, 0, 0, 0, -1], np.float32)


@pytest.mark.libero
def test_real_sampled_and_perturbed_starts_replay_and_pair_with_imagination(tmp_path, monkeypatch):
    from envs.imagined import ImaginedEnv
    from envs.libero import LiberoEnv
    from wvla_gym.model.tiny import make_tiny_checkpoint

    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path / "cache"))
    frames: list[np.ndarray] = []
    cfg = EvalConfig(suite="libero_object", tasks=[0], trials=2, out=tmp_path / "res", resolution=32, wrist=False,
                     max_episode_steps=2, policy_name="up", progress=False, placement="sampled")
    evaluate(lambda env: _FirstFrame(frames), cfg)
    recs = read_records(tmp_path / "res" / "episodes.jsonl")
    assert [r["init_state_id"] for r in recs] == [0, 1] and all(r["error"] is None for r in recs)
    assert recs[0]["reset_seed"] != recs[1]["reset_seed"]
    assert not np.array_equal(frames[0], frames[1])  # two trials, two placements
    env = LiberoEnv("libero_object", 0, resolution=32, wrist=True)
    imag = ImaginedEnv(runtime=None, checkpoint=make_tiny_checkpoint(tmp_path / "wm", resolution=32),
                       task_suite="libero_object", task_id=0, wrist=True)
    try:
        for r, first in zip(recs, frames, strict=True):
            assert r["start"]["mode"] == "sampled" and r["start"]["seed"] == r["reset_seed"]
            # the record's sim_state replays the start exactly; the same reset gives the same frame
            replay, _ = env.reset(seed=0, options={"sim_state": np.asarray(r["sim_state"])})
            again, _ = env.reset(seed=r["reset_seed"], options=r["reset_options"])
            np.testing.assert_array_equal(replay["image"], first)
            np.testing.assert_array_equal(again["image"], first)
            # the imagined twin starts from the real first frame (rendered once, then cached)
            obs, info = imag.reset(seed=r["reset_seed"], options=r["reset_options"])
            np.testing.assert_array_equal(obs["image"], first)
            np.testing.assert_array_equal(obs["wrist_image"], again["wrist_image"])
            assert info["placement"] == {"mode": "sampled", "seed": r["reset_seed"], "perturb_radius": 0.0}
            assert info["start_source"] == "placement" and info["unpredicted_keys"]["state"] == "carried"
        # a perturbed fixed init state pairs the same way
        opts = {"init_state_id": 3, "perturb_radius": 0.03}
        real, _ = env.reset(seed=7, options=opts)
        obs, info = imag.reset(seed=7, options=opts)
        np.testing.assert_array_equal(obs["image"], real["image"])
        assert info["init_state_id"] == 3 and info["placement"]["mode"] == "fixed"
        with pytest.raises(ValueError, match=r"cannot be combined with \['image'\]"):
            imag.reset(seed=7, options={"placement": "sampled", "image": real["image"]})
    finally:
        env.close()
        imag.close()
