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

Resumable: ``<out>/ckpt/`` (weights, optimiser, scheduler, shuffling / torch RNG states, step) is written every
``checkpoint_every`` optimiser steps, and rerunning the same command continues from it to exactly the weights
of an uninterrupted run (:func:`fit_judge` draws the same batches as
:func:`wvla_gym.judge.train_classifier_judge`). ``run_identity.json`` records the config, the data files'
hashes and the world model's hash; other settings are refused (``--restart`` starts over).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wvla_gym.judge import CONFIG_NAME, WEIGHTS_NAME, ClassifierJudge, FitStep, fit_classifier_judge
from wvla_gym.utils.images import resize_uint8
from wvla_gym.utils.io import atomic_write_text
from wvla_gym.utils.run_identity import path_digest

from .checkpoint import (
    CKPT,
    STATE,
    claim_training_run,
    config_identity,
    data_identity,
    latest_checkpoint,
    safe_load,
    save_checkpoint_dir,
    truncate_log,
)
from .config import JudgeTrainConfig
from .data import load_frames


def label_episode(n: int, success: bool, positive_last: int, negative_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and 0/1 labels of the usable frames of an episode of ``n`` frames."""
    neg = np.arange(0, max(n - negative_gap, 0))
    if not success:
        return np.arange(n), np.zeros(n, dtype=np.int64)
    pos = np.arange(max(n - positive_last, 0), n)
    return np.concatenate([neg, pos]), np.concatenate([np.zeros(len(neg), np.int64), np.ones(len(pos), np.int64)])


def _episode_success(path: str, demo: str) -> bool:
    from wvla_gym.data.hdf5 import LiberoFile

    with LiberoFile(path) as f:
        return f.success(demo)


def _episode_actions(path: str, demo: str) -> np.ndarray:
    from wvla_gym.data.hdf5 import LiberoFile

    with LiberoFile(path) as f:
        return f.actions(demo, dtype=np.float64)


def imagined_replays(checkpoint: str, episodes: list[tuple[str, str, np.ndarray]], batch_size: int = 32,
                     progress: bool = True) -> list[np.ndarray]:
    """Per episode ``(T, R, R, 3)``: frame t+1 imagined open loop from recorded frame 0 and actions 0..t.

    Up to ``batch_size`` episodes run in lockstep (:func:`wvla_gym.evaluation.world_model_metrics.open_loop_rollouts`,
    one batched ``imagine`` call per step); a world model with a history sees the replay's last pairs, as in
    the env.
    """
    from tqdm.auto import tqdm

    from wvla_gym.evaluation.world_model_metrics import open_loop_rollouts
    from wvla_gym.runtime import WorldVLARuntime

    rt = WorldVLARuntime.from_pretrained(checkpoint)
    r = int(rt.resolution)
    out: list[np.ndarray] = []
    for b0 in range(0, len(episodes), batch_size):
        chunk = episodes[b0 : b0 + batch_size]
        acts = [_episode_actions(p, d) for p, d, _ in chunk]
        starts = [resize_uint8(frames[:1], r)[0] for _, _, frames in chunk]
        steps = max(len(a) for a in acts)
        with tqdm(total=steps, desc=f"imagine replays {b0}-{b0 + len(chunk)}", disable=not progress) as bar:
            out.extend(open_loop_rollouts(rt.imagine, starts, acts, horizon=max(steps, 1), history=rt.world_history,
                                          on_step=lambda _t: bar.update(1), action_dtype=np.float64))
    return out


JUDGE_LOG = "judge_log.jsonl"
JUDGE_REPORT = "judge_report.json"
JUDGE_OUTPUTS = (CKPT, JUDGE_LOG, WEIGHTS_NAME, CONFIG_NAME, JUDGE_REPORT)
"""what ``--restart`` deletes (besides ``run_identity.json``, which it rewrites)"""
WEIGHT_DECAY = 1e-4
CHANNELS = (16, 32, 64)


def judge_identity(cfg: JudgeTrainConfig) -> dict[str, Any]:
    """What a judge run's result depends on: the config (minus progress fields and the world-model path), the
    data files' hashes and, with ``world_model``, the hash of that checkpoint folder."""
    wm = cfg.world_model
    wm_digest = None if not wm else path_digest(wm) if Path(wm).exists() else f"hub:{wm}"
    return {**config_identity(cfg, exclude={"world_model"}), "data": data_identity(cfg.data),
            "world_model_digest": wm_digest}


def _save_judge_checkpoint(out: Path, judge: ClassifierJudge, opt, sched, step: int,
                           epoch_rng: torch.Tensor) -> None:
    def write(tmp: Path) -> None:
        judge.save_pretrained(tmp)
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "epoch_rng": epoch_rng.clone(), "torch_rng": torch.get_rng_state()}, tmp / STATE)

    save_checkpoint_dir(out, write)


def fit_judge(x_all: np.ndarray, labels: np.ndarray, cfg: JudgeTrainConfig, out: Path) -> ClassifierJudge:
    """:func:`wvla_gym.judge.fit_classifier_judge` (the library's loop: same init, batches and schedule for
    ``cfg.seed``), with atomic checkpoints in ``<out>/ckpt`` every ``checkpoint_every`` steps, resumption from
    the latest one and a JSONL log.

    The shuffling generator's state at the start of the current epoch is checkpointed, so a resumed run redraws
    that epoch's order and skips the batches already done.
    """
    from tqdm.auto import tqdm

    per_epoch = -(-len(np.asarray(labels).reshape(-1)) // cfg.batch_size)
    total = cfg.epochs * per_epoch
    end = total if cfg.stop_at is None else min(total, cfg.stop_at)
    run: dict[str, Any] = {}

    def resume(judge: ClassifierJudge, opt: Any, sched: Any, g: torch.Generator) -> int:
        start = 0
        ck = latest_checkpoint(out)
        if ck is not None:
            judge.load_state_dict(ClassifierJudge.from_pretrained(ck).state_dict())
            state = safe_load(ck / STATE)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            g.set_state(state["epoch_rng"])
            torch.set_rng_state(state["torch_rng"])
            start = int(state["step"])
        truncate_log(out / JUDGE_LOG, start)  # steps after the checkpoint are redone: log each step once
        run.update(judge=judge, opt=opt, sched=sched, log=open(out / JUDGE_LOG, "a", encoding="utf-8"),  # noqa: SIM115
                   bar=tqdm(total=end, initial=start, desc="train judge", mininterval=5, disable=not cfg.progress))
        return start

    def after_step(s: FitStep) -> None:
        if s.step % cfg.log_every == 0 or s.step == total - 1:
            run["log"].write(json.dumps({"step": s.step, "epoch": s.epoch, "loss": round(s.loss, 6), "lr": s.lr}) + "\n")
            run["log"].flush()
        done = s.step + 1
        run["bar"].update(1)
        if done % cfg.checkpoint_every == 0 or done == end:
            _save_judge_checkpoint(out, run["judge"], run["opt"], run["sched"], done, s.resume_rng)

    try:
        return fit_classifier_judge(x_all, labels, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                    weight_decay=WEIGHT_DECAY, input_size=cfg.input_size, channels=CHANNELS,
                                    threshold=cfg.threshold, seed=cfg.seed, resume=resume, stop_at=cfg.stop_at,
                                    after_step=after_step)
    finally:
        if "log" in run:
            run["log"].close()
            run["bar"].close()


def train_judge(cfg: JudgeTrainConfig) -> dict[str, Any]:
    if not cfg.data:
        raise ValueError("judge training needs --data (recorded LIBERO-layout HDF5 files or folders)")
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={cfg.checkpoint_every}; expected >= 1")
    out = Path(cfg.out)
    claim_training_run(out, "train-judge", judge_identity(cfg), JUDGE_OUTPUTS, restart=cfg.restart)
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
    judge = fit_judge(x_tr, y_tr, cfg, out)
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
                  wall_s_this_run=round(time.perf_counter() - t0, 1), config=dict(vars(cfg)))
    atomic_write_text(out / JUDGE_REPORT, json.dumps(report, indent=2, default=float))
    return report
