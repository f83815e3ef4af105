"""The one image resize and the one PSNR used everywhere (training, world-model evaluation, examples).

* :func:`resize_uint8`: torch ``F.interpolate(mode="area")`` on uint8 frames, rounded and clamped back to
  uint8; the identity when the size already matches. Area resampling averages every source pixel of a
  target pixel, the right filter for the downscaling this package does (e.g. 128 px recordings -> a 64 px
  model); the shipped model was trained on frames resized this way, so evaluation must resize the same way.
  torch is imported on first use only.
* :func:`psnr` / :func:`psnr_per_image`: ``10 log10(data_range² / MSE)`` in dB over all elements (of each
  image), MSE in float64. Identical images (MSE = 0) give :data:`PSNR_IDENTICAL_DB` (100 dB) instead of
  +inf, and every value is capped there, so means over many frames stay finite and comparable.
"""

from __future__ import annotations

import numpy as np

#: PSNR reported for identical images, and the cap of every PSNR value (dB).
PSNR_IDENTICAL_DB = 100.0


def resize_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """Area-resize uint8 ``(N, H, W, 3)`` (or one ``(H, W, 3)``) frames to ``size`` x ``size``.

    Returns the input itself when it is already ``size`` x ``size``.
    """
    frames = np.asarray(frames)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size={size!r}; expected an int >= 1")
    single = frames.ndim == 3
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) or (H, W, 3); got {frames.dtype} {frames.shape}")
    if frames.shape[-3:-1] == (size, size):
        return frames
    import torch
    import torch.nn.functional as F

    batch = frames[None] if single else frames
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(int(size), int(size)), mode="area")
    out = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out[0] if single else out


def _psnr_from_mse(mse: np.ndarray, data_range: float) -> np.ndarray:
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(float(data_range) ** 2 / mse)
    return np.minimum(db, PSNR_IDENTICAL_DB)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR (dB) of two equally shaped arrays over all their elements; identical -> 100 dB (the cap)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"psnr needs two non-empty arrays of equal shape; got {x.shape} and {y.shape}")
    return float(_psnr_from_mse(np.mean((x - y) ** 2), data_range))


def psnr_per_image(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-image PSNR (dB) of two equally shaped ``(N, ...)`` batches, each as :func:`psnr`; shape ``(N,)``."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"psnr_per_image needs two (N, ...) arrays of equal shape; got {x.shape} and {y.shape}")
    if len(x) == 0:
        return np.zeros(0)
    return _psnr_from_mse(((x - y) ** 2).reshape(len(x), -1).mean(1), data_range)
