"""Joint action + world-model training of a small Chameleon-architecture WorldVLA model (docs/protocol.md §3, §5, §8):
the trainer. Data, samples and model construction are :mod:`wvla_gym.training.joint_data`; the torchrun glue
is :mod:`wvla_gym.training.distributed`.

* Data: recorded LIBERO-layout demos -> WorldVLA token samples (:func:`wvla_gym.data.tokens.token_samples`):
  action samples (M frames -> K action blocks) and world samples (frame + action -> next frame), tokenized
  once with the frozen VQ tokenizer and cached in ``<out>/samples.pt`` (written atomically, tensors only, keyed
  by everything the tokens depend on: data hashes, demos, M, K, resolution, VQ hash, token layout, action range,
  world-model prompt; a cache with another key is rebuilt).
* Batches mix both kinds: ``world_weight`` world samples per action sample (0 = action-only, the ablation).
* Loss: the model core's (CE with α on image-token targets, z-loss), with the action attention mask.
* AdamW (β 0.9/0.95, wd 0.1 on matrices), linear warm-up then cosine decay, gradient clipping.
* ``<out>/ckpt/`` holds the latest checkpoint in our ``save_pretrained`` format plus ``train_state.pt``
  (optimizer, scheduler, step); re-running the same command resumes from it. Batches depend only on
  ``(seed, step)``, so a resumed run draws the same batches as an uninterrupted one. ``<out>/run_identity.json``
  records the settings (config, data hashes, VQ hash): resuming with others (a new ``--lr``...) is refused,
  ``--restart`` deletes the outputs and starts over. Only ``--stop-at`` may differ between invocations.
* ``<out>/train_log.jsonl``: one JSON line per ``log_every`` steps, each step once (a resume drops the lines
  after the checkpoint it redoes); ``<out>/model/``: the final model.

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
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from wvla_gym.model.loading import save_pretrained
from wvla_gym.model.modeling_worldvla import WorldVLAForConditionalGeneration
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
from .config import ModelTrainConfig
from .distributed import (
    DistInfo,
    barrier,
    ddp_loss,
    device_for,
    dist_info_from_env,
    global_sum,
    lead_first,
    per_rank_batch,
)
from .joint_data import (
    SAMPLES,
    action_stats,
    build_model,
    collate,
    draw_batch,
    init_weights,
    load_samples,
    outside_share,
    samples_key,
    save_samples,
    select_sources,
    tokenize,
)
from .vq import vq_digest

LOG = "train_log.jsonl"
REPORT = "train_report.json"
MODEL_OUTPUTS = (CKPT, SAMPLES, LOG, "model", REPORT)
"""what ``--restart`` deletes (besides ``run_identity.json``, which it rewrites)"""


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

    def write(tmp: Path) -> None:
        save_pretrained(model, tmp)
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "config": _jsonable(cfg)}, tmp / STATE)

    save_checkpoint_dir(out, write)


def _latest_checkpoint(out: Path) -> Path | None:
    return latest_checkpoint(out)


def model_identity(cfg: ModelTrainConfig) -> dict[str, Any]:
    """What a ``train model`` run's result depends on: the config (minus progress / logging fields and the VQ
    path), the data files' hashes and the VQ's hashes."""
    ident = config_identity(cfg, exclude={"vq", "init_from", "extra_world_samples"})
    for k, off in (("world_history", 1), ("world_context_noise", 0.0),  # added later: at their "off" value a run
                   ("extra_world_repeat", 1)):                           # folder made before them still resumes
        if ident.get(k) == off:
            ident.pop(k)
    if cfg.extra_world_samples:  # the samples, not the paths
        ident["extra_world_samples_digests"] = [path_digest(f) for f in cfg.extra_world_samples]
    if cfg.init_from is not None:  # the weights, not the path
        ident["init_from_digest"] = path_digest(Path(cfg.init_from) / "model.safetensors")
    return {**ident, "data": data_identity(cfg.data), "vq_digest": vq_digest(cfg.vq)}


def _jsonable(cfg: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}


def train_model(cfg: ModelTrainConfig) -> dict[str, Any]:
    """Train (or resume) and write ``<out>/model``; returns the training report.

    Under torchrun (``WORLD_SIZE`` > 1) trains data-parallel; see the module docstring ("Multi-GPU")."""
    if not cfg.data:
        raise ValueError("model training needs --data (recorded LIBERO-layout HDF5 files or folders)")
    if cfg.world_weight < 0:
        raise ValueError("world_weight must be >= 0")
    if isinstance(cfg.world_history, bool) or not isinstance(cfg.world_history, int) or cfg.world_history < 1:
        raise ValueError(f"world_history={cfg.world_history!r}; expected an int >= 1")
    if isinstance(cfg.extra_world_repeat, bool) or not isinstance(cfg.extra_world_repeat, int) or cfg.extra_world_repeat < 1:
        raise ValueError(f"extra_world_repeat={cfg.extra_world_repeat!r}; expected an int >= 1")
    for f in cfg.extra_world_samples:
        if not Path(f).is_file():
            raise FileNotFoundError(f"extra_world_samples: {f} does not exist; expected a file written by "
                                    "scripts/self_forcing_samples.py")
    if not 0.0 <= cfg.world_context_noise < 1.0:
        raise ValueError(f"world_context_noise={cfg.world_context_noise!r}; expected a share in [0, 1)")
    if cfg.init_from is not None and not (Path(cfg.init_from) / "model.safetensors").exists():
        raise FileNotFoundError(f"init_from={cfg.init_from!r} has no model.safetensors; expected a `wvla-gym train "
                                "model` output folder (<out>/model or <out>/ckpt)")
    d = dist_info_from_env()
    per_rank_batch(cfg.batch_size, d.world_size)
    device = device_for(cfg, d)
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
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={cfg.checkpoint_every}; expected >= 1")
    out = Path(cfg.out)
    # rank 0 records / checks the run identity (and clears the folder for --restart) before anything is read
    identity = lead_first(d, lambda: model_identity(cfg))
    lead_first(d, lambda: claim_training_run(out, "train-model", identity, MODEL_OUTPUTS, restart=cfg.restart))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    sources = select_sources(cfg.data, cfg.split)
    amin, amax = action_stats(sources)
    data_range = (amin, amax)
    if cfg.init_from is not None:  # keep the start model's bins: its action tokens keep their meaning
        init_cfg = json.loads((Path(cfg.init_from) / "config.json").read_text())
        amin, amax = list(init_cfg["action_min"]), list(init_cfg["action_max"])
    model = build_model(cfg, cfg.vq, amin, amax)
    if cfg.init_from is not None:
        init_weights(model, cfg.init_from)
    kinds = ("action", "world") if cfg.world_weight > 0 else ("action",)

    cache = out / SAMPLES

    def lead_samples():
        key = samples_key(model, sources, kinds, cfg.history, cfg.action_chunk, identity["data"],
                          identity["vq_digest"])
        got = load_samples(cache, key) if cache.exists() else None
        if got is None:  # no cache, or one made from other data / settings
            got = tokenize(model, sources, kinds, cfg.history, cfg.action_chunk)
            save_samples(cache, got, key)
        return got

    samples = lead_first(d, lead_samples)  # samples.pt is complete before the other ranks read it
    if samples is None:
        samples = load_samples(cache)
    for f in cfg.extra_world_samples:  # every rank reads them (small); drawn like the data's own world samples
        extra = load_samples(Path(f))
        if extra is None or not extra.get("world"):
            raise ValueError(f"extra_world_samples: {f} holds no world samples; expected a file written by "
                             "scripts/self_forcing_samples.py")
        samples["world"] = list(samples["world"]) + list(extra["world"]) * cfg.extra_world_repeat

    model.to(device)
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    start = 0
    ck = _latest_checkpoint(out)
    if ck is not None:  # every rank loads the same checkpoint
        model.load_state_dict(load_file(str(ck / "model.safetensors")))
        state = safe_load(ck / STATE, map_location=device)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
    barrier(d)  # every rank has read the checkpoint before rank 0 may replace it

    net: torch.nn.Module = model
    if d.distributed:
        # DDP broadcasts rank 0's weights at construction (they are identical anyway: same seed, same checkpoint)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    shard = per_rank_batch(cfg.batch_size, d.world_size)
    lo, hi = d.rank * shard, (d.rank + 1) * shard

    from tqdm.auto import tqdm

    image_ids = model.config.token_layout.image_ids
    model.train()
    if lead:
        truncate_log(out / LOG, start)  # steps after the checkpoint are redone: log each step once
    log = open(out / LOG, "a", encoding="utf-8") if lead else None
    t0 = time.perf_counter()
    end = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    bar = tqdm(range(start, end), desc="train model", initial=start, total=end,
               disable=not (cfg.progress and lead), mininterval=10)
    for step in bar:
        # every rank draws the same global batch and keeps its contiguous shard
        batch = draw_batch(samples, cfg.batch_size, cfg.world_weight, cfg.seed, step,
                           context_noise=cfg.world_context_noise, image_ids=image_ids)[lo:hi]
        batch = {k: v.to(device) for k, v in collate(batch, model).items()}
        if d.distributed:
            labels = batch.pop("labels")  # the loss is computed here, globally normalised (see ddp_loss)
            logits = net(**batch, mask_image_logits=False).logits  # as a forward with labels: image logits kept
            loss, share = ddp_loss(logits, labels, model.loss_weights(), model.config.z_loss_weight, d.world_size)
        else:
            loss = share = net(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces (averages) the gradients here, so clipping sees the global gradient
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            value = (global_sum(share) if d.distributed else share).item()  # the global batch's loss
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
            barrier(d)
    if log is not None:
        log.close()
    model.eval()
    if lead:
        save_pretrained(model, out / "model")
    n_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("model.vqmodel."))
    report = {"steps": end, "schedule_steps": cfg.steps, "resumed_from": start, "lm_parameters": n_params,
              "samples": {k: len(v) for k, v in samples.items()},
              "episodes": [[p, demo] for p, demo in sources], "action_min": amin, "action_max": amax,
              **({"init_from": cfg.init_from,
                  "actions_outside_bins": outside_share(sources, amin, amax),
                  "data_action_min": data_range[0], "data_action_max": data_range[1]} if cfg.init_from else {}),
              "world_size": d.world_size,
              "wall_s_this_run": round(time.perf_counter() - t0, 1), "config": _jsonable(cfg)}
    if lead:
        atomic_write_text(out / REPORT, json.dumps(report, indent=2))
    barrier(d)  # the outputs are complete when any rank returns
    return report
