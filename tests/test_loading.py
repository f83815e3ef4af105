"""Loading: a random checkpoint in the exact released layout, our own format, and clear errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from wvla_gym.model.loading import load_checkpoint, resolve_checkpoint, save_pretrained
from wvla_gym.model.modeling_worldvla import WorldVLAForConditionalGeneration
from wvla_gym.model.processing_worldvla import HFTextTokenizer
from wvla_gym.model.tiny import make_tiny_checkpoint

from .model_fixtures import HEADS, write_released_checkpoint


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    ck, ref = write_released_checkpoint(root)
    return root, ck, ref


def _ids(n=40, seed=0):
    return torch.randint(0, 65536, (2, n), generator=torch.Generator().manual_seed(seed))


def test_released_layout_loads_exactly(released):
    root, ck, ref = released
    model, tok = load_checkpoint(ck)
    assert isinstance(tok, HFTextTokenizer)
    # the model built directly from the reference weights, norms already per head
    direct = WorldVLAForConditionalGeneration(model.config).eval()
    missing, unexpected = direct.load_state_dict({**ref["lm"], **{f"model.vqmodel.{k}": v for k, v in ref["vq"].items()}})
    assert not missing and not unexpected
    assert model.model.layers[0].self_attn.q_norm.weight.shape == (HEADS, 16)
    ids = _ids()
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = direct(input_ids=ids).logits
    assert (a - b).abs().max().item() == 0.0
    # layout, VQGAN and K read from the released files
    cfg = model.config
    assert cfg.token_layout == ref["layout"] and cfg.action_chunk == 10  # libero_10 -> K = 10
    assert cfg.resolution == 256 and cfg.text_tokenizer == "file"
    assert all(torch.equal(model.model.vqmodel.state_dict()[k], v) for k, v in ref["vq"].items())
    assert tok.encode("pick up the bowl") == [20008, 20009, 20003, 20010]


def test_released_roundtrip_through_own_format(released, tmp_path):
    _, ck, _ = released
    model, tok = load_checkpoint(ck)
    out = save_pretrained(model, tmp_path / "own", tok)
    assert json.loads((out / "config.json").read_text())["model_type"] == "worldvla"
    again, tok2 = load_checkpoint(out)
    ids = _ids(seed=1)
    with torch.no_grad():
        assert (again(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item() == 0.0
    assert tok2.encode("the robot") == tok.encode("the robot")


def test_dtype_and_eager(released):
    _, ck, _ = released
    model, _ = load_checkpoint(ck, dtype=torch.bfloat16, attn_implementation="eager")
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.vqmodel.quantize.embedding.weight.dtype == torch.float32  # VQGAN stays fp32
    assert model.config._attn_implementation == "eager"


def _copy(released, tmp_path):
    root, ck, _ = released
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst, dst / ck.relative_to(root)


@pytest.mark.parametrize(
    "remove, match",
    [
        ("chameleon/tokenizer/vqgan.ckpt", "vqgan.ckpt"),
        ("chameleon/tokenizer/text_tokenizer.json", "text_tokenizer.json"),
        ("chameleon/base_model/tokenizer.json", "Lumina-mGPT tokenizer"),
        ("model_256/libero_10/model-00002-of-00002.safetensors", "shard model-00002-of-00002"),
        ("model_256/libero_10/config.json", "config.json"),
    ],
)
def test_missing_files_give_clear_errors(released, tmp_path, remove, match):
    root, ck = _copy(released, tmp_path)
    (root / remove).unlink()
    with pytest.raises(FileNotFoundError, match=match) as e:
        load_checkpoint(ck)
    assert "layout" in str(e.value)


def test_bad_files_give_clear_errors(released, tmp_path):
    from safetensors.torch import load_file, save_file

    root, ck = _copy(released, tmp_path)
    shard = ck / "model-00001-of-00002.safetensors"
    sd = load_file(str(shard))
    norm = next(k for k in sd if k.endswith("q_norm.weight"))
    save_file({**sd, norm: torch.ones(3, 16)}, str(shard))
    with pytest.raises(ValueError, match=r"\(1, head_dim\)"):
        load_checkpoint(ck)
    sd.pop(norm)
    save_file(sd, str(shard))
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(ck)
    (ck / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        load_checkpoint(ck)


def test_missing_folder_and_offline_hub(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")

    def offline(**kw):
        raise OSError("network unreachable")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub") as e:
        resolve_checkpoint("Alibaba-DAMO-Academy/WorldVLA/model_256/libero_spatial")
    assert "chameleon/tokenizer" in str(e.value)


def test_tiny_checkpoint_is_small_and_fast(tmp_path):
    import time

    p = make_tiny_checkpoint(tmp_path / "tiny", action_chunk=3, history=2)
    t = time.perf_counter()
    model, tok = load_checkpoint(p)
    assert time.perf_counter() - t < 5.0
    cfg = model.config
    assert (cfg.action_chunk, cfg.history, cfg.resolution, cfg.downsample) == (3, 2, 32, 8)
    assert sum(v.numel() for v in model.parameters()) < 2_000_000
    assert tok.encode("ab") == [cfg.token_layout.text_byte_offset + 97, cfg.token_layout.text_byte_offset + 98]
    np.testing.assert_array_equal(
        make_tiny_checkpoint(tmp_path / "again", action_chunk=3).joinpath("model.safetensors").read_bytes()[-64:],
        p.joinpath("model.safetensors").read_bytes()[-64:],
    )  # same seed -> same weights
