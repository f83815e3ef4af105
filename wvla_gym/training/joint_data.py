"""Data and model construction for joint action + world-model training (the trainer is
:mod:`wvla_gym.training.joint`).

* Sources: recorded LIBERO-layout demos (files or folders), WorldVLA's split per data folder, action statistics
  (the action tokenizer's range).
* Model: a fresh small WorldVLA (Chameleon architecture) around the frozen VQ, optionally initialised from an
  earlier run's weights.
* Samples: WorldVLA token samples (:func:`wvla_gym.data.tokens.token_samples`): action samples (M frames -> K
  action blocks) and world samples (frame + action -> next frame), tokenized once and cached in
  ``<out>/samples.pt`` (written atomically, tensors only, keyed by everything the tokens depend on; a cache with
  another key is rebuilt).
* Batches: drawn from ``(seed, step)`` alone (a resumed run draws the same batches), optionally with context
  noise on world samples; collated with left padding and the action attention mask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from wvla_gym.data.split import split_files
from wvla_gym.data.tokens import token_samples
from wvla_gym.model.configuration_worldvla import WorldVLAConfig
from wvla_gym.model.image_tokenizer import ImageTokenizer
from wvla_gym.model.modeling_worldvla import WorldVLAForConditionalGeneration
from wvla_gym.model.processing_worldvla import (
    IGNORE_INDEX,
    ByteTextTokenizer,
    WorldVLAProcessor,
    build_action_attention_mask,
    pad_left,
    to_model_mask,
)
from wvla_gym.utils.images import resize_uint8
from wvla_gym.utils.io import read_json

from .checkpoint import atomic_torch_save, expand_data, safe_load
from .config import ModelTrainConfig
from .vq import load_vq

SAMPLES = "samples.pt"
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

def outside_share(sources: Sequence[tuple[str, str]], amin: Sequence[float], amax: Sequence[float]) -> float:
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
    # files unpacked from code files by this VQ give their stored codes (the recorded frames' codes)
    for s in token_samples(list(sources), processor_for(model), enc, kinds=kinds, history=history, chunk=chunk,
                           world_history=wh, code_tokenizer=tok):
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

def init_weights(model: WorldVLAForConditionalGeneration, folder: str | os.PathLike) -> None:
    """Load the LM weights of a ``save_pretrained`` folder into ``model`` (same size; the VQ must be the same)."""
    src = Path(folder)
    if not (src / "model.safetensors").exists() or not (src / "config.json").exists():
        raise FileNotFoundError(f"init_from={os.fspath(folder)!r} has no config.json + model.safetensors; expected "
                                "a `wvla-gym train model` output folder (<out>/model or <out>/ckpt)")
    sd = load_file(str(src / "model.safetensors"))
    rel = read_json(src / "config.json").get("vq_weights")
    if rel:  # a packaged checkpoint that shares another folder's VQ (e.g. the default's world_model/)
        host = (src / str(rel)).resolve()
        if not host.is_file():
            raise FileNotFoundError(f"init_from={os.fspath(folder)!r}: its config.json vq_weights points to {host}, "
                                    "which does not exist")
        sd.update({k: v for k, v in load_file(str(host)).items() if k.startswith("model.vqmodel.")})
    own = model.state_dict()
    bad = sorted(k for k in own if k not in sd or sd[k].shape != own[k].shape)
    if bad or set(sd) - set(own):
        raise ValueError(f"init_from={os.fspath(folder)!r} does not fit this model (hidden size, layers, vocabulary "
                         f"or VQ differ): {(bad or sorted(set(sd) - set(own)))[:4]}")
    vq = [k for k in own if k.startswith("model.vqmodel.") and not torch.equal(sd[k].to(own[k].dtype), own[k])]
    if vq:
        raise ValueError(f"init_from={os.fspath(folder)!r} was trained with another VQ than --vq ({vq[0]} differs)")
    model.load_state_dict(sd)  # float16 storage is cast to the model's dtype here


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
