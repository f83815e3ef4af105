"""Recorder: LIBERO layout, WorldVLA's no-op filter, resumability (fake env) and one real LIBERO episode."""

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

h5py = pytest.importorskip("h5py")

from tests.record_fakes import FakePolicy, make_fake_env  # noqa: E402
from wvla_gym.data.hdf5 import validate_file  # noqa: E402
from wvla_gym.data.noop import noop_mask  # noqa: E402
from wvla_gym.data.record import parse_tasks, record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- no-op filter
def test_noop_filter_hand_made_sequence():
    z = [0.0] * 6
    actions = np.array(
        [
            [*z, -1.0],  # 0: first action, tiny norm -> no-op (norm test only)
            [*z, -1.0],  # 1: no previous kept action yet -> still norm test only -> no-op
            [0.5, 0, 0, 0, 0, 0, -1.0],  # 2: moves -> kept (gripper -1 becomes the reference)
            [5e-5, 0, 0, 0, 0, 0, -1.0],  # 3: tiny and same gripper as kept #2 -> no-op
            [*z, 1.0],  # 4: tiny but gripper changes -> kept
            [*z, 1.0],  # 5: tiny, same gripper as kept #4 -> no-op
            [0, 0, 0, 0, 0, 2e-4, 1.0],  # 6: rotation above threshold -> kept
            [*z, -1.0],  # 7: gripper differs from kept #6 -> kept
        ]
    )
    assert noop_mask(actions).tolist() == [False, False, True, False, True, False, True, True]


def test_noop_filter_compares_with_previous_kept_not_previous_raw():
    # #1's gripper differs from the *raw* predecessor #0, but #0 was dropped, so nothing has been kept yet and
    # #1 is judged by the norm test alone -> dropped. Comparing with the raw predecessor would keep it.
    a = np.array([[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, -1], [0.3, 0, 0, 0, 0, 0, -1]])
    assert noop_mask(a).tolist() == [False, False, True]


def test_noop_filter_rejects_bad_shape():
    with pytest.raises(ValueError, match="actions"):
        noop_mask(np.zeros((3, 6)))


def test_parse_tasks():
    assert parse_tasks("all", "libero_object") == list(range(10))
    assert parse_tasks("3,1,1", "libero_goal") == [1, 3]
    assert parse_tasks("2-4", "libero_spatial") == [2, 3, 4]
    with pytest.raises(ValueError, match="tasks"):
        parse_tasks("x", "libero_object")
    with pytest.raises(ValueError, match="task_id"):
        parse_tasks("10", "libero_object")


# ---------------------------------------------------------------------------------------------- fake env
def _fake_record(out, episodes=4, tasks="0,1", **kw):
    FakePolicy.calls = 0
    kw.setdefault("make_env", make_fake_env)
    return record("libero_object", tasks, episodes, 16, out, FakePolicy, progress=False, **kw)


def _expected_actions(k: int) -> np.ndarray:
    """Hand-computed filtered actions of a successful fake episode on init state k (see record_fakes)."""
    n = 6 + k % 3
    rows = []
    for t in range(n):
        if t in (2, 3):
            continue  # exact no-ops with an unchanged gripper are dropped
        rows.append([(t + 1) / 10, 0, 0, 0, 0, 0, -1.0])
    return np.array(rows)


def test_fake_recording_layout_and_content(tmp_path):
    m = _fake_record(tmp_path, episodes=4)
    for task_id in (0, 1):
        path = tmp_path / f"FAKE_TASK_{task_id}_demo.hdf5"
        assert validate_file(path) == []
        with h5py.File(path, "r") as f:
            data = f["data"]
            assert data.attrs["language_instruction"] == f"do fake task {task_id}"
            assert sorted(data) == ["demo_0", "demo_1", "demo_2", "demo_3"]
            for i in range(4):
                g = data[f"demo_{i}"]
                k = i % 4  # 4 fake init states
                exp = _expected_actions(k)
                np.testing.assert_allclose(g["actions"][()], exp.astype(np.float32))
                t = len(exp)
                assert g["actions"].dtype == np.float64 and g["obs/agentview_rgb"].dtype == np.uint8
                assert g["obs/agentview_rgb"].shape == (t, 16, 16, 3)
                assert g["obs/eye_in_hand_rgb"].shape == (t, 16, 16, 3)
                assert g["obs/ee_states"].shape == (t, 6) and g["obs/gripper_states"].shape == (t, 2)
                assert g["obs/joint_states"].shape == (t, 7) and g["robot_states"].shape == (t, 9)
                assert g["rewards"][()].tolist() == [0] * (t - 1) + [1] == g["dones"][()].tolist()
                # observation t is the one *before* action t: frame value = env step index of the kept steps
                steps = [s for s in range(6 + k % 3) if s not in (2, 3)]
                assert g["obs/agentview_rgb"][:, 0, 0, 0].tolist() == steps
                assert g["states"][:, 0].tolist() == steps
    t0 = m["tasks"]["0"]
    # init state 1's unperturbed attempt fails by construction, the retry succeeds
    assert t0["expert_success_fixed_init"] == {"successes": 3, "trials": 4, "rate": 0.75, "init_state_ids": [0, 1, 2, 3]}
    assert t0["episodes_kept"] == 4 and t0["complete"] is True
    assert t0["noop_dropped"] == 2 * 4
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tasks"]["1"]["file"] == "FAKE_TASK_1_demo.hdf5"
    assert "versions" in manifest and manifest["images_rotated_180"] is True
    assert not (tmp_path / ".staging" / "FAKE_TASK_0").exists()


def test_slot_failing_all_attempts_is_recorded_not_retried(tmp_path):
    m = _fake_record(tmp_path, episodes=2, tasks="0", max_attempts=1)
    t0 = m["tasks"]["0"]
    assert t0["episodes_kept"] == 1 and t0["slots_failed"] == [1]
    with h5py.File(tmp_path / "FAKE_TASK_0_demo.hdf5", "r") as f:
        assert list(f["data"]) == ["demo_0"]


def _demo_arrays(path):
    with h5py.File(path, "r") as f:
        return [(f["data"][n]["actions"][()], f["data"][n]["obs/agentview_rgb"][()]) for n in sorted(f["data"])]


def test_resume_after_injected_interruption(tmp_path):
    ref = tmp_path / "ref"
    _fake_record(ref, episodes=5)
    out = tmp_path / "out"
    FakePolicy.crash_at = 40  # mid task 0 (episodes are 6-8 steps, plus one failed attempt)
    try:
        with pytest.raises(KeyboardInterrupt):
            _fake_record(out, episodes=5)
    finally:
        FakePolicy.crash_at = None
    staged = sorted(p.name for p in (out / ".staging" / "FAKE_TASK_0").iterdir())
    assert 0 < len(staged) < 5 and all(not n.startswith(".") for n in staged)
    _fake_record(out, episodes=5)
    for task in (0, 1):
        a = _demo_arrays(ref / f"FAKE_TASK_{task}_demo.hdf5")
        b = _demo_arrays(out / f"FAKE_TASK_{task}_demo.hdf5")
        assert len(a) == len(b) == 5
        for (xa, ia), (xb, ib) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ia, ib)
    # a completed recording is not redone
    FakePolicy.calls = 0
    record("libero_object", "0,1", 5, 16, out, FakePolicy, make_env=make_fake_env, progress=False)
    assert FakePolicy.calls == 0


def test_resume_after_sigkill(tmp_path):
    out = tmp_path / "out"
    code = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.record_fakes import FakePolicy, FakeEnv\n"
        "from wvla_gym.data.record import record\n"
        "class Slow(FakeEnv):\n"
        "    def step(self, a):\n"
        "        time.sleep(0.02); return super().step(a)\n"
        f"record('libero_object', '0', 30, 16, {str(out)!r}, FakePolicy, make_env=lambda s, t, r, w: Slow(t, r, w), progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    staging = out / ".staging" / "FAKE_TASK_0"
    deadline = time.time() + 60
    while time.time() < deadline and not (staging.exists() and len(list(staging.glob("ep_*"))) >= 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(staging.glob("ep_*")))
    assert 3 <= n_before < 30
    _fake_record(out, episodes=30, tasks="0")
    ref = tmp_path / "ref"
    _fake_record(ref, episodes=30, tasks="0")
    a, b = _demo_arrays(ref / "FAKE_TASK_0_demo.hdf5"), _demo_arrays(out / "FAKE_TASK_0_demo.hdf5")
    assert len(a) == len(b) == 30
    for (xa, _), (xb, _) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)


def test_resume_refuses_changed_settings_naming_them(tmp_path, monkeypatch):
    import importlib

    from wvla_gym.utils.run_identity import RunIdentityError

    rec = importlib.import_module("wvla_gym.data.record")  # wvla_gym.data re-exports a function of that name

    _fake_record(tmp_path, episodes=2, tasks="0")
    for kw, name in [({"seed": 1}, "seed"), ({"keep_failures": True}, "keep_failures"),
                     ({"noise_levels": [0.3]}, "behaviours"), ({"placement": "sampled"}, "placement"),
                     ({"perturb_radius": 0.02}, "perturb_radius"), ({"first_init_state": 1}, "first_init_state"),
                     ({"wrist": False}, "wrist"), ({"policy_info": {"name": "other"}}, "policy")]:
        with pytest.raises(RunIdentityError, match=name):
            _fake_record(tmp_path, episodes=2, tasks="0", **kw)
    monkeypatch.setattr(rec, "_stack_versions", lambda: {"mujoco": "9.9.9", "robosuite": "1.4.0"})
    with pytest.raises(RunIdentityError, match="versions"):
        _fake_record(tmp_path, episodes=2, tasks="0")
    monkeypatch.undo()
    # more tasks and more episodes extend the recording; the first episodes stay as they were
    before = _demo_arrays(tmp_path / "FAKE_TASK_0_demo.hdf5")
    m = _fake_record(tmp_path, episodes=4, tasks="0,1")
    after = _demo_arrays(tmp_path / "FAKE_TASK_0_demo.hdf5")
    assert len(after) == 4 and m["tasks"]["0"]["episodes_kept"] == 4 and m["tasks"]["1"]["complete"]
    for (xa, ia), (xb, ib) in zip(before, after[:2], strict=False):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ia, ib)
    ref = tmp_path / "ref"
    _fake_record(ref, episodes=4, tasks="0")
    for (xa, _), (xb, _) in zip(_demo_arrays(ref / "FAKE_TASK_0_demo.hdf5"), after, strict=True):
        np.testing.assert_array_equal(xa, xb)
    # --restart starts over with the new settings
    m = _fake_record(tmp_path, episodes=1, tasks="0", seed=1, restart=True)
    assert list(m["tasks"]) == ["0"] and not (tmp_path / "FAKE_TASK_1_demo.hdf5").exists()
    assert json.loads((tmp_path / "run_identity.json").read_text())["identity"]["seed"] == 1


def test_folder_from_before_run_identities_is_adopted_when_it_matches(tmp_path):
    _fake_record(tmp_path, episodes=2, tasks="0")
    (tmp_path / "run_identity.json").unlink()  # as the recorder wrote folders before identities
    with pytest.raises(ValueError, match="keep_failures|restart"):
        _fake_record(tmp_path, episodes=2, tasks="0", keep_failures=True)
    m = _fake_record(tmp_path, episodes=3, tasks="0")
    assert m["tasks"]["0"]["episodes_kept"] == 3 and (tmp_path / "run_identity.json").exists()


def test_slots_past_the_fixed_init_states_use_fresh_placements_never_a_wrap(tmp_path):
    # 4 fake init states; start at 2: slots 0, 1 -> init states 2, 3; slots 2, 3 -> fresh sampled placements
    envs = []

    def make_env(*a):
        envs.append(make_fake_env(*a))
        return envs[-1]

    m = _fake_record(tmp_path, episodes=4, tasks="0", first_init_state=2, make_env=make_env)
    with h5py.File(tmp_path / "FAKE_TASK_0_demo.hdf5", "r") as f:
        demos = [f["data"][f"demo_{i}"].attrs for i in range(4)]
        assert [int(d["init_state_id"]) for d in demos] == [2, 3, -1, -1]
        assert [d["placement_mode"] for d in demos] == ["fixed", "fixed", "sampled", "sampled"]
        assert json.loads(demos[2]["placement"])["mode"] == "sampled"
    used = [o.get("init_state_id") for o in envs[0].reset_log]
    assert all(k is None or k >= 2 for k in used)
    assert m["tasks"]["0"]["expert_success_fixed_init"]["init_state_ids"] == [2, 3]
    with pytest.raises(ValueError, match="first_init_state"):
        _fake_record(tmp_path / "other", episodes=1, tasks="0", first_init_state=50)
    # placement="sampled" + perturb_radius: every slot fresh, the radius reaches the env
    envs.clear()
    _fake_record(tmp_path / "s", episodes=2, tasks="0", placement="sampled", perturb_radius=0.03, make_env=make_env)
    assert envs[0].reset_log == [{"placement": "sampled", "perturb_radius": 0.03}] * 2


def test_keep_failures_writes_failed_episodes_labelled(tmp_path):
    from wvla_gym.data.hdf5 import LiberoFile

    m = _fake_record(tmp_path, episodes=2, tasks="0", max_attempts=3, keep_failures=True)
    t0 = m["tasks"]["0"]
    assert t0["episodes_kept"] == 2 and t0["episodes_failed_kept"] == 1 and t0["slots_failed"] == []
    assert t0["by_behaviour"] == {"expert": {"episodes": 2, "successes": 1, "failures": 1}}
    path = tmp_path / "FAKE_TASK_0_demo.hdf5"
    assert validate_file(path) == []
    with h5py.File(path, "r") as f:
        ok, bad = f["data"]["demo_0"], f["data"]["demo_1"]
        assert bool(ok.attrs["success"]) is True and bool(bad.attrs["success"]) is False
        assert bad["rewards"][()].sum() == 0 and bad["dones"][()].sum() == 0 and len(bad["actions"]) == 12 - 2
        assert int(bad.attrs["attempt"]) == 0  # no retry: one rollout per slot
    with LiberoFile(path) as lf:
        assert [lf.success("demo_0"), lf.success("demo_1")] == [True, False]


class _Const:
    """A base policy with a constant action (counts its calls)."""

    def __init__(self):
        self.calls = 0

    def reset(self):
        self.calls = 0

    def act(self, obs):
        self.calls += 1
        return np.array([0.5, -0.5, 0.25, 0.0, 0.0, 0.1, 1.0], np.float32)


def _run(behaviour, seed=3, steps=400):
    from wvla_gym.data.behaviours import BehaviourPolicy

    base = _Const()
    pol = BehaviourPolicy(base, behaviour, seed)
    pol.reset()
    acts, srcs = [], []
    while not pol.finished and len(acts) < steps:
        acts.append(pol.act(None))
        srcs.append(pol.source)
    return pol, np.array(acts), srcs, base


def test_behaviours_produce_their_documented_action_patterns():
    from wvla_gym.data.behaviours import (
        BURST_STEPS,
        SEGMENT_STEPS,
        TAIL_STEPS,
        Behaviour,
        expand_behaviours,
    )

    const = _Const().act(None)
    keys = [b.key for b in expand_behaviours(["expert", "cut"], [0.1, 0.3])]
    assert keys == ["expert", "cut", "noise0.1", "noise0.3"]
    with pytest.raises(ValueError, match="noise_levels"):
        expand_behaviours(["noise"])
    with pytest.raises(ValueError, match="behaviours"):
        expand_behaviours(["dance"])
    # expert: the base policy unchanged, never finishes on its own
    pol, a, srcs, _ = _run(Behaviour("expert"), steps=50)
    assert len(a) == 50 and (a == const).all() and set(srcs) == {"policy"}
    # noise: Gaussian on the pose dims at the given std, gripper untouched, seeded
    pol, a, _, _ = _run(Behaviour("noise", 0.1), steps=400)
    d = a[:, :6] - const[:6]
    assert 0.08 < d[:, :3].std() < 0.12 and (a[:, 6] == 1.0).all()
    np.testing.assert_array_equal(a, _run(Behaviour("noise", 0.1), steps=400)[1])
    assert not np.array_equal(a, _run(Behaviour("noise", 0.1), seed=4, steps=400)[1])
    # cut: the policy up to cut_step, then a zero or random tail, then the episode ends
    tails = set()
    for seed in range(12):
        pol, a, srcs, base = _run(Behaviour("cut"), seed=seed)
        c, n = pol.plan["cut_step"], pol.plan["tail_steps"]
        assert len(a) == c + n and TAIL_STEPS[0] <= n <= TAIL_STEPS[1] and base.calls == c
        assert (a[:c] == const).all() and srcs[:c] == ["policy"] * c and srcs[c:] == [pol.plan["tail"]] * n
        if pol.plan["tail"] == "zero":
            assert (a[c:, :6] == 0).all() and (a[c:, 6] == const[6]).all()  # the gripper is held
        else:
            assert np.abs(a[c:, :6]).mean() > 0.1 and np.abs(a[c:]).max() <= 1.0
        tails.add(pol.plan["tail"])
    assert tails == {"zero", "random"}
    # burst: random actions for burst_steps from burst_start, the policy before and after (and queried throughout)
    pol, a, srcs, base = _run(Behaviour("burst"), steps=200)
    s, n = pol.plan["burst_start"], pol.plan["burst_steps"]
    assert BURST_STEPS[0] <= n <= BURST_STEPS[1] and base.calls == 200
    assert (a[:s] == const).all() and (a[s + n:] == const).all() and srcs[s:s + n] == ["random"] * n
    assert not (a[s:s + n] == const).all(axis=1).any()
    # random / zero: a segment of segment_steps, then the episode ends; the base policy is never asked
    for name in ("random", "zero"):
        pol, a, srcs, base = _run(Behaviour(name))
        assert SEGMENT_STEPS[0] <= len(a) <= SEGMENT_STEPS[1] and base.calls == 0 and set(srcs) == {name}
    pol, a, _, _ = _run(Behaviour("zero"))
    assert (a[:, :6] == 0).all() and (a[:, 6] == -1).all()
    pol, a, _, _ = _run(Behaviour("random"))
    assert np.corrcoef(a[:-1, 0], a[1:, 0])[0, 1] > 0.4  # temporally correlated, not white noise


def test_hold_behaviour_holds_piecewise_constant_commands_after_the_cut():
    from wvla_gym.data.behaviours import HOLD_MAGNITUDE, HOLD_STEPS, TAIL_STEPS, Behaviour

    const = _Const().act(None)
    flips = set()
    for seed in range(12):
        pol, a, srcs, base = _run(Behaviour("hold"), seed=seed)
        c, n, segs = pol.plan["cut_step"], pol.plan["tail_steps"], pol.plan["segments"]
        assert pol.plan["tail"] == "hold" and len(a) == c + n and TAIL_STEPS[0] <= n <= TAIL_STEPS[1]
        assert (a[:c] == const).all() and base.calls == c and srcs[c:] == ["hold"] * n
        assert sum(s["steps"] for s in segs) == n
        k = c
        for seg in segs:  # each segment: one held action, pose magnitudes in range on 1-3 of x/y/z, rot 0
            block = a[k:k + seg["steps"]]
            assert (block == block[0]).all() and seg["steps"] <= HOLD_STEPS[1]
            moved = np.abs(block[0, :3])
            assert 1 <= (moved > 0).sum() <= 3 and (block[0, 3:6] == 0).all()
            assert (moved[moved > 0] >= HOLD_MAGNITUDE[0] - 1e-4).all() and (moved <= HOLD_MAGNITUDE[1]).all()
            # the gripper: the policy's last command (closed, +1 here), flipped where the plan says
            assert block[0, 6] == (-1.0 if seg["gripper_flipped"] else 1.0)
            flips.add(seg["gripper_flipped"])
            k += seg["steps"]
        np.testing.assert_array_equal(a, _run(Behaviour("hold"), seed=seed)[1])  # seeded
    assert flips == {True, False}


def test_behaviours_through_the_recorder(tmp_path):
    m = _fake_record(tmp_path, episodes=4, tasks="0", keep_failures=True, behaviours=["zero", "cut"],
                     noise_levels=[0.2])
    assert set(m["tasks"]["0"]["by_behaviour"]) == {"zero", "cut", "noise0.2"}
    assert m["behaviours"] == ["zero", "cut", "noise0.2"]
    with h5py.File(tmp_path / "FAKE_TASK_0_demo.hdf5", "r") as f:
        g = [f["data"][f"demo_{i}"] for i in range(4)]
        assert [x.attrs["behaviour"] for x in g] == ["zero", "cut", "noise0.2", "zero"]
        # zero segments survive the no-op filter (they are deliberate); the fake "succeeds" after 6 steps
        # whatever the actions, and the demo carries the env's flag
        assert len(g[0]["actions"]) == 6 and json.loads(g[0].attrs["segments"]) == [["zero", 0, 6]]
        assert (g[0]["actions"][:, :6] == 0).all() and bool(g[0].attrs["success"]) is True
        assert float(g[2].attrs["noise_level"]) == 0.2 and json.loads(g[1].attrs["plan"])["cut_step"] >= 12


def test_bad_arguments():
    with pytest.raises(ValueError, match="episodes_per_task"):
        record("libero_object", "0", 0, 16, "/tmp/x", FakePolicy, make_env=make_fake_env)
    with pytest.raises(ValueError, match="suite"):
        record("libero_nope", "0", 1, 16, "/tmp/x", FakePolicy, make_env=make_fake_env)


# ---------------------------------------------------------------------------------------------- real LIBERO
@pytest.mark.libero
def test_real_libero_record_and_replay(tmp_path):
    from wvla_gym.cli.record import main

    out = tmp_path / "rec"
    assert main(["--out", str(out), "--suite", "libero_object", "--tasks", "0", "--episodes-per-task", "1",
                 "--resolution", "32", "--no-progress"]) == 0
    files = list(out.glob("*_demo.hdf5"))
    assert len(files) == 1 and validate_file(files[0]) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tasks"]["0"]["expert_success_fixed_init"]["successes"] == 1
    with h5py.File(files[0], "r") as f:
        g = f["data"]["demo_0"]
        assert "alphabet soup" in f["data"].attrs["language_instruction"]
        t = g["actions"].shape[0]
        assert 20 < t <= 280 and g["obs/agentview_rgb"].shape == (t, 32, 32, 3)
        assert np.abs(g["actions"][()]).max() <= 1.0
        states = g["states"][()]
        img0 = g["obs/agentview_rgb"][0]
    # replay re-renders from states at another resolution; the first frame at the same resolution must match
    rep = tmp_path / "rep"
    assert main(["--out", str(rep), "--replay", str(files[0]), "--resolution", "48", "--no-progress"]) == 0
    with h5py.File(rep / files[0].name, "r") as f:
        g = f["data"]["demo_0"]
        assert g["obs/agentview_rgb"].shape == (t, 48, 48, 3)
        np.testing.assert_array_equal(g["states"][()], states)
    # same-resolution replay reproduces the recorded (rotated) frame
    import gymnasium as gym

    import wvla_gym  # noqa: F401

    env = gym.make("WorldVLA-LIBERO-v0", task_suite="libero_object", task_id=0, resolution=32, wrist=False)
    try:
        env.reset(seed=0, options={"init_state_id": 0})
        frame = env.unwrapped.set_sim_state(states[0])["image"]
    finally:
        env.close()
    assert np.abs(frame.astype(int) - img0.astype(int)).mean() < 2.0


@pytest.mark.libero
def test_real_libero_keep_failures_wandering_behaviour_from_a_fresh_placement(tmp_path):
    from wvla_gym.cli.record import main

    out = tmp_path / "wm"
    args = ["--out", str(out), "--suite", "libero_object", "--tasks", "0", "--episodes-per-task", "1",
            "--resolution", "32", "--no-wrist", "--keep-failures", "--behaviours", "random", "--placement", "sampled",
            "--perturb-radius", "0.02", "--no-progress"]
    assert main(args) == 0
    files = list(out.glob("*_demo.hdf5"))
    assert len(files) == 1 and validate_file(files[0], require_wrist=False) == []
    with h5py.File(files[0], "r") as f:
        g = f["data"]["demo_0"]
        assert g.attrs["behaviour"] == "random" and bool(g.attrs["success"]) is False
        assert int(g.attrs["init_state_id"]) == -1
        placement = json.loads(g.attrs["placement"])
        assert placement["mode"] == "sampled" and placement["perturb_radius"] == 0.02
        plan = json.loads(g.attrs["plan"])
        assert g["actions"].shape[0] == plan["segment_steps"] and g["dones"][()].sum() == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tasks"]["0"]["by_behaviour"] == {"random": {"episodes": 1, "successes": 0, "failures": 1}}
    # a changed setting is refused, naming it
    assert main([*args[:-1], "--seed", "1", "--no-progress"]) == 2
