"""Success judges: WorldVLA has no reward head, so imagined episodes are scored by a judge on the frames.

A judge is anything with ``score(frames, instruction) -> float in [0, 1]`` and a ``threshold``
(:class:`SuccessJudge`). Shipped: :class:`CallableJudge` (wrap any function) and :class:`ClassifierJudge`
(a small CNN on the last frame, trained with :func:`train_classifier_judge`, saved as safetensors + JSON).
Judges are meant to be validated on real LIBERO frames, where the simulator's success flag is the label:
:meth:`ClassifierJudge.evaluate` / :func:`binary_metrics` report precision and recall.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CONFIG_NAME = "judge_config.json"
WEIGHTS_NAME = "model.safetensors"


@runtime_checkable
class SuccessJudge(Protocol):
    """Scores how likely a task is done from the most recent frames.

    ``frames`` is uint8 ``(T, H, W, 3)``, oldest first (the env passes its last ``window`` frames; a
    judge without a ``window`` attribute gets ``T = 1``). Success is ``score >= threshold``.
    A judge may also offer ``score_batch(frames (B, T, H, W, 3), instructions) -> (B,)`` for vector envs.
    """

    threshold: float

    def score(self, frames: np.ndarray, instruction: str) -> float: ...


def judge_threshold(judge: Any) -> float:
    """The judge's threshold (0.5 when it has none)."""
    return float(getattr(judge, "threshold", 0.5)) if judge is not None else 0.5


def judge_window(judge: Any) -> int:
    """How many recent frames the judge wants (1 when it does not say)."""
    w = getattr(judge, "window", 1) if judge is not None else 1
    if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
        raise ValueError(f"judge window={w!r}; expected an int >= 1")
    return int(w)


def _checked_score(s: Any) -> float:
    s = float(s)
    if not (0.0 <= s <= 1.0):  # also rejects NaN
        raise ValueError(f"success judge returned {s!r}; scores must lie in [0, 1]")
    return s


def score_many(judge: Any, frames: Sequence[np.ndarray], instructions: Sequence[str]) -> list[float]:
    """Score several frame windows; one ``score_batch`` call when the judge has it and shapes agree."""
    if judge is None:
        return [0.0] * len(frames)
    batch = getattr(judge, "score_batch", None)
    if callable(batch) and len(frames) > 0 and len({f.shape for f in frames}) == 1:
        out = np.asarray(batch(np.stack(frames), list(instructions)), dtype=np.float64).reshape(-1)
        if len(out) != len(frames):
            raise ValueError(f"score_batch returned {len(out)} scores for {len(frames)} inputs")
        return [_checked_score(s) for s in out]
    return [_checked_score(judge.score(f, i)) for f, i in zip(frames, instructions, strict=True)]


class CallableJudge:
    """A user function ``fn(frames (T, H, W, 3) uint8, instruction) -> float in [0, 1]`` as a judge."""

    def __init__(self, fn: Callable[[np.ndarray, str], float], threshold: float = 0.5, window: int = 1) -> None:
        if not callable(fn):
            raise ValueError("fn must be callable")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold!r}; expected a float in [0, 1]")
        self.fn = fn
        self.threshold = float(threshold)
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(f"window={window!r}; expected an int >= 1")
        self.window = int(window)

    def score(self, frames: np.ndarray, instruction: str) -> float:
        return _checked_score(self.fn(np.asarray(frames), instruction))


# ---------------------------------------------------------------------------------------------- metrics
def binary_metrics(predictions: Any, labels: Any) -> dict[str, float]:
    """Precision, recall, F1, accuracy, Cohen's kappa and the confusion counts of boolean predictions.

    Ratios with a zero denominator are 0.0 (e.g. precision when nothing is predicted positive).
    """
    p = np.asarray(predictions).astype(bool).reshape(-1)
    y = np.asarray(labels).astype(bool).reshape(-1)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"predictions and labels must be non-empty and the same length; got {p.size} and {y.size}")
    tp = int(np.sum(p & y))
    fp = int(np.sum(p & ~y))
    fn = int(np.sum(~p & y))
    tn = int(np.sum(~p & ~y))
    n = p.size
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (tp + tn) / n
    # kappa: agreement beyond what the two marginals give by chance
    expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
    kappa = (accuracy - expected) / (1 - expected) if expected < 1 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "cohen_kappa": kappa,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n": n,
    }


# ---------------------------------------------------------------------------------------------- classifier
class _SmallCNN(nn.Module):
    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(1, c), nn.SiLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        # a coarse grid, not a global mean: success is about *where* things are (object in the basket)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(c_in * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1)).squeeze(-1)


class ClassifierJudge(nn.Module):
    """A small CNN that scores the **last** frame: ``sigmoid(logit)`` is the success probability.

    One judge per task (or per suite when trained on several): the instruction is not an input. Frames
    are resized to ``input_size`` (so one judge serves any env resolution) and scaled to [-1, 1].
    Saved as ``model.safetensors`` + ``judge_config.json`` (:meth:`save_pretrained`/:meth:`from_pretrained`).
    """

    window = 1

    def __init__(
        self, input_size: int = 64, channels: Sequence[int] = (16, 32, 64), threshold: float = 0.5
    ) -> None:
        super().__init__()
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) or not (
            0.0 <= threshold <= 1.0
        ):
            raise ValueError(f"threshold={threshold!r}; expected a float in [0, 1]")
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 4:
            raise ValueError(f"input_size={input_size!r}; expected an int >= 4")
        if isinstance(channels, (str, bytes)) or not isinstance(channels, (Sequence, np.ndarray)) or len(channels) == 0 or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 1 for c in channels
        ):
            raise ValueError(f"channels={channels!r}; expected a non-empty list of positive ints")
        self.input_size = int(input_size)
        self.channels = [int(c) for c in channels]
        self.threshold = float(threshold)
        self.net = _SmallCNN(self.channels)
        self.eval()

    @property
    def config(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "channels": self.channels, "threshold": self.threshold}

    def preprocess(self, frames: Any) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` or ``(H, W, 3)`` -> float ``(N, 3, S, S)`` in [-1, 1] on the model's device."""
        a = np.asarray(frames)
        if a.ndim == 3:
            a = a[None]
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (N, H, W, 3); got {a.dtype} {a.shape}")
        dev = next(self.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(a)).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict_proba(self, frames: Any, batch_size: int = 256) -> np.ndarray:
        """Success probability of every frame of ``(N, H, W, 3)``."""
        a = np.asarray(frames)
        a = a[None] if a.ndim == 3 else a
        out = [torch.sigmoid(self(self.preprocess(a[i : i + batch_size]))).cpu() for i in range(0, len(a), batch_size)]
        return torch.cat(out).double().numpy()

    def score(self, frames: np.ndarray, instruction: str = "") -> float:
        a = np.asarray(frames)
        return float(self.predict_proba(a[-1] if a.ndim == 4 else a)[0])

    def score_batch(self, frames: np.ndarray, instructions: Sequence[str] | None = None) -> np.ndarray:
        """``(B, T, H, W, 3)`` windows -> ``(B,)`` scores of their last frames."""
        return self.predict_proba(np.asarray(frames)[:, -1])

    def evaluate(self, frames: Any, labels: Any, threshold: float | None = None) -> dict[str, float]:
        """Precision/recall/F1/accuracy/kappa against true labels (e.g. real LIBERO's success flag)."""
        thr = self.threshold if threshold is None else float(threshold)
        probs = self.predict_proba(frames)
        metrics = binary_metrics(probs >= thr, labels)
        metrics["threshold"] = thr
        return metrics

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, out / WEIGHTS_NAME)
        (out / CONFIG_NAME).write_text(json.dumps({"judge_type": "classifier", **self.config}, indent=2))
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> ClassifierJudge:
        """Load a saved judge; every defect (bad JSON, unknown or ill-typed fields, truncated/corrupt weights,
        mismatched or non-finite tensors) raises ``ValueError`` naming the file at load, not at the first score."""
        from safetensors.torch import load_file

        p = Path(path)
        cfg_path, weights = p / CONFIG_NAME, p / WEIGHTS_NAME
        if not cfg_path.exists() or not weights.exists():
            raise FileNotFoundError(f"{p} is not a saved ClassifierJudge (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{cfg_path}: not valid JSON ({e})") from e
        if not isinstance(cfg, dict):
            raise ValueError(f"{cfg_path}: expected a JSON object, got a JSON {type(cfg).__name__}")
        if cfg.pop("judge_type", "classifier") != "classifier":
            raise ValueError(f"{cfg_path}: holds a judge of another type")
        unknown = sorted(set(cfg) - {"input_size", "channels", "threshold"})
        if unknown:
            raise ValueError(f"{cfg_path}: unknown fields {unknown}; expected input_size, channels, threshold")
        try:
            judge = cls(**cfg)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{cfg_path}: invalid judge config ({e})") from e
        try:
            sd = load_file(weights, device="cpu")
        except Exception as e:  # SafetensorError / OSError: the rust error text does not name the file
            raise ValueError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e})") from e
        for k, v in sd.items():
            if torch.is_floating_point(v) and not bool(torch.isfinite(v).all()):
                raise ValueError(f"{weights}: tensor {k!r} holds NaN or inf values; the judge is corrupt")
        try:
            judge.load_state_dict(sd)
        except RuntimeError as e:  # missing/unexpected keys, shape mismatches
            raise ValueError(f"{weights}: weights do not match {cfg_path.name} ({e})") from e
        return judge.to(device).eval()


@dataclass
class FitStep:
    """One optimiser step of :func:`fit_classifier_judge`, as its ``after_step`` hook sees it."""

    step: int  # 0-based index of the step just taken
    epoch: int
    loss: float
    lr: float
    resume_rng: torch.Tensor  # the shuffling generator's state a run resumed after this step must restore


#: ``resume(judge, optimizer, scheduler, shuffle_generator) -> first step``: restores a checkpoint (or not).
ResumeFn = Callable[[Any, Any, Any, torch.Generator], int]


def fit_classifier_judge(
    frames: Any,
    labels: Any,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    input_size: int = 64,
    channels: Sequence[int] = (16, 32, 64),
    threshold: float = 0.5,
    balance: bool = True,
    seed: int = 0,
    device: str = "cpu",
    resume: ResumeFn | None = None,
    stop_at: int | None = None,
    after_step: Callable[[FitStep], None] | None = None,
) -> ClassifierJudge:
    """THE judge fit loop (:func:`train_classifier_judge` and the resumable ``wvla-gym train judge`` both run it).

    ``resume`` may restore weights, optimiser, scheduler and the shuffling generator (saved at the start of an
    epoch) and returns the step to continue from: that epoch's order is redrawn and its done batches skipped,
    so a resumed run ends at exactly the weights of an uninterrupted one. ``stop_at`` ends early after that many
    steps in all; ``after_step`` sees every step (logs, checkpoints, progress).
    """
    x_all = np.asarray(frames)
    y_all = np.asarray(labels).astype(np.float32).reshape(-1)
    if x_all.ndim != 4 or x_all.dtype != np.uint8 or len(x_all) != len(y_all) or len(y_all) == 0:
        raise ValueError(f"need uint8 frames (N, H, W, 3) and N labels; got {x_all.dtype} {x_all.shape} and {y_all.shape}")
    if not np.isin(y_all, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1 (or bool)")
    # The order of these draws (shuffle generator, torch seed, weight init) fixes the result for a seed.
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    judge = ClassifierJudge(input_size=input_size, channels=channels, threshold=threshold).to(device)
    n_pos = float(y_all.sum())
    pos_weight = (len(y_all) - n_pos) / n_pos if balance and n_pos > 0 else 1.0
    pw = torch.tensor(pos_weight, device=device)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(y_all) / batch_size)
    total = epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total, 1))
    step = resume(judge, opt, sched, g) if resume is not None else 0
    end = total if stop_at is None else min(total, stop_at)
    judge.train()
    for epoch in range(step // per_epoch, epochs):
        if step >= end:
            break
        epoch_rng = g.get_state()
        order = torch.randperm(len(y_all), generator=g).numpy()
        for b in range(step - epoch * per_epoch, per_epoch):
            if step >= end:
                break
            idx = order[b * batch_size : (b + 1) * batch_size]
            x = judge.preprocess(x_all[idx])
            y = torch.from_numpy(y_all[idx]).to(device)
            loss = F.binary_cross_entropy_with_logits(judge(x), y, pos_weight=pw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                # at an epoch's end the next epoch starts from the generator's current state
                rng = g.get_state() if (step + 1) % per_epoch == 0 else epoch_rng
                after_step(FitStep(step, epoch, loss.item(), sched.get_last_lr()[0], rng))
            step += 1
    return judge.eval()


def train_classifier_judge(
    frames: Any,
    labels: Any,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    input_size: int = 64,
    channels: Sequence[int] = (16, 32, 64),
    threshold: float = 0.5,
    balance: bool = True,
    seed: int = 0,
    device: str = "cpu",
) -> ClassifierJudge:
    """Train a :class:`ClassifierJudge` on labelled frames (``(N, H, W, 3)`` uint8, labels 0/1).

    Frames usually come from recorded rollouts: last frames of successful real episodes as positives,
    earlier and failed frames as negatives. ``balance`` re-weights positives by ``#neg / #pos`` because
    success frames are rare. Deterministic for a ``seed`` on CPU.
    """
    return fit_classifier_judge(frames, labels, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                input_size=input_size, channels=channels, threshold=threshold, balance=balance,
                                seed=seed, device=device)
