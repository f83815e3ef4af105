"""Joint action + world-model training of a small Chameleon-architecture WorldVLA model (protocol §3, §5, §8).

* Data: recorded LIBERO-layout demos -> WorldVLA token samples (:func:`wvla_gym.data.tokens.token_samples`):
  action samples (M frames -> K action blocks) and world samples (frame + action -> next frame), tokenized
  once with the frozen VQ tokenizer and cached in ``<out>/samples.pt``.
* Batches mix both kinds: ``world_weight`` world samples per action sample (0 = action-only, the ablation).
* Loss: the model core's (CE with α on image-token targets, z-loss), with the action attention mask.
* AdamW (β 0.9/0.95, wd 0.1 on matrices), linear warm-up then cosine decay, gradient clipping.
* ``<out>/ckpt/`` holds the latest checkpoint in our ``save_pretrained`` format plus ``train_state.pt``
  (optimizer, scheduler, step); re-running the same command resumes from it. Batches depend only on
  ``(seed, step)``, so a resumed run draws the same batches as an uninterrupted one.
* ``<out>/train_log.jsonl``: one JSON line per ``log_every`` steps; ``<out>/model/``: the final model.

Multi-GPU: the same command under torchrun trains data-parallel (``DistributedDataParallel``; NCCL with
``--device cuda``, one GPU per process, else gloo on CPU)::

    torchrun --standalone --nproc_per_node 4 -m wvla_gym.cli.main train model --data data/obj64 \
        --vq runs/vq64 --out runs/model --device cuda

(``torchrun ... $(which wvla-gym) train model ...`` works too.) ``--batch-size`` stays the global batch and
must be divisible by the number of processes: every rank draws the same global batch of ``(seed, step)`` and
trains on its contiguous shard, with the loss normalised by the global target weight / token count, so the
result equals single-process training of the same command (up to float rounding) and a run can be resumed
with another process count. Rank 0 alone tokenizes (``samples.pt``), logs and writes checkpoints and the
model; every rank resumes from the same checkpoint. Without torchrun (``WORLD_SIZE`` unset or 1) no process
group is created.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from wvla_gym.data.split import split_files
from wvla_gym.data.tokens import token_samples
from wvla_gym.model.configuration_worldvla import WorldVLAConfig
from wvla_gym.model.image_tokenizer import ImageTokenizer
from wvla_gym.model.loading import save_pretrained
from wvla_gym.model.modeling_worldvla import WorldVLAForConditionalGeneration, worldvla_loss_terms
from wvla_gym.model.processing_worldvla import (
    IGNORE_INDEX,
    ByteTextTokenizer,
    WorldVLAProcessor,
    build_action_attention_mask,
    pad_left,
    to_model_mask,
)

from .config import ModelTrainConfig
from .data import resize_uint8
from .vq import load_vq

CKPT = "ckpt"
STATE = "train_state.pt"
SAMPLES = "samples.pt"
LOG = "train_log.jsonl"


def expand_files(data: Sequence[str]) -> list[str]:
    out: list[str] = []
    for d in data:
        p = Path(d)
        out.extend(str(f) for f in sorted(p.glob("*.hdf5"))) if p.is_dir() else out.append(str(p))
    if not out:
        raise ValueError("no HDF5 files in --data")
    return out


def select_sources(data: Sequence[str], split: str) -> list[tuple[str, str]]:
    """``(file, demo)`` pairs of WorldVLA's ``train`` split, or of every demo for ``split="all"``."""
    parts = split_files(expand_files(data))
    if split == "all":
        return [*parts["train"], *parts["val_ind"], *parts["val_ood"]]
    if split not in parts:
        raise ValueError(f"split={split!r}; expected 'all' or one of {sorted(parts)}")
    return parts[split]


def action_stats(sources: Sequence[tuple[str, str]]) -> tuple[list[float], list[float]]:
    """Per-dimension min / max of the training actions (the action tokenizer's normalisation range)."""
    from wvla_gym.data.hdf5 import _h5py

    h5py = _h5py()
    acts = []
    for path, demo in sources:
        with h5py.File(path, "r") as f:
            acts.append(np.asarray(f["data"][demo]["actions"], dtype=np.float64))
    a = np.concatenate(acts)
    lo, hi = a.min(0), a.max(0)
    narrow = hi - lo < 1e-3  # a constant dimension would divide by ~0
    lo[narrow] -= 1.0
    hi[narrow] += 1.0
    return [float(x) for x in lo], [float(x) for x in hi]


class _ResizingEncoder:
    """Image tokenizer that first resizes frames to the VQ resolution (data recorded at another size)."""

    def __init__(self, tok: ImageTokenizer, resolution: int):
        self.tok, self.resolution = tok, resolution

    def encode(self, images: np.ndarray) -> torch.Tensor:
        return self.tok.encode(resize_uint8(np.asarray(images), self.resolution))


def build_model(cfg: ModelTrainConfig, vq_dir: str, amin: list[float], amax: list[float]) -> WorldVLAForConditionalGeneration:
    """A randomly initialised LM of ``cfg``'s size around the trained (frozen) VQGAN."""
    vq = load_vq(vq_dir)
    config = WorldVLAConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        max_position_embeddings=1024,
        vq_config=vq.config.to_dict(),
        action_chunk=cfg.action_chunk,
        history=cfg.history,
        resolution=int(vq.config.resolution),
        action_min=amin,
        action_max=amax,
        image_loss_weight=cfg.image_loss_weight,
        z_loss_weight=cfg.z_loss_weight,
    )
    config._attn_implementation = "sdpa"
    model = WorldVLAForConditionalGeneration(config)
    model.model.vqmodel.load_state_dict(vq.state_dict())
    model.model.vqmodel.requires_grad_(False)
    return model


def processor_for(model: WorldVLAForConditionalGeneration) -> WorldVLAProcessor:
    c = model.config
    return WorldVLAProcessor(c.token_layout, ByteTextTokenizer(c.token_layout.text_byte_offset),
                             c.action_tokenizer(), c.world_model_prompt)


def tokenize(model: WorldVLAForConditionalGeneration, sources: Sequence[tuple[str, str]], kinds: Sequence[str],
             history: int, chunk: int) -> dict[str, list[tuple[list[int], list[int]]]]:
    tok = ImageTokenizer(model.model.vqmodel, model.config.token_layout)
    enc = _ResizingEncoder(tok, int(model.config.resolution))
    out: dict[str, list[tuple[list[int], list[int]]]] = {"action": [], "world": []}
    for s in token_samples(list(sources), processor_for(model), enc, kinds=kinds, history=history, chunk=chunk):
        out[s.kind].append((s.input_ids, s.labels))
    return out


def collate(samples: Sequence[tuple[list[int], list[int]]], model: WorldVLAForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Left-padded batch with positions and the action attention mask (padding keys hidden)."""
    layout = model.config.token_layout
    ids, valid = pad_left([s[0] for s in samples], layout.pad_id)
    labels, _ = pad_left([s[1] for s in samples], IGNORE_INDEX)
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    keep = build_action_attention_mask(ids, layout, padding_mask=valid)
    return {"input_ids": ids, "labels": labels, "position_ids": pos,
            "attention_mask": to_model_mask(keep, model.config._attn_implementation)}


def draw_batch(samples: dict[str, list], batch_size: int, world_weight: float, seed: int, step: int) -> list:
    """The batch of ``step``: a pure function of ``(seed, step)`` so that resumed runs match."""
    rng = np.random.default_rng([seed, step])
    n_world = int(round(batch_size * world_weight / (1.0 + world_weight))) if samples["world"] else 0
    n_world = min(n_world, batch_size - 1) if samples["action"] else batch_size
    n_act = batch_size - n_world
    batch = [samples["action"][i] for i in rng.integers(0, len(samples["action"]), n_act)] if n_act else []
    batch += [samples["world"][i] for i in rng.integers(0, len(samples["world"]), n_world)] if n_world else []
    return batch


def _lr_lambda(cfg: ModelTrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(cfg.warmup_steps, 1)
        t = min((step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1), 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _optimizer(model: WorldVLAForConditionalGeneration, cfg: ModelTrainConfig) -> torch.optim.Optimizer:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]  # norms and biases: decaying them only hurts
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=tuple(cfg.betas))


def _save_checkpoint(out: Path, model, opt, sched, step: int, cfg: ModelTrainConfig) -> None:
    """Write ``ckpt.tmp`` completely, then swap it in, so a kill never leaves a half-written ``ckpt``."""
    tmp, final, old = out / f"{CKPT}.tmp", out / CKPT, out / f"{CKPT}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp)
    torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "config": _jsonable(cfg)}, tmp / STATE)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _latest_checkpoint(out: Path) -> Path | None:
    for name in (CKPT, f"{CKPT}.old"):  # .old survives only a kill between the two renames
        if (out / name / STATE).exists():
            return out / name
    return None


def _jsonable(cfg: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun launch (all defaults: a plain single-process run)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info_from_env(env: Any = None) -> DistInfo:
    """torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``; a single process when ``WORLD_SIZE`` is unset or 1."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    return DistInfo(rank=int(env["RANK"]), local_rank=int(env.get("LOCAL_RANK", env["RANK"])), world_size=world)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global ``batch_size``."""
    if world_size < 1 or batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by world_size={world_size} "
                         "(the number of torchrun processes)")
    return batch_size // world_size


def _device(cfg: ModelTrainConfig, d: DistInfo) -> torch.device:
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r} but CUDA is not available")
        if d.distributed:
            dev = torch.device("cuda", d.local_rank)
            torch.cuda.set_device(dev)
    return dev


def _barrier(d: DistInfo) -> None:
    if d.distributed:
        dist.barrier()


def _ddp_loss(logits: torch.Tensor, labels: torch.Tensor, loss_weights: torch.Tensor, z_loss_weight: float,
              world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``worldvla_loss`` of the *global* batch, as this rank's share; returns ``(loss to backward, global loss)``.

    The shards hold different numbers of targets (action vs world samples), so each rank divides its loss
    *sums* by the all-reduced global denominators (:func:`worldvla_loss_terms`) and multiplies by
    ``world_size``, which DDP's gradient averaging divides out again: the averaged gradient is exactly the
    gradient of the full-batch loss (the denominators do not depend on the parameters).
    """
    nums, dens = worldvla_loss_terms(logits, labels, loss_weights, z_loss_weight)
    dist.all_reduce(dens)
    share = (nums / dens).sum()
    return share * world_size, share.detach()


def _global_sum(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def train_model(cfg: ModelTrainConfig) -> dict[str, Any]:
    """Train (or resume) and write ``<out>/model``; returns the training report.

    Under torchrun (``WORLD_SIZE`` > 1) trains data-parallel; see the module docstring ("Multi-GPU")."""
    if not cfg.data:
        raise ValueError("model training needs --data (recorded LIBERO-layout HDF5 files or folders)")
    if cfg.world_weight < 0:
        raise ValueError("world_weight must be >= 0")
    d = dist_info_from_env()
    per_rank_batch(cfg.batch_size, d.world_size)
    device = _device(cfg, d)
    if not d.distributed:
        return _train(cfg, d, device)
    # generous timeout: the other ranks wait at a barrier while rank 0 tokenizes the data set
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))
    try:
        return _train(cfg, d, device)
    finally:
        dist.destroy_process_group()


def _train(cfg: ModelTrainConfig, d: DistInfo, device: torch.device) -> dict[str, Any]:
    lead = d.rank == 0  # the only rank that writes
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = select_sources(cfg.data, cfg.split)
    amin, amax = action_stats(sources)
    model = build_model(cfg, cfg.vq, amin, amax)
    kinds = ("action", "world") if cfg.world_weight > 0 else ("action",)

    cache = out / SAMPLES
    samples = None
    if lead:
        if cache.exists():
            samples = torch.load(cache, weights_only=False)
        else:
            samples = tokenize(model, sources, kinds, cfg.history, cfg.action_chunk)
            torch.save(samples, cache)
    _barrier(d)  # samples.pt is complete before the other ranks read it
    if samples is None:
        samples = torch.load(cache, weights_only=False)

    model.to(device)
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    start = 0
    ck = _latest_checkpoint(out)
    if ck is not None:  # every rank loads the same checkpoint
        model.load_state_dict(load_file(str(ck / "model.safetensors")))
        state = torch.load(ck / STATE, weights_only=False, map_location=device)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
    _barrier(d)  # every rank has read the checkpoint before rank 0 may replace it

    net: torch.nn.Module = model
    if d.distributed:
        # DDP broadcasts rank 0's weights at construction (they are identical anyway: same seed, same checkpoint)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    shard = per_rank_batch(cfg.batch_size, d.world_size)
    lo, hi = d.rank * shard, (d.rank + 1) * shard

    from tqdm.auto import tqdm

    model.train()
    log = open(out / LOG, "a", encoding="utf-8") if lead else None
    t0 = time.perf_counter()
    end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    bar = tqdm(range(start, end), desc="train model", initial=start, total=end,
               disable=not (cfg.progress and lead), mininterval=10)
    for step in bar:
        # every rank draws the same global batch and keeps its contiguous shard
        batch = draw_batch(samples, cfg.batch_size, cfg.world_weight, cfg.seed, step)[lo:hi]
        batch = {k: v.to(device) for k, v in collate(batch, model).items()}
        if d.distributed:
            labels = batch.pop("labels")  # the loss is computed here, globally normalised (see _ddp_loss)
            logits = net(**batch, mask_image_logits=False).logits  # as a forward with labels: image logits kept
            loss, share = _ddp_loss(logits, labels, model.loss_weights(), model.config.z_loss_weight, d.world_size)
        else:
            loss = share = net(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces (averages) the gradients here, so clipping sees the global gradient
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            value = (_global_sum(share) if d.distributed else share).item()  # the global batch's loss
            if log is not None:
                rec = {"step": step, "loss": round(value, 5), "grad_norm": round(float(gnorm), 4),
                       "lr": sched.get_last_lr()[0], "time_s": round(time.perf_counter() - t0, 1)}
                if d.distributed:
                    rec["world_size"] = d.world_size
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{value:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            if lead:
                _save_checkpoint(out, model, opt, sched, step + 1, cfg)
            _barrier(d)
    if log is not None:
        log.close()
    model.eval()
    if lead:
        save_pretrained(model, out / "model")
    n_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("model.vqmodel."))
    report = {"steps": end, "schedule_steps": cfg.steps, "resumed_from": start, "lm_parameters": n_params,
              "samples": {k: len(v) for k, v in samples.items()},
              "episodes": [[p, demo] for p, demo in sources], "action_min": amin, "action_max": amax,
              "world_size": d.world_size,
              "wall_s_this_run": round(time.perf_counter() - t0, 1), "config": _jsonable(cfg)}
    if lead:
        (out / "train_report.json").write_text(json.dumps(report, indent=2))
    _barrier(d)  # the outputs are complete when any rank returns
    return report
