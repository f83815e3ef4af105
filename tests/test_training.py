"""Smoke tests of the three training stages on a tiny HDF5 written here, then a reload through the runtime."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wvla_gym.cli.train import main as train_main
from wvla_gym.judge import ClassifierJudge
from wvla_gym.runtime import WorldVLARuntime
from wvla_gym.training import joint, joint_data
from wvla_gym.training.data import psnr_uint8
from wvla_gym.training.judge import label_episode
from wvla_gym.training.vq import load_vq
from wvla_gym.utils.run_identity import path_digest

RES, T, N_DEMOS = 16, 14, 4
INSTRUCTION = "pick up the red square"


def _episode(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A red square moving right over a grey background; the action's dim 0 is the motion."""
    rng = np.random.default_rng(seed)
    frames = np.full((T, RES, RES, 3), 90, np.uint8)
    acts = np.zeros((T, 7))
    acts[:, 0] = rng.uniform(0.2, 0.8, T)
    acts[:, 6] = np.where(np.arange(T) < T // 2, -1.0, 1.0)
    for t in range(T):
        x = min(t // 2, RES - 4)
        frames[t, 6:10, x : x + 4] = (220, 30, 30)
    return frames, acts


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "pick_up_the_red_square_demo.hdf5"
    with h5py.File(path, "w") as f:
        d = f.create_group("data")
        d.attrs["language_instruction"] = INSTRUCTION
        d.attrs["images_rotated_180"] = True
        for i in range(N_DEMOS):
            frames, acts = _episode(i)
            g = d.create_group(f"demo_{i}")
            g["actions"] = acts
            g["obs/agentview_rgb"] = frames
            r = np.zeros(T, np.uint8)
            r[-1] = 1
            g["rewards"] = r
    return str(path)


@pytest.fixture(scope="module")
def vq_dir(data_file, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("vq")
    rc = train_main(["vq", "--data", data_file, "--out", str(out), "--resolution", str(RES), "--downsample", "4",
                     "--channel-multiplier", "1", "1", "1", "--n-codes", "16", "--embed-dim", "8",
                     "--latent-channels", "8", "--steps", "3", "--batch-size", "4", "--heldout-episodes", "1"])
    assert rc == 0
    return str(out)


def test_vq_report_matches_reloaded_tokenizer(vq_dir, data_file):
    report = json.loads(open(f"{vq_dir}/vq_report.json").read())
    vq = load_vq(vq_dir)
    assert vq.config.num_embeddings == 16 and vq.downsample == 4
    held = _episode(N_DEMOS - 1)[0]  # the last demo is the held-out one
    with torch.no_grad():
        x = torch.from_numpy(held).permute(0, 3, 1, 2).float() / 255 * 2 - 1
        codes = vq.encode_to_codes(x)
        rec = ((vq.decode_codes(codes).clamp(-1, 1) + 1) / 2 * 255).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    assert codes.shape == (T, RES // 4, RES // 4)
    assert report["heldout"]["frames"] == T
    assert report["heldout"]["psnr_db"] == pytest.approx(float(psnr_uint8(rec, held).mean()), abs=1e-4)


def _model_args(data_file, vq_dir, out, steps, *extra):
    return ["model", "--data", data_file, "--vq", vq_dir, "--out", str(out), "--split", "all",
            "--hidden-size", "32", "--intermediate-size", "64", "--num-hidden-layers", "1",
            "--num-attention-heads", "2", "--steps", str(steps), "--batch-size", "4", "--warmup-steps", "1",
            "--checkpoint-every", "2", "--log-every", "1", "--no-progress", *extra]


def test_model_trains_resumes_and_reloads(data_file, vq_dir, tmp_path, monkeypatch):
    ref, resumed = tmp_path / "ref", tmp_path / "resumed"
    assert train_main(_model_args(data_file, vq_dir, ref, 4)) == 0

    # kill the second run right after its first checkpoint (step 2), then rerun the same command
    real_save = joint._save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(joint, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_main(_model_args(data_file, vq_dir, resumed, 4))
    monkeypatch.setattr(joint, "_save_checkpoint", real_save)
    assert torch.load(resumed / "ckpt" / "train_state.pt", weights_only=True)["step"] == 2
    assert train_main(_model_args(data_file, vq_dir, resumed, 4)) == 0

    a, b = load_file(str(ref / "model" / "model.safetensors")), load_file(str(resumed / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    steps = [json.loads(x)["step"] for x in (ref / "train_log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]
    # samples per demo: T - K + 1 action windows and T - 1 world windows
    report = json.loads((ref / "train_report.json").read_text())
    assert report["samples"] == {"action": N_DEMOS * (T - 5 + 1), "world": N_DEMOS * (T - 1)}

    cfg = json.loads((ref / "model" / "config.json").read_text())
    all_actions = np.concatenate([_episode(i)[1] for i in range(N_DEMOS)])
    np.testing.assert_allclose(cfg["action_min"][:1], all_actions[:, 0].min(), rtol=1e-6)
    np.testing.assert_allclose(cfg["action_max"][:1], all_actions[:, 0].max(), rtol=1e-6)

    pkg = tmp_path / "pkg"
    assert train_main(["package", "--model", str(ref / "model"), "--judge", "None", "--vq", vq_dir,
                       "--out", str(pkg)]) == 0
    stats = json.loads((pkg / "action_stats.json").read_text())
    assert stats["action_min"] == cfg["action_min"] and stats["action_max"] == cfg["action_max"]
    assert (pkg / "training" / "vq_report.json").exists() and (pkg / "training" / "train_log.jsonl").exists()
    rt = WorldVLARuntime.from_pretrained(pkg)
    frames = _episode(0)[0]
    chunk = rt.predict_action_chunk([[frames[0], frames[1]]], INSTRUCTION, constrain_actions=True)
    assert chunk.shape == (1, 5, 7) and np.isfinite(chunk).all()
    lo, hi = np.array(cfg["action_min"]), np.array(cfg["action_max"])
    assert ((chunk[0] >= lo - 1e-5) & (chunk[0] <= hi + 1e-5)).all()
    nxt = rt.imagine(frames[:1], all_actions[:1])
    assert nxt.shape == (1, RES, RES, 3) and nxt.dtype == np.uint8


def test_action_only_mode_has_no_world_samples(data_file, vq_dir, tmp_path):
    out = tmp_path / "ao"
    assert train_main(_model_args(data_file, vq_dir, out, 4, "--world-weight", "0", "--stop-at", "1")) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["samples"] == {"action": N_DEMOS * (T - 5 + 1), "world": 0}
    assert report["steps"] == 1 and report["schedule_steps"] == 4
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 1


def test_world_history_and_context_noise_train_and_reload(data_file, vq_dir, tmp_path, capsys):
    out = tmp_path / "wh"
    args = _model_args(data_file, vq_dir, out, 3, "--world-history", "2", "--world-context-noise", "0.3")
    assert train_main(args) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["samples"] == {"action": N_DEMOS * (T - 5 + 1), "world": N_DEMOS * (T - 1)}
    assert json.loads((out / "model" / "config.json").read_text())["world_history"] == 2
    ident = json.loads((out / "run_identity.json").read_text())
    assert "world_context_noise" in json.dumps(ident) and "world_history" in json.dumps(ident)
    rt = WorldVLARuntime.from_pretrained(out / "model")
    frames, acts = _episode(0)
    nxt = rt.imagine(frames[None, :2], acts[None, :2])
    assert rt.world_history == 2 and nxt.shape == (1, RES, RES, 3) and nxt.dtype == np.uint8
    # the noise is part of the run: resuming the folder with another share is refused, naming it
    capsys.readouterr()
    assert train_main(_model_args(data_file, vq_dir, out, 3, "--world-history", "2", "--world-context-noise", "0.1")) != 0
    assert "world_context_noise: 0.3 in the folder, 0.1 now" in capsys.readouterr().err
    for bad, msg in ((["--world-history", "0"], "world_history=0"), (["--world-context-noise", "1.0"], "world_context_noise=1.0")):
        assert train_main(_model_args(data_file, vq_dir, tmp_path / "bad", 3, *bad)) != 0
        assert msg in capsys.readouterr().err


def test_init_from_starts_from_the_given_weights(data_file, vq_dir, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert train_main(_model_args(data_file, vq_dir, ref, 3)) == 0
    # lr 0: the run must end exactly where it started, i.e. at the init weights (not a random init)
    warm = tmp_path / "warm"
    assert train_main(_model_args(data_file, vq_dir, warm, 2, "--init-from", str(ref / "model"), "--lr", "0")) == 0
    a, b = load_file(str(ref / "model" / "model.safetensors")), load_file(str(warm / "model" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    report = json.loads((warm / "train_report.json").read_text())
    ref_cfg = json.loads((ref / "model" / "config.json").read_text())
    assert report["init_from"] == str(ref / "model") and report["actions_outside_bins"] == 0.0
    assert json.loads((warm / "model" / "config.json").read_text())["action_max"] == ref_cfg["action_max"]
    assert "init_from_digest" in json.loads((warm / "run_identity.json").read_text())["identity"]
    # a model of another size is refused, naming the option
    capsys.readouterr()
    other = _model_args(data_file, vq_dir, tmp_path / "bad", 2, "--init-from", str(ref / "model"))
    other[other.index("--hidden-size") + 1] = "16"
    assert train_main(other) != 0
    assert "does not fit this model" in capsys.readouterr().err


def test_extra_world_samples_join_the_world_samples_and_the_identity(data_file, vq_dir, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert train_main(_model_args(data_file, vq_dir, ref, 2)) == 0
    base = json.loads((ref / "train_report.json").read_text())["samples"]
    own = joint_data.load_samples(ref / "samples.pt")
    extra = tmp_path / "sf.pt"
    joint_data.save_samples(extra, {"world": own["world"][:5]}, "test")
    out = tmp_path / "with_extra"
    args = _model_args(data_file, vq_dir, out, 2, "--extra-world-samples", str(extra), "--extra-world-repeat", "3")
    assert train_main(args) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["samples"] == {"action": base["action"], "world": base["world"] + 15}
    ident = json.loads((out / "run_identity.json").read_text())["identity"]
    assert ident["extra_world_samples_digests"] == [path_digest(extra)] and ident["extra_world_repeat"] == 3
    # a run folder without them resumes unchanged: the new fields are absent from its identity at their defaults
    assert "extra_world_samples_digests" not in json.loads((ref / "run_identity.json").read_text())["identity"]
    capsys.readouterr()
    assert train_main(_model_args(data_file, vq_dir, tmp_path / "bad", 2, "--extra-world-samples",
                                  str(tmp_path / "missing.pt"))) != 0
    assert "extra_world_samples" in capsys.readouterr().err


def test_two_datasets_may_hold_the_same_task(data_file, tmp_path):
    """The WorldVLA split is made per folder: expert demos and world-model rollouts of one task train together."""
    import shutil

    other = tmp_path / "wm_data"
    other.mkdir()
    shutil.copy(data_file, other / "pick_up_the_red_square_demo.hdf5")
    both = joint_data.select_sources([data_file, str(other)], "all")
    assert len(both) == 2 * N_DEMOS and {p for p, _ in both} == {data_file, str(other / "pick_up_the_red_square_demo.hdf5")}
    # "train" per folder: one task of 4 demos keeps them all (val_ind starts at ceil(0.9 * 4) = 4)
    train = joint_data.select_sources([data_file, str(other)], "train")
    assert sorted(d for _, d in train) == sorted([f"demo_{i}" for i in range(N_DEMOS)] * 2)


def test_judge_labels_and_training(data_file, tmp_path):
    idx, y = label_episode(20, True, positive_last=3, negative_gap=15)
    assert idx.tolist() == [0, 1, 2, 3, 4, 17, 18, 19] and y.tolist() == [0] * 5 + [1] * 3
    idx, y = label_episode(6, False, 3, 15)
    assert idx.tolist() == list(range(6)) and y.sum() == 0

    out = tmp_path / "judge"
    assert train_main(["judge", "--data", data_file, "--out", str(out), "--epochs", "2", "--negative-gap", "6",
                       "--input-size", "16", "--heldout-episodes-per-file", "1"]) == 0
    report = json.loads((out / "judge_report.json").read_text())
    # 3 training demos x (3 positives + T - 6 negatives); 1 held-out demo
    assert report["train_frames"] == 3 * (3 + T - 6) and report["train_positives"] == 9
    assert report["heldout_frames"] == 3 + T - 6 and report["heldout_positives"] == 3
    assert {"precision", "recall"} <= set(report["heldout"])
    judge = ClassifierJudge.from_pretrained(out)
    assert 0.0 <= judge.score(_episode(0)[0][-1:]) <= 1.0


def test_judge_on_imagined_replays(data_file, tmp_path):
    from wvla_gym.model.tiny import make_tiny_checkpoint
    from wvla_gym.training.data import load_frames
    from wvla_gym.training.judge import imagined_replays

    ckpt = make_tiny_checkpoint(tmp_path / "wm", resolution=RES, downsample=4)
    eps = load_frames([data_file])
    # Lockstep batches equal one-episode-at-a-time imagination (frame t = after actions 0..t).
    batched = imagined_replays(str(ckpt), eps[:3], batch_size=2, progress=False)
    rt = WorldVLARuntime.from_pretrained(ckpt)
    frames, acts = eps[1][2], _episode(1)[1]
    cur, want = frames[:1], []
    for a in acts:
        cur = rt.imagine(cur, a[None])
        want.append(cur[0])
    assert len(batched) == 3 and batched[1].shape == (T, RES, RES, 3)
    np.testing.assert_array_equal(batched[1], np.stack(want))

    out = tmp_path / "judge"
    assert train_main(["judge", "--data", data_file, "--out", str(out), "--epochs", "1", "--negative-gap", "6",
                       "--input-size", "16", "--heldout-episodes-per-file", "1", "--world-model", str(ckpt)]) == 0
    report = json.loads((out / "judge_report.json").read_text())
    # Every training demo contributes its recorded and its imagined frames, labelled alike.
    assert report["train_frames"] == 2 * 3 * (3 + T - 6) and report["train_positives"] == 2 * 9
    assert report["heldout_imagined_frames"] == 3 + T - 6 and {"precision", "recall"} <= set(report["heldout_imagined"])


def test_embedded_default_loads_fast_and_fits_budget():
    from wvla_gym.runtime import DEFAULT_ASSET_DIR

    if not (DEFAULT_ASSET_DIR / "config.json").exists():
        pytest.skip("no embedded default model in this checkout")
    size = sum(p.stat().st_size for p in DEFAULT_ASSET_DIR.rglob("*") if p.is_file())
    assert size <= 30e6
    import time

    t0 = time.perf_counter()
    rt = WorldVLARuntime.from_pretrained()
    assert time.perf_counter() - t0 < 10.0
    # what the README promises: 64 px frames, M = 2, K = 5
    assert (rt.resolution, rt.history, rt.action_chunk) == (64, 2, 5)
    frame = np.full((64, 64, 3), 120, np.uint8)
    chunk = rt.predict_action_chunk([[frame, frame]], "pick up the alphabet soup and place it in the basket",
                                    constrain_actions=True)
    assert chunk.shape == (1, 5, 7) and np.isfinite(chunk).all()
    assert rt.imagine(frame[None], chunk[0, :1]).shape == (1, 64, 64, 3)
    judge = ClassifierJudge.from_pretrained(DEFAULT_ASSET_DIR / "judge")
    assert 0.0 <= judge.score(frame[None]) <= 1.0
