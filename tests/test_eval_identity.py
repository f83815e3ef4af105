"""Evaluation runs that cannot mix: run identity on resume, restart, and concurrent runs on one folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wvla_gym.evaluation import EvalConfig, evaluate, read_records
from wvla_gym.evaluation.results import episode_key
from wvla_gym.utils.run_identity import RunIdentityError

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import eval_fakes  # noqa: E402

FAKE = "eval_fakes:EvalFake-v0"


def _cfg(out: Path, **kw) -> EvalConfig:
    base = dict(suite="libero_object", tasks=[0], trials=2, out=out, real_env_id=FAKE, max_episode_steps=5,
                policy_name="push", progress=False, resolution=16)
    base.update(kw)
    return EvalConfig(**base)


@pytest.mark.parametrize(
    ("change", "setting"),
    [({"max_episode_steps": 6}, "step_limit"), ({"resolution": 32}, "env_kwargs"),
     ({"knobs": {"checkpoint_digest": "sha256:other"}}, "knobs"), ({"seed": 1}, "seed")],
)
def test_resume_with_other_settings_is_refused_naming_them(tmp_path, change, setting):
    evaluate(eval_fakes.push_factory, _cfg(tmp_path))
    n = len(read_records(tmp_path / "episodes.jsonl"))
    with pytest.raises(RunIdentityError, match=setting) as err:
        evaluate(eval_fakes.push_factory, _cfg(tmp_path, **change))
    assert "--restart" in str(err.value)
    assert len(read_records(tmp_path / "episodes.jsonl")) == n  # nothing ran


def test_unchanged_resume_extends_and_restart_starts_over(tmp_path):
    evaluate(eval_fakes.push_factory, _cfg(tmp_path))
    # More trials and tasks with the same settings is a resume: only the new episodes run.
    evaluate(eval_fakes.push_factory, _cfg(tmp_path, tasks=[0, 1], trials=3))
    recs = read_records(tmp_path / "episodes.jsonl")
    assert sorted((r["task_id"], r["init_state_id"]) for r in recs) == [(t, k) for t in (0, 1) for k in range(3)]
    # Another policy in the same folder has its own identity and keeps its records through a restart of ours.
    evaluate(eval_fakes.push_factory, _cfg(tmp_path, policy_name="other", max_episode_steps=9))
    summary = evaluate(eval_fakes.push_factory, _cfg(tmp_path, max_episode_steps=6, restart=True))
    recs = read_records(tmp_path / "episodes.jsonl")
    push = [r for r in recs if r["policy"] == "push"]
    assert len(push) == 2 and all(r["steps"] <= 6 for r in push)
    assert len([r for r in recs if r["policy"] == "other"]) == 2
    assert summary["runs"]["push"]["identity"]["real"]["step_limit"] == 6
    assert summary["runs"]["push"]["torch_threads"] >= 1


def test_folder_with_records_but_no_identity_is_refused(tmp_path):
    evaluate(eval_fakes.push_factory, _cfg(tmp_path))
    import shutil

    shutil.rmtree(tmp_path / "runs")  # as written before identities existed
    with pytest.raises(RunIdentityError, match="no run_identity.json"):
        evaluate(eval_fakes.push_factory, _cfg(tmp_path))


def test_default_worldvla_names_of_two_checkpoints_do_not_mix(tmp_path):
    """`worldvla:model` for a/model and b/model: the checkpoint digest in the identity tells them apart."""
    a = _cfg(tmp_path, policy_name="worldvla:model", knobs={"checkpoint": "a/model", "checkpoint_digest": "sha256:a"})
    evaluate(eval_fakes.push_factory, a)
    b = _cfg(tmp_path, policy_name="worldvla:model", knobs={"checkpoint": "b/model", "checkpoint_digest": "sha256:b"})
    with pytest.raises(RunIdentityError, match="checkpoint"):
        evaluate(eval_fakes.push_factory, b)


_CONCURRENT = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import eval_fakes
from wvla_gym.evaluation import EvalConfig, evaluate
cfg = EvalConfig(suite="libero_object", tasks=[0, 1], trials=6, out={out!r}, real_env_id="eval_fakes:EvalFake-v0",
                 real_env_kwargs={{"step_sleep": 0.01}}, max_episode_steps=5, policy_name="push", progress=False,
                 resolution=16)
evaluate(eval_fakes.push_factory, cfg)
"""


def test_two_concurrent_evaluations_run_each_episode_once(tmp_path):
    script = tmp_path / "run.py"
    out = tmp_path / "res"
    script.write_text(_CONCURRENT.format(tests=str(TESTS), out=str(out)))
    procs = [subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    recs = read_records(out / "episodes.jsonl")
    keys = [episode_key(r) for r in recs]
    assert len(keys) == len(set(keys)) == 12  # every episode exactly once
    assert all(r["error"] is None for r in recs)
    claims = [json.loads(p.read_text()) for p in (out / "claims").glob("*.json")]
    assert len(claims) == 12
    # Both processes took part only if the first did not finish before the second started; at least the
    # records show no episode twice, which is the contract.
    assert {c["policy"] for c in claims} == {"push"}
