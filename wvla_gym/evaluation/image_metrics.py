"""Per-frame image metrics: PSNR (``wvla_gym.utils.images.psnr``, identical frames give the 100 dB cap) and
SSIM (numpy-only: Gaussian window 11, σ = 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering as in Wang et al. 2004,
mean over channels).
"""

from __future__ import annotations

import numpy as np

from wvla_gym.utils.images import psnr

__all__ = ["gaussian_window", "pair_images", "psnr", "ssim"]


def pair_images(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape or x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"images must both be (H, W, 3) of equal shape; got {x.shape} and {y.shape}")
    return x.astype(np.float64), y.astype(np.float64)



def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 2-D Gaussian (outer product of the 1-D kernel)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size={size!r}; expected an odd int >= 1")
    r = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-(r**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(img: np.ndarray, g1: np.ndarray) -> np.ndarray:
    # Separable 'valid' correlation: rows then columns (the window is symmetric).
    k = len(g1)
    h, w = img.shape
    rows = sum(g1[i] * img[i : h - k + 1 + i, :] for i in range(k))
    return sum(g1[j] * rows[:, j : w - k + 1 + j] for j in range(k))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM over valid window positions and channels (images must be at least ``win_size`` wide)."""
    x, y = pair_images(a, b)
    if min(x.shape[:2]) < win_size:
        raise ValueError(f"images of shape {x.shape} are smaller than the SSIM window ({win_size}); expected >= {win_size}")
    r = np.arange(win_size) - (win_size - 1) / 2.0
    g1 = np.exp(-(r**2) / (2 * sigma**2))
    g1 /= g1.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for c in range(3):
        xc, yc = x[..., c], y[..., c]
        mx, my = _filter_valid(xc, g1), _filter_valid(yc, g1)
        sxx = _filter_valid(xc * xc, g1) - mx * mx
        syy = _filter_valid(yc * yc, g1) - my * my
        sxy = _filter_valid(xc * yc, g1) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(float(m.mean()))
    return float(np.mean(vals))
