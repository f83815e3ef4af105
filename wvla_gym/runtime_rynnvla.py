"""The runtime of a RynnVLA-002 checkpoint: two views and a state, two action heads, a two-view world model.

:class:`RynnVLARuntime` is what ``WorldVLARuntime.from_pretrained(path)`` returns for a RynnVLA-002 checkpoint
(``load_runtime`` and ``WorldVLAAgent.from_pretrained`` go through it). It keeps WorldVLA's machinery (decoders,
image tokenizer, input checks) and changes what RynnVLA-002 changes (docs/rynnvla002.md):

* :meth:`predict_action_chunk` takes the third-person history, the wrist history (the previous *env step* and
  the current one; the current one only at an episode's first query) and the raw 8-d state, and returns the
  chunk of either head:

  - ``head="continuous"``: one causal forward over the prompt, the final-normed hidden states of every prompt
    position into the action head, ``(K, 7)`` normalised actions un-normalised with the VLA's min/max and
    **not clipped** (the released eval hands them to the env as they are);
  - ``head="discrete"``: WorldVLA's action-mask decoding (greedy, unconstrained by default like the release),
    then the released parse: BOA..EOA spans in order, up to the first whose length is not 7.

* :meth:`imagine_views` is the two-view world model: ``[third_t, wrist_t, a_t] -> [third_{t+1}, wrist_{t+1}]``,
  with the training prompt text (``config.world_model_prompt``), constrained decoding so that both blocks are
  valid images, and the input action tokenised with ``action_norm`` ("worldvla" by default: the old WorldVLA
  statistics, as the released world-model eval does; "rynnvla": the VLA's).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .generation import BLOCK, DecodeInfo
from .model.configuration_rynnvla import STATE_DIM, WORLD_ACTION_NORMS
from .model.modeling_rynnvla import RynnVLAForConditionalGeneration
from .model.processing_rynnvla import RynnVLAProcessor
from .model.processing_worldvla import TextTokenizer
from .protocol import check_action
from .runtime import ActionChunk, ImaginedFrames, MalformedActionOutput, WorldVLARuntime, _as_array
from .utils.validation import check_bool, check_choice, check_float, check_int, fail

__all__ = ["ACTION_HEADS", "RynnVLARuntime"]

#: ``head=`` values: the continuous action transformer (RynnVLA-002's best: 97.4 % LIBERO) or discrete tokens.
ACTION_HEADS = ("continuous", "discrete")


class RynnVLARuntime(WorldVLARuntime):
    """A loaded RynnVLA-002 checkpoint: ``predict_action_chunk`` (both heads) and ``imagine_views``.

    ``decode_backend`` / ``vq_batch``: as for :class:`~wvla_gym.runtime.WorldVLARuntime` (they concern the
    discrete head and the world model; the continuous head is one plain forward)."""

    views = 2
    heads = ACTION_HEADS
    model: RynnVLAForConditionalGeneration

    def __init__(
        self,
        model: RynnVLAForConditionalGeneration,
        text_tokenizer: TextTokenizer,
        *,
        decode_backend: str = "auto",
        vq_batch: bool | str = "auto",
    ):
        if not isinstance(model, RynnVLAForConditionalGeneration):
            raise fail(
                "model",
                model,
                "a RynnVLAForConditionalGeneration",
                "load a RynnVLA-002 checkpoint with WorldVLARuntime.from_pretrained(path)",
            )
        super().__init__(model, text_tokenizer, decode_backend=decode_backend, vq_batch=vq_batch)
        cfg = self.config
        self.time_horizon: int = int(cfg.time_horizon)
        self.state_dim: int = STATE_DIM
        self.state_tokenizer = cfg.state_tokenizer()
        self._world_action_tokenizers = {n: cfg.world_action_tokenizer(n) for n in WORLD_ACTION_NORMS}
        self.processor = RynnVLAProcessor(
            self.layout,
            text_tokenizer,
            self.action_tokenizer,
            self.state_tokenizer,
            self._world_action_tokenizers[cfg.world_action_norm],
            cfg.world_model_prompt,
        )

    @property
    def world_action_norm(self) -> str:
        """The default statistics of the world model's input actions (``config.world_action_norm``)."""
        return str(self.config.world_action_norm)

    # ---- input handling ------------------------------------------------------------------------------------
    def _states(self, state: Any, batch: int) -> np.ndarray:
        """Raw proprio states ``(B, 8)`` float64 (``(8,)`` accepted for B = 1)."""
        expected = (
            f"a real array ({batch}, {STATE_DIM}) of raw states (eef pos 3, axis-angle 3, gripper qpos 2)"
        )
        if state is None:
            raise fail("state", state, expected, "obs['state'] of WorldVLA-LIBERO-v0")
        state = _as_array("state", state)
        try:
            a = np.asarray(state)
        except (TypeError, ValueError) as e:
            raise ValueError(f"state must be {expected}; got {type(state).__name__} ({e})") from e
        if a.dtype.kind not in "fiu":
            raise ValueError(f"state must be {expected}; got dtype {a.dtype}")
        if a.shape == (STATE_DIM,) and batch == 1:
            a = a[None]
        if a.shape != (batch, STATE_DIM):
            raise ValueError(f"state must be {expected}; got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"state must be {expected}; it holds NaN or inf")
        return a.astype(np.float64)

    def action_prompts(
        self, image_history: Any, instruction: str | list[str], *, wrist_history: Any, state: Any
    ) -> list[list[int]]:
        """The released prompts, one per row: ``BOS text [state] [third_{t-1}][wrist_{t-1}][third_t][wrist_t] EOT``.

        ``image_history`` / ``wrist_history``: per row 1..M frames of each view, oldest first (the same count
        for both); ``state``: ``(B, 8)`` raw states of the current step."""
        if wrist_history is None:
            raise fail(
                "wrist_history",
                wrist_history,
                "the wrist frames matching image_history",
                "RynnVLA-002's prompt interleaves third-person and wrist views",
            )
        hist = self._image_history(image_history)
        wrists = self._image_history(wrist_history, "wrist_history")
        if len(wrists) != len(hist):
            raise ValueError(
                f"wrist_history has {len(wrists)} rows and image_history {len(hist)}; expected the same B"
            )
        for b, (th, wr) in enumerate(zip(hist, wrists, strict=True)):
            if len(th) != len(wr):
                raise ValueError(
                    f"wrist_history[{b}] has {len(wr)} frames and image_history[{b}] {len(th)}; expected one wrist "
                    "frame per third-person frame (the same env steps)"
                )
        instr = self._instructions(instruction, len(hist))
        states = self._states(state, len(hist))
        # prompt order: per timestep (oldest first) the third-person image, then the wrist image
        flat = [
            f for th, wr in zip(hist, wrists, strict=True) for pair in zip(th, wr, strict=True) for f in pair
        ]
        toks = self._encode_frames(flat)
        prompts, i = [], 0
        for th, text, st in zip(hist, instr, states, strict=True):
            n = 2 * len(th)
            prompts.append(self.processor.action_prompt(text, toks[i : i + n], state=st))
            i += n
        return prompts

    def _parse_released(self, info: DecodeInfo, n_blocks: int) -> np.ndarray | list[np.ndarray]:
        """The released discrete parse: every BOA..EOA span (the last BOA before an EOA opens it), kept in order up
        to the first whose length is not 7, at most ``n_blocks``; de-tokenised through the clamp."""
        lay, chunks = self.layout, []
        for b, g in enumerate(info.tokens):
            spans, start = [], None
            for i, t in enumerate(g):
                if t == lay.boa_id:
                    start = i
                elif t == lay.eoa_id:
                    if start is not None:
                        spans.append(g[start + 1 : i])
                    start = None
            good: list[list[int]] = []
            for span in spans:
                if len(span) != self.action_dim:
                    break
                good.append(span)
            good = good[:n_blocks]
            if not good:
                raise MalformedActionOutput(
                    f"batch row {b}: the model produced no well-formed action block (generated {len(g)} tokens). An "
                    "untrained or mismatched checkpoint does this; pass constrain_actions=True to force the block "
                    "structure, or use head='continuous'.",
                    info,
                )
            chunks.append(self.action_tokenizer.decode(np.asarray(good)).astype(np.float32))
        if len({len(c) for c in chunks}) == 1:
            return np.stack(chunks)
        return chunks  # the released eval runs a short chunk as it is; rows then differ in length

    # ---- public API ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_action_chunk(  # type: ignore[override]  # adds the wrist history, the state and the head
        self,
        image_history: Any,
        instruction: str | list[str],
        *,
        wrist_history: Any = None,
        state: Any = None,
        head: str = "continuous",
        decode: str = "parallel",
        constrain_actions: bool | None = None,
        n_actions: int | None = None,
        return_info: bool = False,
    ) -> np.ndarray | list[np.ndarray] | ActionChunk:
        """Action chunk ``(B, n, 7)`` float32 (de-normalised with the VLA's min/max) from the views' histories and
        the current state.

        ``n_actions`` (default K = ``time_horizon``): the continuous head always predicts K and the first
        ``n_actions`` are returned; the discrete decode stops after ``n_actions`` blocks. Continuous actions are
        returned exactly as the head gives them, not clipped to [-1, 1]. The discrete parse is the released one
        (spans up to the first malformed one), so a row may come back shorter than ``n_actions``; rows of unequal
        length are returned as a list of ``(n_b, 7)`` arrays. ``decode`` / ``constrain_actions``: the discrete
        head's options (see :class:`~wvla_gym.runtime.WorldVLARuntime`). ``return_info=True`` returns an
        :class:`~wvla_gym.runtime.ActionChunk` (continuous: ``info.mode == "continuous"``, no tokens)."""
        head = check_choice("head", head, ACTION_HEADS)
        decode = check_choice("decode", decode, ["parallel", "sequential"])
        constrain = check_bool("constrain_actions", constrain_actions, optional=True)
        if constrain is None:
            constrain = bool(getattr(self.config, "constrain_actions", False))
        k = self.time_horizon
        n = check_int(
            "n_actions",
            n_actions,
            lo=1,
            hi=k if head == "continuous" else None,
            optional=True,
            hint=f"the continuous head predicts time_horizon={k} actions" if head == "continuous" else "",
        )
        n = k if n is None else n
        return_info = check_bool("return_info", return_info)
        prompts = self.action_prompts(image_history, instruction, wrist_history=wrist_history, state=state)
        if head == "discrete":
            self._check_prompt_lengths(prompts, BLOCK * n, "predict_action_chunk")
            info = self.decoder.decode_actions(prompts, n, constrain=constrain, mode=decode)
            actions = self._parse_released(info, n)
            return ActionChunk(actions, info) if return_info else actions
        self._check_prompt_lengths(prompts, 1, "predict_action_chunk")  # the release appends one BOA
        t0 = time.perf_counter()
        rows = []
        for p in prompts:  # one prompt per forward: the head reads unpadded context, as released (batch 1)
            ids = torch.tensor([p], dtype=torch.long, device=self.device)
            rows.append(self.model.continuous_actions(ids)[0, :n].float().cpu().numpy())
        actions = self.action_tokenizer.unnormalize(np.stack(rows)).astype(np.float32)
        info = DecodeInfo(
            "continuous",
            "forward",
            time.perf_counter() - t0,
            0.0,
            1,
            [False] * len(prompts),
            [[] for _ in prompts],
        )
        return ActionChunk(actions, info) if return_info else actions

    # ---- world model ---------------------------------------------------------------------------------------
    def _view_frames(self, name: str, value: Any) -> np.ndarray:
        r = self.resolution
        value = _as_array(name, value)
        try:
            a = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{name} must be uint8 frames (B, {r}, {r}, 3); got {type(value).__name__} ({e})"
            ) from e
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != (r, r, 3) or not len(a):
            raise ValueError(
                f"{name} must be uint8 frames (B, {r}, {r}, 3) with B >= 1; got {a.dtype} {a.shape}"
            )
        return a

    def _view_codes(self, name: str, value: Any) -> np.ndarray:
        h, w = self.image_tokenizer.latent_shape(self.resolution, self.resolution)
        n = self.image_tokenizer.vqgan.config.num_embeddings
        value = _as_array(name, value)
        try:
            c = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{name} must be integer codes (B, {h}, {w}); got {type(value).__name__} ({e})"
            ) from e
        if (
            c.ndim != 3
            or c.shape[1:] != (h, w)
            or not len(c)
            or c.dtype.kind not in "iu"
            or c.min() < 0
            or c.max() >= n
        ):
            raise ValueError(
                f"{name} must be integer codes in [0, {n}) of shape (B, {h}, {w}); got {c.dtype} {c.shape}"
            )
        return c.astype(np.int64)

    def _view_actions(self, actions: Any, batch: int) -> np.ndarray:
        dim = self.action_dim
        actions = _as_array("actions", actions)
        if isinstance(actions, np.ma.MaskedArray):
            raise ValueError(
                f"actions must be a plain real numeric array ({batch}, {dim}), not a numpy masked array"
            )
        try:
            a = np.asarray(actions)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"actions must be a real numeric array ({batch}, {dim}); got {type(actions).__name__}"
            ) from e
        if a.shape == (dim,) and batch == 1:
            a = a[None]
        if a.shape != (batch, dim):
            raise ValueError(
                f"actions must be a real numeric array ({batch}, {dim}), one per row; got shape {a.shape}"
            )
        try:  # as the envs check them: real numbers, finite, in [-1, 1] (never clipped)
            for row in a:
                check_action(row)
        except ValueError as e:
            raise ValueError(f"actions: {e}") from e
        return a.astype(np.float64)

    def world_prompts(
        self,
        images: Any,
        wrist_images: Any,
        actions: Any,
        *,
        codes: Any = None,
        wrist_codes: Any = None,
        action_norm: str | None = None,
    ) -> list[list[int]]:
        """The two-view world-model prompts (see :meth:`imagine_views` for the arguments)."""
        if (images is None) != (wrist_images is None) or (codes is None) != (wrist_codes is None):
            raise ValueError("pass images with wrist_images (frames), or codes with wrist_codes (VQ codes)")
        if (images is None) == (codes is None):
            raise ValueError(
                "pass exactly one of images + wrist_images (uint8 frames) and codes + wrist_codes"
            )
        norm = (
            self.world_action_norm
            if action_norm is None
            else check_choice("action_norm", action_norm, sorted(WORLD_ACTION_NORMS))
        )
        if codes is not None:
            third, wrist = self._view_codes("codes", codes), self._view_codes("wrist_codes", wrist_codes)
        else:
            third, wrist = (
                self._view_frames("images", images),
                self._view_frames("wrist_images", wrist_images),
            )
        if len(third) != len(wrist):
            raise ValueError(
                f"the third-person and wrist inputs have {len(third)} and {len(wrist)} rows; expected the same B"
            )
        acts = self._view_actions(actions, len(third))
        if codes is not None:
            toks = self.image_tokenizer.codes_to_tokens(
                torch.as_tensor(np.concatenate([third, wrist]))
            ).tolist()
        else:
            toks = self._encode_frames([*third, *wrist])
        b = len(third)
        tok = self._world_action_tokenizers[norm]
        return [self.processor.two_view_world_prompt(toks[i], toks[b + i], acts[i], tok) for i in range(b)]

    @torch.inference_mode()
    def imagine_views(
        self,
        images: Any,
        wrist_images: Any,
        actions: Any,
        *,
        codes: Any = None,
        wrist_codes: Any = None,
        action_norm: str | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        return_info: bool = False,
    ) -> np.ndarray | ImaginedFrames:
        """Next frames of both views ``(B, 2, R, R, 3)`` uint8 (``[:, 0]`` third-person, ``[:, 1]`` wrist) from
        the current frames ``images`` / ``wrist_images`` (uint8 ``(B, R, R, 3)``) and actions ``(B, 7)`` in
        [-1, 1] (RynnVLA-002's world model takes one step of history).

        ``codes`` / ``wrist_codes`` (with ``images=wrist_images=None``): the current frames as VQ codes
        ``(B, h, w)`` instead of pixels. ``action_norm``: statistics of the input action block (None: the config's
        ``world_action_norm``, "worldvla" unless overridden at load). Decoding is constrained: BOI, grid tokens,
        row-ends and EOI are forced and every code slot is an image id, so both blocks are valid images (the
        released greedy decode, unconstrained, often is not). Greedy unless ``do_sample`` (seeded by ``generator``).
        ``return_info=True`` returns :class:`~wvla_gym.runtime.ImaginedFrames` with ``info.codes`` ``(B, 2, h, w)``."""
        do_sample = check_bool("do_sample", do_sample)
        temperature = check_float("temperature", temperature, gt=0 if do_sample else None)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise fail(
                "generator", generator, "None or a torch.Generator", "e.g. torch.Generator().manual_seed(42)"
            )
        return_info = check_bool("return_info", return_info)
        prompts = self.world_prompts(
            images, wrist_images, actions, codes=codes, wrist_codes=wrist_codes, action_norm=action_norm
        )
        r = self.resolution
        h, w = self.image_tokenizer.latent_shape(r, r)
        # fed after the prompt: the whole first image, then the second's BOI, grids, codes but the last, row-ends
        self._check_prompt_lengths(prompts, self.image_seq_len + 3 + (h * w - 1) + (h - 1), "imagine_views")
        info = self.decoder.decode_image(
            prompts, h, w, n_images=2, do_sample=do_sample, temperature=temperature, generator=generator
        )
        b = len(prompts)
        out = self.image_tokenizer.decode_codes(info.codes.reshape(b * 2, h, w)).reshape(b, 2, r, r, 3)
        return ImaginedFrames(out, info) if return_info else out

    def imagine(self, images: Any, actions: Any, **kwargs: Any) -> np.ndarray:  # type: ignore[override]
        raise NotImplementedError(
            "a RynnVLA-002 world model predicts the third-person and the wrist view together: call "
            "imagine_views(images, wrist_images, actions) (WorldVLA-Imagined-v0 does); the batched "
            "ImaginedVectorEnv and the world-model metrics support one-view (WorldVLA) world models only"
        )
