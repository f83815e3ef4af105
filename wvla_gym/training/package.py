"""Assemble a model folder to ship: weights + config (with action stats) + judge + training records."""

from __future__ import annotations

import json
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
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "tokenizer.json"):
        if (src / name).exists():
            shutil.copyfile(src / name, out / name)
    config = json.loads((src / "config.json").read_text())
    config["constrain_actions"] = bool(cfg.constrain_actions)  # read by WorldVLAAgent as its default
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
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if size > cfg.max_mb * 1e6:
        raise ValueError(f"{out} holds {size / 1e6:.1f} MB, over the {cfg.max_mb} MB budget")
    return {"out": str(out), "mb": round(size / 1e6, 2)}
