"""Packaging a checkpoint that shares another's VQ and stores its LM in float16 (the default's world_model/)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wvla_gym.model.loading import VQ_PREFIX
from wvla_gym.runtime import DEFAULT_ASSET_DIR, WorldVLARuntime
from wvla_gym.training.config import PackageConfig
from wvla_gym.training.package import package_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A copy of the default with the default's own model packaged as ``world_model/`` (shared VQ, float16)."""
    root = tmp_path_factory.mktemp("pkg")
    host = root / "default"
    shutil.copytree(DEFAULT_ASSET_DIR, host, ignore=shutil.ignore_patterns("world_model"))
    src = root / "run" / "model"
    src.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copyfile(DEFAULT_ASSET_DIR / f, src / f)
    out = host / "world_model"
    package_model(PackageConfig(model=str(src), judge=None, vq=None, out=str(out), share_vq_with=str(host),
                                dtype="float16", max_mb=60))
    return host, out


def test_weights_are_float16_without_the_vq(shipped):
    _, out = shipped
    sd = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith(VQ_PREFIX) for k in sd)
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vq_weights"] == "../model.safetensors" and len(cfg["vq_sha256"]) == 64


def test_loaded_model_is_the_float16_rounding_of_the_original(shipped):
    """Independent expectation: the original model with its LM weights rounded to float16 and back."""
    _, out = shipped
    got = WorldVLARuntime.from_pretrained(out)
    ref = WorldVLARuntime.from_pretrained(DEFAULT_ASSET_DIR)
    with torch.no_grad():
        for name, p in ref.model.named_parameters():
            if not name.startswith(VQ_PREFIX):
                p.copy_(p.half().float())
    got_sd, ref_sd = got.model.state_dict(), ref.model.state_dict()
    assert got_sd.keys() == ref_sd.keys()
    for k in ref_sd:
        assert got_sd[k].dtype == torch.float32 and torch.equal(got_sd[k], ref_sd[k]), k
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    actions = rng.uniform(-0.5, 0.5, size=(2, 7)).astype(np.float32)
    assert np.array_equal(got.imagine(frames, actions), ref.imagine(frames, actions))


def test_a_different_shared_vq_is_refused(shipped, tmp_path):
    host, out = shipped
    bad_host = tmp_path / "default"
    shutil.copytree(host, bad_host)
    cfg = json.loads((bad_host / "world_model" / "config.json").read_text())
    cfg["vq_sha256"] = "0" * 64
    (bad_host / "world_model" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json.*vq_sha256"):
        WorldVLARuntime.from_pretrained(bad_host / "world_model")
    (bad_host / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="vq_weights"):
        WorldVLARuntime.from_pretrained(bad_host / "world_model")


def test_packaging_refuses_a_model_trained_on_another_vq(shipped, tmp_path):
    from safetensors.torch import save_file

    host, _ = shipped
    src = tmp_path / "model"
    src.mkdir()
    shutil.copyfile(DEFAULT_ASSET_DIR / "config.json", src / "config.json")
    sd = load_file(str(DEFAULT_ASSET_DIR / "model.safetensors"))
    k = next(k for k in sd if k.startswith(VQ_PREFIX) and sd[k].is_floating_point())
    sd[k] = sd[k] + 1e-3
    save_file(sd, str(src / "model.safetensors"))
    with pytest.raises(ValueError, match="share_vq_with"):
        package_model(PackageConfig(model=str(src), judge=None, vq=None, out=str(tmp_path / "wm"),
                                    share_vq_with=str(host), dtype="float16"))


def test_init_from_a_float16_shared_vq_checkpoint(shipped):
    """--init-from accepts a packaged float16 checkpoint that shares its VQ (e.g. the default's world_model/)."""
    from wvla_gym.model.loading import load_checkpoint
    from wvla_gym.training.joint_data import init_weights

    _, out = shipped
    model, _ = load_checkpoint(DEFAULT_ASSET_DIR)  # same size and VQ, float32 weights to be overwritten
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith(VQ_PREFIX):
                p.zero_()
    init_weights(model, out)
    ref = load_file(str(DEFAULT_ASSET_DIR / "model.safetensors"))
    for k, v in model.state_dict().items():
        want = ref[k] if k.startswith(VQ_PREFIX) else ref[k].half().float()
        assert torch.equal(v, want), k
