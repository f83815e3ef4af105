"""Random RynnVLA-002 checkpoints written in the exact released file layout (small LM, released-size head).

Layout (``Alibaba-DAMO-Academy/RynnVLA-002``, plus WorldVLA's ``chameleon/`` folders beside the model folders)::

    <root>/chameleon/tokenizer/{text_tokenizer.json, vqgan.yaml, vqgan.ckpt}
    <root>/chameleon/base_model/{tokenizer.json, tokenizer_config.json}
    <root>/VLA_model_256/libero_object/          config.json (time_horizon 5, action_dim 7), generation_config.json,
    <root>/World_model_512/libero_goal/          model.safetensors.index.json, model-0000k-of-00003.safetensors

Every tensor name and shape is written out here from the protocol (``rynnvla002-protocol.md`` §1/§3,
``worldvla-protocol.md`` §9), not taken from the package's modules, so loading them checks our names against
the released ones. The LM is tiny (hidden 32, 2 layers, q/k norms stored ``(1, head_dim)`` as released); the
action head has the released internals (d 1024, 4 heads, FF 4096, 2 layers, MLP-ResNet with 2 blocks), its input
side sized by the LM's hidden size. The VQGAN has Meta's structure at a small width (downsample 16, so a 256 px
frame is 16 x 16 codes = 276 tokens, as released).

Random weights never emit a well-formed discrete action block, so the VLA checkpoint carries a planted chain:
end-of-turn -> BOA -> 7 fixed action values (``CHAIN_VALUES``) -> EOA -> BOA ... The chain's tokens get
orthogonal embeddings, large next to the small layers, so the last hidden state points at the current token
and ``lm_head`` rows aligned with it make greedy decoding follow the chain whatever the prompt. (The
World_model checkpoint has no chain and strong layers: its greedy tokens depend on the whole prompt.) The
continuous head never reads ``lm_head``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from wvla_gym.model.token_layout import image_name_from_code

HIDDEN, LAYERS, HEADS, HEAD_DIM, FFN = 32, 2, 2, 16, 64
VOCAB = 65536
HEAD_D, HEAD_FF, HEAD_LAYERS, HEAD_BLOCKS = 1024, 4096, 2, 2
ACTION_DIM = 7
BOA, EOA, EOT = 10004, 15004, 8710
#: The 7 action value ids the planted chain emits in every block (10133 is the bin centre 0.0).
CHAIN_VALUES = (10133, 10006, 10260, 10200, 10070, 10150, 10250)
WORDS = [
    "What", "action", "should", "the", "robot", "take", "to", "?", "pick", "up", "black", "bowl", "and", "place",
    "it", "on", "plate", "Generate", "next", "image", "based", "provided", "sequence", "of", "historical",
    "images", "corresponding", "actions", ".", "current",
]  # fmt: skip
WORD_BASE = 20000  # word i of WORDS has id WORD_BASE + i in the stand-in base tokenizer


def vqgan_yaml() -> dict:
    """Meta's ``vqgan.yaml`` structure at a small width: 5 levels (downsample 16), 8192 codes."""
    return {"model": {"target": "taming.models.vqgan.VQModel", "params": {
        "embed_dim": 4, "n_embed": 8192,
        "ddconfig": {"double_z": False, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                     "ch": 32, "ch_mult": [1, 1, 1, 1, 1], "num_res_blocks": 0, "attn_resolutions": [],
                     "dropout": 0.0}}}}  # fmt: skip


def write_tokenizers(root: Path, seed: int = 0) -> dict:
    """``chameleon/tokenizer`` (Meta's files) and ``chameleon/base_model`` (a word-level stand-in for the
    Lumina-mGPT tokenizer, same file format). Returns the VQ-code -> token-id permutation and the VQ weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from wvla_gym.model.image_tokenizer import ChameleonVQGAN, vq_config_from_yaml

    rng = np.random.default_rng(seed)
    tok_dir, base_dir = root / "chameleon" / "tokenizer", root / "chameleon" / "base_model"
    tok_dir.mkdir(parents=True, exist_ok=True)
    base_dir.mkdir(parents=True, exist_ok=True)
    perm = 4 + rng.permutation(
        8192
    )  # VQ code c is token perm[c] (a permutation of 4..8195, as in Meta's vocab)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({image_name_from_code(c): int(perm[c]) for c in range(8192)})
    vocab.update({"<racm3:break>": 8197, "<eoss>": 8196})
    vocab.update({f"<reserved{n:05d}>": n + 4 for n in (8706, 8799, 8800, 8808, 10000, 15000, 15500, 16000)})
    (tok_dir / "text_tokenizer.json").write_text(
        json.dumps(
            {"version": "1.0", "added_tokens": [], "model": {"type": "BPE", "vocab": vocab, "merges": []}}
        )
    )
    words = {"<unk>": 3, **{w: WORD_BASE + i for i, w in enumerate(WORDS)}}
    t = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(base_dir / "tokenizer.json"))
    (base_dir / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    (tok_dir / "vqgan.yaml").write_text(yaml.safe_dump(vqgan_yaml()))
    torch.manual_seed(seed)
    vq = ChameleonVQGAN(vq_config_from_yaml(tok_dir / "vqgan.yaml"))
    with torch.no_grad():  # a spread-out codebook, so that different pixels give different codes
        vq.quantize.embedding.weight.normal_(0.0, 1.0)
    vq_sd = {k: v.clone() for k, v in vq.state_dict().items()}
    torch.save({"state_dict": vq_sd, "global_step": 1}, tok_dir / "vqgan.ckpt")
    return {"perm": perm, "vocab": vocab, "vq": vq_sd}


def lm_shapes() -> dict[str, tuple[int, ...]]:
    """The released Chameleon LM tensors (HF names; q/k norms ``(1, head_dim)`` as saved by the release)."""
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            shapes[f"{p}self_attn.{proj}_proj.weight"] = (HIDDEN, HIDDEN)
        for norm in ("q_norm", "k_norm"):
            shapes[f"{p}self_attn.{norm}.weight"] = (1, HEAD_DIM)
            shapes[f"{p}self_attn.{norm}.bias"] = (1, HEAD_DIM)
        shapes[f"{p}mlp.gate_proj.weight"] = (FFN, HIDDEN)
        shapes[f"{p}mlp.up_proj.weight"] = (FFN, HIDDEN)
        shapes[f"{p}mlp.down_proj.weight"] = (HIDDEN, FFN)
        shapes[f"{p}input_layernorm.weight"] = (HIDDEN,)
        shapes[f"{p}post_attention_layernorm.weight"] = (HIDDEN,)
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    return shapes


def head_shapes(
    time_horizon: int, hidden: int = HIDDEN, action_dim: int = ACTION_DIM
) -> dict[str, tuple[int, ...]]:
    """The 45 released ``action_head.*`` tensors (``rynnvla002-protocol.md`` §1), written out by hand."""
    d, ff, kd = HEAD_D, HEAD_FF, time_horizon * action_dim
    shapes: dict[str, tuple[int, ...]] = {
        "action_head.action_token_embeddings.weight": (1, kd * hidden),
        "action_head.hidden_projection.weight": (d, hidden),
        "action_head.hidden_projection.bias": (d,),
    }
    for i in range(HEAD_LAYERS):
        p = f"action_head.transformer_encoder.layers.{i}."
        shapes.update({
            f"{p}self_attn.in_proj_weight": (3 * d, d), f"{p}self_attn.in_proj_bias": (3 * d,),
            f"{p}self_attn.out_proj.weight": (d, d), f"{p}self_attn.out_proj.bias": (d,),
            f"{p}linear1.weight": (ff, d), f"{p}linear1.bias": (ff,),
            f"{p}linear2.weight": (d, ff), f"{p}linear2.bias": (d,),
            f"{p}norm1.weight": (d,), f"{p}norm1.bias": (d,), f"{p}norm2.weight": (d,), f"{p}norm2.bias": (d,),
        })  # fmt: skip
    shapes["action_head.transformer_encoder.norm.weight"] = (d,)
    shapes["action_head.transformer_encoder.norm.bias"] = (d,)
    m = "action_head.output_projection.model."
    shapes.update({f"{m}layer_norm1.weight": (action_dim * d,), f"{m}layer_norm1.bias": (action_dim * d,),
                   f"{m}fc1.weight": (d, action_dim * d), f"{m}fc1.bias": (d,)})  # fmt: skip
    for b in range(HEAD_BLOCKS):
        shapes.update({f"{m}mlp_resnet_blocks.{b}.ffn.0.weight": (d,), f"{m}mlp_resnet_blocks.{b}.ffn.0.bias": (d,),
                       f"{m}mlp_resnet_blocks.{b}.ffn.1.weight": (d, d), f"{m}mlp_resnet_blocks.{b}.ffn.1.bias": (d,)})  # fmt: skip
    shapes.update({f"{m}layer_norm2.weight": (d,), f"{m}layer_norm2.bias": (d,),
                   f"{m}fc2.weight": (action_dim, d), f"{m}fc2.bias": (action_dim,)})  # fmt: skip
    return shapes


def _random(name: str, shape: tuple[int, ...], g: torch.Generator, layer_std: float = 0.05) -> torch.Tensor:
    """Values with O(1) activations: linear weights ~ N(0, 1/fan_in), norms near 1, biases small."""
    r = torch.randn(shape, generator=g)
    if "norm" in name and name.endswith("weight") and "q_norm" not in name and "k_norm" not in name:
        return 1.0 + 0.1 * r  # LayerNorm / RMSNorm gains
    if ".ffn.0." in name or "layer_norm" in name:
        return (1.0 + 0.1 * r) if name.endswith("weight") else 0.1 * r  # the MLP's LayerNorms
    if "q_norm" in name or "k_norm" in name:
        return (1.0 + 0.5 * r) if name.endswith("weight") else 0.5 * r
    if name.endswith("bias") or name.endswith("in_proj_bias"):
        return 0.1 * r
    if name == "model.embed_tokens.weight":
        return r  # large embeddings: each position's last hidden state points at its own token
    if name == "action_head.action_token_embeddings.weight":
        return r
    if name.startswith("model.layers."):
        return layer_std * r  # small layers where the chain is planted (see the module docstring)
    return r / shape[-1] ** 0.5


def _plant_chain(sd: dict[str, torch.Tensor], g: torch.Generator, scale: float = 10.0) -> None:
    """Embeddings and ``lm_head`` rows that make greedy decoding follow EOT -> BOA -> CHAIN_VALUES -> EOA -> BOA."""
    chain = [EOT, BOA, *CHAIN_VALUES, EOA]
    q = torch.linalg.qr(torch.randn(HIDDEN, HIDDEN, generator=g))[0]
    emb = sd["model.embed_tokens.weight"]
    for i, t in enumerate(chain):
        emb[t] = HIDDEN**0.5 * q[:, i]  # orthogonal, with the norm of the other (N(0, 1)) embeddings
    head = 1e-3 * torch.randn(VOCAB, HIDDEN, generator=g)
    successors = {EOT: BOA, **dict(zip(chain[1:], chain[2:], strict=False)), EOA: BOA}
    for prev, nxt in successors.items():
        head[nxt] += scale * q[:, chain.index(prev)]
    sd["lm_head.weight"] = head


def write_rynnvla_checkpoint(
    root: Path, rel: str, time_horizon: int, seed: int, n_shards: int = 3, *, chain: bool = True
) -> Path:
    """One checkpoint folder ``root/rel`` in the released layout; returns it. ``chain``: plant the discrete
    chain (small layers); without it the layers are strong, so that every generated token depends on the
    context (a world model's two views then differ)."""
    g = torch.Generator().manual_seed(seed)
    ck = root / rel
    ck.mkdir(parents=True, exist_ok=True)
    shapes = {**lm_shapes(), **head_shapes(time_horizon)}
    sd = {k: _random(k, s, g, 0.05 if chain else 0.5) for k, s in shapes.items()}
    if chain:
        _plant_chain(sd, g)
    # shards as save_pretrained writes them: the LM, then the head split in two (each file < a few hundred MB)
    keys = sorted(sd)
    lm = [k for k in keys if not k.startswith("action_head.")]
    enc = [k for k in keys if k.startswith("action_head.transformer_encoder.")]
    rest = [k for k in keys if k.startswith("action_head.") and k not in enc]
    groups = [lm, enc, rest] if n_shards == 3 else [keys]
    weight_map = {}
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({k: sd[k].contiguous() for k in group}, str(ck / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in group})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    (ck / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    (ck / "config.json").write_text(json.dumps({
        "architectures": ["ChameleonXLLMXForConditionalGeneration_ck_action_head"], "model_type": "chameleon",
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "rope_theta": 10000.0,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "torch_dtype": "float32",
        "vocabulary_map": {"<image>": 8711}, "mask_image_logits": True, "z_loss_weight": 1e-5, "dropout": 0.05,
        "time_horizon": time_horizon, "action_dim": ACTION_DIM, "vq_config": {"embed_dim": 256},
    }))  # fmt: skip
    (ck / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1})
    )
    return ck


def write_rynnvla_root(root: Path, seed: int = 0) -> dict:
    """The whole fixture tree: tokenizers, ``VLA_model_256/libero_object`` (K = 5, the discrete chain planted) and
    ``World_model_512/libero_goal`` (K = 5, its head untrained in the release: random here; no chain)."""
    info = write_tokenizers(root, seed)
    info["vla"] = write_rynnvla_checkpoint(root, "VLA_model_256/libero_object", 5, seed + 1)
    info["wm"] = write_rynnvla_checkpoint(root, "World_model_512/libero_goal", 5, seed + 2, chain=False)
    info["root"] = root
    return info
