"""256-bin uniform action tokenizer of WorldVLA (7-D LIBERO OSC deltas + gripper).

encode: ``norm = 2 (a - min) / (max - min + 1e-8) - 1``, clip to [-1, 1], ``bin = digitize(norm, edges) - 1``
with ``edges = linspace(-1, 1, 256)``, token ``= first_id + bin`` (10006..10261 released).
decode: ``idx = clip(token - first_id, 0, 254)``, value ``= centres[idx]`` (255 centres between the edges),
``a = (value + 1) / 2 * (max - min + 1e-8) + min``.

Edge cases (all tested):

* a normalised value of exactly 1.0 is digitized to 256 -> token ``first_id + 255`` (10261), which decodes like
  ``first_id + 254`` because of the clamp; the raw maximum itself normalises to ``1 - 1e-8``-ish and lands in
  bin 254 (10260). Either way it decodes to the last bin centre, ``1 - 1/255 = 0.99608`` of the way to the edge.
* the minimum normalises to -1 -> bin 0 (10006) -> first centre ``-0.99608``.
* 0 on a symmetric dimension -> bin 127 (10133) -> centre 0.0 exactly. The released rx range is asymmetric
  (-0.3257..0.375), so rx = 0 is token 10124.
* any id outside the action range decodes through the clamp (to the first or last centre), as upstream does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

N_BINS = 256

LIBERO_MIN = (-0.9375, -0.9375, -0.9375, -0.32571429, -0.375, -0.375, -1.0)
LIBERO_MAX = (0.9375, 0.9375, 0.9375, 0.375, 0.375, 0.375, 1.0)
RYNNVLA_LIBERO_MIN = (-0.9375, -0.9375, -0.9375, -0.24214286, -0.375, -0.36428571, -1.0)
RYNNVLA_LIBERO_MAX = (0.9375, 0.9375, 0.9375, 0.34821429, 0.375, 0.375, 1.0)
RELEASED_FIRST_ID = 10006


class ActionTokenizer:
    """Min/max normalisation + 256 uniform bins; symmetric ``encode`` / ``decode`` over any leading shape."""

    def __init__(self, action_min: Sequence[float], action_max: Sequence[float], first_id: int = RELEASED_FIRST_ID):
        self.action_min = np.asarray(action_min, dtype=np.float64)
        self.action_max = np.asarray(action_max, dtype=np.float64)
        if self.action_min.shape != self.action_max.shape or self.action_min.ndim != 1:
            raise ValueError("action_min and action_max must be 1-D of equal length")
        if np.any(self.action_max < self.action_min):
            raise ValueError("action_max must be >= action_min in every dimension")
        self.first_id = int(first_id)
        self.edges = np.linspace(-1.0, 1.0, N_BINS)
        self.centers = (self.edges[:-1] + self.edges[1:]) / 2.0  # 255 centres

    @property
    def action_dim(self) -> int:
        return int(self.action_min.shape[0])

    @classmethod
    def worldvla_libero(cls, first_id: int = RELEASED_FIRST_ID) -> ActionTokenizer:
        """The fixed min/max hard-coded by the WorldVLA LIBERO training and eval code (all four suites)."""
        return cls(LIBERO_MIN, LIBERO_MAX, first_id)

    @classmethod
    def rynnvla_libero(cls, first_id: int = RELEASED_FIRST_ID) -> ActionTokenizer:
        """The RynnVLA-002 variant (different rotation ranges)."""
        return cls(RYNNVLA_LIBERO_MIN, RYNNVLA_LIBERO_MAX, first_id)

    @classmethod
    def from_actions(cls, actions: np.ndarray, first_id: int = RELEASED_FIRST_ID) -> ActionTokenizer:
        """Statistics from a dataset of actions ``(N, D)`` (per-dimension min / max)."""
        a = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
        return cls(a.min(0), a.max(0), first_id)

    @classmethod
    def from_stats_file(cls, path: str | os.PathLike, first_id: int = RELEASED_FIRST_ID) -> ActionTokenizer:
        """JSON ``{"min": [...], "max": [...]}`` (also accepts ``action_min`` / ``action_max`` keys)."""
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        lo = d.get("min", d.get("action_min"))
        hi = d.get("max", d.get("action_max"))
        if lo is None or hi is None:
            raise ValueError(f"{path}: expected keys 'min' and 'max'")
        return cls(lo, hi, first_id)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)
        if a.shape[-1] != self.action_dim:
            raise ValueError(f"actions must have last dimension {self.action_dim}, got shape {a.shape}")
        norm = 2.0 * (a - self.action_min) / (self.action_max - self.action_min + 1e-8) - 1.0
        return np.clip(norm, -1.0, 1.0)

    def unnormalize(self, norm: np.ndarray) -> np.ndarray:
        return (np.asarray(norm, dtype=np.float64) + 1.0) / 2.0 * (self.action_max - self.action_min + 1e-8) + self.action_min

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """``(..., D)`` float actions -> ``(..., D)`` int64 token ids."""
        return (np.digitize(self.normalize(actions), self.edges) - 1 + self.first_id).astype(np.int64)

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """``(..., D)`` token ids -> ``(..., D)`` float64 actions (ids clamped into the 255 bin centres)."""
        idx = np.clip(np.asarray(token_ids, dtype=np.int64) - self.first_id, 0, N_BINS - 2)
        return self.unnormalize(self.centers[idx])

    def to_dict(self) -> dict[str, list[float]]:
        return {"min": self.action_min.tolist(), "max": self.action_max.tolist()}
