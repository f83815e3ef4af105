"""Training: the VQ image tokenizer, the joint action + world model, and the success judge.

Driven by ``wvla-gym train {vq,model,judge}``; configs are the dataclasses in :mod:`.config`.
"""

from __future__ import annotations

from wvla_gym.training.config import JudgeTrainConfig, ModelTrainConfig, VQTrainConfig

__all__ = ["JudgeTrainConfig", "ModelTrainConfig", "VQTrainConfig", "train_judge", "train_model", "train_vq"]


def __getattr__(name: str):
    # the stages import torch / h5py; load them only when used
    if name == "train_vq":
        from wvla_gym.training.vq import train_vq

        return train_vq
    if name == "train_model":
        from wvla_gym.training.joint import train_model

        return train_model
    if name == "train_judge":
        from wvla_gym.training.judge import train_judge

        return train_judge
    raise AttributeError(name)
