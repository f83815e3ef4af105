"""Open-loop world-model metrics: replay recorded actions from a recorded start frame, compare frames.

Frames are compared with :mod:`wvla_gym.evaluation.image_metrics` (PSNR, SSIM) and, given local weight files,
:mod:`wvla_gym.evaluation.feature_metrics` (LPIPS, FVD; re-exported here). Frames are resized with
:func:`wvla_gym.utils.images.resize_uint8` (torch area, as in training) and read through the one LIBERO-HDF5
reader (:mod:`wvla_gym.data.hdf5`).

The rollout is open-loop in the actions and closed-loop in the model: frame t+1 is imagined from the
*imagined* frame t (the first from the real start frame) and the recorded action t, so horizon h measures
h steps of compounding error, the quantity that matters for an imagined env.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from wvla_gym.evaluation.feature_metrics import (  # noqa: F401  (re-exported: one import site for wm-eval)
    LPIPS,
    I3DFeatures,
    frechet_distance,
    fvd,
    load_lpips_linear,
    load_vgg16_features,
    require_feature_weights,
    vgg16_features,
)
from wvla_gym.evaluation.image_metrics import gaussian_window, psnr, ssim  # noqa: F401  (re-exported)

ImagineFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_rollout_args(horizon: int, history: int) -> None:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon={horizon!r}; expected an int >= 1")
    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise ValueError(f"history={history!r}; expected an int >= 1")


class CodeFeedback:
    """An ``imagine(frames, actions)`` for open-loop rollouts that feeds the world model its own codes.

    Frames this adapter returned are looked up (by content) and given back to the runtime as the codes that
    generated them; other frames (the start) are VQ-encoded. Rollouts then see exactly what the imagined envs
    with ``imagine_from="codes"`` see, without the loops knowing about codes. Use one adapter per evaluation
    (it remembers the codes of every frame it returned)."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self._codes: dict[bytes, np.ndarray] = {}

    def _code(self, frame: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest()
        got = self._codes.get(key)
        return got if got is not None else self.runtime.image_tokenizer.encode_codes(frame[None]).numpy()[0]

    def __call__(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames, dtype=np.uint8)
        codes = np.stack([np.stack([self._code(f) for f in row]) for row in frames]) if frames.ndim == 5 \
            else np.stack([self._code(f) for f in frames])
        res = self.runtime.imagine(None, actions, codes=codes, return_info=True)
        for f, c in zip(res.frames, res.info.codes.numpy(), strict=True):
            self._codes[hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest()] = c
        return res.frames


def open_loop_rollouts(imagine: ImagineFn, start_frames: list[np.ndarray], actions: list[np.ndarray],
                       horizon: int, history: int = 1, *, on_step: Callable[[int], None] | None = None,
                       action_dtype: Any = np.float32) -> list[np.ndarray]:
    """:func:`open_loop_rollout` for several rollouts at once, in lockstep: one ``imagine`` call per step over
    every rollout still running (a rollout ends after ``min(horizon, len(its actions))`` steps), so a batched
    world model pays its per-call cost once per step instead of once per rollout. Each row sees exactly what
    it would see alone; rows are independent as long as ``imagine`` treats batch rows independently (the
    runtime does: the vector imagined env equals N single envs).

    ``on_step(t)`` is called after lockstep step ``t`` (e.g. to advance a progress bar). Actions reach
    ``imagine`` as ``action_dtype``: float32 is what wm-eval always measured; the judge's imagined replays pass
    float64, the recorded dtype, since the action tokenizer bins in float64 and a float32 rounding could move an
    official (float64) action across a bin edge."""
    _check_rollout_args(horizon, history)
    if len(start_frames) != len(actions):
        raise ValueError(f"{len(start_frames)} start frames but {len(actions)} action sequences; expected one each")
    acts = [np.asarray(a, dtype=action_dtype) for a in actions]
    for a in acts:
        if a.ndim != 2 or a.shape[1] != 7:
            raise ValueError(f"actions must be (T, 7); got {a.shape}")
    lengths = [min(horizon, len(a)) for a in acts]
    frames = [[np.asarray(f, dtype=np.uint8)] for f in start_frames]
    for t in range(max(lengths, default=0)):
        rows = [i for i, n in enumerate(lengths) if t < n]
        if history == 1:
            nxt = imagine(np.stack([frames[i][-1] for i in rows]), np.stack([acts[i][t] for i in rows]))
        else:
            lo = max(0, t + 1 - history)  # every running row is at step t: their windows have one length
            nxt = imagine(np.stack([np.stack(frames[i][lo : t + 1]) for i in rows]),
                          np.stack([acts[i][lo : t + 1] for i in rows]))
        nxt = np.asarray(nxt, dtype=np.uint8)
        for j, i in enumerate(rows):
            frames[i].append(nxt[j])
        if on_step is not None:
            on_step(t)
    return [np.stack(f[1:]) if len(f) > 1 else np.zeros((0, *f[0].shape), np.uint8) for f in frames]


def open_loop_rollout(imagine: ImagineFn, start_frame: np.ndarray, actions: np.ndarray, horizon: int,
                      history: int = 1) -> np.ndarray:
    """Imagined frames 1..H (H = min(horizon, len(actions))) from a start frame and recorded actions.

    ``history`` (the world model's ``world_history``): each call gets the rollout's last ``history`` frames and
    their actions, ``imagine((1, T, R, R, 3), (1, T, 7))``, as the imagined env gives them (the rollout starts
    with no past, like an episode); with 1, ``imagine((1, R, R, 3), (1, 7))``."""
    return open_loop_rollouts(imagine, [start_frame], [actions], horizon, history)[0]


def evaluate_open_loop(
    episodes: Iterable[tuple[np.ndarray, np.ndarray]],
    imagine: ImagineFn,
    horizon: int,
    every: int = 1,
    *,
    lpips: LPIPS | None = None,
    fvd_features: Callable[[np.ndarray], np.ndarray] | None = None,
    history: int = 1,
    batch_size: int = 32,
) -> dict[str, Any]:
    """PSNR/SSIM (+ LPIPS, FVD) per horizon over episodes of (real frames (T+1, H, W, 3), actions (T, 7)).

    ``every`` > 1 starts a rollout every ``every`` frames of each episode (more start states per episode).
    Returns ``{"horizon": [1..H], "psnr": [...], "ssim": [...], "n": [...]}`` (means over start states;
    identical frames score ``wvla_gym.utils.images.PSNR_IDENTICAL_DB`` = 100 dB, so means stay finite).

    With ``lpips`` (an :class:`LPIPS`), ``"lpips"`` holds the mean LPIPS per horizon as well. With
    ``fvd_features`` (e.g. :class:`I3DFeatures`), ``"fvd"`` is the FVD between the imagined clips (frames
    1..``horizon``) and the recorded clips of the same steps, over every rollout that reaches the full
    ``horizon`` (the shared start frame is not part of the clips); ``"fvd_clips"`` counts them and ``"fvd"`` is
    None when there are fewer than 2. ``history``: see :func:`open_loop_rollout`. Up to ``batch_size``
    rollouts run in lockstep (:func:`open_loop_rollouts`); the result does not depend on it.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r}; expected an int >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected an int >= 1")
    _check_rollout_args(horizon, history)
    sums = {"psnr": np.zeros(horizon), "ssim": np.zeros(horizon), "n": np.zeros(horizon, dtype=int)}
    if lpips is not None:
        sums["lpips"] = np.zeros(horizon)
    real_feats: list[np.ndarray] = []
    fake_feats: list[np.ndarray] = []
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def flush() -> None:
        if pending and fvd_features is not None:
            real_feats.append(np.asarray(fvd_features(np.stack([p[0] for p in pending]))))
            fake_feats.append(np.asarray(fvd_features(np.stack([p[1] for p in pending]))))
        pending.clear()

    queue: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (start frame, actions from it, real frames)

    def run_queue() -> None:
        rolled = open_loop_rollouts(imagine, [q[0] for q in queue], [q[1] for q in queue], horizon, history)
        for (_, _, real_all), imagined in zip(queue, rolled, strict=True):
            real = real_all[: len(imagined)]
            for h, img in enumerate(imagined):
                sums["psnr"][h] += psnr(img, real[h])
                sums["ssim"][h] += ssim(img, real[h])
                sums["n"][h] += 1
            if lpips is not None:
                sums["lpips"][: len(imagined)] += lpips.batch(imagined, real)
            if fvd_features is not None and len(imagined) == horizon:
                pending.append((real, imagined))
                if len(pending) >= 64:
                    flush()
        queue.clear()

    for frames, actions in episodes:
        frames = np.asarray(frames)
        actions = np.asarray(actions)
        if len(frames) != len(actions) + 1:
            raise ValueError(
                f"an episode has {len(frames)} frames and {len(actions)} actions; expected T+1 frames for T actions"
            )
        for s in range(0, len(actions), every):
            queue.append((frames[s], actions[s : s + horizon], frames[s + 1 : s + 1 + horizon]))
            if len(queue) >= batch_size:
                run_queue()
    if queue:
        run_queue()
    flush()
    n = np.maximum(sums["n"], 1)
    keep = sums["n"] > 0
    out: dict[str, Any] = {
        "horizon": [int(h + 1) for h in np.flatnonzero(keep)],
        "psnr": [float(v) for v in (sums["psnr"] / n)[keep]],
        "ssim": [float(v) for v in (sums["ssim"] / n)[keep]],
        "n": [int(v) for v in sums["n"][keep]],
    }
    if lpips is not None:
        out["lpips"] = [float(v) for v in (sums["lpips"] / n)[keep]]
    if fvd_features is not None:
        n_clips = sum(len(f) for f in real_feats)
        out["fvd_clips"] = n_clips
        out["fvd"] = (
            frechet_distance(np.concatenate(real_feats), np.concatenate(fake_feats)) if n_clips >= 2 else None
        )
    return out


def load_hdf5_episodes(path: str | os.PathLike, image_key: str = "agentview_rgb", rotate180: bool | None = None,
                       max_episodes: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Episodes from a LIBERO-layout HDF5 (``data/demo_*/obs/<image_key>``, ``data/demo_*/actions``).

    Read through :class:`wvla_gym.data.hdf5.LiberoFile`, so frames are in the env's orientation for our
    files and official LIBERO files alike (decided by the file's ``images_rotated_180`` attribute);
    ``rotate180`` True/False forces the rotation. Frame t is the observation before action t, so the last
    action has no next frame and is dropped.
    """
    from wvla_gym.data.hdf5 import LiberoFile

    out = []
    with LiberoFile(path, rotate=rotate180) as f:
        for name in f.demos[:max_episodes]:
            frames = f.frames(name, view=image_key)
            actions = f.actions(name)
            out.append((np.ascontiguousarray(frames), actions[: len(frames) - 1]))
    return out
