"""Frame / episode access shared by the training stages (thin layer over :mod:`wvla_gym.data`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from wvla_gym.data.dataset import DemoIndex
from wvla_gym.utils.images import psnr_per_image, resize_uint8

#: Re-exported for older imports; the one implementation lives in :mod:`wvla_gym.utils.images`.
psnr_uint8 = psnr_per_image
__all__ = ["list_episodes", "load_frames", "psnr_uint8", "resize_uint8"]


def list_episodes(data: Iterable[str], view: str = "agentview") -> list[tuple[str, str, int]]:
    """``[(file, demo, T)]`` of every demo in the given files / folders, in a stable order."""
    index = DemoIndex(list(data), view, None)
    try:
        return list(index.demos)
    finally:
        index.close()


def load_frames(data: Iterable[str], view: str = "agentview") -> list[tuple[str, str, np.ndarray]]:
    """``[(file, demo, frames (T, H, W, 3) uint8)]`` in the env's orientation."""
    index = DemoIndex(list(data), view, None)
    try:
        return [(p, d, np.asarray(index.frames(p, d, 0, n))) for p, d, n in index.demos]
    finally:
        index.close()
