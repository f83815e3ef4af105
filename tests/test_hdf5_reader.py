"""The one LIBERO-HDF5 reader (ours and official files) and the writer's LIBERO-compatible attributes."""

from __future__ import annotations

import contextlib
import io
import json

import h5py
import numpy as np
import pytest

from envs.init_frames import load_init_frames
from wvla_gym.data.dataset import ActionWindowDataset
from wvla_gym.data.hdf5 import (
    ROTATED_ATTR,
    Episode,
    LiberoFile,
    atomic_write_hdf5,
    validate_file,
    write_demo,
    write_file_attrs,
)
from wvla_gym.evaluation.world_model_metrics import load_hdf5_episodes

INSTR = "pick up the alphabet soup and place it in the basket"


def _env_frames(t: int, res: int = 8) -> np.ndarray:
    """Frames as the env shows them: value 10*i, with a 200 marker in the top-left corner."""
    f = np.stack([np.full((res, res, 3), 10 * i, np.uint8) for i in range(t)])
    f[:, 0, 0] = 200
    return f


def _episode(frames: np.ndarray, wrist: np.ndarray | None = None) -> Episode:
    t = len(frames)
    ee = np.arange(t * 6, dtype=np.float64).reshape(t, 6)
    return Episode(
        actions=np.tile(np.linspace(-1, 1, 7), (t, 1)) * (np.arange(t)[:, None] + 1) / t,
        states=np.arange(t * 5, dtype=np.float64).reshape(t, 5),
        robot_states=np.zeros((t, 9)),
        agentview_rgb=frames,
        eye_in_hand_rgb=wrist,
        ee_states=ee,
        gripper_states=np.full((t, 2), 0.04),
        joint_states=np.zeros((t, 7)),
    )


def _write(path, episodes, attrs, **kw):
    def fill(f):
        data = f.create_group("data")
        for i, ep in enumerate(episodes):
            write_demo(data.create_group(f"demo_{i}"), ep, success=i == 0)
        write_file_attrs(data, attrs, **kw)

    atomic_write_hdf5(path, fill)
    return path


@pytest.fixture
def pair(tmp_path):
    """The same two episodes as our recorder writes them and in the official layout (raw = upside down)."""
    eps = [_episode(_env_frames(5), wrist=255 - _env_frames(5)), _episode(_env_frames(3))]
    ours = _write(tmp_path / "ours.hdf5", eps, {"language_instruction": INSTR, ROTATED_ATTR: True})
    raw = [_episode(e.agentview_rgb[:, ::-1, ::-1].copy(),
                    None if e.eye_in_hand_rgb is None else e.eye_in_hand_rgb[:, ::-1, ::-1].copy()) for e in eps]
    official = _write(tmp_path / "official.hdf5", raw, {"problem_info": {"language_instruction": INSTR}})
    return ours, official, eps


def test_reader_gives_env_frames_for_ours_and_official_files(pair):
    ours, official, eps = pair
    with h5py.File(ours, "r") as f:
        assert f["data"].attrs[ROTATED_ATTR] and f["data/demo_0/obs/agentview_rgb"][0, 0, 0, 0] == 200
    with h5py.File(official, "r") as f:
        assert ROTATED_ATTR not in f["data"].attrs and f["data/demo_0/obs/agentview_rgb"][0, -1, -1, 0] == 200
    for path, rotate in ((ours, False), (official, True)):
        with LiberoFile(path) as f:
            assert f.rotate is rotate and f.instruction == INSTR and f.demos == ["demo_0", "demo_1"]
            assert f.num_steps("demo_0") == 5 and f.num_steps("demo_1") == 3
            np.testing.assert_array_equal(f.frames("demo_0"), eps[0].agentview_rgb)
            np.testing.assert_array_equal(f.frames("demo_0", 1, 3), eps[0].agentview_rgb[1:3])
            np.testing.assert_array_equal(f.frames("demo_0", view="wrist"), eps[0].eye_in_hand_rgb)
            np.testing.assert_array_equal(f.frames("demo_1"), eps[1].agentview_rgb)
            assert f.has_view("demo_0", "wrist") and not f.has_view("demo_1", "wrist")
            np.testing.assert_allclose(f.actions("demo_0"), eps[0].actions.astype(np.float32))
            assert f.actions("demo_0", dtype=np.float64).dtype == np.float64
            np.testing.assert_allclose(f.env_states("demo_1"), [[*range(6 * i, 6 * i + 6), 0.04, 0.04] for i in range(3)])
            assert f.success("demo_0") is True and f.success("demo_1") is False
            with pytest.raises(ValueError, match="no demo 'demo_9'"):
                f.frames("demo_9")
    with LiberoFile(official, rotate=False) as f:  # forced off: the raw, upside-down frames
        assert f.frames("demo_0")[0, -1, -1, 0] == 200


def test_every_consumer_reads_through_the_reader(pair):
    ours, official, eps = pair
    for path in (ours, official):
        episodes = load_hdf5_episodes(path)  # wm-eval: frames (T, ...) and the T-1 actions between them
        assert len(episodes) == 2
        np.testing.assert_array_equal(episodes[0][0], eps[0].agentview_rgb)
        assert episodes[0][1].shape == (4, 7)
        start = load_init_frames(path, 8)  # imagined env: the first frame of every demo
        np.testing.assert_array_equal(start["image"], np.stack([e.agentview_rgb[0] for e in eps]))
        assert "wrist_image" not in start  # demo_1 has none
        np.testing.assert_allclose(start["state"][1], [0, 1, 2, 3, 4, 5, 0.04, 0.04])
        w = ActionWindowDataset(path, history=2, chunk=1)[1]  # training windows
        np.testing.assert_array_equal(w.frames, eps[0].agentview_rgb[:2])
    assert load_hdf5_episodes(official, rotate180=False)[0][0][0, -1, -1, 0] == 200


def test_writer_adds_libero_attributes(pair, tmp_path):
    ours, _, eps = pair
    assert validate_file(ours, require_wrist=False) == []
    with h5py.File(ours, "r") as f:
        data = f["data"]
        info = json.loads(data.attrs["problem_info"])
        assert info == {"language_instruction": INSTR, "problem_name": "", "domain_name": "robosuite"}
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["type"] == 1 and env_args["bddl_file"] == "" and "env_kwargs" in env_args
        assert data.attrs["macros_image_convention"] == "opengl"
        assert data.attrs["num_demos"] == 2 and data.attrs["total"] == 8
        g = data["demo_0"]
        assert g.attrs["num_samples"] == 5
        np.testing.assert_array_equal(g.attrs["init_state"], eps[0].states[0])
        np.testing.assert_array_equal(g["obs/ee_pos"][()], eps[0].ee_states[:, :3])
        np.testing.assert_array_equal(g["obs/ee_ori"][()], eps[0].ee_states[:, 3:])
        assert "model_file" not in g.attrs
    # BDDL and model XML given: problem and domain come from the BDDL text
    bddl = tmp_path / "task.bddl"
    bddl.write_text("(define (problem LIBERO_Floor_Manipulation)\n  (:domain robosuite)\n)\n")

    def fill(f):
        data = f.create_group("data")
        write_demo(data.create_group("demo_0"), eps[1], model_file="<mujoco/>")
        write_file_attrs(data, {"language_instruction": INSTR, "resolution": 64}, bddl_file_name=bddl)

    atomic_write_hdf5(tmp_path / "b.hdf5", fill)
    with h5py.File(tmp_path / "b.hdf5", "r") as f:
        a = f["data"].attrs
        assert json.loads(a["problem_info"])["problem_name"] == "LIBERO_Floor_Manipulation"
        assert a["bddl_file_name"] == str(bddl) and a["bddl_file_content"] == bddl.read_text()
        env_args = json.loads(a["env_args"])
        assert env_args["problem_name"] == "LIBERO_Floor_Manipulation" and env_args["bddl_file"] == str(bddl)
        assert env_args["env_kwargs"]["camera_heights"] == 64
        assert f["data/demo_0"].attrs["model_file"] == "<mujoco/>"


@pytest.mark.libero
def test_libero_get_dataset_info_reads_our_files(pair):
    from wvla_gym.utils.libero_setup import prepare_libero

    prepare_libero()
    from libero.libero import benchmark, get_libero_path
    from libero.libero.utils.dataset_utils import get_dataset_info

    ours, official, _ = pair
    task = benchmark.get_benchmark_dict()["libero_object"]().get_task(0)
    bddl = f"{get_libero_path('bddl_files')}/{task.problem_folder}/{task.bddl_file}"
    eps = [_episode(_env_frames(4)), _episode(_env_frames(6))]
    path = _write(ours.with_name("with_bddl.hdf5"), eps, {"language_instruction": task.language, ROTATED_ATTR: True},
                  bddl_file_name=bddl)
    for p, n, total, instruction in ((ours, 2, 8, INSTR), (path, 2, 10, task.language)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            get_dataset_info(str(p), verbose=True)
        text = out.getvalue()
        assert f"total transitions: {total}" in text and f"total trajectories: {n}" in text
        assert f"language instruction: {instruction}" in text
        assert "observation key ee_pos with shape" in text and "observation key ee_ori with shape" in text
    with h5py.File(path, "r") as f:
        assert json.loads(f["data"].attrs["env_args"])["problem_name"] == "LIBERO_Floor_Manipulation"


@pytest.mark.libero
def test_imagined_start_frames_from_ours_and_official_files_equal_the_real_env(tmp_path):
    """Both layouts start the imagined env from exactly the real env's first observation (64 px)."""
    from robosuite.utils.transform_utils import quat2axisangle

    from envs.imagined import ImaginedEnv
    from envs.libero import LiberoEnv
    from wvla_gym.model.tiny import make_tiny_checkpoint
    from wvla_gym.runtime import WorldVLARuntime

    res, k = 64, 2
    real = LiberoEnv("libero_object", 0, resolution=res, wrist=True)
    try:
        obs, _ = real.reset(seed=0, options={"init_state_id": k})
        raw = {key: np.array(v) for key, v in real.raw_observation.items()}
        sim_state = np.asarray(real.get_sim_state(), dtype=np.float64)
    finally:
        real.close()

    def one_step(image, wrist, ee, grip) -> Episode:
        return Episode(actions=np.zeros((1, 7)), states=sim_state[None], robot_states=np.zeros((1, 9)),
                       agentview_rgb=image[None], eye_in_hand_rgb=wrist[None], ee_states=ee[None],
                       gripper_states=grip[None], joint_states=np.asarray(raw["robot0_joint_pos"])[None])

    # ours: the env's (rotated) observation, as the recorder stores it, marked with the attribute
    ours = _write(tmp_path / "ours.hdf5", [one_step(obs["image"], obs["wrist_image"],
                                                    np.asarray(obs["state"][:6], np.float64),
                                                    np.asarray(obs["state"][6:], np.float64))],
                  {"language_instruction": INSTR, ROTATED_ATTR: True})
    # official: the raw simulator images and LIBERO's own ee_states formula (robosuite's quat2axisangle)
    official = _write(tmp_path / "official.hdf5", [one_step(
        raw["agentview_image"], raw["robot0_eye_in_hand_image"],
        np.concatenate([raw["robot0_eef_pos"], quat2axisangle(raw["robot0_eef_quat"])]),
        raw["robot0_gripper_qpos"])], {"problem_info": {"language_instruction": INSTR}})
    with h5py.File(official, "r") as f:
        assert ROTATED_ATTR not in f["data"].attrs

    rt = WorldVLARuntime.from_pretrained(make_tiny_checkpoint(tmp_path / "tiny", resolution=res, downsample=8))
    for path in (ours, official):
        env = ImaginedEnv(runtime=rt, task_suite="libero_object", task_id=0, init_frames=str(path))
        start, info = env.reset(seed=0, options={"frame_id": 0})
        assert info["unpredicted_keys"] == {"wrist_image": "carried", "state": "carried"}
        np.testing.assert_array_equal(start["image"], obs["image"], err_msg=str(path))
        np.testing.assert_array_equal(start["wrist_image"], obs["wrist_image"], err_msg=str(path))
        np.testing.assert_allclose(start["state"], obs["state"], atol=1e-5, err_msg=str(path))
        env.close()
