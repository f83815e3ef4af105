"""One forward on a KV cache: eager, or a replayed CUDA graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..model.processing_worldvla import to_model_mask


class StepRunner:
    """Runs ``model(ids, pos, mask, cache)``; with ``capture`` the forward of each (cache, batch, query length,
    logits options) is captured once in a CUDA graph and replayed (static caches only).

    ``capture_fn`` is the capture primitive (default: :meth:`_cuda_capture`); tests pass a fake that records
    the static buffers and replays by calling the function, so the buffer plumbing runs on CPU too.
    The returned logits of a replayed graph live in a static buffer: use them before the next step."""

    def __init__(self, model: Any, attn_implementation: str, dtype: torch.dtype, *, capture: bool,
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

    def eager(self, ids: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor, cache: Any, *, logits_to_keep: int = 0,
              mask_image_logits: bool | None = None) -> torch.Tensor:
        """One forward, never captured (the prompt prefill: one per call, a new shape each time)."""
        mask = to_model_mask(keep, self.attn_implementation, self.dtype)
        return self._fwd(ids, pos, mask, cache, logits_to_keep, mask_image_logits)

    def __call__(self, ids: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor, cache: Any, *,
                 logits_to_keep: int = 0, mask_image_logits: bool | None = None) -> torch.Tensor:
        if not self.capture:
            return self.eager(ids, pos, keep, cache, logits_to_keep=logits_to_keep,
                              mask_image_logits=mask_image_logits)
        mask = to_model_mask(keep, self.attn_implementation, self.dtype)
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
