"""Training jobs resume exactly and never mix runs: run identities, kill + resume, safe loading, sample cache."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests import test_training as tt
from wvla_gym.cli.train import main as train_main
from wvla_gym.judge import train_classifier_judge
from wvla_gym.training import joint, joint_data
from wvla_gym.training import judge as judge_mod
from wvla_gym.training import vq as vq_mod
from wvla_gym.training.checkpoint import safe_load
from wvla_gym.training.config import JudgeTrainConfig, ModelTrainConfig, VQTrainConfig
from wvla_gym.training.data import load_frames
from wvla_gym.training.joint import train_model
from wvla_gym.training.judge import label_episode, train_judge
from wvla_gym.training.vq import train_vq
from wvla_gym.utils.run_identity import RunIdentityError

# the tiny HDF5 and VQ of test_training (module-scoped fixtures, rebuilt for this module)
data_file = tt.data_file
vq_dir = tt.vq_dir
RES, T, N_DEMOS = tt.RES, tt.T, tt.N_DEMOS
REPO = Path(__file__).resolve().parents[1]


def _vq_args(data: str, out: Path, steps: int, *extra: str) -> list[str]:
    # dead-code restarts every 2 steps: the torch RNG and the code-usage bookkeeping must survive a resume
    return ["vq", "--data", data, "--out", str(out), "--resolution", str(RES), "--downsample", "4",
            "--channel-multiplier", "1", "1", "1", "--n-codes", "16", "--embed-dim", "8", "--latent-channels", "8",
            "--steps", str(steps), "--batch-size", "4", "--heldout-episodes", "1", "--restart-dead-every", "2",
            "--checkpoint-every", "2", "--log-every", "1", "--no-progress", *extra]


def _judge_args(data: str, out: Path, *extra: str) -> list[str]:
    # 3 training demos x (3 positives + T - 6 negatives) = 33 frames: 5 batches of 8 per epoch, 15 steps
    return ["judge", "--data", data, "--out", str(out), "--epochs", "3", "--negative-gap", "6", "--input-size", "16",
            "--heldout-episodes-per-file", "1", "--batch-size", "8", "--log-every", "1", "--no-progress", *extra]


def _model_args(data: str, vq: str, out: Path, steps: int, *extra: str) -> list[str]:
    return tt._model_args(data, vq, out, steps, *extra)


def _die_on_save(monkeypatch, module, name: str, die_at_call: int) -> None:
    """``module.name`` (a checkpoint writer) works until call ``die_at_call``, which dies before writing."""
    real, calls = getattr(module, name), [0]

    def save(*a, **k):
        calls[0] += 1
        if calls[0] == die_at_call:
            raise KeyboardInterrupt  # like a kill between two checkpoints: later steps were logged, not saved
        real(*a, **k)

    monkeypatch.setattr(module, name, save)


def _assert_same_weights(a_path: Path, b_path: Path) -> None:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _log_steps(path: Path) -> list[int]:
    return [json.loads(x)["step"] for x in path.read_text().splitlines()]


# --------------------------------------------------------------------------------------------- train vq
def test_vq_resume_after_kill_equals_uninterrupted(data_file, tmp_path, monkeypatch):
    ref, res = tmp_path / "ref", tmp_path / "res"
    assert train_main(_vq_args(data_file, ref, 7)) == 0
    _die_on_save(monkeypatch, vq_mod, "_save_vq_checkpoint", 2)  # checkpoint at step 2, killed at step 4
    with pytest.raises(KeyboardInterrupt):
        train_main(_vq_args(data_file, res, 7))
    monkeypatch.undo()
    assert safe_load(res / "ckpt" / "train_state.pt")["step"] == 2
    assert _log_steps(res / "vq_log.jsonl") == [0, 1, 2, 3]  # steps 2, 3 will be redone
    assert train_main(_vq_args(data_file, res, 7)) == 0
    _assert_same_weights(ref / "vqgan.safetensors", res / "vqgan.safetensors")
    assert _log_steps(res / "vq_log.jsonl") == list(range(7))
    assert _log_steps(ref / "vq_log.jsonl") == list(range(7))
    report = json.loads((res / "vq_report.json").read_text())
    assert report["resumed_from"] == 2 and report["steps"] == 7
    # --stop-at stops early on the same schedule; the rerun without it finishes identically
    stop = tmp_path / "stop"
    assert train_main(_vq_args(data_file, stop, 7, "--stop-at", "3")) == 0
    assert json.loads((stop / "vq_report.json").read_text())["steps"] == 3
    assert train_main(_vq_args(data_file, stop, 7)) == 0
    _assert_same_weights(ref / "vqgan.safetensors", stop / "vqgan.safetensors")


def test_vq_changed_settings_are_refused_and_restart_starts_over(data_file, tmp_path):
    data = tmp_path / "data.hdf5"
    shutil.copyfile(data_file, data)
    out = tmp_path / "vq"
    assert train_main(_vq_args(str(data), out, 2)) == 0
    cfg = VQTrainConfig(**{**_vq_cfg_fields(str(data), out, 2), "lr": 2e-3})
    with pytest.raises(RunIdentityError, match=r"lr: 0\.001 in the folder, 0\.002 now"):
        train_vq(cfg)
    with pytest.raises(RunIdentityError, match=r"steps: 2 in the folder, 3 now"):
        train_vq(VQTrainConfig(**_vq_cfg_fields(str(data), out, 3)))
    # progress / logging / checkpointing fields are not part of the identity
    assert train_main([*_vq_args(str(data), out, 2), "--log-every", "5", "--checkpoint-every", "7"]) == 0
    # other bytes in the same data file: a different run
    import h5py

    with h5py.File(data, "a") as f:
        f["data/demo_0/obs/agentview_rgb"][0, 0, 0] = (1, 2, 3)
    with pytest.raises(RunIdentityError, match=r"data: \[\["):
        train_vq(VQTrainConfig(**_vq_cfg_fields(str(data), out, 2)))
    # --restart: the old outputs go, the new identity is recorded
    assert train_main([*_vq_args(str(data), out, 3), "--lr", "0.002", "--restart"]) == 0
    stored = json.loads((out / "run_identity.json").read_text())
    assert stored["kind"] == "train-vq" and stored["identity"]["lr"] == 0.002 and stored["identity"]["steps"] == 3
    assert _log_steps(out / "vq_log.jsonl") == [0, 1, 2]
    assert json.loads((out / "vq_report.json").read_text())["resumed_from"] == 0


def _vq_cfg_fields(data: str, out: Path, steps: int) -> dict:
    return dict(data=[data], out=str(out), resolution=RES, downsample=4, channel_multiplier=(1, 1, 1), n_codes=16,
                embed_dim=8, latent_channels=8, steps=steps, batch_size=4, heldout_episodes=1,
                restart_dead_every=2, checkpoint_every=2, log_every=1, progress=False)


def test_vq_sigkill_loses_nothing_checkpointed(data_file, tmp_path):
    """A real SIGKILL of ``wvla-gym train vq`` mid-run; the rerun continues from the checkpoint it left."""
    steps = 400
    ref, res = tmp_path / "ref", tmp_path / "res"
    args = [*_vq_args(data_file, res, steps), "--checkpoint-every", "5", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    proc = subprocess.Popen([sys.executable, "-m", "wvla_gym.cli.main", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = res / "ckpt" / "train_state.pt"
    deadline = time.monotonic() + 120
    try:
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # kill it somewhere between two checkpoints
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (res / "vq_report.json").exists()
    ck = res / "ckpt" if (res / "ckpt" / "train_state.pt").exists() else res / "ckpt.old"
    k = safe_load(ck / "train_state.pt")["step"]
    assert 0 < k < steps and k % 5 == 0

    assert train_main(args) == 0
    report = json.loads((res / "vq_report.json").read_text())
    assert report["resumed_from"] == k  # every checkpointed step was kept
    assert _log_steps(res / "vq_log.jsonl") == list(range(steps))  # no step lost, none repeated
    assert train_main([*_vq_args(data_file, ref, steps), "--checkpoint-every", "5"]) == 0
    _assert_same_weights(ref / "vqgan.safetensors", res / "vqgan.safetensors")


# -------------------------------------------------------------------------------------------- train model
def test_model_resume_log_has_each_step_once_and_equal_weights(data_file, vq_dir, tmp_path, monkeypatch):
    ref, res = tmp_path / "ref", tmp_path / "res"
    assert train_main(_model_args(data_file, vq_dir, ref, 6)) == 0
    _die_on_save(monkeypatch, joint, "_save_checkpoint", 2)  # checkpoint at 2; killed after logging steps 2, 3
    with pytest.raises(KeyboardInterrupt):
        train_main(_model_args(data_file, vq_dir, res, 6))
    monkeypatch.undo()
    assert _log_steps(res / "train_log.jsonl") == [0, 1, 2, 3]
    assert train_main(_model_args(data_file, vq_dir, res, 6)) == 0
    assert _log_steps(res / "train_log.jsonl") == list(range(6))
    _assert_same_weights(ref / "model" / "model.safetensors", res / "model" / "model.safetensors")
    ref_log = [json.loads(x) for x in (ref / "train_log.jsonl").read_text().splitlines()]
    res_log = [json.loads(x) for x in (res / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in res_log] == [r["loss"] for r in ref_log]


def test_model_changed_lr_or_vq_is_refused(data_file, vq_dir, tmp_path, capsys):
    out = tmp_path / "m"
    assert train_main(_model_args(data_file, vq_dir, out, 4, "--stop-at", "2")) == 0
    report = (out / "train_report.json").read_text()
    # a new --lr used to keep the old rate (restored scheduler) while the report recorded the new one
    assert train_main(_model_args(data_file, vq_dir, out, 4, "--lr", "0.002")) == 2
    msg = capsys.readouterr().err
    assert "lr: 0.001 in the folder, 0.002 now" in msg and "--restart" in msg
    assert (out / "train_report.json").read_text() == report  # nothing was touched
    assert safe_load(out / "ckpt" / "train_state.pt")["step"] == 2

    other_vq = tmp_path / "vq2"
    assert train_main(_vq_args(data_file, other_vq, 3, "--seed", "1")) == 0
    cfg = _model_cfg(data_file, str(other_vq), out, 4)
    with pytest.raises(RunIdentityError, match=r"vq_digest: "):
        train_model(cfg)
    # the same VQ copied elsewhere is the same VQ (content, not path)
    same_vq = tmp_path / "vq_copy"
    shutil.copytree(vq_dir, same_vq)
    assert train_model(_model_cfg(data_file, str(same_vq), out, 4))["resumed_from"] == 2

    assert train_main(_model_args(data_file, vq_dir, out, 4, "--lr", "0.002", "--restart")) == 0
    rep = json.loads((out / "train_report.json").read_text())
    assert rep["resumed_from"] == 0 and rep["config"]["lr"] == 0.002
    assert safe_load(out / "ckpt" / "train_state.pt")["optimizer"]["param_groups"][0]["initial_lr"] == 0.002


def _model_cfg(data: str, vq: str, out: Path, steps: int, **kw) -> ModelTrainConfig:
    base = dict(data=[data], vq=vq, out=str(out), split="all", hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2, steps=steps, batch_size=4, warmup_steps=1,
                checkpoint_every=2, log_every=1, progress=False)
    return ModelTrainConfig(**{**base, **kw})


def test_sample_cache_rebuilt_when_chunk_or_history_changes(data_file, vq_dir, tmp_path):
    fresh, swapped, other = tmp_path / "fresh", tmp_path / "swapped", tmp_path / "other"
    assert train_model(_model_cfg(data_file, vq_dir, other, 2, stop_at=1))["samples"]["action"] == N_DEMOS * (T - 4)
    kw = dict(action_chunk=3, history=1, stop_at=1)
    rep = train_model(_model_cfg(data_file, vq_dir, fresh, 2, **kw))
    assert rep["samples"] == {"action": N_DEMOS * (T - 3 + 1), "world": N_DEMOS * (T - 1)}
    train_model(_model_cfg(data_file, vq_dir, swapped, 2, **kw))
    # put the K=5, M=2 cache in the K=3, M=1 folder: the rerun must not use it
    shutil.copyfile(other / "samples.pt", swapped / "samples.pt")
    rep = train_model(_model_cfg(data_file, vq_dir, swapped, 2, **{**kw, "stop_at": 2}))
    assert rep["samples"] == {"action": N_DEMOS * (T - 3 + 1), "world": N_DEMOS * (T - 1)}
    a, b = joint_data.load_samples(fresh / "samples.pt"), joint_data.load_samples(swapped / "samples.pt")
    assert a == b and a != joint_data.load_samples(other / "samples.pt")
    # the cache holds tensors only and was written atomically (no temp file left)
    assert isinstance(torch.load(swapped / "samples.pt", weights_only=True)["action"]["input_ids"], torch.Tensor)
    assert not list(swapped.glob(".*.tmp"))


# -------------------------------------------------------------------------------------------- train judge
@pytest.mark.parametrize("every", [2, 5])  # killed mid-epoch / at an epoch boundary
def test_judge_resume_after_kill_equals_uninterrupted(data_file, tmp_path, monkeypatch, every):
    ref, res = tmp_path / "ref", tmp_path / "res"
    assert train_main([*_judge_args(data_file, ref), "--checkpoint-every", str(every)]) == 0
    _die_on_save(monkeypatch, judge_mod, "_save_judge_checkpoint", 2)
    with pytest.raises(KeyboardInterrupt):
        train_main([*_judge_args(data_file, res), "--checkpoint-every", str(every)])
    monkeypatch.undo()
    assert safe_load(res / "ckpt" / "train_state.pt")["step"] == every
    assert len(_log_steps(res / "judge_log.jsonl")) == 2 * every
    assert train_main([*_judge_args(data_file, res), "--checkpoint-every", str(every)]) == 0
    _assert_same_weights(ref / "model.safetensors", res / "model.safetensors")
    assert _log_steps(res / "judge_log.jsonl") == list(range(15))

    # and the uninterrupted run is the library's train_classifier_judge on the same labelled frames
    xs, ys = [], []
    for _, _, frames in load_frames([data_file])[: N_DEMOS - 1]:
        idx, y = label_episode(len(frames), True, 3, 6)
        xs.append(frames[idx])
        ys.append(y)
    want = train_classifier_judge(np.concatenate(xs), np.concatenate(ys), epochs=3, batch_size=8, lr=3e-3,
                                  input_size=16, seed=0)
    got = load_file(str(ref / "model.safetensors"))
    for k, v in want.state_dict().items():
        assert torch.equal(got[k], v), k


def test_judge_changed_settings_are_refused(data_file, tmp_path):
    from wvla_gym.model.tiny import make_tiny_checkpoint

    out = tmp_path / "judge"
    base = dict(data=[data_file], out=str(out), epochs=1, negative_gap=6, input_size=16, heldout_episodes_per_file=1,
                batch_size=8, progress=False)
    wm = make_tiny_checkpoint(tmp_path / "wm", resolution=RES, downsample=4)
    train_judge(JudgeTrainConfig(**base, world_model=str(wm), stop_at=1))
    with pytest.raises(RunIdentityError, match=r"positive_last: 3 in the folder, 4 now"):
        train_judge(JudgeTrainConfig(**base, world_model=str(wm), positive_last=4))
    with pytest.raises(RunIdentityError, match=r"world_model_digest: 'sha256:[0-9a-f]+' in the folder, None now"):
        train_judge(JudgeTrainConfig(**base))
    weights = next(p for p in Path(wm).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")  # a retrained checkpoint at the same path
    with pytest.raises(RunIdentityError, match=r"world_model_digest: 'sha256:"):
        train_judge(JudgeTrainConfig(**base, world_model=str(wm)))
    report = train_judge(JudgeTrainConfig(**base, restart=True))
    assert "heldout_imagined" not in report and not (out / "ckpt.old").exists()


def test_outputs_of_an_unrecorded_run_are_refused(data_file, tmp_path):
    out = tmp_path / "j"
    out.mkdir()
    (out / "judge_report.json").write_text("{}")
    with pytest.raises(RunIdentityError, match="no run_identity.json"):
        train_judge(JudgeTrainConfig(data=[data_file], out=str(out), epochs=1, progress=False))
    (out / "notes.txt").write_text("mine")  # --restart deletes the stage's outputs only
    train_judge(JudgeTrainConfig(data=[data_file], out=str(out), epochs=1, progress=False, input_size=16,
                                 negative_gap=6, heldout_episodes_per_file=1, restart=True))
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------- safe loading
class _Payload:
    """Unpickling this calls ``os.makedirs(marker)``: code execution from a data file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _plant(path: Path, marker: Path) -> None:
    path.unlink()
    torch.save({"step": 1, "payload": _Payload(marker)}, path)


def test_planted_pickle_is_proven_live(tmp_path):
    # the payload really runs under an unsafe load, so the refusals below are meaningful
    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"payload": _Payload(marker)}, evil)
    torch.load(evil, weights_only=False)
    assert marker.is_dir()


@pytest.mark.parametrize("stage,target", [("model", "samples.pt"), ("model", "ckpt/train_state.pt"),
                                          ("vq", "ckpt/train_state.pt"), ("judge", "ckpt/train_state.pt")])
def test_planted_pickles_are_refused(data_file, vq_dir, tmp_path, capsys, stage, target):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    args = {"model": _model_args(data_file, vq_dir, out, 4, "--stop-at", "2"),
            "vq": _vq_args(data_file, out, 4, "--stop-at", "2"),
            "judge": [*_judge_args(data_file, out), "--stop-at", "2", "--checkpoint-every", "2"]}[stage]
    assert train_main(args) == 0
    _plant(out / target, marker)
    capsys.readouterr()
    assert train_main(args) == 2
    msg = capsys.readouterr().err
    assert "refusing to load" in msg and str(out / target) in msg
    assert not marker.exists()
