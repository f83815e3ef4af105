"""The protocol runner: protocol details on real LIBERO, resume after SIGKILL, errors, vector and Ray paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wvla_gym.evaluation import EvalConfig, evaluate, read_records
from wvla_gym.evaluation.results import ResultsWriter, episode_key

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # eval_fakes, importable by worker processes too (see _fake_config)

import eval_fakes  # noqa: E402

FAKE = "eval_fakes:EvalFake-v0"


def _fake_config(tmp_path: Path, **kw) -> EvalConfig:
    base = dict(suite="libero_object", tasks=[0, 1], trials=4, out=tmp_path / "res", real_env_id=FAKE,
                imagined_env_id=FAKE, imagined_env_kwargs={"kind": "imagined"}, max_episode_steps=6,
                policy_name="push", progress=False, resolution=16)
    base.update(kw)
    return EvalConfig(**base)


# --------------------------------------------------------------------------- real LIBERO
class _UpPolicy:
    """Tiny scripted policy: lift the gripper; logs sim time and the env's view of the protocol."""

    def __init__(self, env) -> None:
        self.wrapped = env
        self.env = env.unwrapped
        self.log: list[dict] = []

    def reset(self) -> None:
        self.log.append({"first_obs": None})

    def act(self, obs):
        ep = self.log[-1]
        if ep["first_obs"] is None:
            ep["first_obs"] = obs["image"].copy()
            ep["init_state_id"] = self.env.init_state_id
            ep["time_at_first_act"] = float(self.env.sim.data.time)
        ep["time_last"] = float(self.env.sim.data.time)
        return np.array([0, 0, 0.5, 0, 0, 0, -1], np.float32)


@pytest.mark.libero
def test_protocol_on_real_libero(tmp_path):
    policies: list[_UpPolicy] = []

    def factory(env):
        policies.append(_UpPolicy(env))
        return policies[-1]

    cfg = EvalConfig(suite="libero_object", tasks=[0], trials=2, out=tmp_path, resolution=32, wrist=False,
                     max_episode_steps=4, policy_name="up", progress=False)
    summary = evaluate(factory, cfg)
    recs = read_records(tmp_path / "episodes.jsonl")
    assert [r["init_state_id"] for r in recs] == [0, 1]  # trial k uses init state k
    assert all(r["steps"] == 4 and r["success"] is False and r["error"] is None for r in recs)
    assert len(policies) == 1  # one env (and policy) per task, reused across trials
    log = policies[0].log
    env = policies[0].env
    assert [ep["init_state_id"] for ep in log] == [0, 1]
    # gym.make turns the max_episode_steps override into a TimeLimit (the settle steps are inside reset).
    assert policies[0].wrapped.spec.max_episode_steps == 4
    dt = env.raw_env.env.control_timestep  # robosuite: 1 / 20 Hz
    for k, ep in enumerate(log):
        t0 = float(env.init_states[k][0])  # flattened MuJoCo state starts with sim time
        # 10 settle steps happen before the policy's first action, and they are not counted as steps...
        assert ep["time_at_first_act"] - t0 == pytest.approx(10 * dt, abs=1e-6)
        # ...while the 4 counted steps end the episode (policy acted 4 times: the last act is at step 3).
        assert ep["time_last"] - t0 == pytest.approx((10 + 3) * dt, abs=1e-6)
    assert not np.array_equal(log[0]["first_obs"], log[1]["first_obs"])  # different init states
    res = summary["results"]["up"]["real"]["suites"]["libero_object"]
    assert res["n"] == 2 and res["successes"] == 0 and res["ci95"][1] == pytest.approx(1.959963984540054**2 / 2 / (1 + 1.959963984540054**2 / 2))
    run = summary["runs"]["up"]
    assert run["versions"]["mujoco"] and run["gl_backend"] == [env.gl_backend]
    assert run["config"]["step_limit"] == 4 and run["config"]["num_steps_wait"] == 10


# --------------------------------------------------------------------------- fake env: fast paths
def test_default_limit_is_the_suite_limit(tmp_path):
    cfg = _fake_config(tmp_path, tasks=[0], trials=2, max_episode_steps=None, suite="libero_spatial")
    evaluate(lambda env: eval_fakes.PushPolicy(), cfg)
    recs = read_records(tmp_path / "res" / "episodes.jsonl")
    # even init state: success after 3 pushes; odd: truncated at libero_spatial's 220 steps
    assert [(r["steps"], r["success"]) for r in recs] == [(3, True), (220, False)]


def test_exceptions_are_errors_not_failures(tmp_path):
    class Boom(eval_fakes.PushPolicy):
        def act(self, obs):
            if self.t == 0 and int(obs["image"][0, 0, 0]) == 2:  # first frame of init state 2
                raise ValueError("policy exploded")
            return super().act(obs)

    cfg = _fake_config(tmp_path, tasks=[0], real_env_kwargs={"raise_at_init": 3})
    summary = evaluate(lambda env: Boom(), cfg)
    recs = {r["init_state_id"]: r for r in read_records(tmp_path / "res" / "episodes.jsonl")}
    assert recs[0]["success"] and recs[0]["error"] is None
    assert recs[2]["error"] == "ValueError: policy exploded" and "Traceback" in recs[2]["traceback"]
    assert recs[3]["error"] == "RuntimeError: simulated simulator crash" and "eval_fakes.py" in recs[3]["traceback"]
    task = summary["results"]["push"]["real"]["suites"]["libero_object"]["tasks"]["0"]
    # errors leave n and the rate: 1 success (init 0) of 2 valid episodes (init 0, 1)
    assert (task["n"], task["successes"], task["errors"], task["success_rate"]) == (2, 1, 2, 0.5)
    # A rerun retries the errored episodes only.
    calls = []

    def counting(env):
        p = eval_fakes.PushPolicy()
        orig = p.reset

        def reset(*, seed=None):
            calls.append(seed)
            orig(seed=seed)

        p.reset = reset
        return p

    evaluate(counting, cfg)
    assert len(calls) == 2
    final = {r["init_state_id"]: r for r in read_records(tmp_path / "res" / "episodes.jsonl")}
    assert final[2]["error"] is None and final[2]["success"] is True  # rerun of init 2 now fine
    assert final[3]["error"] is not None  # still crashes: still an error, still excluded


_KILL_SCRIPT = """
import sys
import torch
torch.set_num_threads({threads})  # the thread count is part of the run identity: the resume below uses ours
sys.path.insert(0, {tests!r})
import eval_fakes
from wvla_gym.evaluation import EvalConfig, evaluate
cfg = EvalConfig(suite="libero_object", tasks=[0, 1], trials=20, out={out!r}, real_env_id="eval_fakes:EvalFake-v0",
                 real_env_kwargs={{"step_sleep": 0.02}}, max_episode_steps=8, policy_name="push", progress=False)
evaluate(eval_fakes.push_factory, cfg)
"""


def test_resume_after_sigkill(tmp_path):
    out = tmp_path / "res"
    script = tmp_path / "run.py"
    import torch

    script.write_text(_KILL_SCRIPT.format(tests=str(TESTS), out=str(out), threads=torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = out / "episodes.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= 6:
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_records(path)
    assert 6 <= len(before) < 40  # killed mid-run
    # Simulate the worst case of a kill during a write: a torn last line.
    with path.open("ab") as f:
        f.write(b'{"policy": "push", "env": "re')
    cfg = EvalConfig(suite="libero_object", tasks=[0, 1], trials=20, out=out, real_env_id=FAKE,
                     real_env_kwargs={"step_sleep": 0.02}, max_episode_steps=8, policy_name="push", progress=False)
    evaluate(eval_fakes.push_factory, cfg)
    lines = path.read_text().splitlines()
    after = [json.loads(line) for line in lines]  # every line parses: the torn one was removed
    keys = [episode_key(r) for r in after]
    assert len(keys) == len(set(keys)) == 40  # no duplicates, no losses
    assert after[: len(before)] == before  # finished records were kept as written
    assert sorted((r["task_id"], r["init_state_id"]) for r in after) == [(t, k) for t in (0, 1) for k in range(20)]
    assert all(r["success"] == (r["init_state_id"] % 2 == 0) for r in after)


def test_writer_tolerates_torn_line_only_file(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_bytes(b'{"policy": "x"')
    with ResultsWriter(p) as w:
        w.write({"a": 1})
    assert p.read_text() == '{"a": 1}\n'


@pytest.mark.parametrize("in_workers", [False, True])
def test_vector_backend_both_with_videos(tmp_path, in_workers):
    cfg = _fake_config(tmp_path, env="both", backend="vector", num_envs=2, video=True, policy_in_workers=in_workers,
                       real_env_kwargs={"raise_at_init": 3})
    summary = evaluate(eval_fakes.push_factory, cfg)
    recs = read_records(tmp_path / "res" / "episodes.jsonl")
    assert len(recs) == 16 and len({episode_key(r) for r in recs}) == 16
    for r in recs:
        if r["env"] == "real" and r["init_state_id"] == 3:
            assert r["error"] == "RuntimeError: simulated simulator crash" and r["steps"] == 1
        else:
            assert r["error"] is None
            assert (r["success"], r["steps"]) == ((True, 3) if r["init_state_id"] % 2 == 0 else (False, 6))
    res = summary["results"]["push"]
    assert res["imagined"]["overall"]["n"] == 8 and res["real"]["overall"]["errors"] == 2
    from wvla_gym.evaluation.video import read_video

    both = [r for r in recs if r.get("video_both")]
    assert len(both) == 8
    frames = read_video(tmp_path / "res" / both[0]["video_both"])
    assert frames[0].shape == (16, 16 * 2 + 2, 3)  # real | gap | imagined


def test_vector_main_process_policy_gets_a_handle_without_sim(tmp_path):
    seen = []

    def factory(env):
        seen.append((env.task_suite, env.task_id, env.task_description))
        with pytest.raises(AttributeError, match="policy_in_workers"):
            _ = env.unwrapped.sim
        return eval_fakes.PushPolicy()

    evaluate(factory, _fake_config(tmp_path, tasks=[1], trials=2, backend="vector", num_envs=2))
    assert ("libero_object", 1, "fake task 1") in seen


def test_ray_backend_local_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}})
    try:
        cfg = _fake_config(tmp_path, backend="ray", num_envs=2, real_env_kwargs={"raise_at_init": 3})
        summary = evaluate(eval_fakes.push_factory, cfg)
    finally:
        ray.shutdown()
    recs = read_records(tmp_path / "res" / "episodes.jsonl")
    assert sorted((r["task_id"], r["init_state_id"]) for r in recs) == [(t, k) for t in (0, 1) for k in range(4)]
    for r in recs:
        if r["init_state_id"] == 3:
            assert r["error"] == "RuntimeError: simulated simulator crash"
        else:
            assert r["success"] == (r["init_state_id"] % 2 == 0)
    assert summary["results"]["push"]["real"]["overall"]["n"] == 6


def test_bad_config_values_raise(tmp_path):
    for kw, match in [({"trials": 51}, "trials"), ({"tasks": [10]}, "tasks"), ({"env": "sim"}, "env="),
                      ({"suite": "libero_100"}, "suite="), ({"vector_context": "fork"}, "vector_context")]:
        with pytest.raises(ValueError, match=match):
            evaluate(eval_fakes.push_factory, _fake_config(tmp_path, **kw))


# --------------------------------------------------------------------------- CLI
def test_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    from wvla_gym.cli.eval import main

    assert main(["--policy", "zero", "--tasks", "3,12", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "task_id 12" in captured.err and "expected ids in [0, 9]" in captured.err
    assert main(["--policy", "nonsense", "--out", str(tmp_path)]) == 2
    assert "sb3:PATH, module:callable" in capsys.readouterr().err
    assert main(["--policy", "scripted", "--env", "both", "--checkpoint", "x", "--out", str(tmp_path)]) == 2
    assert "only runs with --env real" in capsys.readouterr().err


@pytest.mark.libero
def test_cli_scripted_expert_on_real_libero(tmp_path, capsys):
    import agents.scripted  # noqa: F401  (our own module: a plain import, never a skip)
    from wvla_gym.cli.eval import main

    argv = ["--policy", "scripted", "--noise-std", "0.1", "--tasks", "2", "--trials", "1", "--max-episode-steps", "3",
            "--resolution", "32", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    (rec,) = read_records(tmp_path / "episodes.jsonl")
    assert (rec["policy"], rec["task_id"], rec["steps"], rec["error"]) == ("scripted_noise0.1", 2, 3, None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["runs"]["scripted_noise0.1"]["knobs"] == {"noise_std": 0.1}
    assert "scripted_noise0.1 real libero_object: 0.0%" in capsys.readouterr().out
    assert main(argv) == 0  # rerun: nothing left to do, still one record
    assert len(read_records(tmp_path / "episodes.jsonl")) == 1
