"""Assemble a model folder to ship: weights + config (with action stats) + judge + training records."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .config import PackageConfig


def package_model(cfg: PackageConfig) -> dict[str, Any]:
    """Copy the trained model, judge and reports into ``cfg.out``; refuse to exceed ``cfg.max_mb``."""
    src, out = Path(cfg.model), Path(cfg.out)
    for name in ("config.json", "model.safetensors"):
        if not (src / name).exists():
            raise FileNotFoundError(f"{src / name} is missing: pass --model <train model --out>/model")
    if cfg.dtype not in ("float32", "float16"):
        raise ValueError(f"dtype={cfg.dtype!r}; expected 'float32' or 'float16'")
    out.mkdir(parents=True, exist_ok=True)
    if (src / "tokenizer.json").exists():
        shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
    config = json.loads((src / "config.json").read_text())
    config["constrain_actions"] = bool(cfg.constrain_actions)  # read by WorldVLAAgent as its default
    config.update(_write_weights(src / "model.safetensors", out / "model.safetensors", cfg))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    # the action statistics also live in config.json; a separate file makes them easy to find and diff
    (out / "action_stats.json").write_text(json.dumps(
        {"action_min": config["action_min"], "action_max": config["action_max"],
         "normalisation": "min/max of the training actions -> [-1, 1], 256 uniform bins"}, indent=2))
    records = out / "training"
    records.mkdir(exist_ok=True)
    for f in ("train_report.json", "train_log.jsonl"):
        if (src.parent / f).exists():
            shutil.copyfile(src.parent / f, records / f)
    if cfg.vq and (Path(cfg.vq) / "vq_report.json").exists():
        shutil.copyfile(Path(cfg.vq) / "vq_report.json", records / "vq_report.json")
        shutil.copyfile(Path(cfg.vq) / "vq_config.json", records / "vq_config.json")
    if cfg.data_manifest:
        shutil.copyfile(cfg.data_manifest, records / "data_manifest.json")
    # the run identities (settings + data / VQ / world-model hashes) of the stages, for the record
    for stage, folder in (("model", src.parent), ("vq", cfg.vq), ("judge", cfg.judge)):
        if folder and (Path(folder) / "run_identity.json").exists():
            shutil.copyfile(Path(folder) / "run_identity.json", records / f"{stage}_run_identity.json")
    if cfg.judge:
        jd = out / "judge"
        jd.mkdir(exist_ok=True)
        for f in ("judge_config.json", "model.safetensors", "judge_report.json"):
            if (Path(cfg.judge) / f).exists():
                shutil.copyfile(Path(cfg.judge) / f, jd / f)
    budget = Path(cfg.share_vq_with) if cfg.share_vq_with else out  # a shared VQ ships once: count the whole
    size = sum(p.stat().st_size for p in budget.rglob("*") if p.is_file())
    if size > cfg.max_mb * 1e6:
        raise ValueError(f"{budget} holds {size / 1e6:.1f} MB, over the {cfg.max_mb} MB budget")
    return {"out": str(out), "mb": round(size / 1e6, 2)}


def _write_weights(src: Path, dst: Path, cfg: PackageConfig) -> dict[str, Any]:
    """Copy the weights, cast to ``cfg.dtype`` and without the VQ when it is shared; the config fields to add."""
    from safetensors.torch import load_file, save_file

    from wvla_gym.model.loading import VQ_PREFIX, vq_state_digest

    sd = load_file(str(src))
    fields: dict[str, Any] = {}
    if cfg.share_vq_with:
        host = Path(cfg.share_vq_with) / "model.safetensors"
        if not host.exists():
            raise FileNotFoundError(f"share_vq_with: {host} is missing; expected a packaged checkpoint folder")
        host_vq = {k: v for k, v in load_file(str(host)).items() if k.startswith(VQ_PREFIX)}
        own_vq = {k: v for k, v in sd.items() if k.startswith(VQ_PREFIX)}
        digest = vq_state_digest(own_vq)
        if vq_state_digest(host_vq) != digest:
            raise ValueError(f"share_vq_with: the VQ in {host} differs from the VQ in {src}; the model must have "
                             "been trained on the shared VQ's codes")
        sd = {k: v for k, v in sd.items() if not k.startswith(VQ_PREFIX)}
        fields = {"vq_weights": os.path.relpath(host, dst.parent), "vq_sha256": digest}
    if cfg.dtype == "float16":
        sd = {k: (v.half() if v.is_floating_point() and not k.startswith(VQ_PREFIX) else v) for k, v in sd.items()}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(dst), metadata={"format": "pt", "wvla_format": "1"})
    return fields
