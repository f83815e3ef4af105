"""Open-loop world-model metrics: replay recorded actions from a recorded start frame, compare frames.

PSNR and SSIM are computed here (numpy/scipy-free SSIM: Gaussian window 11, σ = 1.5, K1 = 0.01, K2 = 0.03,
'valid' filtering as in Wang et al. 2004, mean over channels). LPIPS and FVD need feature networks we cannot
download: :func:`require_feature_weights` raises a ValueError naming exactly what to provide.

The rollout is open-loop in the actions and closed-loop in the model: frame t+1 is imagined from the
*imagined* frame t (the first from the real start frame) and the recorded action t, so horizon h measures
h steps of compounding error, the quantity that matters for an imagined env.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ImagineFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _pair_images(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape or x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"images must both be (H, W, 3) of equal shape; got {x.shape} and {y.shape}")
    return x.astype(np.float64), y.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; identical images give +inf."""
    x, y = _pair_images(a, b)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


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
    x, y = _pair_images(a, b)
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


def require_feature_weights(metric: str, weights: str | os.PathLike | None) -> Path:
    """LPIPS/FVD need pretrained feature networks, which this package never downloads."""
    what = {
        "lpips": "a local LPIPS checkpoint (e.g. the VGG 'vgg.pth' linear-layer weights plus torchvision VGG16 "
        "weights) via --lpips-weights PATH",
        "fvd": "a local I3D TorchScript file ('i3d_torchscript.pt', the network StyleGAN-V/RynnVLA use for FVD) "
        "via --fvd-weights PATH",
    }
    if metric not in what:
        raise ValueError(f"metric={metric!r}; expected 'lpips' or 'fvd'")
    if weights is None:
        raise ValueError(f"{metric.upper()} needs {what[metric]}; nothing is downloaded here")
    p = Path(weights)
    if not p.exists():
        raise ValueError(f"--{metric}-weights {str(p)!r} does not exist; expected {what[metric]}")
    return p


def open_loop_rollout(imagine: ImagineFn, start_frame: np.ndarray, actions: np.ndarray, horizon: int) -> np.ndarray:
    """Imagined frames 1..H (H = min(horizon, len(actions))) from a start frame and recorded actions."""
    acts = np.asarray(actions, dtype=np.float32)
    if acts.ndim != 2 or acts.shape[1] != 7:
        raise ValueError(f"actions must be (T, 7); got {acts.shape}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon={horizon!r}; expected an int >= 1")
    frame = np.asarray(start_frame, dtype=np.uint8)[None]
    out = []
    for t in range(min(horizon, len(acts))):
        frame = np.asarray(imagine(frame, acts[t : t + 1]), dtype=np.uint8)
        out.append(frame[0])
    return np.stack(out)


def evaluate_open_loop(episodes: Iterable[tuple[np.ndarray, np.ndarray]], imagine: ImagineFn, horizon: int,
                       every: int = 1) -> dict[str, Any]:
    """PSNR/SSIM per horizon over episodes of (real frames (T+1, H, W, 3), actions (T, 7)).

    ``every`` > 1 starts a rollout every ``every`` frames of each episode (more start states per episode).
    Returns ``{"horizon": [1..H], "psnr": [...], "ssim": [...], "n": [...]}`` (means over start states;
    +inf PSNRs of identical frames are capped at 100 dB so that means stay finite).
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r}; expected an int >= 1")
    sums = {"psnr": np.zeros(horizon), "ssim": np.zeros(horizon), "n": np.zeros(horizon, dtype=int)}
    for frames, actions in episodes:
        frames = np.asarray(frames)
        actions = np.asarray(actions)
        if len(frames) != len(actions) + 1:
            raise ValueError(f"an episode has {len(frames)} frames and {len(actions)} actions; expected T+1 frames for T actions")
        for s in range(0, len(actions), every):
            imagined = open_loop_rollout(imagine, frames[s], actions[s:], horizon)
            for h, img in enumerate(imagined):
                sums["psnr"][h] += min(psnr(img, frames[s + h + 1]), 100.0)
                sums["ssim"][h] += ssim(img, frames[s + h + 1])
                sums["n"][h] += 1
    n = np.maximum(sums["n"], 1)
    keep = sums["n"] > 0
    return {
        "horizon": [int(h + 1) for h in np.flatnonzero(keep)],
        "psnr": [float(v) for v in (sums["psnr"] / n)[keep]],
        "ssim": [float(v) for v in (sums["ssim"] / n)[keep]],
        "n": [int(v) for v in sums["n"][keep]],
    }


def load_hdf5_episodes(path: str | os.PathLike, image_key: str = "agentview_rgb", rotate180: bool = False,
                       max_episodes: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Episodes from a LIBERO-layout HDF5 (``data/demo_*/obs/<image_key>``, ``data/demo_*/actions``).

    LIBERO's own datasets store upside-down frames (set ``rotate180``); our recorder stores them upright.
    Frame t is the observation before action t, so the last action has no next frame and is dropped.
    """
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{path}: no 'data' group; expected LIBERO's HDF5 layout data/demo_*/{{obs,actions}}")
        names = sorted(f["data"], key=lambda n: int(n.split("_")[-1]) if n.split("_")[-1].isdigit() else n)
        for name in names[:max_episodes]:
            g = f["data"][name]
            if image_key not in g["obs"]:
                raise ValueError(f"{path}:{name} has no obs/{image_key}; available: {sorted(g['obs'])}")
            frames = np.asarray(g["obs"][image_key])
            if rotate180:
                frames = frames[:, ::-1, ::-1]
            actions = np.asarray(g["actions"], dtype=np.float32)
            out.append((np.ascontiguousarray(frames), actions[: len(frames) - 1]))
    return out


def resize_frames(frames: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W, 3) uint8 frames to (N, size, size, 3) with PIL bicubic (identity when equal)."""
    frames = np.asarray(frames)
    if frames.shape[1:3] == (size, size):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in frames])
