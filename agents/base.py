"""A base class for chunked policies: ``act`` served from a queue refilled by ``predict_chunk``.

Most VLA policies predict K actions at once and execute them open-loop. Subclasses write only the model call::

    class MyPolicy(ChunkQueuePolicy):
        def predict_chunk(self, obs):          # (K, 7) float actions in [-1, 1]
            return self.model(obs["image"])

and get the :class:`wvla_gym.policy.Policy` protocol: ``reset(*, seed=None)`` (clears the queue, then calls
:meth:`on_reset`), ``act(obs)`` (pops the queue, refilling it when empty) and ``act_chunk(obs)`` (a fresh chunk).
:meth:`observe` sees every observation, including steps served from the queue (frame histories go there).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from wvla_gym.protocol import ACTION_DIM
from wvla_gym.utils.validation import check_int

__all__ = ["ChunkQueuePolicy"]


class ChunkQueuePolicy:
    """``reset`` / ``act`` / ``act_chunk`` over one abstract :meth:`predict_chunk` (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: deque[np.ndarray] = deque()

    # ------------------------------------------------------------------ for subclasses
    def predict_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        """A chunk ``(K, 7)`` of actions for this observation (K >= 1)."""
        raise NotImplementedError

    def observe(self, obs: dict[str, Any]) -> None:
        """Called with every observation before acting (default: nothing)."""

    def on_reset(self, seed: int | None) -> None:
        """Called by :meth:`reset` after the queue is cleared (default: nothing)."""

    # ------------------------------------------------------------------ the policy protocol
    def reset(self, *, seed: int | None = None) -> None:
        seed = check_int("seed", seed, optional=True)
        self._queue.clear()
        self.on_reset(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        self.observe(obs)
        if not self._queue:
            self._queue.extend(self._checked_chunk(obs))
        return self._queue.popleft()

    def act_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        """A fresh chunk ``(K, 7)``; queued actions are dropped."""
        self.observe(obs)
        self._queue.clear()
        return self._checked_chunk(obs)

    def _checked_chunk(self, obs: dict[str, Any]) -> np.ndarray:
        chunk = np.asarray(self.predict_chunk(obs), dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] < 1 or chunk.shape[1] != ACTION_DIM:
            raise ValueError(
                f"{type(self).__name__}.predict_chunk returned shape {chunk.shape}; expected (K, {ACTION_DIM}) with K >= 1"
            )
        return chunk
