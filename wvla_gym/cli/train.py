"""``wvla-gym train {vq,model,judge,package,bc,knn}``: the training stages behind the embedded default model, and
the baseline policy families (``bc``: visuomotor behaviour cloning; ``knn``: nearest neighbours on VQ codes).

Examples (the commands that produced ``wvla_gym/assets/default`` are in its README.md)::

    wvla-gym train vq --data data/obj64 --out runs/vq64
    wvla-gym train model --data data/obj64 --vq runs/vq64 --out runs/model
    wvla-gym train model --data data/obj64 --vq runs/vq64 --out runs/model_action_only --world-weight 0
    torchrun --standalone --nproc_per_node 4 -m wvla_gym.cli.main train model --data data/obj64 \
        --vq runs/vq64 --out runs/model --device cuda   # data-parallel; --batch-size stays the global batch
    wvla-gym train judge --data data/obj64 --out runs/judge
    wvla-gym train package --model runs/model/model --judge runs/judge --vq runs/vq64 --out wvla_gym/assets/default
    wvla-gym train bc --data data/obj64 --out runs/bc --epochs 20 --max-episodes 10   # -> --policy bc:runs/bc
    wvla-gym train knn --data datasets/libero_object_t0/expert --out runs/knn          # -> --policy knn:runs/knn

Every stage checkpoints into its ``--out`` folder and rerunning the same command resumes it (a kill loses at
most ``--checkpoint-every`` steps). ``run_identity.json`` there records the settings that change the result
(the config minus ``--out``/``--log-every``/``--checkpoint-every``/``--progress``/``--stop-at``, the data files'
hashes, the VQ's hash for ``model``, the world model's hash for ``judge --world-model``): a rerun with other
settings stops with an error naming them; ``--restart`` deletes the folder's training outputs and starts over.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import tyro

from wvla_gym.training.config import (
    BCTrainConfig,
    JudgeTrainConfig,
    KNNTrainConfig,
    ModelTrainConfig,
    PackageConfig,
    VQTrainConfig,
)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        Annotated[VQTrainConfig, tyro.conf.subcommand("vq")]
        | Annotated[ModelTrainConfig, tyro.conf.subcommand("model")]
        | Annotated[JudgeTrainConfig, tyro.conf.subcommand("judge")]
        | Annotated[PackageConfig, tyro.conf.subcommand("package")]
        | Annotated[BCTrainConfig, tyro.conf.subcommand("bc")]
        | Annotated[KNNTrainConfig, tyro.conf.subcommand("knn")],
        args=argv,
        prog="wvla-gym train",
    )
    try:
        if isinstance(cfg, VQTrainConfig):
            from wvla_gym.training.vq import train_vq

            report = train_vq(cfg)
            summary = {"heldout": report["heldout"], "out": cfg.out}
        elif isinstance(cfg, ModelTrainConfig):
            from wvla_gym.training.joint import train_model

            report = train_model(cfg)
            summary = {"samples": report["samples"], "lm_parameters": report["lm_parameters"], "out": cfg.out}
        elif isinstance(cfg, PackageConfig):
            from wvla_gym.training.package import package_model

            summary = package_model(cfg)
        elif isinstance(cfg, BCTrainConfig):
            from wvla_gym.training.bc import train_bc

            report = train_bc(cfg)
            summary = {"steps_done": report["steps_done"], "epoch_loss": report["epoch_loss"], "out": cfg.out}
        elif isinstance(cfg, KNNTrainConfig):
            from agents.knn import build_index, index_summary

            index = build_index(cfg.data, vq=cfg.vq, chunk=cfg.chunk, history=cfg.history,
                                max_episodes=cfg.max_episodes, k=cfg.k, temperature=cfg.temperature, noise=cfg.noise)
            summary = {**index_summary(index), "out": str(index.save(cfg.out))}
        else:
            from wvla_gym.training.judge import train_judge

            report = train_judge(cfg)
            summary = {"heldout": report["heldout"], "out": cfg.out}
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
