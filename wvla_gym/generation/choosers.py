"""The one action-token chooser and the one image-code sampler, shared by every decoding backend."""

from __future__ import annotations

import torch

from ..model.token_layout import TokenLayout

BLOCK = 9  # BOA + 7 values + EOA
OFFICIAL_MAX_NEW_TOKENS = 300  # 25 * 12 in the reference eval


def choose_action_tokens(
    logits: torch.Tensor, slot_in_block: torch.Tensor | int, constrain: bool, layout: TokenLayout
) -> torch.Tensor:
    """Greedy next action-model token(s) from ``logits`` ``(..., V)``.

    Unconstrained: the argmax (the official behaviour). ``constrain``: the slot within the block
    (``slot_in_block``, broadcast against ``logits[..., 0]``) decides: BOA at slot 0, EOA at slot 8, the best
    action-value id (a contiguous range) in between. Stays on ``logits``' device (no host read)."""
    if not constrain:
        return logits.argmax(-1)
    first, n = int(layout.action_first_id), len(layout.action_ids)
    vals = logits[..., first : first + n].argmax(-1) + first
    slot = torch.as_tensor(slot_in_block, device=logits.device)
    out = torch.where(slot == 0, layout.boa_id, vals)
    return torch.where(slot == BLOCK - 1, layout.eoa_id, out)


def choose_image_codes(
    logits: torch.Tensor,
    image_ids: torch.Tensor,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next image code per row (an index into ``image_ids``) from ``logits`` ``(B, V)``, restricted to image ids.

    Greedy by default; ``do_sample`` draws from ``softmax(logits / temperature)`` with ``generator``, on the
    generator's device (CPU when None), so a seeded CPU generator gives the same draws whatever the model's
    device. The result is on ``logits``' device."""
    cand = logits[:, image_ids].float()
    if not do_sample:
        return cand.argmax(-1)
    gdev = generator.device if generator is not None else torch.device("cpu")
    probs = torch.softmax(cand / temperature, dim=-1).to(gdev)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)
