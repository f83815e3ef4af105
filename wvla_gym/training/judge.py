"""Success-judge training on recorded episodes (the model is :class:`wvla_gym.judge.ClassifierJudge`).

Labels from the recordings: the last ``positive_last`` frames of a successful episode (its final reward is 1)
are positives; frames at least ``negative_gap`` steps before the end are negatives; the frames in between
(the object settling into place) are left out as ambiguous. The last demos of each file are held out and
the report gives precision / recall there (``judge_report.json`` next to the saved judge).

With ``world_model`` (a checkpoint), the judge also trains on that world model's open-loop replays of the same
episodes: each episode's recorded actions imagined from its first recorded frame, the frame after action t
labelled like recorded frame t. A judge trained on real frames only never fires on imagined frames, whose
textures the VQ and a small world model blur (measured: 0 of 10 imagined expert replays judged successful),
so a judge meant for ``WorldVLA-Imagined-v0`` must see the world model's own rendering. The report then
gives held-out precision / recall on recorded and on imagined frames separately.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wvla_gym.judge import train_classifier_judge
from wvla_gym.protocol import DUMMY_ACTION

from .config import JudgeTrainConfig
from .data import load_frames, resize_uint8


def label_episode(n: int, success: bool, positive_last: int, negative_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and 0/1 labels of the usable frames of an episode of ``n`` frames."""
    neg = np.arange(0, max(n - negative_gap, 0))
    if not success:
        return np.arange(n), np.zeros(n, dtype=np.int64)
    pos = np.arange(max(n - positive_last, 0), n)
    return np.concatenate([neg, pos]), np.concatenate([np.zeros(len(neg), np.int64), np.ones(len(pos), np.int64)])


def _episode_success(path: str, demo: str) -> bool:
    from wvla_gym.data.hdf5 import _h5py

    with _h5py().File(path, "r") as f:
        r = np.asarray(f["data"][demo]["rewards"])
    return bool(len(r) and r[-1] > 0)


def _episode_actions(path: str, demo: str) -> np.ndarray:
    from wvla_gym.data.hdf5 import _h5py

    with _h5py().File(path, "r") as f:
        return np.asarray(f["data"][demo]["actions"], dtype=np.float64)


def imagined_replays(checkpoint: str, episodes: list[tuple[str, str, np.ndarray]], batch_size: int = 32,
                     progress: bool = True) -> list[np.ndarray]:
    """Per episode ``(T, R, R, 3)``: frame t+1 imagined open loop from recorded frame 0 and actions 0..t.

    Episodes run in lockstep batches (one batched ``imagine`` call per step); finished ones hold still.
    """
    from tqdm.auto import tqdm

    from wvla_gym.runtime import WorldVLARuntime

    rt = WorldVLARuntime.from_pretrained(checkpoint)
    r = int(rt.resolution)
    out: list[np.ndarray] = []
    for b0 in range(0, len(episodes), batch_size):
        chunk = episodes[b0 : b0 + batch_size]
        acts = [_episode_actions(p, d) for p, d, _ in chunk]
        cur = np.stack([resize_uint8(frames[:1], r)[0] for _, _, frames in chunk])
        steps = max(len(a) for a in acts)
        frames_out = np.zeros((len(chunk), steps, r, r, 3), np.uint8)
        for t in tqdm(range(steps), desc=f"imagine replays {b0}-{b0 + len(chunk)}", disable=not progress):
            a = np.stack([x[t] if t < len(x) else DUMMY_ACTION for x in acts])
            cur = rt.imagine(cur, a)
            frames_out[:, t] = cur
        out.extend(frames_out[i, : len(acts[i])] for i in range(len(chunk)))
    return out


def train_judge(cfg: JudgeTrainConfig) -> dict[str, Any]:
    if not cfg.data:
        raise ValueError("judge training needs --data (recorded LIBERO-layout HDF5 files or folders)")
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    eps = load_frames(cfg.data)
    by_file: dict[str, list[int]] = {}
    for i, (p, _, _) in enumerate(eps):
        by_file.setdefault(p, []).append(i)
    held = {i for idx in by_file.values() for i in idx[len(idx) - min(cfg.heldout_episodes_per_file, len(idx) - 1):]}
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        "train": ([], []), "heldout": ([], []), "heldout_imagined": ([], [])}
    imagined = imagined_replays(cfg.world_model, eps) if cfg.world_model else [None] * len(eps)
    for i, ((p, d, frames), imag) in enumerate(zip(eps, imagined, strict=True)):
        idx, y = label_episode(len(frames), _episode_success(p, d), cfg.positive_last, cfg.negative_gap)
        xs, ys = parts["heldout" if i in held else "train"]
        xs.append(frames[idx])
        ys.append(y)
        if imag is not None:
            imag = resize_uint8(imag, frames.shape[1])  # identity when the sizes match
            xs, ys = parts["heldout_imagined" if i in held else "train"]
            xs.append(imag[idx])
            ys.append(y)
    x_tr, y_tr = np.concatenate(parts["train"][0]), np.concatenate(parts["train"][1])
    if y_tr.sum() == 0:
        raise ValueError("no successful episodes in the training part: the judge needs positives")
    judge = train_classifier_judge(x_tr, y_tr, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                   input_size=cfg.input_size, threshold=cfg.threshold, seed=cfg.seed)
    out = Path(cfg.out)
    judge.save_pretrained(out)
    report: dict[str, Any] = {"train": judge.evaluate(x_tr, y_tr), "train_frames": int(len(y_tr)),
                              "train_positives": int(y_tr.sum())}
    if parts["heldout"][0]:
        x_ho, y_ho = np.concatenate(parts["heldout"][0]), np.concatenate(parts["heldout"][1])
        report.update(heldout=judge.evaluate(x_ho, y_ho), heldout_frames=int(len(y_ho)),
                      heldout_positives=int(y_ho.sum()))
    else:
        report["heldout"] = None
    if parts["heldout_imagined"][0]:
        x_hi, y_hi = np.concatenate(parts["heldout_imagined"][0]), np.concatenate(parts["heldout_imagined"][1])
        report.update(heldout_imagined=judge.evaluate(x_hi, y_hi), heldout_imagined_frames=int(len(y_hi)))
    report.update(heldout_episodes=[[eps[i][0], eps[i][1]] for i in sorted(held)],
                  wall_s=round(time.perf_counter() - t0, 1), config=dict(vars(cfg)))
    (out / "judge_report.json").write_text(json.dumps(report, indent=2, default=float))
    return report
