"""Token generation for WorldVLA: one :class:`Decoder` interface, three backends, one mask rule, one chooser.

* :mod:`.decoder`: :class:`Decoder` (sequential / parallel action chunks, constrained image decoding),
  :class:`DynamicDecoder`, :class:`StaticDecoder` (``capture=True``: CUDA graphs), :func:`make_decoder`,
  :class:`DecodeInfo` (what a call did: tokens, passes, fallbacks, times);
* :mod:`.masks`: prompt prefill rows and the incremental action-mask state, from the one rule in
  :func:`wvla_gym.model.processing_worldvla.hidden_action_spans`;
* :mod:`.choosers`: the action-token chooser and the image-code sampler;
* :mod:`.step`: one forward on a KV cache, eager or a replayed CUDA graph.

This package sits between :mod:`wvla_gym.model` and :mod:`wvla_gym.runtime` (which validates inputs, builds
prompts, calls a decoder and parses its tokens); it never imports the runtime.
"""

from __future__ import annotations

from .choosers import BLOCK, OFFICIAL_MAX_NEW_TOKENS, choose_action_tokens, choose_image_codes
from .decoder import (
    BACKENDS,
    DecodeInfo,
    Decoder,
    DecodeSession,
    DynamicDecoder,
    StaticDecoder,
    cuda_graphs_available,
    make_decoder,
    resolve_backend,
)
from .masks import ActionMaskState, parallel_prompt_keep, prompt_prefill_inputs
from .step import StepRunner

__all__ = [
    "BACKENDS",
    "BLOCK",
    "OFFICIAL_MAX_NEW_TOKENS",
    "ActionMaskState",
    "DecodeInfo",
    "DecodeSession",
    "Decoder",
    "DynamicDecoder",
    "StaticDecoder",
    "StepRunner",
    "choose_action_tokens",
    "choose_image_codes",
    "cuda_graphs_available",
    "make_decoder",
    "parallel_prompt_keep",
    "prompt_prefill_inputs",
    "resolve_backend",
]
