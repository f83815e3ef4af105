"""Damaged checkpoints fail at load with a short error naming the file and the field (not torch's size dump).

Damaged copies are built from a tiny own-format checkpoint and from the fake released layout (as in
tests/test_loading.py): config fields that disagree with the weights, resized tensors, junk tokenizer files,
and a ``resolution`` that disagrees with the checkpoint's VQGAN.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from wvla_gym.model.loading import load_checkpoint, save_pretrained
from wvla_gym.model.tiny import make_tiny_checkpoint

from .model_fixtures import write_released_checkpoint

MAX_MESSAGE = 1000  # torch's own "size mismatch" report for a wrong hidden_size is tens of KB


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ck", resolution=64)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    ck, _ = write_released_checkpoint(root)
    return root, ck


def _copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _edit_json(path, **fields):
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _edit_tensors(path, **tensors):
    sd = load_file(str(path))
    sd.update(tensors)
    save_file(sd, str(path))


def _load_error(folder) -> str:
    with pytest.raises(ValueError) as e:
        load_checkpoint(folder)
    msg = str(e.value)
    assert len(msg) < MAX_MESSAGE, msg[:300]
    return msg


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"hidden_size": 128}, ["hidden_size=128", "model.embed_tokens.weight has 64"]),
        ({"intermediate_size": 100}, ["intermediate_size=100", "gate_proj"]),
        ({"num_attention_heads": 2, "num_key_value_heads": 2}, ["num_attention_heads=2", "num_key_value_heads=2"]),
    ],
)
def test_own_config_disagreeing_with_weights(tiny, tmp_path, fields, named):
    ck = _copy(tiny, tmp_path)
    _edit_json(ck / "config.json", **fields)
    msg = _load_error(ck)
    for part in ["config.json", "model.safetensors", *named]:
        assert part in msg, (part, msg)


def test_own_lm_head_of_another_shape(tiny, tmp_path):
    ck = _copy(tiny, tmp_path)
    hidden = json.loads((ck / "config.json").read_text())["hidden_size"]
    _edit_tensors(ck / "model.safetensors", **{"lm_head.weight": torch.zeros(10, hidden)})
    msg = _load_error(ck)
    for part in ["config.json", "model.safetensors", "lm_head.weight", "vocab_size"]:
        assert part in msg, (part, msg)


def test_own_weights_of_another_vocabulary(tiny, tmp_path):
    ck = _copy(tiny, tmp_path)
    sd = load_file(str(ck / "model.safetensors"))
    v, h = sd["lm_head.weight"].shape
    _edit_tensors(ck / "model.safetensors", **{"lm_head.weight": torch.zeros(v + 7, h),
                                                "model.embed_tokens.weight": torch.zeros(v + 7, h)})
    msg = _load_error(ck)
    assert f"vocab_size={v}" in msg and f"has {v + 7}" in msg and "config.json" in msg


def test_resolution_beside_a_vq_of_another_resolution(tiny, tmp_path):
    ck = _copy(tiny, tmp_path)
    _edit_json(ck / "config.json", resolution=32)
    msg = _load_error(ck)
    for part in ["config.json", "resolution=32", "vq_config.resolution=64"]:
        assert part in msg, (part, msg)


def test_own_junk_tokenizer_file(tiny, tmp_path):
    ck = _copy(tiny, tmp_path)
    _edit_json(ck / "config.json", text_tokenizer="file")
    (ck / "tokenizer.json").write_text("{junk")
    msg = _load_error(ck)
    assert "tokenizer.json" in msg and "tokenizers JSON" in msg


@pytest.mark.parametrize("rel", ["chameleon/tokenizer/text_tokenizer.json", "chameleon/base_model/tokenizer.json"])
@pytest.mark.parametrize("junk", ["{not json", "[1, 2, 3]", '{"model": {"vocab": {"a": "x"}}}'])
def test_released_junk_tokenizer_files(released, tmp_path, rel, junk):
    root, ck = released
    dst = _copy(root, tmp_path)
    (dst / rel).write_text(junk)
    msg = _load_error(dst / ck.relative_to(root))
    assert rel.split("/")[-1] in msg and str(dst) in msg, msg


def test_released_config_disagreeing_with_shards(released, tmp_path):
    root, ck = released
    dst = _copy(root, tmp_path)
    folder = dst / ck.relative_to(root)
    _edit_json(folder / "config.json", hidden_size=48)
    msg = _load_error(folder)
    for part in ["config.json", "hidden_size=48", str(folder)]:
        assert part in msg, (part, msg)


def test_released_lm_head_of_another_shape(released, tmp_path):
    root, ck = released
    dst = _copy(root, tmp_path)
    folder = dst / ck.relative_to(root)
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    shard = folder / index["lm_head.weight"]
    h = load_file(str(shard))["lm_head.weight"].shape[1]
    _edit_tensors(shard, **{"lm_head.weight": torch.zeros(100, h)})
    msg = _load_error(folder)
    for part in ["lm_head.weight", "vocab_size", "text_tokenizer.json"]:
        assert part in msg, (part, msg)


def test_released_layout_keeps_its_own_resolution(released, tmp_path):
    # released checkpoints use Meta's VQGAN at the folder's resolution (256 here, VQ trained at 16): still loads,
    # also after conversion to this project's format
    _, ck = released
    model, tok = load_checkpoint(ck)
    assert model.config.resolution != model.config.vq_config.resolution
    again, _ = load_checkpoint(save_pretrained(model, tmp_path / "own", tok))
    assert again.config.resolution == model.config.resolution
