"""A tiny RANDOM WorldVLA checkpoint in this project's format, for tests of agents and imagined envs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from .configuration_worldvla import WorldVLAConfig
from .loading import save_pretrained
from .modeling_worldvla import WorldVLAForConditionalGeneration


def tiny_config(
    *,
    resolution: int = 32,
    downsample: int = 8,
    action_chunk: int = 5,
    history: int = 2,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    n_image_codes: int = 64,
    **overrides: Any,
) -> WorldVLAConfig:
    """Compact layout, byte-level text, a VQGAN with ``log2(downsample)`` down-sampling levels."""
    levels = int(round(math.log2(downsample)))
    if 2**levels != downsample or downsample < 1:
        raise ValueError(f"downsample must be a power of two, got {downsample}")
    if resolution % downsample:
        raise ValueError(f"resolution {resolution} must be a multiple of downsample {downsample}")
    vq = {
        "embed_dim": 8,
        "num_embeddings": n_image_codes,
        "latent_channels": 8,
        "resolution": resolution,
        "base_channels": 32,  # GroupNorm(32) needs >= 32 channels
        "channel_multiplier": [1] * (levels + 1),
        "num_res_blocks": 1,
    }
    kw: dict[str, Any] = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=4096,
        vq_config=vq,
        action_chunk=action_chunk,
        history=history,
        resolution=resolution,
    )
    kw.update(overrides)
    return WorldVLAConfig(**kw)


def make_tiny_checkpoint(
    out_dir: str | os.PathLike,
    *,
    resolution: int = 32,
    downsample: int = 8,
    action_chunk: int = 5,
    history: int = 2,
    seed: int = 0,
    **config_overrides: Any,
) -> Path:
    """Write a small random model (hidden 64, 2 layers) loadable by ``WorldVLARuntime.from_pretrained``."""
    cfg = tiny_config(
        resolution=resolution, downsample=downsample, action_chunk=action_chunk, history=history, **config_overrides
    )
    torch.manual_seed(seed)
    model = WorldVLAForConditionalGeneration(cfg).eval()
    return save_pretrained(model, out_dir)
