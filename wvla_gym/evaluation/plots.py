"""Matplotlib PNGs for the agreement report (headless Agg backend, imported lazily)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_scatter(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Imagined (x) vs real (y) success per (policy, task) point, with the y = x diagonal."""
    plt = _plt()
    points = report.get("points") or []
    if not points:
        raise ValueError("report has no paired (imagined, real) points; run with --env both (or both kinds) first")
    fig, ax = plt.subplots(figsize=(5, 5))
    policies = sorted({p["policy"] for p in points})
    for name in policies:
        pts = [p for p in points if p["policy"] == name]
        ax.scatter([p["imagined"] for p in pts], [p["real"] for p in pts], label=name, alpha=0.75, s=30)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="y = x")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("imagined success rate")
    ax.set_ylabel("real success rate")
    tl = report.get("task_level") or {}
    ax.set_title(f"Pearson {tl.get('pearson', float('nan')):.2f}, MMRV {tl.get('mmrv', float('nan')):.3f}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_task_bars(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Per-task real vs imagined success bars, one panel per policy."""
    import numpy as np

    plt = _plt()
    points = report.get("points") or []
    if not points:
        raise ValueError("report has no paired (imagined, real) points; run with --env both (or both kinds) first")
    policies = sorted({p["policy"] for p in points})
    fig, axes = plt.subplots(len(policies), 1, figsize=(8, 2.2 * len(policies)), squeeze=False)
    for ax, name in zip(axes[:, 0], policies, strict=True):
        pts = [p for p in points if p["policy"] == name]
        x = np.arange(len(pts))
        ax.bar(x - 0.2, [p["real"] for p in pts], 0.4, label="real")
        ax.bar(x + 0.2, [p["imagined"] for p in pts], 0.4, label="imagined")
        ax.set_xticks(x, [f"{p['suite'].replace('libero_', '')}/{p['task_id']}" for p in pts], fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("success")
        ax.set_title(name, fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
