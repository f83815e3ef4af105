"""``wvla-gym demo`` on a tiny checkpoint (32 px, 3-step episodes): progress bars, labelled tall video, facts."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.libero, pytest.mark.usefixtures("one_torch_thread")]


def test_demo_progress_video_and_facts(tmp_path, monkeypatch, capsys):
    from wvla_gym.cli import demo
    from wvla_gym.evaluation.video import read_video, upscale_nearest
    from wvla_gym.model.tiny import make_tiny_checkpoint

    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path / "cache"))  # init frames rendered here, not in ~/.cache
    ckpt = make_tiny_checkpoint(tmp_path / "tiny", resolution=32, downsample=8, seed=0)
    out = tmp_path / "demo.mp4"
    assert demo.main(["--checkpoint", str(ckpt), "--max-steps", "3", "--out", str(out), "--threads", "1",
                      "--constrain-actions", "True"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["real"]["steps"] == 3 and result["imagined"]["steps"] == 3
    assert result["torch_threads"] == 1 and result["wall_s"] > 0
    assert len(result["load_avg_1_5_15_before"]) == 3 and len(result["load_avg_1_5_15_after"]) == 3
    # a bar per episode, ending with its outcome
    for name in ("real LIBERO", "imagined (world model)"):
        assert name in captured.err
    assert "3/3" in captured.err and "no success (3 steps)" in captured.err

    video = read_video(out)
    assert video[0].shape[0] >= 256 and video[0].shape[1] >= 2 * 256
    assert len(video) == 4 + 2 * demo.FPS  # reset frame + 3 steps, then the 2 s hold
    # the label over the real half differs from the same frame unlabelled
    import gymnasium as gym

    import wvla_gym  # noqa: F401

    env = gym.make("WorldVLA-LIBERO-v0", resolution=32, wrist=False)
    first, _ = env.reset(seed=0, options={"init_state_id": 0})
    env.close()
    plain = upscale_nearest(first["image"], 256).astype(int)
    assert np.abs(video[0][:30, :120].astype(int) - plain[:30, :120]).mean() > 20
    assert np.abs(video[0][100:150, 60:200].astype(int) - plain[100:150, 60:200]).mean() < 12  # scene visible
