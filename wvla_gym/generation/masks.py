"""Attention masks and positions for decoding, all derived from the one action-mask rule.

The rule itself is :func:`wvla_gym.model.processing_worldvla.hidden_action_spans` (training uses it through
``build_action_attention_mask``). Here it is evaluated three ways for inference:

* :func:`prompt_prefill_inputs`: the prompt rows (left-padded batch), or plain causal rows for world prompts;
* :func:`parallel_prompt_keep`: the prompt keys every packed action block sees in the parallel decode;
* :class:`ActionMaskState`: the keep-row of each newly decoded token, updated with O(1) tensor ops per token
  (no Python scan of the sequence), tested equal to ``action_mask_row`` on random structural garbage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.processing_worldvla import action_mask_row, build_action_attention_mask, pad_left, token_blocks
from ..model.token_layout import TokenLayout

_NONE = -1


def prompt_prefill_inputs(
    prompts: Sequence[Sequence[int]], layout: TokenLayout, *, causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids, valid keys, positions and the prompt rows of the action mask ``(B, Lp, Lp)``.

    ``causal``: plain causal rows instead (world-model prompts: in training their action blocks precede the
    target image, where the action mask is causal; with one frame-action pair the two masks are equal)."""
    ids, valid = pad_left(prompts, layout.pad_id)
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    keep = torch.zeros(ids.shape[0], ids.shape[1], ids.shape[1], dtype=torch.bool)
    for b, p in enumerate(prompts):  # the prompt rows of the action mask, per sequence, placed after padding
        n = len(p)
        keep[b, -n:, -n:] = (torch.ones(n, n, dtype=torch.bool).tril() if causal
                             else build_action_attention_mask(torch.tensor([list(p)]), layout)[0])
    keep |= torch.eye(ids.shape[1], dtype=torch.bool)[None] & ~valid[:, :, None]  # padded rows: no empty softmax
    return ids, valid, pos, keep


def parallel_prompt_keep(prompts: Sequence[Sequence[int]], layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt part ``(B, Lp)`` of every block row (the row of a BOA appended to the prompt: hides earlier
    action blocks of the prompt if any; none in the action-model prompt), and which rows have independent
    blocks (they start after the end of the last image; an unterminated image in the prompt runs to the end
    of the sequence, and then blocks see each other)."""
    bsz, lp = len(prompts), max(len(p) for p in prompts)
    prompt_keep = torch.zeros(bsz, lp, dtype=torch.bool)
    independent = torch.ones(bsz, dtype=torch.bool)
    for b, p in enumerate(prompts):
        ext = torch.tensor([*p, layout.boa_id])
        prompt_keep[b, lp - len(p) :] = action_mask_row(ext, layout)[:-1]
        last_img_end = max((e for _, e in token_blocks(ext, layout.boi_id, layout.eoi_id)), default=-1)
        independent[b] = last_img_end < len(p)
    return prompt_keep, independent


def _scan(tokens: Sequence[int], layout: TokenLayout) -> tuple[int, int, int, int, int, list[tuple[int, int]]]:
    """State after ``tokens`` (indices in the sequence): last BOI, end of the image it opened (-1 = open),
    last EOA, first and last BOA after it, and the closed action spans. Mirrors ``token_blocks`` (each BOI/BOA runs
    to the first EOI/EOA after it)."""
    boi, img_end, last_eoa, first_open, last_open = _NONE, _NONE, _NONE, _NONE, _NONE
    closed: list[tuple[int, int]] = []
    for i, t in enumerate(tokens):
        if t == layout.boi_id:
            boi, img_end = i, _NONE
        elif t == layout.eoi_id and boi != _NONE and img_end == _NONE:
            img_end = i
        elif t == layout.boa_id:
            first_open = i if first_open == _NONE else first_open
            last_open = i
        elif t == layout.eoa_id:
            if first_open != _NONE:
                closed.append((first_open, i))
            last_eoa, first_open, last_open = i, _NONE, _NONE
    return boi, img_end, last_eoa, first_open, last_open, closed


class ActionMaskState:
    """Keep-row of the newest token under the action attention mask, updated per token with tensor ops.

    Equal to ``action_mask_row`` on the prefix. The rule: the token's own action block(s) are the BOAs after
    the last EOA; if the latest of them starts after the end of the last image (an open image ends at the
    token), every earlier action span is hidden. Earlier spans are the closed ones (``closed`` slots) and, when
    several BOAs are open, ``[first_open, now]``. All positions are cache slots (a row's sequence index + its
    left padding)."""

    def __init__(self, prompts: Sequence[Sequence[int]], layout: TokenLayout, max_len: int, device: torch.device):
        self.layout = layout
        bsz, lp = len(prompts), max(len(p) for p in prompts)
        st = torch.full((5, bsz), _NONE, dtype=torch.long)
        closed = torch.zeros(bsz, max_len, dtype=torch.bool)
        valid = torch.zeros(bsz, max_len, dtype=torch.bool)
        for b, p in enumerate(prompts):
            off = lp - len(p)
            vals = _scan(p, layout)
            st[:, b] = torch.tensor([v + off if v != _NONE else _NONE for v in vals[:5]])
            for s, e in vals[5]:
                closed[b, off + s : off + e + 1] = True
            valid[b, off:] = True  # generated slots are real for every live row
        self.boi, self.img_end, self.last_eoa, self.first_open, self.last_open = (x.to(device) for x in st)
        self.closed = closed.to(device)
        self.valid = valid.to(device)
        self.slots = torch.arange(max_len, device=device)

    def push(self, tok: torch.Tensor, slot: int) -> torch.Tensor:
        """Append ``tok`` (B,) at cache slot ``slot``; returns its keep-row ``(B, max_len)``."""
        lay, now = self.layout, torch.full_like(self.boi, slot)
        is_boi, is_eoi, is_boa, is_eoa = tok == lay.boi_id, tok == lay.eoi_id, tok == lay.boa_id, tok == lay.eoa_id
        self.img_end = torch.where(is_boi, _NONE, self.img_end)
        self.boi = torch.where(is_boi, now, self.boi)
        self.img_end = torch.where(is_eoi & (self.boi != _NONE) & (self.img_end == _NONE), now, self.img_end)
        self.first_open = torch.where(is_boa & (self.first_open == _NONE), now, self.first_open)
        self.last_open = torch.where(is_boa, now, self.last_open)
        img_end = torch.where(self.boi == _NONE, _NONE, torch.where(self.img_end == _NONE, now, self.img_end))
        active = (self.last_open != _NONE) & (self.last_open > img_end)
        s = self.slots[None]
        open_earlier = (s >= self.first_open[:, None]) & (s <= slot) & (self.first_open < self.last_open)[:, None]
        hidden = (self.closed | open_earlier) & active[:, None]
        row = self.valid & (s <= slot) & ~hidden
        # close the open spans at an EOA (after its own row: the EOA belongs to its block)
        span = (s >= self.first_open[:, None]) & (s <= slot) & (is_eoa & (self.first_open != _NONE))[:, None]
        self.closed = self.closed | span
        self.last_eoa = torch.where(is_eoa, now, self.last_eoa)
        self.first_open = torch.where(is_eoa, _NONE, self.first_open)
        self.last_open = torch.where(is_eoa, _NONE, self.last_open)
        return row
