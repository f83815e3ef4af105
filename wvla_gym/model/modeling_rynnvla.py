"""RynnVLA-002: the WorldVLA backbone (transformers' Chameleon, subclassed) plus its continuous action head.

The head ("Action Transformer", released as ``ActionHead``) turns the LM's final-normed hidden states of the
prompt into a whole chunk of continuous actions in one pass:

* K·D learned queries, one per action *scalar*: ``action_token_embeddings`` is an ``nn.Embedding(1, K·D·hidden)``
  viewed as ``(K·D, hidden)``;
* the sequence ``[context ; queries]`` (context = every prompt position, i.e. everything before the first BOA)
  is projected ``hidden -> 1024`` (``hidden_projection``) and run through a bidirectional
  ``nn.TransformerEncoder`` (2 post-norm ReLU layers, d 1024, 4 heads, FF 4096, plus a final LayerNorm);
* the outputs at the query positions, reshaped ``(K, D·1024)``, go through an MLP-ResNet
  (``output_projection.model``: LN -> Linear -> ReLU, 2 residual ``[LN, Linear, ReLU]`` blocks, LN -> Linear)
  to ``(K, D)`` *normalised* actions.

Module and parameter names equal the released ones, so the 45 ``action_head.*`` tensors of a checkpoint load
1:1 (``load_state_dict`` with no renaming). Sizes are the released ones except the input side, which follows the
LM's ``hidden_size`` (4096 released), so small checkpoints in the same layout load too.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_rynnvla import (
    HEAD_DROPOUT,
    HEAD_ENCODER_LAYERS,
    HEAD_FF_DIM,
    HEAD_MLP_BLOCKS,
    HEAD_MODEL_DIM,
    HEAD_NUM_HEADS,
    RynnVLAConfig,
)
from .modeling_worldvla import WorldVLAForConditionalGeneration

__all__ = ["MLPResNet", "MLPResNetBlock", "RynnVLAActionHead", "RynnVLAForConditionalGeneration"]


class MLPResNetBlock(nn.Module):
    """``x + ReLU(Linear(LayerNorm(x)))``; parameters ``ffn.0`` (LayerNorm) and ``ffn.1`` (Linear)."""

    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LN -> Linear -> ReLU -> residual blocks -> LN -> Linear (the released names)."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class _ChunkProjection(nn.Module):
    """Query outputs ``(B, K·D, d)`` -> ``(B, K, D)``; the MLP sits in ``.model`` as in the released names
    (``output_projection.model.*``)."""

    def __init__(self, model_dim: int, time_horizon: int, action_dim: int):
        super().__init__()
        self.time_horizon = time_horizon
        self.model = MLPResNet(HEAD_MLP_BLOCKS, model_dim * action_dim, model_dim, action_dim)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        # query k·D + d belongs to step k, dimension d: each step's D query outputs are concatenated
        return self.model(queries.reshape(queries.shape[0], self.time_horizon, -1))


class RynnVLAActionHead(nn.Module):
    """The released continuous action head; ``forward(context) -> (B, K, D)`` normalised actions."""

    def __init__(self, hidden_size: int, time_horizon: int, action_dim: int):
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.time_horizon = int(time_horizon)
        self.action_dim = int(action_dim)
        self.n_queries = self.time_horizon * self.action_dim
        self.action_token_embeddings = nn.Embedding(1, self.n_queries * self.hidden_size)
        self.hidden_projection = nn.Linear(self.hidden_size, HEAD_MODEL_DIM)
        layer = nn.TransformerEncoderLayer(
            d_model=HEAD_MODEL_DIM,
            nhead=HEAD_NUM_HEADS,
            dim_feedforward=HEAD_FF_DIM,
            dropout=HEAD_DROPOUT,
            batch_first=True,  # activation relu, post-norm: torch's defaults, as released
        )
        # no nested tensors: the context is never padded at inference (one prompt per call)
        self.transformer_encoder = nn.TransformerEncoder(
            layer,
            num_layers=HEAD_ENCODER_LAYERS,
            norm=nn.LayerNorm(HEAD_MODEL_DIM),
            enable_nested_tensor=False,
        )
        self.output_projection = _ChunkProjection(HEAD_MODEL_DIM, self.time_horizon, self.action_dim)

    def forward(self, context: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``context`` ``(B, L, hidden)``: the LM's final-normed hidden states of the prompt (positions before the
        first BOA); ``padding_mask`` ``(B, L)``, True at padded positions (None: no padding). Returns the
        normalised chunk ``(B, K, D)``."""
        if context.ndim != 3 or context.shape[-1] != self.hidden_size:
            raise ValueError(f"context must be (B, L, {self.hidden_size}), got {tuple(context.shape)}")
        b, n_ctx = context.shape[:2]
        queries = self.action_token_embeddings.weight.view(1, self.n_queries, self.hidden_size)
        x = torch.cat([context, queries.to(context.dtype).expand(b, -1, -1)], dim=1)
        mask = None
        if padding_mask is not None:
            pad_q = torch.zeros(b, self.n_queries, dtype=torch.bool, device=padding_mask.device)
            mask = torch.cat([padding_mask.to(torch.bool), pad_q], dim=1)
        y = self.transformer_encoder(self.hidden_projection(x), src_key_padding_mask=mask)
        return self.output_projection(y[:, n_ctx:])


class RynnVLAForConditionalGeneration(WorldVLAForConditionalGeneration):
    """The WorldVLA backbone (discrete actions, world-model images) plus ``action_head`` (continuous chunks)."""

    config: RynnVLAConfig

    def __init__(self, config: RynnVLAConfig):
        if not isinstance(config, RynnVLAConfig):
            raise TypeError(f"config must be a RynnVLAConfig, got {type(config).__name__}")
        super().__init__(config)
        self.action_head = RynnVLAActionHead(config.hidden_size, config.time_horizon, config.action_dim)

    def continuous_actions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Normalised chunk ``(B, K, D)`` for prompts ``(B, L)`` of equal length (no padding).

        One causal forward over the prompt: the released eval appends a BOA and generates one token, and its head
        reads the prefill hidden states before that BOA, which a causal forward over the prompt alone gives."""
        hidden = self.model(input_ids=input_ids, use_cache=False).last_hidden_state  # after the final RMSNorm
        return self.action_head(hidden)
