"""The one :class:`Decoder` interface and its backends: dynamic, static and cuda_graph.

Every backend runs the same three loops (written once, in :class:`Decoder`) over the same mask rule
(:mod:`.masks`), chooser and image sampler (:mod:`.choosers`); a backend only says how the KV cache is held
and how one forward runs (:meth:`Decoder._open`):

* ``"dynamic"``: a ``DynamicCache`` that grows by the tokens fed; the key axis of every mask is exactly the
  keys cached so far (the original path, bit-for-bit what the package always produced);
* ``"static"``: a ``StaticCache`` sized once per call (rounded up to ``bucket`` slots, reused across calls of
  the same batch size); masks span the whole cache, padded with False. Every per-token quantity stays on the
  device; the host reads tokens only where it must: never for constrained action chunks and greedy
  imagination (one read at the end), once per step for unconstrained action decoding (to stop at end-of-turn)
  and for sampled imagination (the sampler runs on the generator's device);
* ``"cuda_graph"``: ``"static"`` with the one-token (and the parallel ``n``-token) forward captured in a CUDA
  graph per (cache, shape) and replayed;
* ``"auto"``: ``"cuda_graph"`` on a CUDA device when graphs are available, else ``"dynamic"``, so CPU results
  never change.

Action decoding:

* sequential (official): greedy, one token per step with the KV cache, each step with its row of the action
  attention mask, positions increasing across blocks, stop at end-of-turn (or once ``n_blocks`` blocks are
  complete);
* parallel: because of the mask the K blocks are independent given the prompt, so after the prompt is
  prefilled the K blocks are packed into one forward per token slot (9 passes instead of 9K), block j seeing
  the prompt and its own earlier tokens, at the flat positions P + 9j + t it has in the sequential decode.
  Without ``constrain`` the output is verified against the block structure ``[BOA a1..a7 EOA]`` and any row
  that breaks it is re-decoded sequentially, so the tokens always equal the official ones; with ``constrain``
  rows whose blocks are not independent (an unterminated image in the prompt) are re-decoded sequentially.

Equality across backends: the static cache keeps the keys in the same slots as the dynamic one (append order;
left-padded prompts share the prompt length), and the masks are the same boolean rows padded with False up to
the cache length. Attention over the longer, masked key axis is not guaranteed to round identically, so
tokens are equal (tests/test_static_decode.py), logits may differ in the last float bits.

A decoder keeps no per-call results: statistics come back in :class:`DecodeInfo`. The static backends keep
preallocated caches and captured graphs (buffers, not results) between calls.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, StaticCache

from ..model.token_layout import TokenLayout
from .choosers import BLOCK, OFFICIAL_MAX_NEW_TOKENS, choose_action_tokens, choose_image_codes
from .masks import ActionMaskState, parallel_prompt_keep, prompt_prefill_inputs
from .step import StepRunner

BACKENDS = ("auto", "dynamic", "static", "cuda_graph")


def cuda_graphs_available(device: torch.device) -> bool:
    """CUDA graphs can be captured on ``device`` (a CUDA device with a working runtime)."""
    return device.type == "cuda" and torch.cuda.is_available() and hasattr(torch.cuda, "CUDAGraph")


def resolve_backend(requested: str, device: torch.device) -> str:
    """``"auto"`` -> ``"cuda_graph"`` on CUDA with graphs, else ``"dynamic"``; explicit choices are checked."""
    if not isinstance(requested, str) or requested not in BACKENDS:
        raise ValueError(f"decode_backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "auto":
        return "cuda_graph" if cuda_graphs_available(device) else "dynamic"
    if requested == "cuda_graph" and not cuda_graphs_available(device):
        raise ValueError(f"decode_backend='cuda_graph' needs a CUDA device with CUDA graphs; the model is on {device}")
    return requested


@dataclass(frozen=True, eq=False)  # eq=False: ``codes`` is a tensor, whose == is elementwise
class DecodeInfo:
    """What one decode call did. Times are host wall seconds (on CUDA, kernels may still be running).

    ``mode``: "sequential", "parallel", "image" or "continuous" (RynnVLA-002's head); ``backend``: the decoder's
    name; ``passes``: forwards after the prompt prefill (parallel: per packed slot; fallbacks not counted);
    ``fallback``: per row, whether it was re-decoded sequentially; ``tokens``: the generated action-model tokens
    per row (action modes);
    ``codes``: the generated image codes ``(B, h, w)``, or ``(B, n, h, w)`` for n images per row (image mode,
    CPU); ``tokens`` is empty in continuous mode (RynnVLA-002's head generates no token)."""

    mode: str
    backend: str
    prefill_s: float
    decode_s: float
    passes: int
    fallback: list[bool] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    codes: torch.Tensor | None = None


class DecodeSession:
    """One call's KV cache after the prompt prefill; :meth:`step` feeds more tokens.

    Masks passed to :meth:`step` always span ``max_len`` keys (the same rows for every backend); a growing
    (dynamic) cache gets them cut to the keys it holds."""

    def __init__(self, runner: StepRunner, cache: Any, *, lp: int, max_len: int, logits: torch.Tensor,
                 valid: torch.Tensor, grows: bool, prefill_s: float):
        self.runner, self.cache = runner, cache
        self.lp, self.max_len = lp, max_len
        self.logits = logits  # (B, V): the prompt's last position
        self.valid = valid  # (B, Lp): real (not padding) prompt keys
        self.prefill_s = prefill_s
        self.passes = 0
        self._grows = grows
        self._n_keys = lp

    def step(self, ids: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor, *, logits_to_keep: int = 0,
             mask_image_logits: bool | None = None) -> torch.Tensor:
        """Feed ``ids`` ``(B, q)`` at positions ``pos`` with keep-rows ``keep`` ``(B, q, max_len)``."""
        q = ids.shape[1]
        if self._grows:
            keep = keep[..., : self._n_keys + q]
        out = self.runner(ids, pos, keep, self.cache, logits_to_keep=logits_to_keep,
                          mask_image_logits=mask_image_logits)
        self._n_keys += q
        self.passes += 1
        return out


class Decoder(ABC):
    """Action chunks (sequential, parallel) and constrained image decoding on one model.

    Subclasses implement :meth:`_open` (cache + prompt prefill); everything else is shared."""

    name: str = ""

    def __init__(self, model: Any):
        self.model = model
        self.config = model.config
        self.layout: TokenLayout = self.config.token_layout
        self.device = next(model.parameters()).device
        self.dtype = model.lm_head.weight.dtype
        self.attn_implementation: str = self.config._attn_implementation
        self._image_ids = torch.as_tensor(self.layout.image_ids, device=self.device)
        self.step = StepRunner(model, self.attn_implementation, self.dtype, capture=False)

    # ---- backend hook -------------------------------------------------------------------------------------
    @abstractmethod
    def _open(self, prompts: Sequence[Sequence[int]], n_new: int, *, causal: bool,
              mask_image_logits: bool | None) -> DecodeSession:
        """A cache for ``prompts`` + ``n_new`` tokens with the prompts prefilled."""

    def start(self, prompts: Sequence[Sequence[int]], n_new: int, *, causal: bool = False,
              mask_image_logits: bool | None = None) -> DecodeSession:
        """Prefill left-padded ``prompts`` (action-mask rows, or plain causal ones with ``causal``) into a cache
        with room for ``n_new`` more tokens."""
        if not prompts or min(len(p) for p in prompts) < 1:
            raise ValueError("prompts must be a non-empty list of non-empty token lists")
        return self._open(prompts, int(n_new), causal=causal, mask_image_logits=mask_image_logits)

    def _prefill_forward(self, ids, pos, keep, cache, mask_image_logits) -> tuple[torch.Tensor, float]:
        dev = self.device
        t0 = time.perf_counter()
        logits = self.step.eager(ids.to(dev), pos.to(dev), keep.to(dev), cache, logits_to_keep=1,
                                 mask_image_logits=mask_image_logits)
        return logits[:, -1], time.perf_counter() - t0

    # ---- action chunks ------------------------------------------------------------------------------------
    def decode_actions(self, prompts: Sequence[Sequence[int]], n_blocks: int, *, constrain: bool,
                       mode: str = "parallel", max_new_tokens: int | None = None) -> DecodeInfo:
        """Generate ``n_blocks`` action blocks per prompt; the tokens are in the returned info."""
        if mode not in ("parallel", "sequential"):
            raise ValueError(f"mode must be 'parallel' or 'sequential', got {mode!r}")
        t0 = time.perf_counter()
        if mode == "sequential":
            gen, s = self._sequential(prompts, n_blocks, constrain, max_new_tokens)
            return DecodeInfo("sequential", self.name, s.prefill_s, time.perf_counter() - t0 - s.prefill_s,
                              s.passes, [False] * len(prompts), gen)
        return self._parallel(prompts, n_blocks, constrain, t0)

    def _sequential(self, prompts, n_blocks: int, constrain: bool, max_new_tokens: int | None = None):
        lay, dev = self.layout, self.device
        bsz = len(prompts)
        limit = max_new_tokens or max(OFFICIAL_MAX_NEW_TOKENS, BLOCK * n_blocks + 1)
        n_steps = BLOCK * n_blocks if constrain else limit  # constrained: every row stops at the n-th EOA
        s = self.start(prompts, n_steps)
        lp, max_len, logits = s.lp, s.max_len, s.logits
        state = ActionMaskState(prompts, lay, max_len, dev)
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        diag = torch.arange(max_len, device=dev)
        gen = torch.full((bsz, n_steps), lay.pad_id, dtype=torch.long, device=dev)
        n_gen = torch.zeros(bsz, dtype=torch.long, device=dev)
        n_eoa = torch.zeros(bsz, dtype=torch.long, device=dev)
        done = torch.zeros(bsz, dtype=torch.bool, device=dev)
        for step in range(n_steps):
            nxt = choose_action_tokens(logits, n_gen % BLOCK, constrain, lay)
            live = ~done
            gen[:, step] = torch.where(live, nxt, lay.pad_id)
            n_gen += live
            n_eoa += live & (nxt == lay.eoa_id)
            done = done | (live & ((nxt == lay.end_of_turn_id) | (n_eoa >= n_blocks) | (n_gen >= limit)))
            if step == n_steps - 1 or (not constrain and bool(done.all())):  # the only host read (unconstrained)
                break
            feed = torch.where(done, lay.pad_id, nxt)
            row = state.push(feed, lp + step)
            row = torch.where(done[:, None], (diag == lp + step)[None], row)  # finished rows: own key only
            logits = s.step(feed[:, None], (lens + step)[:, None], row[:, None], logits_to_keep=1)[:, -1]
        n_list = n_gen.tolist()
        return [g[:n].tolist() for g, n in zip(gen.cpu(), n_list, strict=True)], s

    def _parallel(self, prompts, n_blocks: int, constrain: bool, t0: float) -> DecodeInfo:
        lay, dev = self.layout, self.device
        bsz, n = len(prompts), n_blocks
        n_pass = BLOCK if not constrain else BLOCK - 1  # unconstrained: one more pass to see what follows EOA
        s = self.start(prompts, n * n_pass)
        lp, max_len = s.lp, s.max_len
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        prompt_keep, independent = parallel_prompt_keep(prompts, lay)  # (B, Lp), (B,)
        slot = torch.arange(max_len, device=dev)
        j = torch.arange(n, device=dev)
        own = (slot[None] >= lp) & ((slot[None] - lp) % n == j[:, None])  # (n, max_len): block j's own slots
        base = own[None].expand(bsz, n, max_len).clone()
        base[:, :, :lp] = prompt_keep.to(dev)[:, None, :]
        first_ok = (s.logits.argmax(-1) == lay.boa_id).cpu()
        slots = torch.empty(bsz, n, BLOCK, dtype=torch.long, device=dev)
        slots[:, :, 0] = lay.boa_id
        after_eoa = None
        for t in range(n_pass):
            pos = lens[:, None] + BLOCK * j[None, :] + t  # flat positions of the sequential decode
            keep = base & (slot < lp + n * (t + 1))
            step_logits = s.step(slots[:, :, t], pos, keep)  # (B, n, V)
            if t == BLOCK - 1:
                after_eoa = step_logits.argmax(-1).cpu()
                break
            slots[:, :, t + 1] = choose_action_tokens(step_logits, t + 1, constrain, lay)
        slots = slots.cpu()
        gen = [slots[b].reshape(-1).tolist() for b in range(bsz)]
        if constrain:
            ok = independent
        else:
            structural = torch.tensor(sorted(lay.structural_ids()))
            inner_ok = ~torch.isin(slots[:, :, 1 : BLOCK - 1], structural).any(-1)  # (B, n)
            eoa_ok = slots[:, :, BLOCK - 1] == lay.eoa_id
            next_ok = after_eoa[:, :-1] == lay.boa_id  # block j+1 starts where block j's EOA row predicts BOA
            ok = independent & first_ok & (inner_ok & eoa_ok).all(1) & next_ok.all(1)
        bad = [b for b in range(bsz) if not bool(ok[b])]
        prefill_s = s.prefill_s
        if bad:  # the official sequential decode for these rows: exact tokens whatever the parallel pass made
            redo, s2 = self._sequential([prompts[b] for b in bad], n_blocks, constrain)
            prefill_s += s2.prefill_s
            for b, g in zip(bad, redo, strict=True):
                gen[b] = g
        return DecodeInfo("parallel", self.name, prefill_s, time.perf_counter() - t0 - prefill_s, n_pass,
                          [b in bad for b in range(bsz)], gen)

    # ---- imagination --------------------------------------------------------------------------------------
    def decode_image(self, prompts: Sequence[Sequence[int]], h: int, w: int, *, do_sample: bool = False,
                     temperature: float = 1.0, generator: torch.Generator | None = None,
                     n_images: int = 1, guidance_prompts: Sequence[Sequence[int]] | None = None,
                     guidance_scale: float = 1.0) -> DecodeInfo:
        """Constrained next-image decode: BOI, grid tokens and row-ends are forced, every code slot chooses
        among image ids; the codes ``(B, h, w)`` are in the returned info.

        ``n_images`` > 1 decodes that many images back to back (RynnVLA-002's world model answers
        ``[IMG third] [IMG wrist]``): each earlier image is closed with its last row-end and EOI and the next one
        opened with BOI and grid tokens, all forced, so every block is a valid image; the codes are then
        ``(B, n_images, h, w)``. The first image's schedule is the one-image schedule.

        ``guidance_prompts`` (one per prompt) with ``guidance_scale`` s != 1: classifier-free guidance. Both
        prompt sets decode side by side (one batch of 2B) and every code is chosen from
        ``g + s * (c - g)`` (``c``, ``g``: the prompt's and its guidance prompt's logits); the chosen code is fed to
        both halves, so the guidance row scores the same image under its own context."""
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
            raise ValueError(f"n_images={n_images!r}; expected an int >= 1")
        t0 = time.perf_counter()
        lay, dev = self.layout, self.device
        n_out = len(prompts)
        guided = guidance_prompts is not None and float(guidance_scale) != 1.0
        if guidance_prompts is not None and len(guidance_prompts) != n_out:
            raise ValueError(f"guidance_prompts has {len(guidance_prompts)} prompts; expected one per prompt ({n_out})")
        if guided:
            prompts = list(prompts) + list(guidance_prompts)  # type: ignore[arg-type]
        bsz = len(prompts)
        # schedule: feed BOI, grids, then every code but the last with a row-end after each full row; a code
        # is chosen after the last grid token and after every fed code (or its row-end). Between images the
        # last code, its row-end and EOI are fed before the next BOI.
        feeds: list[int | None] = []
        sample_after: list[bool] = []
        for i in range(n_images):
            if i:
                feeds += [None, lay.row_end_id, lay.eoi_id]
                sample_after += [False, False, False]
            feeds += [lay.boi_id, lay.grid_token(h), lay.grid_token(w)]
            sample_after += [False, False, True]
            for c in range(1, h * w):
                feeds.append(None)  # the code just chosen
                sample_after.append(c % w != 0)
                if c % w == 0:
                    feeds.append(lay.row_end_id)
                    sample_after.append(True)
        # the generated image is outside any action block, so its rows are plain causal over the real tokens
        s = self.start(prompts, len(feeds), mask_image_logits=False, causal=True)
        lp, max_len = s.lp, s.max_len
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        base = torch.ones(bsz, max_len, dtype=torch.bool, device=dev)
        base[:, :lp] = s.valid
        slot = torch.arange(max_len, device=dev)
        out = torch.empty(n_out, n_images * h * w, dtype=torch.long, device=dev)
        last_tok = None
        cursor = 0
        for k, (f, samp) in enumerate(zip(feeds, sample_after, strict=True)):
            feed = torch.full((bsz,), f, dtype=torch.long, device=dev) if f is not None else last_tok
            keep = base & (slot <= lp + k)
            logits = s.step(feed[:, None], (lens + k)[:, None], keep[:, None], logits_to_keep=1,
                            mask_image_logits=False)[:, -1]
            if samp:
                if guided:
                    cond, unc = logits[:n_out].float(), logits[n_out:].float()
                    logits = unc + float(guidance_scale) * (cond - unc)
                idx = choose_image_codes(logits, self._image_ids, do_sample=do_sample, temperature=temperature,
                                         generator=generator)
                out[:, cursor] = idx
                last_tok = self._image_ids[idx]
                if guided:
                    last_tok = torch.cat([last_tok, last_tok])
                cursor += 1
        codes = out.cpu().view(n_out, h, w) if n_images == 1 else out.cpu().view(n_out, n_images, h, w)
        return DecodeInfo("image", self.name, s.prefill_s, time.perf_counter() - t0 - s.prefill_s, s.passes,
                          [False] * n_out, codes=codes)


class DynamicDecoder(Decoder):
    """A growing ``DynamicCache``; masks cut to the keys cached so far (the original path)."""

    name = "dynamic"

    def _open(self, prompts, n_new, *, causal, mask_image_logits) -> DecodeSession:
        ids, valid, pos, keep = prompt_prefill_inputs(prompts, self.layout, causal=causal)
        lp = ids.shape[1]
        cache = DynamicCache(config=self.config)
        logits, dt = self._prefill_forward(ids, pos, keep, cache, mask_image_logits)
        return DecodeSession(self.step, cache, lp=lp, max_len=lp + n_new, logits=logits, valid=valid.to(self.device),
                             grows=True, prefill_s=dt)


class StaticDecoder(Decoder):
    """A preallocated ``StaticCache`` per (batch, bucketed length); ``capture`` replays CUDA graphs."""

    def __init__(self, model: Any, *, capture: bool = False, bucket: int = 256, capture_fn: Callable | None = None):
        super().__init__(model)
        self.name = "cuda_graph" if capture else "static"
        self.bucket = int(bucket)
        self.step = StepRunner(model, self.attn_implementation, self.dtype, capture=capture, capture_fn=capture_fn)
        self._caches: dict[tuple[int, int], StaticCache] = {}

    def _cache(self, bsz: int, needed: int) -> StaticCache:
        limit = int(self.config.max_position_embeddings)
        max_len = -(-needed // self.bucket) * self.bucket
        max_len = max(needed, min(max_len, limit)) if needed <= limit else needed
        key = (bsz, max_len)
        cache = self._caches.get(key)
        if cache is None:
            if len(self._caches) >= 4:  # bounded memory: drop the oldest sizes (and their graphs)
                self._caches.pop(next(iter(self._caches)))
                self.step.reset()
            cache = self._caches[key] = StaticCache(config=self.config, max_cache_len=max_len)
        for layer in cache.layers:  # rewind; stale keys stay but are masked until overwritten
            if layer.is_initialized:
                layer.cumulative_length.zero_()
        return cache

    def _open(self, prompts, n_new, *, causal, mask_image_logits) -> DecodeSession:
        ids, valid, pos, keep = prompt_prefill_inputs(prompts, self.layout, causal=causal)
        bsz, lp = ids.shape
        cache = self._cache(bsz, lp + n_new)
        max_len = cache.layers[0].max_cache_len
        full = torch.zeros(bsz, lp, max_len, dtype=torch.bool)
        full[:, :, :lp] = keep
        logits, dt = self._prefill_forward(ids, pos, full, cache, mask_image_logits)
        return DecodeSession(self.step, cache, lp=lp, max_len=max_len, logits=logits, valid=valid.to(self.device),
                             grows=False, prefill_s=dt)


def make_decoder(backend: str, model: Any, **kwargs: Any) -> Decoder:
    """The decoder for ``backend`` (one of :data:`BACKENDS`, ``"auto"`` resolved on the model's device).
    ``kwargs`` go to :class:`StaticDecoder` (``bucket``, ``capture_fn``)."""
    resolved = resolve_backend(backend, next(model.parameters()).device)
    if resolved == "dynamic":
        return DynamicDecoder(model)
    return StaticDecoder(model, capture=resolved == "cuda_graph", **kwargs)
