"""Frame / episode access shared by the training stages (thin layer over :mod:`wvla_gym.data`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from wvla_gym.data.dataset import _DemoIndex


def list_episodes(data: Iterable[str], view: str = "agentview") -> list[tuple[str, str, int]]:
    """``[(file, demo, T)]`` of every demo in the given files / folders, in a stable order."""
    index = _DemoIndex(list(data), view, None)
    try:
        return list(index.demos)
    finally:
        index.close()


def load_frames(data: Iterable[str], view: str = "agentview") -> list[tuple[str, str, np.ndarray]]:
    """``[(file, demo, frames (T, H, W, 3) uint8)]`` in the env's orientation."""
    index = _DemoIndex(list(data), view, None)
    try:
        return [(p, d, np.asarray(index.frames(p, d, 0, n))) for p, d, n in index.demos]
    finally:
        index.close()


def resize_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """Area-resize uint8 ``(N, H, W, 3)`` to ``size`` (identity when it already matches)."""
    if frames.shape[1:3] == (size, size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="area")
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB, peak 255) of two uint8 ``(N, H, W, 3)`` arrays."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10))
