"""Data-parallel ``train model`` under torchrun (2 CPU processes, gloo) equals single-process training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests import test_training as tt
from wvla_gym.cli.train import main as train_main
from wvla_gym.runtime import WorldVLARuntime
from wvla_gym.training.distributed import DistInfo, dist_info_from_env, per_rank_batch

# the tiny HDF5 and VQ of test_training (module-scoped fixtures, rebuilt for this module)
data_file = tt.data_file
vq_dir = tt.vq_dir

STEPS = 4
DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _args(data_file: str, vq_dir: str, out: Path, *extra: str) -> list[str]:
    # global batch 4: 2 action + 2 world samples, so the two ranks' shards hold very different token counts
    return tt._model_args(data_file, vq_dir, out, STEPS, *extra)


def _torchrun(args: list[str], nproc: int = 2, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "wvla_gym.cli.main", "train", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r


def test_two_processes_match_single_process(data_file, vq_dir, tmp_path, monkeypatch):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    for k in DIST_VARS:
        monkeypatch.delenv(k, raising=False)
    assert train_main(_args(data_file, vq_dir, single)) == 0

    # stop after the first checkpoint, then resume: both ranks must load the same checkpoint
    first = _torchrun(_args(data_file, vq_dir, ddp, "--stop-at", "2"))
    assert torch.load(ddp / "ckpt" / "train_state.pt", weights_only=True)["step"] == 2
    second = _torchrun(_args(data_file, vq_dir, ddp))

    a, b = load_file(str(single / "model" / "model.safetensors")), load_file(str(ddp / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    ck = load_file(str(ddp / "ckpt" / "model.safetensors"))  # the last checkpoint is the final model
    assert all(torch.equal(ck[k], b[k]) for k in b)

    # one set of outputs: one log line per step (not one per rank), one summary line per launch
    assert sorted(p.name for p in ddp.iterdir()) == ["ckpt", "model", "run_identity.json", "samples.pt",
                                                     "train_log.jsonl", "train_report.json"]
    recs = [json.loads(x) for x in (ddp / "train_log.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (single / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [0, 1, 2, 3] and {r["world_size"] for r in recs} == {2}
    # the logged loss is the global batch's loss, as in the single-process run
    np.testing.assert_allclose([r["loss"] for r in recs], [r["loss"] for r in ref], rtol=1e-4, atol=2e-5)
    for run in (first, second):
        assert len([x for x in run.stdout.splitlines() if x.startswith('{"samples"')]) == 1
    report = json.loads((ddp / "train_report.json").read_text())
    assert report["world_size"] == 2 and report["resumed_from"] == 2 and report["steps"] == STEPS
    assert json.loads((single / "train_report.json").read_text())["world_size"] == 1

    # other settings are refused on every rank (rank 0 checks, the others hear of it instead of waiting)
    refused = _torchrun(_args(data_file, vq_dir, ddp, "--lr", "0.002"), check=False)
    assert "lr: 0.001 in the folder, 0.002 now" in refused.stdout + refused.stderr
    assert "rank 0 failed" in refused.stdout + refused.stderr and refused.returncode != 0

    rt = WorldVLARuntime.from_pretrained(ddp / "model")
    frames = tt._episode(0)[0]
    chunk = rt.predict_action_chunk([[frames[0], frames[1]]], tt.INSTRUCTION, constrain_actions=True)
    assert chunk.shape == (1, 5, 7) and np.isfinite(chunk).all()


def test_batch_size_must_divide_by_world_size():
    assert per_rank_batch(8, 4) == 2 and per_rank_batch(4, 1) == 4
    with pytest.raises(ValueError, match=r"batch_size=6.*world_size=4"):
        per_rank_batch(6, 4)


def test_dist_info_from_env():
    assert dist_info_from_env({}) == DistInfo() and not DistInfo().distributed
    assert dist_info_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == DistInfo()
    d = dist_info_from_env({"WORLD_SIZE": "4", "RANK": "5", "LOCAL_RANK": "1"})
    assert (d.rank, d.local_rank, d.world_size, d.distributed) == (5, 1, 4, True)


def test_indivisible_batch_fails_before_any_process_group(data_file, vq_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert train_main(_args(data_file, vq_dir, tmp_path / "x")) == 2
    assert "world_size=3" in capsys.readouterr().err
    assert not torch.distributed.is_initialized()
