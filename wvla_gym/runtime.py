"""One runtime for both roles of WorldVLA: policy (action chunks) and world model (next frames).

Action decoding (protocol §5-6):

* ``decode="sequential"`` is the official behaviour: greedy, one token per step with the KV cache, each step
  with its row of the action attention mask (a block after the last image never sees earlier blocks),
  positions increasing across blocks, stop at end-of-turn (or once ``n_actions`` blocks are complete).
* ``decode="parallel"``: because of that mask the K blocks are independent given the prompt, so after the
  prompt is prefilled the K blocks are packed into one forward per token slot (9 passes instead of 9K), with
  a 4D mask (block j sees the prompt and its own earlier tokens) and flat positions P + 9j + t (the positions
  each token has in the sequential decode). It assumes the block structure ``[BOA a1..a7 EOA]``; without
  ``constrain_actions`` the result is verified against that assumption (every predicted structural token is
  checked) and any sequence that fails is re-decoded sequentially, so the tokens always equal the official ones.
* ``constrain_actions=True`` forces the block structure and restricts the seven value slots to action ids, in
  both modes. The default (``None``) is the checkpoint's ``config.constrain_actions`` (absent = off, like the
  release; our embedded default sets it).

Inputs are checked before any model call: frames, actions (real numbers in [-1, 1], like the envs' action space),
instructions (str) and the prompt length, which must fit ``config.max_position_embeddings`` together with the
tokens to generate (positions past it are not an error in the model, they silently give garbage).

Determinism: greedy decoding is deterministic for a fixed torch thread count, but CPU kernels split their
reductions (matmul, softmax, conv) by thread, so results with 1 and 2 threads differ in the last float bits, and
a greedy argmax between near-tied logits can then flip; an imagined rollout feeds each frame back, so such a flip
grows into a visibly different trajectory within a few steps. Compare runs at the same thread count and record it
(:func:`torch_threads`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DynamicCache

from .decoding import BLOCK, OFFICIAL_MAX_NEW_TOKENS, StaticDecoder, prompt_prefill_inputs, resolve_backend
from .model.image_tokenizer import ImageTokenizer
from .model.loading import load_checkpoint
from .model.modeling_worldvla import WorldVLAForConditionalGeneration
from .model.processing_worldvla import (
    TextTokenizer,
    WorldVLAProcessor,
    to_model_mask,
    token_blocks,
)
from .model.token_layout import TokenLayout
from .protocol import check_action

DEFAULT_ASSET_DIR = Path(__file__).resolve().parent / "assets" / "default"
__all__ = ["BLOCK", "OFFICIAL_MAX_NEW_TOKENS", "MalformedActionOutput", "WorldVLARuntime", "action_mask_row"]


class MalformedActionOutput(RuntimeError):
    """The (unconstrained) model output does not contain the requested number of well-formed action blocks."""


def action_mask_row(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Keep-row of the last token of ``tokens`` (1-D, real tokens only) under the action attention mask.

    Same rule as ``build_action_attention_mask`` evaluated on this prefix (what the reference recomputes per
    KV-cached step), in O(L)."""
    n = tokens.numel()
    keep = torch.ones(n, dtype=torch.bool)
    images = token_blocks(tokens, layout.boi_id, layout.eoi_id)
    last_img_end = max((e for _, e in images), default=-1)
    actions = token_blocks(tokens, layout.boa_id, layout.eoa_id)
    i = n - 1
    for k, (s, e) in enumerate(actions):
        if s <= i <= e and s > last_img_end:
            for s0, e0 in actions[:k]:
                keep[s0 : e0 + 1] = False
    return keep


def torch_threads() -> int:
    """The intra-op thread count torch uses now; results are bit-reproducible only at the same count (see above)."""
    return int(torch.get_num_threads())


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    d = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(d, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype or its name, got {dtype!r}")
    return d


class WorldVLARuntime:
    """Owns the backbone, tokenizers and token layout; offers ``predict_action_chunk`` and ``imagine``.

    ``decode_backend`` ("auto" | "dynamic" | "static" | "cuda_graph", see :mod:`wvla_gym.decoding`): "auto" is
    "cuda_graph" on a CUDA device with graphs and "dynamic" (the original path, unchanged results) elsewhere.
    ``vq_batch`` (True | False | "auto"): VQ-encode/decode all frames of a call in one batch instead of frame by
    frame. "auto" (default) batches on CUDA, where it is much faster, and goes frame by frame on CPU, where it
    is not (``benchmarks/vq_batch.py``) and where batched convolutions round differently in the last bit, so
    that a vector env gives exactly what N single envs give. Both can be changed later by assigning the
    attributes (``vq_batch`` then reads back as the resolved bool)."""

    action_dim: int = 7

    def __init__(
        self,
        model: WorldVLAForConditionalGeneration,
        text_tokenizer: TextTokenizer,
        *,
        decode_backend: str = "auto",
        vq_batch: bool | str = "auto",
    ):
        self.model = model.eval()
        self.config = model.config
        self.layout: TokenLayout = self.config.token_layout
        self.action_tokenizer = self.config.action_tokenizer()
        self.image_tokenizer = ImageTokenizer(model.model.vqmodel, self.layout)
        self.processor = WorldVLAProcessor(
            self.layout, text_tokenizer, self.action_tokenizer, self.config.world_model_prompt
        )
        self.action_chunk: int = int(self.config.action_chunk)
        self.history: int = int(self.config.history)
        self.world_history: int = int(getattr(self.config, "world_history", 1))
        self.resolution: int = int(self.config.resolution)
        self.attn_implementation: str = self.config._attn_implementation
        self.device = next(model.parameters()).device
        self.dtype = model.lm_head.weight.dtype
        self.image_seq_len = self.image_tokenizer.seq_len(self.resolution, self.resolution)
        self._action_ids = torch.tensor(list(self.layout.action_ids), device=self.device)
        self._image_ids = torch.as_tensor(self.layout.image_ids, device=self.device)
        self.last_decode_info: dict[str, Any] = {}
        self.checkpoint_dir: Path | None = None
        self.last_prefill_s = 0.0
        self._static: StaticDecoder | None = None
        self.decode_backend = decode_backend
        self.vq_batch = vq_batch

    @property
    def decode_backend(self) -> str:
        """The resolved backend in use ("dynamic", "static" or "cuda_graph")."""
        return self._backend

    @decode_backend.setter
    def decode_backend(self, value: str) -> None:
        backend = resolve_backend(value, self.device)
        self._backend = backend
        if backend == "dynamic":
            self._static = None
        elif self._static is None or self._static.step.capture != (backend == "cuda_graph"):
            self._static = StaticDecoder(self, capture=backend == "cuda_graph")

    @property
    def vq_batch(self) -> bool:
        return self.image_tokenizer.batch_frames

    @vq_batch.setter
    def vq_batch(self, value: bool | str) -> None:
        if isinstance(value, str) and value == "auto":
            value = self.device.type == "cuda"
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"vq_batch must be a bool or 'auto', got {value!r}")
        self.image_tokenizer.batch_frames = bool(value)

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        attn_implementation: str = "sdpa",
        decode_backend: str = "auto",
        vq_batch: bool | str = "auto",
    ) -> WorldVLARuntime:
        """Load our format or a released checkpoint (local folder or Hub id). ``None`` -> the embedded default.

        ``decode_backend`` / ``vq_batch``: see the class docstring."""
        if path_or_hub_id is None:
            if not (DEFAULT_ASSET_DIR / "config.json").exists():
                raise FileNotFoundError(
                    f"the embedded default model is not available yet ({DEFAULT_ASSET_DIR} does not exist); "
                    "pass a checkpoint folder or Hub id"
                )
            path_or_hub_id = DEFAULT_ASSET_DIR
        model, tok = load_checkpoint(
            path_or_hub_id, device=device, dtype=_as_dtype(dtype), attn_implementation=attn_implementation
        )
        rt = cls(model, tok, decode_backend=decode_backend, vq_batch=vq_batch)
        # Side files shipped with a checkpoint (e.g. a success judge in judge/) are found through this.
        local = Path(path_or_hub_id)
        rt.checkpoint_dir = local if local.is_dir() else None
        return rt

    # ---- input handling ------------------------------------------------------------------------------------
    def _check_frame(self, frame: Any, name: str) -> np.ndarray:
        a = np.asarray(frame)
        r = self.resolution
        if a.dtype != np.uint8 or a.shape != (r, r, 3):
            raise ValueError(f"{name} must be uint8 frames of shape ({r}, {r}, 3), got {a.dtype} {a.shape}")
        return a

    def _image_history(self, image_history: Any) -> list[list[np.ndarray]]:
        expected = f"a list (len B) of lists of 1..{self.history} uint8 ({self.resolution}, {self.resolution}, 3) frames, or a uint8 array (B, m, H, W, 3)"
        if isinstance(image_history, np.ndarray):
            if image_history.ndim != 5:
                raise ValueError(f"image_history must be {expected}; got an array of shape {image_history.shape}")
            hist = [list(seq) for seq in image_history]
        elif isinstance(image_history, Sequence) and not isinstance(image_history, str):
            hist = []
            for seq in image_history:
                if isinstance(seq, np.ndarray) and seq.ndim == 3:
                    raise ValueError(f"image_history must be {expected}; got a flat list of frames (wrap each in a list)")
                if not isinstance(seq, (Sequence, np.ndarray)) or isinstance(seq, str):
                    raise ValueError(f"image_history must be {expected}")
                hist.append(list(seq))
        else:
            raise ValueError(f"image_history must be {expected}; got {type(image_history).__name__}")
        if not hist:
            raise ValueError(f"image_history must be {expected}; got an empty batch")
        for b, seq in enumerate(hist):
            if not 1 <= len(seq) <= self.history:
                raise ValueError(f"image_history[{b}] must hold 1..{self.history} frames, got {len(seq)}")
            hist[b] = [self._check_frame(f, f"image_history[{b}]") for f in seq]
        return hist

    def _instructions(self, instruction: Any, batch: int) -> list[str]:
        if isinstance(instruction, str):
            return [instruction] * batch
        if isinstance(instruction, (Sequence, np.ndarray)) and not isinstance(instruction, (bytes, bytearray)):
            bad = [f"[{i}]: {type(s).__name__}" for i, s in enumerate(instruction) if not isinstance(s, str)]
            if bad:
                raise TypeError(f"instruction must be a str or a list of {batch} str; non-str items {', '.join(bad[:4])}")
            if len(instruction) != batch:
                raise ValueError(f"instruction must be a str or a list of {batch} str (one per batch row), got {len(instruction)}")
            return list(instruction)
        raise TypeError(f"instruction must be a str or a list of {batch} str, got {type(instruction).__name__}")

    def _check_prompt_lengths(self, prompts: list[list[int]], n_new: int, what: str) -> None:
        """Prompt + generated tokens must fit the model's positions (it would silently produce garbage past them)."""
        limit = int(self.config.max_position_embeddings)
        longest = max(len(p) for p in prompts)
        if longest + n_new > limit:
            raise ValueError(
                f"{what}: the prompt is {longest} tokens and {n_new} more are generated, but the model takes at most "
                f"max_position_embeddings={limit} positions; shorten the instruction (or use fewer frames/actions)"
            )

    def _encode_frames(self, frames: list[np.ndarray]) -> list[list[int]]:
        if not frames:
            raise ValueError("no frames to encode (empty batch); pass at least one frame")
        toks = self.image_tokenizer.encode(np.stack(frames))
        return toks.tolist()

    # ---- model calls ---------------------------------------------------------------------------------------
    def _forward(self, ids, pos, keep, cache, *, logits_to_keep=0, mask_image_logits=None) -> torch.Tensor:
        mask = to_model_mask(keep.to(self.device), self.attn_implementation, self.dtype)
        out = self.model(
            input_ids=ids.to(self.device),
            position_ids=pos.to(self.device),
            attention_mask=mask,
            cache=cache,
            use_cache=True,
            logits_to_keep=logits_to_keep,
            mask_image_logits=mask_image_logits,
        )
        return out.logits

    def _prefill(self, prompts: list[list[int]], mask_image_logits=None, causal: bool = False):
        """Left-padded prompt forward; returns (cache, last logits (B, V), valid keys (B, Lp))."""
        ids, valid, pos, keep = prompt_prefill_inputs(prompts, self.layout, causal=causal)
        cache = DynamicCache(config=self.config)
        t0 = time.perf_counter()
        logits = self._forward(ids, pos, keep, cache, logits_to_keep=1, mask_image_logits=mask_image_logits)
        self.last_prefill_s = time.perf_counter() - t0  # lets benchmarks separate prefill from decoding
        return cache, logits[:, -1], valid

    def _decode_sequential(self, prompts, n_blocks, constrain, *, max_new_tokens=None):
        """Official masked sequential greedy decode; returns the generated tokens per sequence."""
        if self._static is not None:
            gen = self._static.decode_sequential(prompts, n_blocks, constrain, max_new_tokens=max_new_tokens)
            self.last_prefill_s = self._static.last_prefill_s
            return gen
        lay = self.layout
        bsz = len(prompts)
        cache, logits, valid = self._prefill(prompts)
        lp = valid.shape[1]
        seqs = [torch.tensor(p, dtype=torch.long) for p in prompts]
        gen: list[list[int]] = [[] for _ in range(bsz)]
        done = [False] * bsz
        n_eoa = [0] * bsz
        limit = max_new_tokens or max(OFFICIAL_MAX_NEW_TOKENS, BLOCK * n_blocks + 1)
        steps = 0
        while True:
            nxt = self._choose(logits, [len(g) for g in gen], constrain)
            feed = torch.full((bsz, 1), lay.pad_id, dtype=torch.long)
            for b in range(bsz):
                if done[b]:
                    continue
                tok = int(nxt[b])
                gen[b].append(tok)
                n_eoa[b] += tok == lay.eoa_id
                if tok == lay.end_of_turn_id or n_eoa[b] >= n_blocks or len(gen[b]) >= limit:
                    done[b] = True
                else:
                    feed[b, 0] = tok
            if all(done):
                break
            total = lp + steps + 1
            keep = torch.zeros(bsz, 1, total, dtype=torch.bool)
            pos = torch.zeros(bsz, 1, dtype=torch.long)
            for b in range(bsz):
                keep[b, 0, total - 1] = True
                if done[b]:
                    continue
                seqs[b] = torch.cat([seqs[b], feed[b]])
                row = action_mask_row(seqs[b], lay)
                # every live row fed a real token at each step, so its real tokens are right-aligned in the keys
                keep[b, 0, total - row.numel() :] = row
                pos[b, 0] = seqs[b].numel() - 1
            logits = self._forward(feed, pos, keep, cache, logits_to_keep=1)[:, -1]
            steps += 1
        return gen

    def _choose(self, logits: torch.Tensor, n_generated: list[int], constrain: bool) -> torch.Tensor:
        """Greedy choice per row; with ``constrain`` the slot within the block decides the allowed ids."""
        if not constrain:
            return logits.argmax(-1).cpu()
        lay = self.layout
        out = torch.empty(logits.shape[0], dtype=torch.long)
        vals = logits[:, self._action_ids].argmax(-1).cpu() + lay.action_first_id
        for b, n in enumerate(n_generated):
            slot = n % BLOCK
            out[b] = lay.boa_id if slot == 0 else lay.eoa_id if slot == BLOCK - 1 else vals[b]
        return out

    def _parallel_prompt_keep(self, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt part ``(B, Lp)`` of every block row (the row of a BOA appended to the prompt: hides earlier
        action blocks of the prompt if any; none in the action-model prompt), and which rows have independent
        blocks (they start after the end of the last image; an unterminated image in the prompt runs to the end
        of the sequence, and then blocks see each other)."""
        lay = self.layout
        bsz, lp = len(prompts), max(len(p) for p in prompts)
        prompt_keep = torch.zeros(bsz, lp, dtype=torch.bool)
        independent = torch.ones(bsz, dtype=torch.bool)
        for b, p in enumerate(prompts):
            ext = torch.tensor([*p, lay.boa_id])
            prompt_keep[b, lp - len(p) :] = action_mask_row(ext, lay)[:-1]
            last_img_end = max((e for _, e in token_blocks(ext, lay.boi_id, lay.eoi_id)), default=-1)
            independent[b] = last_img_end < len(p)
        return prompt_keep, independent

    def _decode_parallel(self, prompts, n_blocks, constrain):
        """Pack the n blocks into one forward per token slot; see the module docstring."""
        if self._static is not None:
            slots, after_eoa, first_ok, independent, n_pass = self._static.decode_parallel(prompts, n_blocks, constrain)
            self.last_prefill_s = self._static.last_prefill_s
        else:
            slots, after_eoa, first_ok, independent, n_pass = self._decode_parallel_dynamic(prompts, n_blocks, constrain)
        return self._finish_parallel(prompts, n_blocks, constrain, slots, after_eoa, first_ok, independent, n_pass)

    def _decode_parallel_dynamic(self, prompts, n_blocks, constrain):
        lay = self.layout
        bsz, n = len(prompts), n_blocks
        cache, logits, valid = self._prefill(prompts)
        lp = valid.shape[1]
        lens = torch.tensor([len(p) for p in prompts])
        prompt_keep, independent = self._parallel_prompt_keep(prompts)
        first_ok = logits.argmax(-1).cpu() == lay.boa_id
        slots = torch.empty(bsz, n, BLOCK, dtype=torch.long)
        slots[:, :, 0] = lay.boa_id
        j = torch.arange(n)
        n_pass = BLOCK if not constrain else BLOCK - 1  # unconstrained: one more pass to see what follows EOA
        after_eoa = None
        for t in range(n_pass):
            pos = lens[:, None] + BLOCK * j[None, :] + t  # flat positions of the sequential decode
            own = torch.eye(n, dtype=torch.bool).repeat(1, t + 1)  # key t'*n + j' is visible iff j' == j
            keep = torch.cat([prompt_keep[:, None, :].expand(bsz, n, lp), own[None].expand(bsz, n, n * (t + 1))], dim=2)
            step_logits = self._forward(slots[:, :, t], pos, keep, cache)  # (B, n, V)
            if t == BLOCK - 1:
                after_eoa = step_logits.argmax(-1).cpu()
                break
            if constrain:
                val = step_logits[..., self._action_ids].argmax(-1).cpu() + lay.action_first_id
                slots[:, :, t + 1] = lay.eoa_id if t + 1 == BLOCK - 1 else val
            else:
                slots[:, :, t + 1] = step_logits.argmax(-1).cpu()
        return slots, after_eoa, first_ok, independent, n_pass

    def _finish_parallel(self, prompts, n_blocks, constrain, slots, after_eoa, first_ok, independent, n_pass):
        """Shared by every backend: constrained rows with dependent blocks, and (unconstrained) rows whose
        output breaks the block structure, are re-decoded sequentially (exact official tokens)."""
        lay = self.layout
        bsz = len(prompts)
        gen = [slots[b].reshape(-1).tolist() for b in range(bsz)]
        if constrain:
            bad = [b for b in range(bsz) if not bool(independent[b])]
            if bad:
                redo = self._decode_sequential([prompts[b] for b in bad], n_blocks, constrain=True)
                for b, g in zip(bad, redo, strict=True):
                    gen[b] = g
            self.last_decode_info = {"mode": "parallel", "fallback": [b in bad for b in range(bsz)], "passes": n_pass,
                                     "backend": self.decode_backend}
            return gen
        structural = torch.tensor(sorted(lay.structural_ids()))
        inner_ok = ~torch.isin(slots[:, :, 1 : BLOCK - 1], structural).any(-1)  # (B, n)
        eoa_ok = slots[:, :, BLOCK - 1] == lay.eoa_id
        next_ok = after_eoa[:, :-1] == lay.boa_id  # block j+1 starts where block j's EOA row predicts BOA
        ok = independent & first_ok & (inner_ok & eoa_ok).all(1) & next_ok.all(1)
        bad = [b for b in range(bsz) if not bool(ok[b])]
        if bad:
            redo = self._decode_sequential([prompts[b] for b in bad], n_blocks, constrain=False)
            for b, g in zip(bad, redo, strict=True):
                gen[b] = g
        self.last_decode_info = {"mode": "parallel", "fallback": [b in bad for b in range(bsz)], "passes": n_pass,
                                 "backend": self.decode_backend}
        return gen

    def _parse_actions(self, gen: list[list[int]], n_blocks: int) -> np.ndarray:
        """Official parse: every BOA..EOA span is one action (ids de-tokenised through the clamp)."""
        lay = self.layout
        out = np.empty((len(gen), n_blocks, self.action_dim), dtype=np.float32)
        for b, g in enumerate(gen):
            spans = token_blocks(torch.tensor(g + [lay.eoa_id]), lay.boa_id, lay.eoa_id) if g else []
            acts = [g[s + 1 : e] for s, e in spans if e < len(g) and g[e] == lay.eoa_id]
            good = [a for a in acts[:n_blocks] if len(a) == self.action_dim]
            if len(good) < n_blocks:
                raise MalformedActionOutput(
                    f"batch row {b}: the model produced {len(good)} well-formed action blocks, {n_blocks} were "
                    f"requested (generated {len(g)} tokens). An untrained or mismatched checkpoint does this; "
                    "pass constrain_actions=True to force the block structure."
                )
            out[b] = self.action_tokenizer.decode(np.asarray(good)).astype(np.float32)
        return out

    # ---- public API ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_action_chunk(
        self,
        image_history: Sequence[Sequence[np.ndarray]] | np.ndarray,
        instruction: str | Sequence[str],
        *,
        decode: str = "parallel",
        constrain_actions: bool | None = None,
        n_actions: int | None = None,
    ) -> np.ndarray:
        """Action chunk ``(B, K, 7)`` float32 (de-normalised) from 1..M frames per row (oldest first).

        ``constrain_actions=None`` uses the checkpoint's ``config.constrain_actions`` (absent: False)."""
        if decode not in ("parallel", "sequential"):
            raise ValueError(f"decode must be 'parallel' or 'sequential', got {decode!r}")
        if constrain_actions is None:
            constrain_actions = bool(getattr(self.config, "constrain_actions", False))
        elif not isinstance(constrain_actions, (bool, np.bool_)):
            raise TypeError(f"constrain_actions must be a bool or None, got {type(constrain_actions).__name__}")
        n = self.action_chunk if n_actions is None else n_actions
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n_actions must be a positive int or None, got {n_actions!r}")
        hist = self._image_history(image_history)
        instr = self._instructions(instruction, len(hist))
        flat = [f for seq in hist for f in seq]
        toks = self._encode_frames(flat)
        prompts, i = [], 0
        for seq, text in zip(hist, instr, strict=True):
            prompts.append(self.processor.action_prompt(text, toks[i : i + len(seq)]))
            i += len(seq)
        self._check_prompt_lengths(prompts, BLOCK * int(n), "predict_action_chunk")
        if decode == "sequential":
            gen = self._decode_sequential(prompts, int(n), bool(constrain_actions))
            self.last_decode_info = {"mode": "sequential", "backend": self.decode_backend}
        else:
            gen = self._decode_parallel(prompts, int(n), bool(constrain_actions))
        self.last_tokens = gen
        return self._parse_actions(gen, int(n))

    def _world_inputs(self, images: Any, actions: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per row: frames ``(T, R, R, 3)`` uint8 and float64 actions ``(T, 7)``, checked (see :meth:`imagine`)."""
        r, dim, wh = self.resolution, self.action_dim, self.world_history
        form = (f"uint8 (B, {r}, {r}, 3)" + (f", (B, T, {r}, {r}, 3) with T <= {wh}, or a list of (T_b, {r}, {r}, 3)"
                                               if wh > 1 else ""))
        if isinstance(images, (list, tuple)):
            frames = [np.asarray(x) for x in images]
        else:
            imgs = np.asarray(images)
            frames = list(imgs[:, None]) if imgs.ndim == 4 else list(imgs) if imgs.ndim == 5 else [imgs]
        if not frames:
            raise ValueError(f"images is an empty batch; expected {form}")
        for b, f in enumerate(frames):
            if f.dtype != np.uint8 or f.ndim != 4 or f.shape[1:] != (r, r, 3) or not 1 <= len(f) <= wh:
                raise ValueError(f"images must be {form}; row {b} is {f.dtype} {f.shape}")
        if isinstance(actions, np.ma.MaskedArray):
            raise ValueError(f"actions must be a plain real numeric array (B, {dim}), not a numpy masked array")
        try:
            rows = ([np.asarray(a) for a in actions] if isinstance(actions, (list, tuple))
                    else list(np.asarray(actions)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"actions must be a real numeric array (B, {dim}); got {type(actions).__name__} ({e})") from e
        if len(rows) != len(frames):
            raise ValueError(f"images and actions must have the same batch size B, got {len(frames)} and {len(rows)}")
        acts = []
        for b, (f, a) in enumerate(zip(frames, rows, strict=True)):
            a = a[None] if a.ndim == 1 else a
            if a.ndim != 2 or a.shape != (len(f), dim):
                want = f"({dim},)" if len(f) == 1 else f"({len(f)}, {dim}), one action per frame"
                raise ValueError(f"actions must be a real numeric array (B, {dim}); row {b} must be {want}, got shape {a.shape}")
            try:  # each action as the envs check it: real numbers, finite, in [-1, 1] (never clipped)
                for row in a:
                    check_action(row)
            except ValueError as e:
                raise ValueError(f"actions: {e}") from e
            acts.append(a.astype(np.float64))
        return frames, acts

    @torch.inference_mode()
    def imagine(
        self,
        images: np.ndarray,
        actions: np.ndarray,
        *,
        instruction: str | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Next frames ``(B, H, W, 3)`` uint8 from frames ``(B, H, W, 3)`` uint8 and actions ``(B, 7)``.

        A world model trained with a history (``world_history`` H > 1) also takes the recent past: ``images``
        ``(B, T, H, W, 3)`` and ``actions`` ``(B, T, 7)`` (oldest first, one action per frame, the last pair the
        current frame and the action taken in it), or lists of ``(T_b, H, W, 3)`` / ``(T_b, 7)`` arrays when the
        rows' histories differ in length (1 <= T_b <= H).

        Generation is constrained to a valid image: BOI, grid tokens, row-ends and EOI are forced, every code slot
        is restricted to image ids (image logits unmasked). Greedy unless ``do_sample`` (then seeded by
        ``generator``). ``instruction`` is accepted for symmetry with the policy call; WorldVLA's world-model
        prompt carries no instruction, so it does not change the prompt.
        """
        r = self.resolution
        frames, acts = self._world_inputs(images, actions)
        if instruction is not None and not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
        if do_sample and not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        lay = self.layout
        toks = self._encode_frames([f for seq in frames for f in seq])
        prompts, i = [], 0
        for seq, a in zip(frames, acts, strict=True):
            n = len(seq)
            # one pair gives the released his=1 prompt (frame + action): the processor treats both forms alike
            prompts.append(self.processor.world_prompt(toks[i : i + n], a))
            i += n
        bsz = len(prompts)
        h, w = self.image_tokenizer.latent_shape(r, r)
        # fed after the prompt: BOI + 2 grid tokens, every code but the last, the row-ends before it
        self._check_prompt_lengths(prompts, 3 + (h * w - 1) + (h - 1), "imagine")
        if self._static is not None:
            out = self._static.imagine_codes(prompts, h, w, do_sample=do_sample, temperature=temperature,
                                             generator=generator)
            self.last_prefill_s = self._static.last_prefill_s
            return self.image_tokenizer.decode_codes(out.view(bsz, h, w))
        template = [lay.boi_id, lay.grid_token(h), lay.grid_token(w)]
        cache, logits, valid = self._prefill(prompts, mask_image_logits=False, causal=True)
        lp = valid.shape[1]
        lens = torch.tensor([len(p) for p in prompts])
        out = torch.empty(bsz, h * w, dtype=torch.long)
        # the generated image is outside any action block, so its rows are plain causal over the real tokens
        fed = 0
        cursor = 0  # next code slot to fill
        seq_tail: list[torch.Tensor] = []
        pending = list(template)
        while True:
            if not pending:  # sample one code from the last logits
                cand = logits[:, self._image_ids].float()
                if do_sample:
                    probs = torch.softmax(cand / temperature, dim=-1).cpu()
                    idx = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                else:
                    idx = cand.argmax(-1).cpu()
                out[:, cursor] = idx
                tok = self._image_ids.cpu()[idx]
                cursor += 1
                if cursor == h * w:
                    break
                pending = [tok] + ([lay.row_end_id] if cursor % w == 0 else [])
            nxt = pending.pop(0)
            feed = nxt.view(bsz, 1) if isinstance(nxt, torch.Tensor) else torch.full((bsz, 1), nxt, dtype=torch.long)
            seq_tail.append(feed)
            total = lp + fed + 1
            keep = torch.zeros(bsz, 1, total, dtype=torch.bool)
            keep[:, 0, :lp] = valid
            keep[:, 0, lp:] = True
            logits = self._forward(feed, (lens + fed)[:, None], keep, cache, logits_to_keep=1, mask_image_logits=False)[:, -1]
            fed += 1
        return self.image_tokenizer.decode_codes(out.view(bsz, h, w))
