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
from wvla_gym.data.record import noop_mask, parse_tasks, record  # noqa: E402

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
    return record("libero_object", tasks, episodes, 16, out, FakePolicy, make_env=make_fake_env, progress=False, **kw)


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


def test_resume_refuses_other_settings(tmp_path):
    _fake_record(tmp_path, episodes=2, tasks="0")
    with pytest.raises(ValueError, match="episodes_per_task"):
        _fake_record(tmp_path, episodes=3, tasks="0")


def test_first_init_state_shifts_slots_and_perturbs_past_the_last_fixed_state(tmp_path):
    # 4 fake init states; start at 2: slots 0, 1 -> init states 2, 3 (unperturbed), slots 2, 3 wrap to 0, 1
    m = _fake_record(tmp_path, episodes=4, tasks="0", first_init_state=2)
    with h5py.File(tmp_path / "FAKE_TASK_0_demo.hdf5", "r") as f:
        demos = [f["data"][f"demo_{i}"].attrs for i in range(4)]
        assert [int(d["init_state_id"]) for d in demos] == [2, 3, 0, 1]
        assert [bool(d["perturbed"]) for d in demos] == [False, False, True, True]
    assert m["first_init_state"] == 2
    assert m["tasks"]["0"]["expert_success_fixed_init"]["init_state_ids"] == [2, 3]
    with pytest.raises(ValueError, match="first_init_state"):
        _fake_record(tmp_path, episodes=4, tasks="0", first_init_state=0)
    with pytest.raises(ValueError, match="first_init_state"):
        _fake_record(tmp_path / "other", episodes=1, tasks="0", first_init_state=50)


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
