"""VQ image tokenizer training: a small VQGAN of Chameleon's family (the model core's ``ChameleonVQGAN``).

Loss: L1 + MSE reconstruction + the quantiser's codebook/commitment loss, with dead-code restarts (codes no
batch used for ``restart_dead_every`` steps are re-seeded from encoder outputs). No GAN / perceptual loss: at
64 px and CPU budgets the plain objective is what fits. Output folder: ``vq_config.json``,
``vqgan.safetensors`` and ``vq_report.json`` (held-out reconstruction PSNR).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import ChameleonVQVAEConfig

from wvla_gym.model.image_tokenizer import ChameleonVQGAN, pixels_to_tensor, tensor_to_pixels
from wvla_gym.utils.images import psnr_per_image, resize_uint8
from wvla_gym.utils.io import atomic_write_text
from wvla_gym.utils.run_identity import path_digest

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
from .config import VQTrainConfig
from .data import load_frames

VQ_CONFIG = "vq_config.json"
VQ_WEIGHTS = "vqgan.safetensors"
VQ_REPORT = "vq_report.json"
VQ_LOG = "vq_log.jsonl"
VQ_OUTPUTS = (CKPT, VQ_LOG, VQ_WEIGHTS, VQ_CONFIG, VQ_REPORT)
"""what ``--restart`` deletes (besides ``run_identity.json``, which it rewrites)"""


def vq_config_from(cfg: VQTrainConfig) -> ChameleonVQVAEConfig:
    levels = len(cfg.channel_multiplier) - 1
    if 2**levels != cfg.downsample:
        raise ValueError(f"channel_multiplier has {levels} halvings but downsample={cfg.downsample}")
    if cfg.resolution % cfg.downsample:
        raise ValueError(f"resolution {cfg.resolution} is not a multiple of downsample {cfg.downsample}")
    return ChameleonVQVAEConfig(
        embed_dim=cfg.embed_dim,
        num_embeddings=cfg.n_codes,
        latent_channels=cfg.latent_channels,
        resolution=cfg.resolution,
        base_channels=cfg.base_channels,
        channel_multiplier=list(cfg.channel_multiplier),
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=[],
    )


def load_vq(folder: str | Path) -> ChameleonVQGAN:
    """A VQGAN written by :func:`train_vq`."""
    folder = Path(folder)
    if not (folder / VQ_CONFIG).exists() or not (folder / VQ_WEIGHTS).exists():
        raise FileNotFoundError(f"{folder} is not a trained VQ folder (needs {VQ_CONFIG} and {VQ_WEIGHTS})")
    config = ChameleonVQVAEConfig(**json.loads((folder / VQ_CONFIG).read_text()))
    vq = ChameleonVQGAN(config)
    vq.load_state_dict(load_file(str(folder / VQ_WEIGHTS)))
    return vq.eval()


@torch.no_grad()
def reconstruction_psnr(vq: ChameleonVQGAN, frames: np.ndarray, batch_size: int = 64) -> dict[str, float]:
    """Mean per-frame PSNR (uint8, peak 255) of encode -> codes -> decode, and the share of codes used."""
    vq.eval()
    psnrs, used = [], set()
    for i in range(0, len(frames), batch_size):
        x = pixels_to_tensor(frames[i : i + batch_size])
        codes = vq.encode_to_codes(x)
        used.update(codes.unique().tolist())
        rec = tensor_to_pixels(vq.decode_codes(codes))
        psnrs.append(psnr_per_image(rec, frames[i : i + batch_size]))
    p = np.concatenate(psnrs) if psnrs else np.zeros(0)
    return {"psnr_db": float(p.mean()) if len(p) else float("nan"), "frames": int(len(p)),
            "codes_used": len(used), "codes_total": int(vq.config.num_embeddings)}


def vq_identity(cfg: VQTrainConfig) -> dict[str, Any]:
    """What a VQ run's result depends on (``run_identity.json``): the config and the data files' hashes."""
    return {**config_identity(cfg), "data": data_identity(cfg.data)}


def vq_digest(folder: str | Path) -> dict[str, str]:
    """Content hashes of a trained VQ (its config and weights; logs and checkpoints do not count)."""
    folder = Path(folder)
    if not (folder / VQ_CONFIG).exists() or not (folder / VQ_WEIGHTS).exists():
        raise FileNotFoundError(f"{folder} is not a trained VQ folder (needs {VQ_CONFIG} and {VQ_WEIGHTS})")
    return {"config": path_digest(folder / VQ_CONFIG), "weights": path_digest(folder / VQ_WEIGHTS)}


def _save_vq_checkpoint(out: Path, vq: ChameleonVQGAN, opt, sched, step: int, rng: np.random.Generator,
                        last_used: torch.Tensor) -> None:
    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous() for k, v in vq.state_dict().items()}, str(tmp / VQ_WEIGHTS))
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
                    "last_used": last_used.clone()}, tmp / STATE)

    save_checkpoint_dir(out, write)


def train_vq(cfg: VQTrainConfig) -> dict[str, Any]:
    """Train (or resume from ``<out>/ckpt``), save to ``cfg.out`` and return the report (``vq_report.json``).

    Checkpoints every ``checkpoint_every`` steps hold the weights, optimiser, scheduler, numpy / torch RNG
    states and the dead-code bookkeeping, so a resumed run ends with the weights of an uninterrupted one.
    """
    if not cfg.data:
        raise ValueError("VQ training needs --data (recorded LIBERO-layout HDF5 files or folders)")
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={cfg.checkpoint_every}; expected >= 1")
    out = Path(cfg.out)
    claim_training_run(out, "train-vq", vq_identity(cfg), VQ_OUTPUTS, restart=cfg.restart)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    episodes = load_frames(cfg.data)
    n_hold = min(cfg.heldout_episodes, max(len(episodes) - 1, 0))
    train_eps, held_eps = episodes[: len(episodes) - n_hold], episodes[len(episodes) - n_hold :]
    train = resize_uint8(np.concatenate([f for _, _, f in train_eps]), cfg.resolution)
    if len(train) > cfg.max_frames:
        train = train[rng.choice(len(train), cfg.max_frames, replace=False)]
    held = resize_uint8(np.concatenate([f for _, _, f in held_eps]), cfg.resolution) if held_eps else train[:0]

    vq = ChameleonVQGAN(vq_config_from(cfg))
    vq.train()
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0))))
    )
    last_used = torch.zeros(cfg.n_codes, dtype=torch.long)
    start = 0
    ck = latest_checkpoint(out)
    if ck is not None:
        vq.load_state_dict(load_file(str(ck / VQ_WEIGHTS)))
        state = safe_load(ck / STATE)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        last_used = state["last_used"].clone()
        start = int(state["step"])
    truncate_log(out / VQ_LOG, start)  # steps after the checkpoint are redone: log each step once
    log = open(out / VQ_LOG, "a", encoding="utf-8")
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    for step in tqdm(range(start, end), desc="train vq", initial=start, total=end, mininterval=5,
                     disable=not cfg.progress):
        idx = rng.integers(0, len(train), cfg.batch_size)
        x = pixels_to_tensor(train[idx])
        z = vq.quant_conv(vq.encoder(x))
        zq, vq_loss, codes = vq.quantize(z)
        rec = vq.decoder(vq.post_quant_conv(zq))
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        loss = rec_loss + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vq.parameters(), 1.0)
        opt.step()
        sched.step()
        last_used[codes.unique()] = step
        if cfg.restart_dead_every and step and step % cfg.restart_dead_every == 0:
            dead = torch.nonzero(step - last_used >= cfg.restart_dead_every).flatten()
            if len(dead):  # re-seed unused codes on encoder outputs of this batch (plus a little noise)
                flat = z.detach().permute(0, 2, 3, 1).reshape(-1, cfg.embed_dim)
                pick = flat[torch.randint(0, len(flat), (len(dead),))]
                with torch.no_grad():
                    vq.quantize.embedding.weight[dead] = pick + 1e-3 * torch.randn_like(pick)
                last_used[dead] = step
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            mse = F.mse_loss(rec.detach().clamp(-1, 1), x).item()
            rec_psnr = 10 * math.log10(4.0 / max(mse, 1e-10))  # range [-1, 1] -> peak^2 = 4
            log.write(json.dumps({"step": step, "loss": loss.item(), "rec": rec_loss.item(), "vq": vq_loss.item(),
                                  "train_psnr_db": rec_psnr, "codes_in_batch": int(codes.unique().numel()),
                                  "time_s": round(time.perf_counter() - t0, 1)}) + "\n")
            log.flush()
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            _save_vq_checkpoint(out, vq, opt, sched, step + 1, rng, last_used)
    log.close()
    vq.eval()
    atomic_save_safetensors(vq.state_dict(), out / VQ_WEIGHTS)
    atomic_write_text(out / VQ_CONFIG, json.dumps(vq.config.to_dict(), indent=2))
    report = {
        "heldout": reconstruction_psnr(vq, held) if len(held) else None,
        "train_sample": reconstruction_psnr(vq, train[: min(len(train), 512)]),
        "heldout_episodes": [[p, d] for p, d, _ in held_eps],
        "train_frames": int(len(train)),
        "steps": end,
        "schedule_steps": cfg.steps,
        "resumed_from": start,
        "wall_s_this_run": round(time.perf_counter() - t0, 1),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
    }
    atomic_write_text(out / VQ_REPORT, json.dumps(report, indent=2))
    return report
