"""RynnVLA-002 prompts: the state block, two views per timestep, the two-view world model.

Action model (the released eval's mode ``his_2_third_view_wrist_w_state``)::

    BOS "What action should the robot take to {instruction}?" [15504 s1..s8 16004]
        [IMG third_{t-1}] [IMG wrist_{t-1}] [IMG third_t] [IMG wrist_t] 8710

(the first query of an episode has ``[IMG third_t] [IMG wrist_t]`` only). The answer is K discrete blocks
``[BOA a1..a7 EOA]`` then 8710, or, for the continuous head, nothing: the head reads the prompt's hidden states.

World model (training text by default)::

    BOS "{world prompt}" [IMG third_t] [IMG wrist_t] [BOA a_t EOA] 8710  ->  [IMG third_{t+1}] [IMG wrist_{t+1}] 8710
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .action_tokenizer import ActionTokenizer
from .configuration_rynnvla import STATE_DIM, STATE_END_ID, STATE_START_ID
from .processing_worldvla import IGNORE_INDEX, TextTokenizer, WorldVLAProcessor
from .token_layout import TokenLayout


class RynnVLAProcessor(WorldVLAProcessor):
    """:class:`WorldVLAProcessor` with the state block and the two-view prompts of RynnVLA-002.

    ``action_tokenizer`` carries the VLA's statistics (answers, continuous un-normalisation);
    ``world_action_tokenizer`` the statistics of the world model's input action block (WorldVLA's old ones in the
    released world-model pipeline), so the two never mix."""

    def __init__(
        self,
        layout: TokenLayout,
        text_tokenizer: TextTokenizer,
        action_tokenizer: ActionTokenizer,
        state_tokenizer: ActionTokenizer,
        world_action_tokenizer: ActionTokenizer,
        world_model_prompt: str = "train",
    ):
        super().__init__(layout, text_tokenizer, action_tokenizer, world_model_prompt)
        if state_tokenizer.action_dim != STATE_DIM:
            raise ValueError(
                f"state_tokenizer must have {STATE_DIM} dimensions, got {state_tokenizer.action_dim}"
            )
        self.state_tokenizer = state_tokenizer
        self.world_action_tokenizer = world_action_tokenizer

    def state_block(self, state: np.ndarray) -> list[int]:
        """``[15504, s1..s8, 16004]`` from a raw ``(8,)`` state (normalised, clipped and binned here, as the
        released tokenizer does; the eval passes the raw state)."""
        s = np.asarray(state, dtype=np.float64)
        if s.shape != (STATE_DIM,):
            raise ValueError(f"state must have shape ({STATE_DIM},), got {s.shape}")
        return [STATE_START_ID, *(int(t) for t in self.state_tokenizer.encode(s)), STATE_END_ID]

    # ---- action model ------------------------------------------------------------------------------------
    def action_prompt(  # type: ignore[override]  # the state is required here
        self, instruction: str, image_tokens: Sequence[Sequence[int]], *, state: np.ndarray | None = None
    ) -> list[int]:
        """``BOS + text + state block + images + EOT``; ``image_tokens`` in prompt order, i.e. per timestep
        (oldest first) the third-person image then the wrist image."""
        if state is None:
            raise ValueError("state is required: RynnVLA-002's prompt carries the 8-d proprio state block")
        ids = [
            self.layout.bos_id,
            *self.text_tokenizer.encode(self.action_text(instruction)),
            *self.state_block(state),
        ]
        for img in image_tokens:
            ids.extend(int(t) for t in img)
        ids.append(self.layout.end_of_turn_id)
        return ids

    def action_sample(  # type: ignore[override]
        self,
        instruction: str,
        image_tokens: Sequence[Sequence[int]],
        actions: np.ndarray,
        *,
        state: np.ndarray | None = None,
    ) -> tuple[list[int], list[int]]:
        """Training sample: prompt + K blocks + EOT; labels are -100 on the prompt (incl. its EOT)."""
        prompt = self.action_prompt(instruction, image_tokens, state=state)
        answer = [*self.action_blocks(actions), self.layout.end_of_turn_id]
        return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer

    # ---- world model -------------------------------------------------------------------------------------
    def world_action_block(self, action: np.ndarray, tokenizer: ActionTokenizer | None = None) -> list[int]:
        """``[BOA a1..a7 EOA]`` of the world model's input action (``tokenizer`` default: the world model's)."""
        tok = self.world_action_tokenizer if tokenizer is None else tokenizer
        return self.action_block(tok.encode(np.asarray(action).reshape(tok.action_dim)))

    def two_view_world_prompt(
        self,
        third_tokens: Sequence[int],
        wrist_tokens: Sequence[int],
        action: np.ndarray,
        tokenizer: ActionTokenizer | None = None,
    ) -> list[int]:
        """``BOS + text + [IMG third_t] + [IMG wrist_t] + [BOA a_t EOA] + EOT``; generation continues with
        ``[IMG third_{t+1}] [IMG wrist_{t+1}]``."""
        ids = [self.layout.bos_id, *self.text_tokenizer.encode(self.world_text())]
        ids.extend(int(t) for t in third_tokens)
        ids.extend(int(t) for t in wrist_tokens)
        ids.extend(self.world_action_block(action, tokenizer))
        ids.append(self.layout.end_of_turn_id)
        return ids

    def world_prompt(self, image_tokens, action):  # noqa: D102  (the one-view prompt does not exist here)
        raise NotImplementedError(
            "RynnVLA-002's world model takes both views: use two_view_world_prompt(third_tokens, wrist_tokens, action)"
        )
