"""Visuomotor behaviour cloning: a small ResNet-style encoder on the agent-view image (+ the 8-dim proprio
state) predicting an action chunk, trained on LIBERO-layout demo files.

The recipe is the standard one of robomimic / Diffusion Policy's CNN baselines, written here in plain torch
(torchvision does not import beside the pinned CPU torch): residual blocks with GroupNorm (no batch statistics,
so one observation acts exactly as it would in a batch), global average pooling, an MLP head; actions and
states normalised to [-1, 1] by the training data's min / max; random-shift augmentation (pad, then a random
crop back to size: DrQ's, robomimic's ``CropRandomizer``); L1 (or MSE) loss on the whole chunk. Chunks past an
episode's end repeat its last action.

``train_bc`` writes, in ``--out``:

* ``config.json`` + ``model.safetensors``: the final policy (``wvla-gym eval --policy bc:OUT``);
* ``epochs/epoch_NNN/``: the policy after every epoch (``--policy bc:OUT/epochs/epoch_003``): several epochs
  and ``--max-episodes`` settings give policies of graded quality;
* ``ckpt/`` (weights, optimiser, scheduler, RNG states, step): rerunning the same command resumes from it to
  exactly the weights of an uninterrupted run; ``run_identity.json`` refuses other settings (``--restart``);
* ``bc_log.jsonl`` (per-step loss) and ``bc_report.json`` (per-epoch mean loss, data, timings).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wvla_gym.protocol import ACTION_DIM, STATE_DIM
from wvla_gym.utils.images import resize_uint8
from wvla_gym.utils.io import atomic_write_json, atomic_write_text, read_json

from .checkpoint import (
    CKPT,
    STATE,
    atomic_save_safetensors,
    claim_training_run,
    config_identity,
    data_identity,
    latest_checkpoint,
    safe_load,
    save_checkpoint_dir,
    truncate_log,
)
from .config import BCTrainConfig

__all__ = ["BCNet", "load_bc", "load_bc_data", "save_bc", "train_bc"]

FORMAT = "wvla-gym.bc/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BC_LOG = "bc_log.jsonl"
BC_REPORT = "bc_report.json"
EPOCHS_DIR = "epochs"
BC_OUTPUTS = (CKPT, EPOCHS_DIR, BC_LOG, BC_REPORT, CONFIG_NAME, WEIGHTS_NAME)
"""what ``--restart`` deletes (besides ``run_identity.json``, which it rewrites)"""


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class BasicBlock(nn.Module):
    """ResNet-18's block: two 3x3 convs with a residual (a 1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out
                     else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(y)) + self.skip(x))


class BCNet(nn.Module):
    """Image (B, H, W, 3) uint8 + state (B, 8) normalised -> normalised action chunk (B, K, 7).

    ``config`` keys: ``channels`` (one residual stage each; every stage after the first halves the size),
    ``blocks`` (per stage), ``hidden``, ``chunk``, ``use_state``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        ch = [int(c) for c in config["channels"]]
        self.chunk, self.use_state = int(config["chunk"]), bool(config["use_state"])
        self.stem = nn.Sequential(nn.Conv2d(3, ch[0], 3, 1, 1, bias=False), _norm(ch[0]), nn.ReLU())
        layers: list[nn.Module] = []
        c_in = ch[0]
        for i, c in enumerate(ch):
            for b in range(int(config["blocks"])):
                layers.append(BasicBlock(c_in, c, 2 if i > 0 and b == 0 else 1))
                c_in = c
        self.stages = nn.Sequential(*layers)
        hidden = int(config["hidden"])
        self.head = nn.Sequential(nn.Linear(c_in + (STATE_DIM if self.use_state else 0), hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, self.chunk * ACTION_DIM))

    def forward(self, images: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        feat = self.stages(self.stem(x)).mean(dim=(2, 3))
        if self.use_state:
            feat = torch.cat([feat, state.float()], dim=1)
        return self.head(feat).view(-1, self.chunk, ACTION_DIM)


def _range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # A constant dimension (e.g. an unused rotation) would divide by zero: give it a unit range.
    span = np.where(hi - lo > 1e-6, hi - lo, 1.0)
    return lo, span


def normalise(x: np.ndarray | torch.Tensor, lo: Any, hi: Any) -> Any:
    lo_, span = _range(np.asarray(lo, np.float32), np.asarray(hi, np.float32))
    if isinstance(x, torch.Tensor):
        return 2 * (x - torch.as_tensor(lo_)) / torch.as_tensor(span) - 1
    return 2 * (x - lo_) / span - 1


def unnormalise(x: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    lo_, span = _range(np.asarray(lo, np.float32), np.asarray(hi, np.float32))
    return (x + 1) / 2 * span + lo_


def save_bc(folder: str | os.PathLike, model: BCNet, config: dict[str, Any]) -> Path:
    """``config.json`` + ``model.safetensors`` (weights written first: a folder with a config is complete)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(model.state_dict(), folder / WEIGHTS_NAME)
    atomic_write_json(folder / CONFIG_NAME, config, indent=2, sort_keys=True)
    return folder


def load_bc(folder: str | os.PathLike) -> tuple[BCNet, dict[str, Any]]:
    """A saved BC policy folder -> (model in eval mode, config); errors name the folder / file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"bc policy folder {folder} does not exist; expected a folder written by "
                                "`wvla-gym train bc` (config.json + model.safetensors)")
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"bc policy folder {folder} lacks {CONFIG_NAME} or {WEIGHTS_NAME}; pass the "
                                "`train bc --out` folder (final policy) or one of its epochs/epoch_NNN folders")
    config = read_json(folder / CONFIG_NAME)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG_NAME} is not a bc policy config (format != {FORMAT!r})")
    from safetensors.torch import load_file

    model = BCNet(config)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    except (RuntimeError, OSError) as e:
        raise ValueError(f"{folder / WEIGHTS_NAME} does not fit its {CONFIG_NAME} ({str(e).splitlines()[0]})") from e
    return model.eval(), config


def load_bc_data(data: list[str], resolution: int, chunk: int,
                 max_episodes: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[Any]]]:
    """Images (N, R, R, 3) uint8 in the env's orientation, states (N, 8), chunks (N, K, 7) and the episodes used
    (``[file, demo, T]``, the first ``max_episodes`` in file / demo order)."""
    from wvla_gym.data.dataset import DemoIndex

    index = DemoIndex(list(data), "agentview", None)
    try:
        eps = index.demos[: max_episodes or None]
        images, states, chunks = [], [], []
        for path, demo, n in eps:
            lf = index.file(path)
            frames = resize_uint8(lf.frames(demo), resolution)  # identity at the recorded size
            st = lf.env_states(demo)
            if st is None:
                raise ValueError(f"{path}:{demo} has no obs/ee_states + obs/gripper_states (the 8-dim proprio "
                                 "state); pass --no-use-state to train on images only")
            acts = np.clip(lf.actions(demo), -1.0, 1.0)
            idx = np.minimum(np.arange(n)[:, None] + np.arange(chunk)[None], n - 1)
            images.append(frames)
            states.append(st)
            chunks.append(acts[idx])
    finally:
        index.close()
    if not eps:
        raise ValueError("--data holds no demos")
    return (np.concatenate(images), np.concatenate(states).astype(np.float32), np.concatenate(chunks).astype(np.float32),
            [[p, d, int(n)] for p, d, n in eps])


def random_shift(images: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """DrQ's augmentation: replicate-pad by ``pad`` pixels, crop a random window of the original size per image."""
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    x = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate")
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=g)
    out = torch.stack([x[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(off.tolist())])
    return out.permute(0, 2, 3, 1)


def bc_identity(cfg: BCTrainConfig) -> dict[str, Any]:
    return {**config_identity(cfg), "data": data_identity(cfg.data)}


def _model_config(cfg: BCTrainConfig, stats: dict[str, list[float]], episodes: list[list[Any]]) -> dict[str, Any]:
    return {"format": FORMAT, "resolution": cfg.resolution, "chunk": cfg.chunk, "channels": list(cfg.channels),
            "blocks": cfg.blocks, "hidden": cfg.hidden, "use_state": cfg.use_state, **stats,
            "train_episodes": len(episodes)}


def train_bc(cfg: BCTrainConfig) -> dict[str, Any]:
    """Train (or resume) a BC policy; returns the report written to ``bc_report.json``."""
    if not cfg.data:
        raise ValueError("bc training needs --data (LIBERO-layout HDF5 demo files or folders; unpack code files "
                         "with `wvla-gym data unpack` first)")
    for name, v, lo in (("epochs", cfg.epochs, 1), ("batch_size", cfg.batch_size, 1), ("chunk", cfg.chunk, 1),
                        ("checkpoint_every", cfg.checkpoint_every, 1), ("blocks", cfg.blocks, 1),
                        ("shift", cfg.shift, 0), ("resolution", cfg.resolution, 8)):
        if v < lo:
            raise ValueError(f"--{name.replace('_', '-')} {v}; expected >= {lo}")
    if cfg.max_episodes is not None and cfg.max_episodes < 1:
        raise ValueError(f"--max-episodes {cfg.max_episodes}; expected >= 1")
    if cfg.loss not in ("l1", "mse"):
        raise ValueError(f"--loss {cfg.loss!r}; expected 'l1' or 'mse'")
    if not cfg.channels:
        raise ValueError("--channels is empty; expected one width per residual stage, e.g. 32 64 128 256")
    out = Path(cfg.out)
    claim_training_run(out, "train-bc", bc_identity(cfg), BC_OUTPUTS, restart=cfg.restart)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    images, states, chunks, episodes = load_bc_data(cfg.data, cfg.resolution, cfg.chunk, cfg.max_episodes)
    a_flat = chunks[:, 0]
    stats = {"action_min": a_flat.min(0).tolist(), "action_max": a_flat.max(0).tolist(),
             "state_min": states.min(0).tolist(), "state_max": states.max(0).tolist()}
    mcfg = _model_config(cfg, stats, episodes)
    x_img = torch.from_numpy(images)
    x_state = torch.from_numpy(normalise(states, stats["state_min"], stats["state_max"]).astype(np.float32))
    y = torch.from_numpy(normalise(chunks, stats["action_min"], stats["action_max"]).astype(np.float32))

    torch.manual_seed(cfg.seed)
    model = BCNet(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * per_epoch
    end = total if cfg.stop_at is None else min(total, cfg.stop_at)
    warm = min(cfg.warmup_steps, total)
    # linear warmup, then cosine to 10 % of lr over the whole schedule (``epochs`` fixes it; stop_at does not)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(total - warm, 1))))
    shuffle = torch.Generator().manual_seed(cfg.seed)
    aug = torch.Generator().manual_seed(cfg.seed + 1)
    epoch_rng = shuffle.get_state()
    step = 0
    ck = latest_checkpoint(out)
    if ck is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ck / WEIGHTS_NAME)))
        state = safe_load(ck / STATE)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch_rng = state["epoch_rng"]
        aug.set_state(state["aug_rng"])
        step = int(state["step"])
    shuffle.set_state(epoch_rng)
    truncate_log(out / BC_LOG, step)  # steps after the checkpoint are redone: log each step once
    loss_fn = nn.functional.l1_loss if cfg.loss == "l1" else nn.functional.mse_loss

    def checkpoint(done: int, rng_state: torch.Tensor) -> None:
        def write(tmp: Path) -> None:
            save_bc(tmp, model, mcfg)
            torch.save({"step": done, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch_rng": rng_state.clone(), "aug_rng": aug.get_state()}, tmp / STATE)

        save_checkpoint_dir(out, write)

    from tqdm.auto import tqdm

    model.train()
    with open(out / BC_LOG, "a", encoding="utf-8") as log, \
            tqdm(total=end, initial=step, desc="train bc", mininterval=5, disable=not cfg.progress) as bar:
        while step < end:
            epoch = step // per_epoch
            epoch_rng = shuffle.get_state()  # the order of this epoch is redrawn from here on resume
            perm = torch.randperm(n, generator=shuffle)
            for b in range(step - epoch * per_epoch, per_epoch):
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                pred = model(random_shift(x_img[idx], cfg.shift, aug), x_state[idx])
                loss = loss_fn(pred, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                if step % cfg.log_every == 0 or step == total - 1:
                    log.write(json.dumps({"step": step, "epoch": epoch, "loss": round(float(loss.detach()), 6),
                                          "lr": sched.get_last_lr()[0]}) + "\n")
                    log.flush()
                step += 1
                bar.update(1)
                epoch_done = step % per_epoch == 0
                if epoch_done:
                    model.eval()
                    save_bc(out / EPOCHS_DIR / f"epoch_{step // per_epoch:03d}", model, mcfg)
                    model.train()
                if step % cfg.checkpoint_every == 0 or step == end or epoch_done:
                    # at an epoch's end the next epoch's order starts from the shuffler's current state
                    checkpoint(step, shuffle.get_state() if epoch_done else epoch_rng)
                if step >= end:
                    break
    model.eval()
    save_bc(out, model, mcfg)
    report = {"steps_done": step, "steps_total": total, "steps_per_epoch": per_epoch, "samples": n,
              "episodes": episodes, "epoch_loss": _epoch_losses(out / BC_LOG),
              "wall_s_this_run": round(time.perf_counter() - t0, 1), "config": dict(vars(cfg))}
    atomic_write_text(out / BC_REPORT, json.dumps(report, indent=2, default=str))
    return report


def _epoch_losses(log: Path) -> dict[str, float]:
    """Mean logged loss per epoch."""
    by: dict[int, list[float]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        by.setdefault(int(rec["epoch"]), []).append(float(rec["loss"]))
    return {str(e + 1): round(float(np.mean(v)), 6) for e, v in sorted(by.items())}
