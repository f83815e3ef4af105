"""The embedded default ships a world model (assets/default/world_model): float16 LM, the default's VQ shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wvla_gym.model.loading import VQ_PREFIX
from wvla_gym.runtime import DEFAULT_ASSET_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WM = Path(DEFAULT_ASSET_DIR) / "world_model"
ROOT = Path(__file__).resolve().parents[1]


def test_layout_float16_lm_and_shared_vq_within_budget():
    sd = load_file(str(WM / "model.safetensors"))
    assert sd and not any(k.startswith(VQ_PREFIX) for k in sd)
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}
    cfg = json.loads((WM / "config.json").read_text())
    assert cfg["vq_weights"] == "../model.safetensors"
    assert (WM / "judge" / "judge_config.json").exists()
    size = sum(p.stat().st_size for p in Path(DEFAULT_ASSET_DIR).rglob("*") if p.is_file())
    assert size <= 30e6, f"the default is {size / 1e6:.1f} MB, over its 30 MB budget"


def test_loaded_world_model_reproduces_its_reference_outputs():
    """Greedy codes of the packaged model, written when it was packaged (scripts/world_model_reference.py)."""
    import importlib.util

    from wvla_gym.runtime_cache import load_world_model

    spec = importlib.util.spec_from_file_location("wmref", ROOT / "scripts" / "world_model_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ref = json.loads((WM / "reference_outputs.json").read_text())
    rt = load_world_model()  # no argument: the default's world model
    assert Path(rt.checkpoint_dir).resolve() == WM.resolve()
    assert next(rt.model.lm_head.parameters()).dtype == torch.float32  # float16 storage, float32 compute on CPU
    start, actions, source = mod.reference_input(ROOT / "datasets" / "libero_object_t0" / "heldout", ref["steps"])
    assert source == ref["source"]
    got = mod.rollout(rt, start, actions)
    for t, (g, want) in enumerate(zip(got, ref["codes"], strict=True)):
        assert np.array_equal(g, np.asarray(want)), f"step {t}"


def test_imagined_env_without_arguments_uses_the_world_model_and_its_judge():
    import gymnasium as gym

    import wvla_gym  # noqa: F401
    from wvla_gym.judge import ClassifierJudge

    start = np.zeros((1, 64, 64, 3), np.uint8)
    env = gym.make("WorldVLA-Imagined-v0", init_frames={"image": start}, wrist=False)
    try:
        assert Path(env.unwrapped.runtime.checkpoint_dir).resolve() == WM.resolve()
        judge = env.unwrapped.success_judge
        assert isinstance(judge, ClassifierJudge)
        shipped = ClassifierJudge.from_pretrained(WM / "judge")
        frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
        assert judge.score(frames, "x") == shipped.score(frames, "x")
    finally:
        env.close()
