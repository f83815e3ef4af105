"""Code files (wvla_gym.data.codes): recorded demos as VQ codes, exactly round-tripped, and the committed data sets."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from wvla_gym.data.codes import CodeFile, pack_codes, unpack_codes, vq_sha256
from wvla_gym.data.hdf5 import LiberoFile

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "libero_sample" / "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5"
DATASETS = ROOT / "datasets"
STEP_KEYS = {"actions": "actions", "states": "states", "robot_states": "robot_states", "rewards": "rewards",
             "ee_states": "obs/ee_states", "gripper_states": "obs/gripper_states", "joint_states": "obs/joint_states"}


@pytest.fixture(scope="module")
def runtime():
    from wvla_gym.runtime import WorldVLARuntime

    return WorldVLARuntime.from_pretrained()


@pytest.fixture(scope="module")
def packed(runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("codes")
    vq = runtime.image_tokenizer.vqgan
    p = pack_codes(SAMPLE, vq, out / "t0.codes.npz")
    u = unpack_codes(p, vq, out / "unpacked")
    return p, u, out


def test_pack_keeps_every_array_and_encodes_the_frames(runtime, packed):
    p, _, _ = packed
    cf = CodeFile(p)
    tok = runtime.image_tokenizer
    with h5py.File(SAMPLE, "r") as f:
        demos = sorted(f["data"], key=lambda n: int(n.split("_")[1]))
        assert [e["name"] for e in cf.episodes] == demos
        for name in demos:
            g = f["data"][name]
            for key, src in STEP_KEYS.items():
                assert np.array_equal(cf.array(key, name), g[src][()]), key
            # independent expectation: the VQ's own encoding of the stored frames
            codes = tok.encode_codes(g["obs/agentview_rgb"][()]).numpy()
            assert np.array_equal(cf.array("codes", name), codes)
            assert cf.array("codes", name).dtype == np.uint16
            assert np.array_equal(cf.start_state(name), g["states"][0])
            assert cf.episodes[demos.index(name)]["success"] == bool(g["rewards"][-1])
    assert cf.meta["vq_sha256"] == vq_sha256(tok.vqgan)
    assert cf.meta["instruction"] == "pick up the alphabet soup and place it in the basket"


def test_unpack_writes_decoded_frames_and_the_codes(runtime, packed):
    p, u, _ = packed
    cf = CodeFile(p)
    with LiberoFile(u) as lf, h5py.File(SAMPLE, "r") as f:
        assert lf.instruction == "pick up the alphabet soup and place it in the basket"
        assert not lf.rotate  # frames stay in the env's orientation, as recorded
        for name in lf.demos:
            codes = cf.array("codes", name)
            expect = runtime.image_tokenizer.decode_codes(codes.astype(np.int64))
            assert np.array_equal(lf.frames(name), expect)
            assert np.array_equal(lf.demo(name)["obs/agentview_codes"][()], codes)
            for key, src in STEP_KEYS.items():
                assert np.array_equal(lf.demo(name)[src][()], f["data"][name][src][()]), key
            assert lf.success(name) == bool(f["data"][name]["rewards"][-1])


def test_pack_of_an_unpacked_file_gives_the_same_codes(runtime, packed):
    p, u, out = packed
    again = CodeFile(pack_codes(u, runtime.image_tokenizer.vqgan, out / "again.codes.npz"))
    first = CodeFile(p)
    for name in [e["name"] for e in first.episodes]:
        for key in ("codes", *STEP_KEYS):
            assert np.array_equal(again.array(key, name), first.array(key, name)), key


def test_unpack_refuses_another_vq(runtime, packed, tmp_path):
    import torch

    from wvla_gym.model.image_tokenizer import ChameleonVQGAN

    vq = runtime.image_tokenizer.vqgan
    other = ChameleonVQGAN(vq.config)
    other.load_state_dict(vq.state_dict())
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)  # one weight changed: other codes
    with pytest.raises(ValueError, match="vqgan is not the VQ"):
        unpack_codes(packed[0], other, tmp_path)


def test_training_samples_use_the_stored_codes(runtime, packed):
    """Tokens from an unpacked file (stored codes) equal tokens of the recorded frames, not of decoded ones."""
    from wvla_gym.data.tokens import token_samples

    _, u, _ = packed
    kw = dict(kinds=("action", "world"), history=2, chunk=5, world_history=2)
    tok = runtime.image_tokenizer
    original = [(s.input_ids, s.labels) for s in token_samples([SAMPLE], runtime.processor, tok, **kw)]
    stored = [(s.input_ids, s.labels) for s in token_samples([u], runtime.processor, tok, code_tokenizer=tok, **kw)]
    reencoded = [(s.input_ids, s.labels) for s in token_samples([u], runtime.processor, tok, **kw)]
    assert stored == original
    assert len(reencoded) == len(original)  # (re-encoding decoded frames need not give the recorded codes)


def test_bad_code_files_are_named(tmp_path, packed):
    with pytest.raises(FileNotFoundError, match="missing.codes.npz"):
        CodeFile(tmp_path / "missing.codes.npz")
    junk = tmp_path / "junk.codes.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.codes.npz"):
        CodeFile(junk)
    cf = CodeFile(packed[0])
    with pytest.raises(ValueError, match="episode"):
        cf.array("codes", 99)
    with pytest.raises(ValueError, match="key"):
        cf.array("pixels", 0)


# ---- the committed data sets ---------------------------------------------------------------------------------
COMMITTED = sorted(DATASETS.glob("**/*.codes.npz"))
# the file the round-trip and start-state expectations were measured on (the default's expert demos)
EXPERT = next(iter(sorted((DATASETS / "libero_object_t0" / "expert").glob("*.codes.npz"))), None)


def test_committed_datasets_exist_and_use_the_shipped_vq(runtime):
    assert COMMITTED, f"no committed code files under {DATASETS}"
    digest = vq_sha256(runtime.image_tokenizer.vqgan)
    for p in COMMITTED:
        cf = CodeFile(p)
        assert cf.meta["vq_sha256"] == digest, p
        assert len(cf) > 0
        for i, e in enumerate(cf.episodes):
            r = cf.array("rewards", i)
            # per-step labels: a success ends with exactly one positive step, a failure has none
            assert int(r.sum()) == int(e["success"]) and (not e["success"] or r[-1] == 1), (p, i)
            assert cf.array("codes", i).shape[1:] == (8, 8)


def test_committed_dataset_round_trips(runtime, tmp_path):
    p = EXPERT
    cf = CodeFile(p)
    u = unpack_codes(p, runtime.image_tokenizer.vqgan, tmp_path)
    again = CodeFile(pack_codes(u, runtime.image_tokenizer.vqgan, tmp_path / "again.codes.npz"))
    assert json.dumps(again.episodes, sort_keys=True) == json.dumps(cf.episodes, sort_keys=True)
    for i in range(len(cf)):
        for key in ("codes", *STEP_KEYS):
            assert np.array_equal(again.array(key, i), cf.array(key, i)), (key, i)


@pytest.mark.libero
def test_committed_start_state_replays_the_start(runtime):
    """Real LIBERO: the stored start sim_state, set without settle steps, is the simulator's state exactly, and
    its render is the recorded first frame up to a few pixels (measured 99.8 % of pixels and 62 of 64 codes
    equal: the flattened state does not hold every MuJoCo buffer the recorder's first render saw)."""
    from envs.libero import LiberoEnv

    cf = CodeFile(EXPERT)
    env = LiberoEnv(task_suite="libero_object", task_id=0, resolution=64, wrist=False, num_steps_wait=0)
    try:
        obs, _ = env.reset(options={"sim_state": cf.start_state(0)})
        assert np.array_equal(np.asarray(env.get_sim_state()), cf.start_state(0))
        codes = runtime.image_tokenizer.encode_codes(obs["image"][None]).numpy()[0]
        assert (codes == cf.array("codes", 0)[0]).mean() >= 0.9
        decoded = runtime.image_tokenizer.decode_codes(cf.array("codes", 0)[:1].astype(np.int64))[0]
        from wvla_gym.utils.images import psnr_per_image

        assert psnr_per_image(obs["image"][None], decoded[None])[0] > 25  # the VQ's own reconstruction level
    finally:
        env.close()
