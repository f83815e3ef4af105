"""Evaluation: the LIBERO protocol runner, agreement metrics, world-model metrics, videos and plots.

Importing this package loads no simulator, model or plotting library.
"""

from __future__ import annotations

from wvla_gym.evaluation.config import EpisodeJob, EvalConfig, plan_jobs
from wvla_gym.evaluation.metrics import (
    agreement_report,
    cohen_kappa,
    mean_absolute_gap,
    mean_signed_gap,
    mmrv,
    paired_accuracy,
    pearson,
    spearman,
    wilson_interval,
)
from wvla_gym.evaluation.policies import RandomPolicy, ZeroPolicy
from wvla_gym.evaluation.results import ResultsWriter, read_records, summarize
from wvla_gym.evaluation.runner import evaluate, iter_records
from wvla_gym.policy import Policy, PolicyFactory

__all__ = [
    "EpisodeJob",
    "EvalConfig",
    "Policy",
    "PolicyFactory",
    "RandomPolicy",
    "ResultsWriter",
    "ZeroPolicy",
    "agreement_report",
    "cohen_kappa",
    "evaluate",
    "iter_records",
    "mean_absolute_gap",
    "mean_signed_gap",
    "mmrv",
    "paired_accuracy",
    "pearson",
    "plan_jobs",
    "read_records",
    "spearman",
    "summarize",
    "wilson_interval",
]
