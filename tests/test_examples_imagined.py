"""The imagined-env examples run end to end on their --tiny paths (as a user would launch them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, timeout: int = 300) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), "--tiny", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sb3_in_imagination_tiny(tmp_path):
    out = run_example("sb3_in_imagination.py", "--out", str(tmp_path / "ppo"))
    assert out["timesteps"] == 16  # 2 envs x 4 steps x 2 rollouts
    assert 0.0 <= out["imagined_success"] <= 1.0 and "real_success" not in out
    assert Path(out["model"]).exists()


def test_rollout_imagined_tiny(tmp_path):
    import agents.worldvla  # noqa: F401  (our own module: a plain import, never a skip)
    video = tmp_path / "r.mp4"
    out = run_example("rollout_imagined.py", "--out", str(video))
    assert out["steps"] == 4 and out["start"] == "image" and out["success"] is False
    frames = imageio.mimread(video)
    assert len(frames) == 5 and frames[0].shape == (32, 32, 3)  # start frame + one per step


@pytest.mark.libero
def test_side_by_side_tiny(tmp_path, monkeypatch):
    import agents.worldvla  # noqa: F401  (our own module: a plain import, never a skip)
    monkeypatch.setenv("WVLA_GYM_CACHE", str(tmp_path / "cache"))
    video = tmp_path / "s.mp4"
    out = run_example("side_by_side.py", "--out", str(video), timeout=600)
    assert out["same_start"] is True  # the cached init-state frame is the real env's first observation
    assert out["steps"] == {"real": 3, "imagined": 3}
    frames = imageio.mimread(video)
    assert len(frames) == 4 and frames[0].shape == (32, 64, 3)  # real | imagined
