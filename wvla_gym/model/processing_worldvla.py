"""Prompts, sequence assembly, labels and the action attention mask (docs/protocol.md §3, §5, §8).

Conversation template (no roles, no system prompt)::

    BOS + human text/media + EOT + assistant media + EOT          (EOT = end-of-turn, 8710 released)

* action model: human ``What action should the robot take to {instruction}?`` + M images; assistant K blocks
  ``[BOA a1..a7 EOA]``. At inference the prompt ends with the human EOT.
* world model: human ``{world prompt}`` + image_t + action_t; assistant image_{t+1}. The reference trains with
  one text and its inference helper uses another; ``world_model_prompt`` ("inference" default, or "train")
  makes the choice explicit.

Text is encoded with ``add_special_tokens=False`` and BOS is prepended by hand; media placeholders split the
text, so encoding the text segment alone gives the same ids.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from .action_tokenizer import ActionTokenizer
from .configuration_worldvla import ACTION_PROMPT, WORLD_PROMPTS
from .token_layout import TokenLayout

IGNORE_INDEX = -100


class TextTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


class ByteTextTokenizer:
    """Compact layout: UTF-8 byte ``b`` is token ``offset + b``."""

    def __init__(self, offset: int):
        self.offset = int(offset)

    def encode(self, text: str) -> list[int]:
        return [self.offset + b for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) - self.offset for i in ids if 0 <= int(i) - self.offset < 256).decode("utf-8", "replace")


class HFTextTokenizer:
    """A ``tokenizers`` JSON file (the Lumina-mGPT ``tokenizer.json`` for released checkpoints)."""

    def __init__(self, path: str | os.PathLike):
        from tokenizers import Tokenizer

        self.path = os.fspath(path)
        try:
            self._tok = Tokenizer.from_file(self.path)
        except Exception as e:  # tokenizers' errors ("key must be a string at line 1") do not name the file
            raise ValueError(
                f"{self.path}: not a readable Hugging Face tokenizers JSON file ({type(e).__name__}: {e})"
            ) from e

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)


class WorldVLAProcessor:
    """Builds token sequences for both roles. Image tokens come in already tokenized (see ImageTokenizer)."""

    def __init__(
        self,
        layout: TokenLayout,
        text_tokenizer: TextTokenizer,
        action_tokenizer: ActionTokenizer,
        world_model_prompt: str = "inference",
    ):
        if world_model_prompt not in WORLD_PROMPTS:
            raise ValueError(f"world_model_prompt must be one of {sorted(WORLD_PROMPTS)}")
        self.layout = layout
        self.text_tokenizer = text_tokenizer
        self.action_tokenizer = action_tokenizer
        self.world_model_prompt = world_model_prompt

    # ---- pieces ------------------------------------------------------------------------------------------
    def action_text(self, instruction: str) -> str:
        return ACTION_PROMPT.format(instruction=instruction)

    def action_block(self, action_ids: Sequence[int]) -> list[int]:
        """``[BOA, a1..a7, EOA]`` from 7 action value ids."""
        return [self.layout.boa_id, *(int(a) for a in action_ids), self.layout.eoa_id]

    def action_blocks(self, actions: np.ndarray) -> list[int]:
        """Float actions ``(K, 7)`` -> K concatenated blocks."""
        toks = self.action_tokenizer.encode(np.asarray(actions).reshape(-1, self.action_tokenizer.action_dim))
        return [t for row in toks for t in self.action_block(row)]

    # ---- action model ------------------------------------------------------------------------------------
    def action_prompt(self, instruction: str, image_tokens: Sequence[Sequence[int]]) -> list[int]:
        """``BOS + text + images (oldest first) + EOT`` (the inference prompt)."""
        ids = [self.layout.bos_id, *self.text_tokenizer.encode(self.action_text(instruction))]
        for img in image_tokens:
            ids.extend(int(t) for t in img)
        ids.append(self.layout.end_of_turn_id)
        return ids

    def action_sample(
        self, instruction: str, image_tokens: Sequence[Sequence[int]], actions: np.ndarray
    ) -> tuple[list[int], list[int]]:
        """Training sample: prompt + K blocks + EOT; labels are -100 on the prompt (incl. its EOT)."""
        prompt = self.action_prompt(instruction, image_tokens)
        answer = [*self.action_blocks(actions), self.layout.end_of_turn_id]
        return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer

    # ---- world model -------------------------------------------------------------------------------------
    def world_text(self) -> str:
        return WORLD_PROMPTS[self.world_model_prompt]

    def world_prompt(self, image_tokens: Sequence[int] | Sequence[Sequence[int]], action: np.ndarray) -> list[int]:
        """``BOS + text + image_t + [BOA a_t EOA] + EOT``; generation continues with image_{t+1}.

        A world-model history (``config.world_history`` > 1): ``image_tokens`` a sequence of frames (oldest
        first) and ``action`` ``(T, 7)``, one action per frame, giving
        ``BOS + text + image_1 [BOA a_1 EOA] ... image_T [BOA a_T EOA] + EOT``. One frame (a flat token list) and
        one action ``(7,)`` is WorldVLA's released his=1 prompt."""
        frames, actions = self._world_pairs(image_tokens, action)
        ids = [self.layout.bos_id, *self.text_tokenizer.encode(self.world_text())]
        for img, act in zip(frames, actions, strict=True):
            ids.extend(int(t) for t in img)
            ids.extend(self.action_blocks(act.reshape(1, -1)))
        ids.append(self.layout.end_of_turn_id)
        return ids

    def world_sample(
        self, image_tokens: Sequence[int] | Sequence[Sequence[int]], action: np.ndarray,
        next_image_tokens: Sequence[int],
    ) -> tuple[list[int], list[int]]:
        """Training sample: :meth:`world_prompt` + image_{t+1} + EOT; labels are -100 on the prompt."""
        prompt = self.world_prompt(image_tokens, action)
        answer = [*(int(t) for t in next_image_tokens), self.layout.end_of_turn_id]
        return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer

    def _world_pairs(self, image_tokens, action) -> tuple[list[Sequence[int]], np.ndarray]:
        """``(frames, actions (T, 7))`` from one frame + ``(7,)`` or T frames + ``(T, 7)``."""
        dim = self.action_tokenizer.action_dim
        first = image_tokens[0] if len(image_tokens) else None
        one_frame = first is None or np.ndim(first) == 0
        frames = [image_tokens] if one_frame else list(image_tokens)
        acts = np.asarray(action)  # dtype kept: the bins see exactly the caller's values
        if one_frame and acts.shape == (dim,):
            acts = acts[None]
        if acts.shape != (len(frames), dim):
            want = f"({dim},) for one frame" if one_frame else f"({len(frames)}, {dim}), one action per frame"
            raise ValueError(f"action must have shape {want}; got {acts.shape}")
        return frames, acts


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad to ``(B, L)``; returns ``(input_ids, valid)`` with ``valid`` False on padding."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), int(pad_id), dtype=torch.long)
    valid = torch.zeros((len(seqs), n), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, n - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            valid[i, n - len(s) :] = True
    return ids, valid


def token_blocks(row: torch.Tensor, start_id: int, end_id: int) -> list[tuple[int, int]]:
    """``(start, end)`` inclusive spans from each start token to the next end token (or the last index)."""
    starts = torch.nonzero(row == start_id).flatten().tolist()
    ends = torch.nonzero(row == end_id).flatten().tolist()
    spans, j = [], 0
    for s in starts:
        while j < len(ends) and ends[j] < s:
            j += 1
        spans.append((s, ends[j] if j < len(ends) else row.numel() - 1))
    return spans


def hidden_action_spans(row: torch.Tensor, layout: TokenLayout) -> list[tuple[int, int, int, int]]:
    """THE action attention rule, as the rectangles it removes from a causal mask.

    Each ``(s, e, s0, e0)`` (inclusive) says: rows ``s..e`` (an action block starting after the end of the last
    image block of ``row``) do not see keys ``s0..e0`` (an earlier action block). BOA..EOA inclusive; an
    unterminated block or image runs to the last index. :func:`build_action_attention_mask` (training, prompt
    prefill) and :func:`action_mask_row` (one KV-cached decode step) are both this rule, and the incremental
    decoder state in :mod:`wvla_gym.generation` is tested equal to it."""
    images = token_blocks(row, layout.boi_id, layout.eoi_id)
    last_img_end = max((e for _, e in images), default=-1)
    actions = token_blocks(row, layout.boa_id, layout.eoa_id)
    return [(s, e, s0, e0) for k, (s, e) in enumerate(actions) if s > last_img_end for s0, e0 in actions[:k]]


def build_action_attention_mask(
    input_ids: torch.Tensor, layout: TokenLayout, padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Boolean ``(B, L, L)`` keep-mask: causal, except that an action block starting after the end of the last
    image block does not see any earlier action block (BOA..EOA inclusive; unterminated blocks run to L-1).

    ``padding_mask`` (``(B, L)``, True = real token) additionally hides padded keys; a padded row keeps its own
    diagonal so that no softmax row is empty.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, L), got {tuple(input_ids.shape)}")
    b, n = input_ids.shape
    mask = torch.ones(n, n, dtype=torch.bool, device=input_ids.device).tril().expand(b, n, n).clone()
    for i in range(b):
        for s, e, s0, e0 in hidden_action_spans(input_ids[i], layout):
            mask[i, s : e + 1, s0 : e0 + 1] = False
    if padding_mask is not None:
        pm = padding_mask.to(device=mask.device, dtype=torch.bool)
        mask &= pm[:, None, :]
        mask |= torch.eye(n, dtype=torch.bool, device=mask.device)[None] & ~pm[:, :, None]
    return mask


def action_mask_row(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Keep-row of the last token of ``tokens`` (1-D, real tokens only) under the action attention mask.

    The last row of :func:`build_action_attention_mask` on this prefix (what the reference recomputes per
    KV-cached step), in O(L)."""
    n = tokens.numel()
    keep = torch.ones(n, dtype=torch.bool)
    for s, e, s0, e0 in hidden_action_spans(tokens, layout):
        if s <= n - 1 <= e:
            keep[s0 : e0 + 1] = False
    return keep


def to_model_mask(keep: torch.Tensor, attn_implementation: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, Lq, Lk)`` keep-mask -> the 4D mask transformers expects for ``attn_implementation``.

    SDPA takes a boolean (True = attend). Eager *adds* the mask to the scores, so a boolean would silently add
    0/1: it gets an additive float mask (0 / finfo.min) instead.
    """
    keep4 = keep[:, None] if keep.ndim == 3 else keep
    if attn_implementation == "sdpa":
        return keep4
    if attn_implementation == "eager":
        return torch.zeros(keep4.shape, dtype=dtype, device=keep4.device).masked_fill(~keep4, torch.finfo(dtype).min)
    raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
