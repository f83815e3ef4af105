"""Joint action + world-model training of a small Chameleon-architecture WorldVLA model (protocol §3, §5, §8).

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
import os
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
from wvla_gym.utils.images import resize_uint8
from wvla_gym.utils.run_identity import atomic_write_text, path_digest

from .checkpoint import (
    CKPT,
    STATE,
    atomic_torch_save,
    claim_training_run,
    config_identity,
    data_identity,
    expand_data,
    latest_checkpoint,
    safe_load,
    save_checkpoint_dir,
    truncate_log,
)
from .config import ModelTrainConfig
from .vq import load_vq, vq_digest

SAMPLES = "samples.pt"
LOG = "train_log.jsonl"
REPORT = "train_report.json"
MODEL_OUTPUTS = (CKPT, SAMPLES, LOG, "model", REPORT)
"""what ``--restart`` deletes (besides ``run_identity.json``, which it rewrites)"""
SAMPLES_FORMAT = 2


def expand_files(data: Sequence[str]) -> list[str]:
    return expand_data(data)


def select_sources(data: Sequence[str], split: str) -> list[tuple[str, str]]:
    """``(file, demo)`` pairs of WorldVLA's ``train`` split, or of every demo for ``split="all"``.

    The split is made per folder of files (a dataset: its tasks and their demos), so two datasets may each hold
    a file of the same task (e.g. expert demos and world-model rollouts of it)."""
    groups: dict[str, list[str]] = {}
    for f in expand_files(data):
        groups.setdefault(os.path.dirname(os.path.abspath(f)), []).append(f)
    out: list[tuple[str, str]] = []
    for files in groups.values():
        parts = split_files(files)
        if split == "all":
            out += [*parts["train"], *parts["val_ind"], *parts["val_ood"]]
        elif split in parts:
            out += parts[split]
        else:
            raise ValueError(f"split={split!r}; expected 'all' or one of {sorted(parts)}")
    return out


def action_stats(sources: Sequence[tuple[str, str]]) -> tuple[list[float], list[float]]:
    """Per-dimension min / max of the training actions (the action tokenizer's normalisation range)."""
    from wvla_gym.data.hdf5 import LiberoFile

    acts = []
    for path, demo in sources:
        with LiberoFile(path) as f:
            acts.append(f.actions(demo, dtype=np.float64))
    a = np.concatenate(acts)
    lo, hi = a.min(0), a.max(0)
    narrow = hi - lo < 1e-3  # a constant dimension would divide by ~0
    lo[narrow] -= 1.0
    hi[narrow] += 1.0
    return [float(x) for x in lo], [float(x) for x in hi]


def _outside_share(sources: Sequence[tuple[str, str]], amin: Sequence[float], amax: Sequence[float]) -> float:
    """Share of the training action values outside ``[amin, amax]`` (they land in the edge bins)."""
    from wvla_gym.data.hdf5 import LiberoFile

    acts = []
    for path, demo in sources:
        with LiberoFile(path) as f:
            acts.append(f.actions(demo, dtype=np.float64))
    a = np.concatenate(acts)
    return round(float(((a < np.asarray(amin)) | (a > np.asarray(amax))).mean()), 6)


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
        world_history=cfg.world_history,
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
    wh = int(getattr(model.config, "world_history", 1))
    tok = ImageTokenizer(model.model.vqmodel, model.config.token_layout)
    enc = _ResizingEncoder(tok, int(model.config.resolution))
    out: dict[str, list[tuple[list[int], list[int]]]] = {"action": [], "world": []}
    for s in token_samples(list(sources), processor_for(model), enc, kinds=kinds, history=history, chunk=chunk,
                           world_history=wh):
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


def draw_batch(samples: dict[str, list], batch_size: int, world_weight: float, seed: int, step: int, *,
               context_noise: float = 0.0, image_ids: Sequence[int] = ()) -> list:
    """The batch of ``step``: a pure function of ``(seed, step)`` so that resumed runs match.

    ``context_noise`` > 0 replaces that share of each world sample's prompt image codes (``image_ids``; the
    labels' -100 part) by uniformly drawn codes; the draws come after the sample indices, so a batch's samples
    do not depend on it."""
    rng = np.random.default_rng([seed, step])
    n_world = int(round(batch_size * world_weight / (1.0 + world_weight))) if samples["world"] else 0
    n_world = min(n_world, batch_size - 1) if samples["action"] else batch_size
    n_act = batch_size - n_world
    batch = [samples["action"][i] for i in rng.integers(0, len(samples["action"]), n_act)] if n_act else []
    world = [samples["world"][i] for i in rng.integers(0, len(samples["world"]), n_world)] if n_world else []
    if context_noise > 0 and world:
        codes = np.asarray(image_ids, dtype=np.int64)
        world = [corrupt_context(ids, labels, context_noise, codes, rng) for ids, labels in world]
    return batch + world


def corrupt_context(ids: Sequence[int], labels: Sequence[int], share: float, image_ids: np.ndarray,
                    rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """``(ids, labels)`` with each prompt image code (an id in ``image_ids`` whose label is -100) replaced, with
    probability ``share``, by a code drawn uniformly from ``image_ids``. Targets and every other token are kept."""
    a = np.asarray(ids, dtype=np.int64)
    where = np.flatnonzero((np.asarray(labels) == IGNORE_INDEX) & np.isin(a, image_ids))
    hit = where[rng.random(len(where)) < share]
    a[hit] = image_ids[rng.integers(0, len(image_ids), len(hit))]
    return a.tolist(), list(labels)


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
    ident = config_identity(cfg, exclude={"vq", "init_from"})
    for k, off in (("world_history", 1), ("world_context_noise", 0.0)):  # added later: at their "off" value a run
        if ident.get(k) == off:                                           # folder made before them still resumes
            ident.pop(k)
    if cfg.init_from is not None:  # the weights, not the path
        ident["init_from_digest"] = path_digest(Path(cfg.init_from) / "model.safetensors")
    return {**ident, "data": data_identity(cfg.data), "vq_digest": vq_digest(cfg.vq)}


def init_weights(model: WorldVLAForConditionalGeneration, folder: str | os.PathLike) -> None:
    """Load the LM weights of a ``save_pretrained`` folder into ``model`` (same size; the VQ must be the same)."""
    src = Path(folder)
    if not (src / "model.safetensors").exists() or not (src / "config.json").exists():
        raise FileNotFoundError(f"init_from={os.fspath(folder)!r} has no config.json + model.safetensors; expected "
                                "a `wvla-gym train model` output folder (<out>/model or <out>/ckpt)")
    sd = load_file(str(src / "model.safetensors"))
    own = model.state_dict()
    bad = sorted(k for k in own if k not in sd or sd[k].shape != own[k].shape)
    if bad or set(sd) - set(own):
        raise ValueError(f"init_from={os.fspath(folder)!r} does not fit this model (hidden size, layers, vocabulary "
                         f"or VQ differ): {(bad or sorted(set(sd) - set(own)))[:4]}")
    vq = [k for k in own if k.startswith("model.vqmodel.") and not torch.equal(sd[k].to(own[k].dtype), own[k])]
    if vq:
        raise ValueError(f"init_from={os.fspath(folder)!r} was trained with another VQ than --vq ({vq[0]} differs)")
    model.load_state_dict(sd)


def samples_key(model: WorldVLAForConditionalGeneration, sources: Sequence[tuple[str, str]], kinds: Sequence[str],
                history: int, chunk: int, data: Any, vq: Any) -> str:
    """Everything the cached token samples depend on, as one canonical JSON string."""
    c = model.config
    return json.dumps({"format": SAMPLES_FORMAT, "sources": [list(s) for s in sources], "data": data, "vq": vq,
                       "kinds": list(kinds), "history": history, "chunk": chunk, "resolution": int(c.resolution),
                       "layout": c.token_layout.to_dict(), "action_min": list(c.action_min),
                       "action_max": list(c.action_max), "world_model_prompt": c.world_model_prompt,
                       **({"world_history": c.world_history} if c.world_history != 1 else {})},
                      sort_keys=True, default=str)


def _pack(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in seqs], dtype=torch.int64)
    flat = torch.tensor([t for x in seqs for t in x], dtype=torch.int64)
    return flat, lengths


def _unpack(flat: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    return [x.tolist() for x in torch.split(flat, lengths.tolist())] if len(lengths) else []


def save_samples(path: Path, samples: dict[str, list[tuple[list[int], list[int]]]], key: str) -> None:
    """Atomically write the samples as int64 tensors (loadable with ``weights_only=True``) with their key."""
    blob: dict[str, Any] = {"key": key}
    for kind, items in samples.items():
        ids, lengths = _pack([s[0] for s in items])
        labels, label_lengths = _pack([s[1] for s in items])
        if not torch.equal(lengths, label_lengths):
            raise ValueError(f"{kind} samples: input_ids and labels differ in length")
        blob[kind] = {"input_ids": ids, "labels": labels, "lengths": lengths}
    atomic_torch_save(blob, path)


def load_samples(path: Path, key: str | None = None) -> dict[str, list[tuple[list[int], list[int]]]] | None:
    """The samples in ``path`` (safe load), or ``None`` when ``key`` is given and differs from the stored one."""
    blob = safe_load(path)
    if not isinstance(blob, dict) or not isinstance(blob.get("key"), str):
        if key is not None:
            return None  # an older cache format: rebuild
        raise ValueError(f"{path} is not a sample cache of this version; delete it or rerun with --restart")
    if key is not None and blob["key"] != key:
        return None
    return {kind: list(zip(_unpack(v["input_ids"], v["lengths"]), _unpack(v["labels"], v["lengths"]), strict=True))
            for kind, v in blob.items() if kind != "key"}


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
    if isinstance(cfg.world_history, bool) or not isinstance(cfg.world_history, int) or cfg.world_history < 1:
        raise ValueError(f"world_history={cfg.world_history!r}; expected an int >= 1")
    if not 0.0 <= cfg.world_context_noise < 1.0:
        raise ValueError(f"world_context_noise={cfg.world_context_noise!r}; expected a share in [0, 1)")
    if cfg.init_from is not None and not (Path(cfg.init_from) / "model.safetensors").exists():
        raise FileNotFoundError(f"init_from={cfg.init_from!r} has no model.safetensors; expected a `wvla-gym train "
                                "model` output folder (<out>/model or <out>/ckpt)")
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


def _lead_first(d: DistInfo, fn):
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


def _train(cfg: ModelTrainConfig, d: DistInfo, device: torch.device) -> dict[str, Any]:
    lead = d.rank == 0  # the only rank that writes
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={cfg.checkpoint_every}; expected >= 1")
    out = Path(cfg.out)
    # rank 0 records / checks the run identity (and clears the folder for --restart) before anything is read
    identity = _lead_first(d, lambda: model_identity(cfg))
    _lead_first(d, lambda: claim_training_run(out, "train-model", identity, MODEL_OUTPUTS, restart=cfg.restart))
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

    samples = _lead_first(d, lead_samples)  # samples.pt is complete before the other ranks read it
    if samples is None:
        samples = load_samples(cache)

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
    _barrier(d)  # every rank has read the checkpoint before rank 0 may replace it

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
              **({"init_from": cfg.init_from,
                  "actions_outside_bins": _outside_share(sources, amin, amax),
                  "data_action_min": data_range[0], "data_action_max": data_range[1]} if cfg.init_from else {}),
              "world_size": d.world_size,
              "wall_s_this_run": round(time.perf_counter() - t0, 1), "config": _jsonable(cfg)}
    if lead:
        atomic_write_text(out / REPORT, json.dumps(report, indent=2))
    _barrier(d)  # the outputs are complete when any rank returns
    return report
