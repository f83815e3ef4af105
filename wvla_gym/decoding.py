"""Static-cache decoding: preallocated KV cache, masks and positions by tensor ops, optional CUDA graph step.

:class:`WorldVLARuntime` picks a backend with ``decode_backend``:

* ``"dynamic"``: the original path (``DynamicCache``, mask rows rebuilt in Python per token); bit-for-bit what
  the package produced before this module existed;
* ``"static"``: this module, eager. A ``StaticCache`` sized once per call (rounded up to ``bucket`` slots and
  reused across calls of the same batch size), every per-token quantity kept on the device: the action
  attention mask row is updated incrementally (:class:`ActionMaskState`, O(1) tensor ops per token, no Python
  scan of the sequence), positions are ``prompt length + step``, constrained choices are ``torch.where`` on
  the device. The host reads tokens only where it must: never for constrained action chunks and greedy
  imagination (one read at the end), once per step for unconstrained action decoding (to stop at
  end-of-turn) and for sampled imagination (the sampler runs on the generator's device, as before);
* ``"cuda_graph"``: ``"static"`` with the one-token (and the parallel ``n``-token) forward captured in a CUDA
  graph per (cache, shape) and replayed; everything else is the same code as ``"static"``;
* ``"auto"`` (default): ``"cuda_graph"`` on a CUDA device when graphs are available, else ``"dynamic"``, so
  CPU results never change.

Equality: the static cache keeps the keys in the same slots as the dynamic one (append order; left-padded
prompts share the prompt length), and the masks are the same boolean rows padded with False up to the cache
length. Attention over the longer, masked key axis is not guaranteed to round identically, so tokens are equal
(tests/test_static_decode.py), logits may differ in the last float bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers.cache_utils import StaticCache

from .model.processing_worldvla import build_action_attention_mask, pad_left, to_model_mask
from .model.token_layout import TokenLayout

BACKENDS = ("auto", "dynamic", "static", "cuda_graph")
BLOCK = 9  # BOA + 7 values + EOA
OFFICIAL_MAX_NEW_TOKENS = 300  # 25 * 12 in the reference eval
_NONE = -1


def cuda_graphs_available(device: torch.device) -> bool:
    """CUDA graphs can be captured on ``device`` (a CUDA device with a working runtime)."""
    return device.type == "cuda" and torch.cuda.is_available() and hasattr(torch.cuda, "CUDAGraph")


def resolve_backend(requested: str, device: torch.device) -> str:
    """``"auto"`` -> ``"cuda_graph"`` on CUDA with graphs, else ``"dynamic"``; explicit choices are checked."""
    if requested not in BACKENDS:
        raise ValueError(f"decode_backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "auto":
        return "cuda_graph" if cuda_graphs_available(device) else "dynamic"
    if requested == "cuda_graph" and not cuda_graphs_available(device):
        raise ValueError(f"decode_backend='cuda_graph' needs a CUDA device with CUDA graphs; the model is on {device}")
    return requested


def prompt_prefill_inputs(prompts: Sequence[Sequence[int]], layout: TokenLayout, *, causal: bool = False):
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


# ---- the action attention mask, incrementally ---------------------------------------------------------------
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

    Equal to ``runtime.action_mask_row`` on the prefix (tested on random structural garbage too). The rule
    (protocol §5): the token's own action block(s) are the BOAs after the last EOA; if the latest of them starts
    after the end of the last image (an open image ends at the token), every earlier action span is hidden.
    Earlier spans are the closed ones (``closed`` slots) and, when several BOAs are open, ``[first_open, now]``.
    All positions are cache slots (a row's sequence index + its left padding)."""

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


# ---- one forward on a static cache: eager or a replayed CUDA graph -----------------------------------------
class StepRunner:
    """Runs ``model(ids, pos, mask, cache)`` on a static cache; with ``capture`` the forward of each
    (cache, batch, query length, logits options) is captured once in a CUDA graph and replayed.

    ``capture_fn`` is the capture primitive (default: :meth:`_cuda_capture`); tests pass a fake that records
    the static buffers and replays by calling the function, so the buffer plumbing runs on CPU too.
    The returned logits of a replayed graph live in a static buffer: use them before the next step."""

    def __init__(self, model, attn_implementation: str, dtype: torch.dtype, *, capture: bool,
                 capture_fn: Callable | None = None):
        self.model = model
        self.attn_implementation = attn_implementation
        self.dtype = dtype
        self.capture = capture
        self.capture_fn = capture_fn or self._cuda_capture
        self.graphs: dict[tuple, Any] = {}
        self.pool = None

    def reset(self) -> None:
        self.graphs.clear()

    def _fwd(self, ids, pos, mask, cache, logits_to_keep, mask_image_logits) -> torch.Tensor:
        return self.model(
            input_ids=ids, position_ids=pos, attention_mask=mask, cache=cache, use_cache=True,
            logits_to_keep=logits_to_keep, mask_image_logits=mask_image_logits,
        ).logits

    def __call__(self, ids, pos, keep, cache, *, logits_to_keep=0, mask_image_logits=None) -> torch.Tensor:
        mask = to_model_mask(keep, self.attn_implementation, self.dtype)
        if not self.capture:
            return self._fwd(ids, pos, mask, cache, logits_to_keep, mask_image_logits)
        key = (id(cache), tuple(ids.shape), tuple(mask.shape), mask.dtype, logits_to_keep, mask_image_logits)
        g = self.graphs.get(key)
        if g is None:
            bufs = {"ids": ids.clone(), "pos": pos.clone(), "mask": mask.clone()}

            def run():
                return self._fwd(bufs["ids"], bufs["pos"], bufs["mask"], cache, logits_to_keep, mask_image_logits)

            g = self.graphs[key] = (bufs, self.capture_fn(run, cache))
        bufs, replay = g
        bufs["ids"].copy_(ids)
        bufs["pos"].copy_(pos)
        bufs["mask"].copy_(mask)
        return replay()

    def _cuda_capture(self, run: Callable[[], torch.Tensor], cache) -> Callable[[], torch.Tensor]:
        """Warm up on a side stream, capture ``run`` into a CUDA graph, restore the cache's write position
        (the warm-up wrote the slots the next replay writes again); returns the replay function."""
        lengths = [layer.cumulative_length.clone() for layer in cache.layers]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
                for layer, n in zip(cache.layers, lengths, strict=True):
                    layer.cumulative_length.copy_(n)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool):
            out = run()
        for layer, n in zip(cache.layers, lengths, strict=True):  # capture does not run kernels; be explicit
            layer.cumulative_length.copy_(n)

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        return replay


class StaticDecoder:
    """Action chunks (sequential, parallel) and imagined frames on a preallocated cache. See the module doc."""

    def __init__(self, runtime, *, capture: bool, bucket: int = 256, capture_fn: Callable | None = None):
        self.rt = runtime
        self.model = runtime.model
        self.layout: TokenLayout = runtime.layout
        self.device = runtime.device
        self.bucket = int(bucket)
        self.step = StepRunner(self.model, runtime.attn_implementation, runtime.dtype, capture=capture,
                               capture_fn=capture_fn)
        self._caches: dict[tuple[int, int], StaticCache] = {}
        lay = self.layout
        self._image_ids = torch.as_tensor(lay.image_ids, device=self.device)
        self._action_first = int(lay.action_first_id)
        self._n_action = len(list(lay.action_ids))
        self.last_prefill_s = 0.0

    def _cache(self, bsz: int, needed: int) -> StaticCache:
        limit = int(self.rt.config.max_position_embeddings)
        max_len = -(-needed // self.bucket) * self.bucket
        max_len = max(needed, min(max_len, limit)) if needed <= limit else needed
        key = (bsz, max_len)
        cache = self._caches.get(key)
        if cache is None:
            if len(self._caches) >= 4:  # bounded memory: drop the oldest sizes (and their graphs)
                self._caches.pop(next(iter(self._caches)))
                self.step.reset()
            cache = self._caches[key] = StaticCache(config=self.rt.config, max_cache_len=max_len)
        for layer in cache.layers:  # rewind; stale keys stay but are masked until overwritten
            if layer.is_initialized:
                layer.cumulative_length.zero_()
        return cache

    def prefill(self, prompts, needed_new: int, *, mask_image_logits=None, causal: bool = False):
        """Prompt forward into a fresh static cache; returns ``(cache, last logits (B, V), valid (B, Lp), max_len)``."""
        import time

        ids, valid, pos, keep = prompt_prefill_inputs(prompts, self.layout, causal=causal)
        bsz, lp = ids.shape
        cache = self._cache(bsz, lp + needed_new)
        max_len = cache.layers[0].max_cache_len
        full = torch.zeros(bsz, lp, max_len, dtype=torch.bool)
        full[:, :, :lp] = keep
        mask = to_model_mask(full.to(self.device), self.rt.attn_implementation, self.rt.dtype)
        t0 = time.perf_counter()
        logits = self.model(
            input_ids=ids.to(self.device), position_ids=pos.to(self.device), attention_mask=mask, cache=cache,
            use_cache=True, logits_to_keep=1, mask_image_logits=mask_image_logits,
        ).logits
        self.last_prefill_s = time.perf_counter() - t0
        return cache, logits[:, -1], valid.to(self.device), max_len

    def _choose(self, logits: torch.Tensor, slot_in_block: torch.Tensor | int, constrain: bool) -> torch.Tensor:
        if not constrain:
            return logits.argmax(-1)
        lay = self.layout
        vals = logits[..., self._action_first : self._action_first + self._n_action].argmax(-1) + self._action_first
        out = torch.where(torch.as_tensor(slot_in_block, device=logits.device) == 0, lay.boa_id, vals)
        return torch.where(torch.as_tensor(slot_in_block, device=logits.device) == BLOCK - 1, lay.eoa_id, out)

    # ---- action chunks ----------------------------------------------------------------------------------
    def decode_sequential(self, prompts, n_blocks: int, constrain: bool, *, max_new_tokens=None) -> list[list[int]]:
        lay, dev = self.layout, self.device
        bsz = len(prompts)
        limit = max_new_tokens or max(OFFICIAL_MAX_NEW_TOKENS, BLOCK * n_blocks + 1)
        n_steps = BLOCK * n_blocks if constrain else limit  # constrained: every row stops at the n-th EOA
        cache, logits, _, max_len = self.prefill(prompts, n_steps)
        lp = max(len(p) for p in prompts)
        state = ActionMaskState(prompts, lay, max_len, dev)
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        gen = torch.full((bsz, n_steps), lay.pad_id, dtype=torch.long, device=dev)
        n_gen = torch.zeros(bsz, dtype=torch.long, device=dev)
        n_eoa = torch.zeros(bsz, dtype=torch.long, device=dev)
        done = torch.zeros(bsz, dtype=torch.bool, device=dev)
        for step in range(n_steps):
            nxt = self._choose(logits, n_gen % BLOCK, constrain)
            live = ~done
            gen[:, step] = torch.where(live, nxt, lay.pad_id)
            n_gen += live
            n_eoa += live & (nxt == lay.eoa_id)
            done = done | (live & ((nxt == lay.end_of_turn_id) | (n_eoa >= n_blocks) | (n_gen >= limit)))
            if step == n_steps - 1 or (not constrain and bool(done.all())):  # the only host read (unconstrained)
                break
            feed = torch.where(done, lay.pad_id, nxt)
            row = state.push(feed, lp + step)
            row = torch.where(done[:, None], self._diag(max_len, lp + step), row)  # finished rows: own key only
            logits = self.step(feed[:, None], (lens + step)[:, None], row[:, None], cache, logits_to_keep=1)[:, -1]
        n_list = n_gen.tolist()
        return [g[:n].tolist() for g, n in zip(gen.cpu(), n_list, strict=True)]

    def _diag(self, max_len: int, slot: int) -> torch.Tensor:
        return (torch.arange(max_len, device=self.device) == slot)[None]

    def decode_parallel(self, prompts, n_blocks: int, constrain: bool):
        """As the runtime's parallel decode; returns ``(slots (B, n, 9), after_eoa, first_ok, independent, n_pass)``
        (cpu tensors; the runtime's ``_finish_parallel`` verifies and falls back as for every backend)."""
        lay, dev = self.layout, self.device
        bsz, n = len(prompts), n_blocks
        n_pass = BLOCK if not constrain else BLOCK - 1
        cache, logits, _, max_len = self.prefill(prompts, n * n_pass)
        lp = max(len(p) for p in prompts)
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        prompt_keep, independent = self.rt._parallel_prompt_keep(prompts)  # (B, Lp), (B,)
        prompt_keep = prompt_keep.to(dev)
        s = torch.arange(max_len, device=dev)
        j = torch.arange(n, device=dev)
        own = (s[None] >= lp) & ((s[None] - lp) % n == j[:, None])  # (n, max_len): block j's own slots
        base = own[None].expand(bsz, n, max_len).clone()
        base[:, :, :lp] = prompt_keep[:, None, :]
        first_ok = logits.argmax(-1) == lay.boa_id
        slots = torch.empty(bsz, n, BLOCK, dtype=torch.long, device=dev)
        slots[:, :, 0] = lay.boa_id
        after_eoa = None
        for t in range(n_pass):
            pos = lens[:, None] + BLOCK * j[None, :] + t
            keep = base & (s < lp + n * (t + 1))
            step_logits = self.step(slots[:, :, t], pos, keep, cache)  # (B, n, V)
            if t == BLOCK - 1:
                after_eoa = step_logits.argmax(-1).cpu()
                break
            slots[:, :, t + 1] = self._choose(step_logits, t + 1, constrain)
        return slots.cpu(), after_eoa, first_ok.cpu(), independent, n_pass

    # ---- imagination ------------------------------------------------------------------------------------
    def imagine_codes(self, prompts, h: int, w: int, *, do_sample=False, temperature=1.0, generator=None):
        """Codes ``(B, h*w)`` (cpu) of the constrained next-image decode (same schedule as the dynamic path)."""
        lay, dev = self.layout, self.device
        bsz = len(prompts)
        # schedule: feed BOI, grids, then every code but the last with a row-end after each full row; a code
        # is chosen after the last grid token and after every fed code (or its row-end)
        feeds: list[int | None] = [lay.boi_id, lay.grid_token(h), lay.grid_token(w)]
        sample_after = [False, False, True]
        for c in range(1, h * w):
            feeds.append(None)  # the code just chosen
            sample_after.append(c % w != 0)
            if c % w == 0:
                feeds.append(lay.row_end_id)
                sample_after.append(True)
        cache, logits, valid, max_len = self.prefill(prompts, len(feeds), mask_image_logits=False, causal=True)
        lp = valid.shape[1]
        lens = torch.tensor([len(p) for p in prompts], device=dev)
        base = torch.ones(bsz, max_len, dtype=torch.bool, device=dev)
        base[:, :lp] = valid
        s = torch.arange(max_len, device=dev)
        out = torch.empty(bsz, h * w, dtype=torch.long, device=dev)
        last_tok = None
        cursor = 0
        for k, (f, samp) in enumerate(zip(feeds, sample_after, strict=True)):
            feed = torch.full((bsz,), f, dtype=torch.long, device=dev) if f is not None else last_tok
            keep = base & (s <= lp + k)
            logits = self.step(feed[:, None], (lens + k)[:, None], keep[:, None], cache, logits_to_keep=1,
                               mask_image_logits=False)[:, -1]
            if samp:
                cand = logits[:, self._image_ids].float()
                if do_sample:
                    gdev = generator.device if generator is not None else torch.device("cpu")
                    probs = torch.softmax(cand / temperature, dim=-1).to(gdev)
                    idx = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(dev)
                else:
                    idx = cand.argmax(-1)
                out[:, cursor] = idx
                last_tok = self._image_ids[idx]
                cursor += 1
        return out.cpu()
