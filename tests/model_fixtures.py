"""Small model fixtures, including a random checkpoint written in the exact released WorldVLA file layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from wvla_gym.model.configuration_worldvla import WorldVLAConfig
from wvla_gym.model.image_tokenizer import ChameleonVQGAN, vq_config_from_yaml
from wvla_gym.model.modeling_worldvla import WorldVLAForConditionalGeneration
from wvla_gym.model.token_layout import TokenLayout, image_name_from_code

HIDDEN, LAYERS, HEADS, HEAD_DIM = 32, 2, 2, 16
WORDS = ["What", "action", "should", "the", "robot", "take", "to", "?", "pick", "up", "bowl", "Generate", "image"]


def tiny_lm_config(**kw) -> WorldVLAConfig:
    base = dict(
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        vq_config=dict(embed_dim=4, num_embeddings=16, latent_channels=4, resolution=16, base_channels=32,
                       channel_multiplier=[1, 1], num_res_blocks=1),
    )
    base.update(kw)
    return WorldVLAConfig(**base)


def vqgan_yaml(resolution=16, n_embed=8192) -> dict:
    return {"model": {"target": "taming.models.vqgan.VQModel", "params": {
        "embed_dim": 4, "n_embed": n_embed,
        "ddconfig": {"double_z": False, "z_channels": 4, "resolution": resolution, "in_channels": 3, "out_ch": 3,
                     "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}}}


def write_released_checkpoint(root: Path, seed: int = 0, n_shards: int = 2) -> tuple[Path, dict]:
    """Write ``root/{chameleon/tokenizer, chameleon/base_model, model_256/libero_10}``.

    Returns the checkpoint folder and the reference weights: the LM state dict as the loaded model must hold it
    (q/k norms repeated per head) plus the VQGAN state dict.
    """
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok_dir = root / "chameleon" / "tokenizer"
    base_dir = root / "chameleon" / "base_model"
    ck = root / "model_256" / "libero_10"
    for d in (tok_dir, base_dir, ck):
        d.mkdir(parents=True, exist_ok=True)

    # Meta text_tokenizer.json: IMGIMG names at a permutation of ids 4..8195
    perm = 4 + rng.permutation(8192)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({image_name_from_code(c): int(perm[c]) for c in range(8192)})
    vocab.update({"<racm3:break>": 8197, "<eoss>": 8196})
    vocab.update({f"<reserved{n:05d}>": n + 4 for n in (8706, 8799, 8800, 8808, 10000, 15000)})
    (tok_dir / "text_tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": [],
                                                            "model": {"type": "BPE", "vocab": vocab, "merges": []}}))
    # Lumina-mGPT tokenizer.json (a word-level stand-in with the same file format)
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {"<unk>": 3, **{w: 20000 + i for i, w in enumerate(WORDS)}}
    t = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(base_dir / "tokenizer.json"))
    (base_dir / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))

    # vqgan.yaml + vqgan.ckpt (Lightning-style: a 'state_dict' plus training-loss modules that are ignored)
    ycfg = vqgan_yaml()
    (tok_dir / "vqgan.yaml").write_text(yaml.safe_dump(ycfg))
    torch.manual_seed(seed)
    vq = ChameleonVQGAN(vq_config_from_yaml(tok_dir / "vqgan.yaml"))
    vq_sd = {k: v.clone() for k, v in vq.state_dict().items()}
    torch.save({"state_dict": {**vq_sd, "loss.discriminator.main.0.weight": torch.zeros(2)}, "global_step": 7},
               tok_dir / "vqgan.ckpt")

    # LM: a Chameleon config.json as HF-converted checkpoints carry it (transformers 4.x style)
    layout = TokenLayout.worldvla(perm)
    cfg = WorldVLAConfig(vocab_size=65536, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=HEADS, layout=layout.to_dict(),
                         vq_config=vq.config.to_dict())
    torch.manual_seed(seed + 1)
    ref = WorldVLAForConditionalGeneration(cfg)
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("model.vqmodel.")}
    for k in list(sd):
        if ".q_norm." in k or ".k_norm." in k:
            row = torch.randn(1, HEAD_DIM, generator=g) * 0.5 + (1.0 if k.endswith("weight") else 0.0)
            sd[k] = row.repeat_interleave(HEADS, 0)  # what the model must hold after loading
    released = {k: (v[:1].clone() if (".q_norm." in k or ".k_norm." in k) else v.clone()) for k, v in sd.items()}
    keys = sorted(released)
    shards = np.array_split(np.arange(len(keys)), n_shards)
    weight_map = {}
    for i, idx in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({keys[j]: released[keys[j]].contiguous() for j in idx}, str(ck / name), metadata={"format": "pt"})
        weight_map.update({keys[j]: name for j in idx})
    (ck / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (ck / "config.json").write_text(json.dumps({
        "architectures": ["ChameleonXLLMXForConditionalGeneration"], "model_type": "chameleon",
        "vocab_size": 65536, "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "rope_theta": 10000.0,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16",
        "vocabulary_map": {"<image>": 8711, "IMGIMGAZ": int(perm[0])}, "mask_image_logits": True,
        "z_loss_weight": 1e-5, "vq_config": {"embed_dim": 256}}))
    return ck, {"lm": sd, "vq": vq_sd, "layout": layout}


def image_tokens(lay, h: int = 2, w: int = 2, seed: int = 0) -> list[int]:
    """A well-formed image block of random codes in ``lay``: BOI, grid h, grid w, rows with row-ends, EOI."""
    rng = np.random.default_rng(seed)
    ids = [lay.boi_id, lay.grid_token(h), lay.grid_token(w)]
    for _ in range(h):
        ids += [int(lay.image_ids[c]) for c in rng.integers(0, lay.n_image_codes, w)] + [lay.row_end_id]
    return ids + [lay.eoi_id]
