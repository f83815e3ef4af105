"""The real-LIBERO example's --tiny smoke path runs end to end and writes a readable mp4."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.libero
def test_rollout_real_tiny(tmp_path):
    mod = _load("rollout_real")
    out = tmp_path / "real.mp4"
    res = mod.main(mod.Args(tiny=True, out=str(out)))
    assert res["steps"] == 6 and res["success"] is False
    assert res["queries"] == 2  # K=5: queries at steps 0 and 5
    frames = iio.imread(out)
    assert frames.shape == (7, 32, 32, 3)  # reset frame + 6 steps
