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


def _imagined_frames(agent_ckpt, world_ckpt, steps: int) -> list[np.ndarray]:
    """The imagined half computed directly: the agent of ``agent_ckpt`` acting in ``world_ckpt``'s imagination."""
    import gymnasium as gym

    import wvla_gym  # noqa: F401
    from agents.worldvla import WorldVLAAgent
    from wvla_gym.runtime import WorldVLARuntime

    agent = WorldVLAAgent.from_pretrained(str(agent_ckpt), constrain_actions=True)
    env = gym.make("WorldVLA-Imagined-v0", runtime=WorldVLARuntime.from_pretrained(str(world_ckpt)),
                   resolution=agent.resolution, wrist=False)
    obs, info = env.reset(seed=0, options={"init_state_id": 0})
    agent.reset(instruction=info["task_description"])
    frames = [obs["image"]]
    for _ in range(steps):
        obs, *_ = env.step(agent.act(obs))
        frames.append(obs["image"])
    env.close()
    return frames


def test_demo_world_model_drives_the_imagined_half(tmp_path, monkeypatch, capsys):
    """--world-model: the imagined half is the agent acting in *that* model's imagination, not its own."""
    from wvla_gym.cli import demo
    from wvla_gym.evaluation.video import read_video, upscale_nearest
    from wvla_gym.model.tiny import make_tiny_checkpoint

    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path / "cache"))
    agent_ckpt = make_tiny_checkpoint(tmp_path / "agent", resolution=32, downsample=8, seed=0)
    world_ckpt = make_tiny_checkpoint(tmp_path / "world", resolution=32, downsample=8, seed=1)
    out = tmp_path / "demo.mp4"
    assert demo.main(["--checkpoint", str(agent_ckpt), "--world-model", str(world_ckpt), "--max-steps", "3",
                      "--out", str(out), "--threads", "1", "--constrain-actions", "True"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["world_model"] == str(world_ckpt) and result["imagined"]["steps"] == 3

    last = read_video(out)[3].astype(float)  # reset frame + 3 steps; the imagined panel starts at 256 + 4 px
    panel = last[100:150, 260 + 60 : 260 + 200]
    with_world = upscale_nearest(_imagined_frames(agent_ckpt, world_ckpt, 3)[3], 256)[100:150, 60:200]
    with_own = upscale_nearest(_imagined_frames(agent_ckpt, agent_ckpt, 3)[3], 256)[100:150, 60:200]
    err_world = np.abs(panel - with_world).mean()
    assert err_world < 12  # mp4 compression only
    assert err_world < np.abs(panel - with_own).mean() / 2


def test_demo_world_model_resolution_mismatch_is_named(tmp_path, monkeypatch):
    from wvla_gym.cli import demo
    from wvla_gym.model.tiny import make_tiny_checkpoint

    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path / "cache"))
    agent_ckpt = make_tiny_checkpoint(tmp_path / "agent", resolution=32, downsample=8, seed=0)
    world_ckpt = make_tiny_checkpoint(tmp_path / "world", resolution=64, downsample=8, seed=1)
    with pytest.raises(SystemExit, match=r"--world-model .*64 px but the agent's are 32 px"):
        demo.main(["--checkpoint", str(agent_ckpt), "--world-model", str(world_ckpt), "--max-steps", "2",
                   "--out", str(tmp_path / "d.mp4"), "--threads", "1"])
