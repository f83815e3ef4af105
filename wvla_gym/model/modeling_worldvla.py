"""WorldVLA backbone: transformers' ChameleonForConditionalGeneration with the WorldVLA changes (docs/protocol.md §9).

Differences from stock Chameleon, all opt-in through the config or call arguments:

* image-token logits are masked only if ``mask_image_logits`` (stock always masks, which makes world-model
  image generation impossible); image ids come from the token layout, not from ``vocabulary_map``;
* logits are always float32;
* the paper's loss: cross-entropy with weight α (``image_loss_weight``, 0.04) on image-token targets, normalised
  by the total target weight as ``torch.nn.CrossEntropyLoss(weight=...)`` does, plus
  ``z_loss_weight * mean(logsumexp(logits)^2)`` over labelled positions;
* ``model.vqmodel`` is a full VQGAN (encoder + decoder) so one module serves the LM and the image tokenizer.

Not reproduced: the reference's residual dropout (training-only, 0.05) and its non-upcast eager softmax
(identical in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import ChameleonForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from .configuration_worldvla import WorldVLAConfig
from .image_tokenizer import ChameleonVQGAN
from .processing_worldvla import IGNORE_INDEX


def worldvla_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_weights: torch.Tensor | None,
    z_loss_weight: float,
) -> torch.Tensor:
    """Next-token CE (``logits[:, t]`` predicts ``labels[:, t+1]``) with per-class weights, plus z-loss."""
    logits = logits[:, :-1].float()
    target = labels[:, 1:].to(logits.device)
    flat = logits.reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(flat, target.reshape(-1), weight=loss_weights, ignore_index=IGNORE_INDEX)
    if z_loss_weight:
        valid = target.reshape(-1) >= 0
        loss = loss + z_loss_weight * torch.logsumexp(flat[valid], dim=-1).pow(2).mean()
    return loss


def worldvla_loss_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_weights: torch.Tensor,
    z_loss_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`worldvla_loss` as ``(numerators, denominators)``: the loss is ``(numerators / denominators).sum()``.

    Numerators are the batch's *sums* (weighted CE, and ``z_loss_weight`` x logsumexp²), denominators the
    weight / target counts they are averaged over (no gradient). A data-parallel caller all-reduces the
    denominators so that every shard is normalised by the global batch, which a mean of per-shard means is not.
    Equal to ``worldvla_loss`` up to float rounding (that one keeps PyTorch's fused mean).
    """
    logits = logits[:, :-1].float()
    target = labels[:, 1:].to(logits.device).reshape(-1)
    flat = logits.reshape(-1, logits.shape[-1])
    nums = [F.cross_entropy(flat, target, weight=loss_weights, ignore_index=IGNORE_INDEX, reduction="sum")]
    dens = [loss_weights[target[target != IGNORE_INDEX]].sum()]
    if z_loss_weight:
        valid = target >= 0
        nums.append(z_loss_weight * torch.logsumexp(flat[valid], dim=-1).pow(2).sum())
        dens.append(valid.sum().to(flat.dtype))
    return torch.stack(nums), torch.stack(dens).detach()


class WorldVLAForConditionalGeneration(ChameleonForConditionalGeneration):
    config: WorldVLAConfig

    def __init__(self, config: WorldVLAConfig):
        super().__init__(config)
        self.model.vqmodel = ChameleonVQGAN(config.vq_config)
        layout = config.token_layout
        self.register_buffer("image_token_ids", torch.as_tensor(layout.image_ids, dtype=torch.long), persistent=False)

    def loss_weights(self) -> torch.Tensor:
        """Per-class CE weights: 1, and α on image ids (or on the reference's off-by-one slice 3..8194)."""
        w = torch.ones(self.config.vocab_size, device=self.lm_head.weight.device)
        if self.config.image_loss_weight_ids == "reference":
            w[3:8195] = self.config.image_loss_weight
        else:
            w[self.image_token_ids] = self.config.image_loss_weight
        return w

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mask_image_logits: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """As Chameleon's forward (token inputs only). ``mask_image_logits`` defaults to the config value, except
        that with ``labels`` it defaults to False (image targets need finite logits)."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states).float()
        if mask_image_logits is None:
            mask_image_logits = self.config.mask_image_logits and labels is None
        if mask_image_logits:
            logits[..., self.image_token_ids] = torch.finfo(logits.dtype).min
        loss = None
        if labels is not None:
            loss = worldvla_loss(logits, labels, self.loss_weights(), self.config.z_loss_weight)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)
