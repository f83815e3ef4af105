"""torchrun glue for data-parallel training: where this process sits, the global-batch loss, rank-0-first steps.

Every rank draws the same global batch and trains on its contiguous shard; the loss is normalised by the global
target counts, so data-parallel training equals single-process training of the same command (up to float
rounding) and a run can be resumed with another process count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from wvla_gym.model.modeling_worldvla import worldvla_loss_terms

from .config import ModelTrainConfig


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

def device_for(cfg: ModelTrainConfig, d: DistInfo) -> torch.device:
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r} but CUDA is not available")
        if d.distributed:
            dev = torch.device("cuda", d.local_rank)
            torch.cuda.set_device(dev)
    return dev

def barrier(d: DistInfo) -> None:
    if d.distributed:
        dist.barrier()

def ddp_loss(logits: torch.Tensor, labels: torch.Tensor, loss_weights: torch.Tensor, z_loss_weight: float,
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

def global_sum(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone()
    dist.all_reduce(x)
    return x

def lead_first(d: DistInfo, fn):
    """Run ``fn`` on rank 0 only; every rank returns its result or raises its error (no rank left waiting)."""
    result, error = None, None
    if d.rank == 0:
        try:
            result = fn()
        except (ValueError, FileNotFoundError) as e:
            error = e
    if d.distributed:
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0)
        if d.rank != 0 and box[0] is not None:
            raise ValueError(f"rank 0 failed: {box[0]}")
    if error is not None:
        raise error
    return result
