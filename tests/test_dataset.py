"""Window datasets, WorldVLA's split and token conversion on small hand-written HDF5 files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from wvla_gym.data.dataset import ActionWindowDataset, WorldModelWindowDataset, iter_windows  # noqa: E402
from wvla_gym.data.split import split_files, split_trajectories  # noqa: E402

T = 4


def _actions(t_len: int, base: float) -> np.ndarray:
    # action t = base + t in dim 0 and t in dim 6: easy to recognise in windows
    a = np.zeros((t_len, 7))
    a[:, 0] = base + np.arange(t_len)
    a[:, 6] = np.arange(t_len)
    return a


def _frames(t_len: int, base: int) -> np.ndarray:
    f = np.zeros((t_len, 4, 4, 3), np.uint8)
    for t in range(t_len):
        f[t] = base + t
        f[t, 0, 0] = 200  # a corner marker: shows whether the frame was rotated
    return f


def _write(path, demos: dict[str, int], *, rotated: bool, instruction: str | None = "pick up the thing", info=False):
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if rotated:
            data.attrs["images_rotated_180"] = True
        if instruction is not None:
            if info:
                data.attrs["problem_info"] = json.dumps({"language_instruction": instruction})
            else:
                data.attrs["language_instruction"] = instruction
        for name, base in demos.items():
            g = data.create_group(name)
            g["actions"] = _actions(T, base)
            g["obs/agentview_rgb"] = _frames(T, base)
            g["obs/eye_in_hand_rgb"] = 255 - _frames(T, base)


def test_action_windows_equal_hand_computed(tmp_path):
    p = tmp_path / "a_demo.hdf5"
    _write(p, {"demo_0": 10}, rotated=True)
    ds = ActionWindowDataset(p, history=2, chunk=2)
    # T=4, K=2 -> t = 0, 1, 2 (t=3 has one action left and is dropped)
    assert len(ds) == 3
    expect = [
        ([10], [[10, 0], [11, 1]]),
        ([10, 11], [[11, 1], [12, 2]]),
        ([11, 12], [[12, 2], [13, 3]]),
    ]
    for w, (frame_vals, act) in zip(ds, expect, strict=True):
        assert w.frames.dtype == np.uint8 and w.frames.shape == (len(frame_vals), 4, 4, 3)
        assert w.frames[:, 1, 1, 0].tolist() == frame_vals
        assert w.frames[:, 0, 0, 0].tolist() == [200] * len(frame_vals)  # stored rotated: not rotated again
        assert w.actions.dtype == np.float32
        assert w.actions[:, [0, 6]].tolist() == act
        assert w.instruction == "pick up the thing" and w.demo == "demo_0"
    assert [w.t for w in ds] == [0, 1, 2]
    frames, actions, instr = next(iter_windows(p, history=2, chunk=2))
    assert frames.shape == (1, 4, 4, 3) and actions.shape == (2, 7) and instr == "pick up the thing"


def test_history_three_and_chunk_longer_than_demo(tmp_path):
    p = tmp_path / "b_demo.hdf5"
    _write(p, {"demo_0": 0}, rotated=True)
    ds = ActionWindowDataset(p, history=3, chunk=1)
    assert [w.frames[:, 1, 1, 0].tolist() for w in ds] == [[0], [0, 1], [0, 1, 2], [1, 2, 3]]
    assert len(ActionWindowDataset(p, history=2, chunk=5)) == 0


def test_official_files_are_rotated_on_read_and_instruction_fallbacks(tmp_path):
    p = tmp_path / "put_the_bowl_on_the_plate_demo.hdf5"
    _write(p, {"demo_0": 0}, rotated=False, instruction=None)
    w = ActionWindowDataset(p, history=1, chunk=1)[0]
    assert w.frames[0, 3, 3, 0] == 200 and w.frames[0, 0, 0, 0] == 0  # raw corner marker moved to the far corner
    assert w.instruction == "put the bowl on the plate"
    q = tmp_path / "x_demo.hdf5"
    _write(q, {"demo_0": 0}, rotated=False, instruction="open the drawer", info=True)
    assert ActionWindowDataset(q, history=1, chunk=1)[0].instruction == "open the drawer"
    wrist = ActionWindowDataset(q, history=1, chunk=1, view="wrist", rotate=False)[0]
    assert wrist.frames[0, 0, 0, 0] == 55 and wrist.frames[0, 1, 1, 0] == 255


def test_world_model_windows(tmp_path):
    p = tmp_path / "c_demo.hdf5"
    _write(p, {"demo_0": 10, "demo_1": 50}, rotated=True)
    ds = WorldModelWindowDataset(p)
    assert len(ds) == 2 * (T - 1)
    got = [(w.demo, int(w.frame[1, 1, 0]), float(w.action[0]), int(w.next_frame[1, 1, 0])) for w in ds]
    assert got == [("demo_0", 10, 10.0, 11), ("demo_0", 11, 11.0, 12), ("demo_0", 12, 12.0, 13),
                   ("demo_1", 50, 50.0, 51), ("demo_1", 51, 51.0, 52), ("demo_1", 52, 52.0, 53)]


def test_dataset_bad_input(tmp_path):
    with pytest.raises(ValueError, match="source"):
        ActionWindowDataset(tmp_path / "missing.hdf5")
    p = tmp_path / "d_demo.hdf5"
    _write(p, {"demo_0": 0}, rotated=True)
    with pytest.raises(ValueError, match="history"):
        ActionWindowDataset(p, history=0)
    with pytest.raises(ValueError, match="view"):
        ActionWindowDataset(p, view="top")


# ------------------------------------------------------------------------------------------------ split
def test_split_hand_computed():
    tasks = {f"task_{c}": [f"demo_{i}" for i in range(12)] for c in "abcdefghij"}
    s = split_trajectories(tasks)
    # 10 tasks: index >= ceil(0.9 * 10) = 9 -> the last task by name is out of distribution
    assert {t for t, _ in s["val_ood"]} == {"task_j"} and len(s["val_ood"]) == 12
    # 12 trajectories sorted as strings: demo_0, demo_1, demo_10, demo_11, demo_2, ..., demo_9; index >= ceil(10.8)=11
    assert s["val_ind"] == [(f"task_{c}", "demo_9") for c in "abcdefghi"]
    assert len(s["train"]) == 9 * 11 and ("task_a", "demo_11") in s["train"]


def test_split_deterministic_under_reordering():
    names = [f"T{i}" for i in range(7)]
    tasks = {n: [f"trj_{j}" for j in range(20)] for n in names}
    ref = split_trajectories(tasks)
    rng = random.Random(0)
    for _ in range(5):
        order = names[:]
        rng.shuffle(order)
        shuffled = {n: rng.sample(tasks[n], len(tasks[n])) for n in order}
        assert split_trajectories(shuffled) == ref
    # 7 tasks: ceil(6.3) = 7 -> no OOD task; 20 trajectories: ceil(18) = 18 -> 2 per task in val_ind
    assert ref["val_ood"] == [] and len(ref["val_ind"]) == 14
    assert [d for t, d in ref["val_ind"] if t == "T0"] == ["trj_8", "trj_9"]


def test_split_files_and_bad_fraction(tmp_path):
    for name in ("b_task", "a_task"):
        _write(tmp_path / f"{name}_demo.hdf5", {f"demo_{i}": i for i in range(10)}, rotated=True)
    s = split_files(sorted(tmp_path.glob("*.hdf5")), ood_frac=0.5)
    assert {d for _, d in s["val_ood"]} == {f"demo_{i}" for i in range(10)}
    assert all(f.endswith("b_task_demo.hdf5") for f, _ in s["val_ood"])
    assert s["val_ind"] == [(str(tmp_path / "a_task_demo.hdf5"), "demo_9")]
    ds = ActionWindowDataset(s["val_ind"], history=2, chunk=2)
    assert len(ds) == T - 1 and ds[0].demo == "demo_9"
    with pytest.raises(ValueError, match="ood_frac"):
        split_trajectories({"a": ["x"]}, ood_frac=1.5)


# ------------------------------------------------------------------------------------------------ tokens
class _FakeImageTokenizer:
    """encode: each frame -> [BOI, 100 + value at pixel (1, 1), EOI] (stands in for the VQGAN)."""

    def __init__(self, layout):
        self.layout = layout

    def encode(self, images):
        return np.array([[self.layout.boi_id, 100 + int(im[1, 1, 0]), self.layout.eoi_id] for im in images])


def test_token_samples_hand_computed(tmp_path):
    from wvla_gym.data.tokens import token_samples
    from wvla_gym.model.action_tokenizer import ActionTokenizer
    from wvla_gym.model.processing_worldvla import ByteTextTokenizer, WorldVLAProcessor
    from wvla_gym.model.token_layout import TokenLayout

    lay = TokenLayout.compact(16)
    proc = WorldVLAProcessor(lay, ByteTextTokenizer(lay.text_byte_offset), ActionTokenizer([-1] * 7, [1] * 7, lay.action_first_id))
    p = tmp_path / "e_demo.hdf5"
    with h5py.File(p, "w") as f:
        data = f.create_group("data")
        data.attrs["language_instruction"] = "go"
        data.attrs["images_rotated_180"] = True
        g = data.create_group("demo_0")
        # actions in {-1, 0, 1} with min -1 / max 1: normalised -1, ~0, 1 - 5e-9 (the +1e-8 in the denominator)
        # -> digitize over 256 edges gives 1, 128, 255 -> bins 0, 127, 254
        g["actions"] = np.array([[-1, 0, 1, 0, 0, 0, -1], [0, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1.0]])
        g["obs/agentview_rgb"] = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (3, 4, 5)])
    samples = list(token_samples(p, proc, _FakeImageTokenizer(lay), history=2, chunk=2))
    act = [s for s in samples if s.kind == "action"]
    world = [s for s in samples if s.kind == "world"]
    assert [s.t for s in act] == [0, 1] and [s.t for s in world] == [0, 1]

    A = lay.action_first_id
    text = [lay.text_byte_offset + b for b in b"What action should the robot take to go?"]
    img = {v: [lay.boi_id, 100 + v, lay.eoi_id] for v in (3, 4, 5)}
    blk0 = [lay.boa_id, A + 0, A + 127, A + 254, A + 127, A + 127, A + 127, A + 0, lay.eoa_id]
    blk1 = [lay.boa_id, *[A + 127] * 6, A + 254, lay.eoa_id]
    blk2 = [lay.boa_id, *[A + 254] * 7, lay.eoa_id]
    eot, bos = lay.end_of_turn_id, lay.bos_id
    prompt1 = [bos, *text, *img[3], *img[4], eot]
    assert act[1].input_ids == prompt1 + blk1 + blk2 + [eot]
    assert act[1].labels == [-100] * len(prompt1) + blk1 + blk2 + [eot]
    prompt0 = [bos, *text, *img[3], eot]
    assert act[0].input_ids == prompt0 + blk0 + blk1 + [eot]

    wtext = [lay.text_byte_offset + b for b in b"Generate the image based on the current image and the action."]
    wprompt = [bos, *wtext, *img[4], *blk1, eot]
    assert world[1].input_ids == wprompt + img[5] + [eot]
    assert world[1].labels == [-100] * len(wprompt) + img[5] + [eot]
    with pytest.raises(ValueError, match="kinds"):
        list(token_samples(p, proc, _FakeImageTokenizer(lay), kinds=("video",)))


# ------------------------------------------------------------------------------------------------ committed sample
SAMPLE = __import__("pathlib").Path(__file__).parent / "data" / "libero_sample"


def test_committed_sample_is_valid_and_readable():
    from wvla_gym.data.hdf5 import validate_file

    files = sorted(SAMPLE.glob("*_demo.hdf5"))
    assert len(files) == 2
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    assert manifest["resolution"] == 64 and manifest["images_rotated_180"] is True
    for f in files:
        assert validate_file(f) == []
    ds = ActionWindowDataset(SAMPLE, history=2, chunk=5)
    w = ds[1]
    assert w.frames.shape == (2, 64, 64, 3) and w.actions.shape == (5, 7)
    assert w.instruction == "pick up the alphabet soup and place it in the basket"
    assert np.all(np.abs(w.actions) <= 1.0)
    with h5py.File(files[0], "r") as f:
        np.testing.assert_array_equal(w.actions, f["data/demo_0/actions"][1:6].astype(np.float32))
