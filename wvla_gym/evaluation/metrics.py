"""Success-rate statistics and imagined-vs-real agreement metrics (numpy; scipy only for Kruskal–Wallis).

Conventions (see ``docs/protocol.md``, "Evaluation conventions"):

* Paired vectors are always passed **imagined first, real second**, the argument order of SimplerEnv's
  ``tools/calc_metrics.py`` (``mean_maximum_rank_violation(SIMPLER_PERF, REAL_PERF)``). MMRV is asymmetric:
  the second argument (real) sets the size of each violation.
* Error episodes never enter these functions; the runner excludes them before computing rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054


def _vector(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a 1-D sequence of numbers; got {type(values).__name__}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf: {arr.tolist()}")
    return arr


def _pair(imagined: Sequence[float], real: Sequence[float], min_len: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector("imagined", imagined), _vector("real", real)
    if x.shape != y.shape:
        raise ValueError(f"imagined and real must have the same length; got {len(x)} and {len(y)}")
    if len(x) < min_len:
        raise ValueError(f"imagined/real need at least {min_len} paired values; got {len(x)}")
    return x, y


def _binary(name: str, values: Sequence[bool] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or not np.all(np.isin(arr.astype(np.float64), (0.0, 1.0))):
        raise ValueError(f"{name} must be a 1-D sequence of booleans (or 0/1); got {np.asarray(values).tolist()!r}")
    return arr.astype(bool)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default).

    Unlike the normal approximation it stays inside [0, 1] and is informative at 0/n and n/n, which is
    exactly where LIBERO success rates live. ``n == 0`` returns the uninformative (0.0, 1.0).
    """
    for name, v in (("successes", successes), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name}={v!r}; expected a non-negative int")
    if successes > n:
        raise ValueError(f"successes={successes} exceeds n={n}; expected 0 <= successes <= n")
    if not z > 0:
        raise ValueError(f"z={z!r}; expected a positive normal quantile")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pearson(imagined: Sequence[float], real: Sequence[float]) -> float:
    """Pearson correlation of paired success rates.

    Identical vectors give 1.0 (as SimplerEnv does); otherwise a zero-variance side makes r undefined -> nan.
    """
    x, y = _pair(imagined, real, min_len=2)
    if np.array_equal(x, y):
        return 1.0
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    return float(np.sum(dx * dy) / den)


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(imagined: Sequence[float], real: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson on average ranks, so ties are handled)."""
    x, y = _pair(imagined, real, min_len=2)
    return pearson(_average_ranks(x), _average_ranks(y))


def mmrv(imagined: Sequence[float], real: Sequence[float]) -> float:
    """Mean Maximum Rank Violation, SimplerEnv's definition; **imagined first, real second**.

    For each point i: the largest ``|real_i - real_j|`` over all j whose strict ordering under imagined
    (``imagined_i > imagined_j``) differs from the strict ordering under real; then the mean over i.
    0 means no rank violations; lower is better. Swapping the arguments changes the value.
    """
    x, y = _pair(imagined, real)
    sim_gt = x[:, None] > x[None, :]
    real_gt = y[:, None] > y[None, :]
    gap = np.abs(y[:, None] - y[None, :])
    violations = np.where(sim_gt != real_gt, gap, 0.0)
    return float(violations.max(axis=1).mean())


def mean_signed_gap(imagined: Sequence[float], real: Sequence[float]) -> float:
    """Mean of ``imagined - real``: positive = imagination is optimistic (bias, not agreement)."""
    x, y = _pair(imagined, real)
    return float(np.mean(x - y))


def mean_absolute_gap(imagined: Sequence[float], real: Sequence[float]) -> float:
    """Mean of ``|imagined - real|`` (calibration error)."""
    x, y = _pair(imagined, real)
    return float(np.mean(np.abs(x - y)))


def paired_accuracy(imagined: Sequence[bool], real: Sequence[bool]) -> float:
    """Fraction of paired episodes (same task, init state, seed) whose success outcomes agree."""
    a, b = _binary("imagined", imagined), _binary("real", real)
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"imagined and real must be non-empty and of equal length; got {len(a)} and {len(b)}")
    return float(np.mean(a == b))


def cohen_kappa(imagined: Sequence[bool], real: Sequence[bool]) -> float:
    """Cohen's κ of paired binary outcomes: agreement corrected for chance.

    ``(p_o - p_e) / (1 - p_e)`` with ``p_e`` from the two marginal success rates. When both sides are the
    same constant, chance agreement is 1 and κ is 0/0; we return 1.0 (the outcomes agree everywhere).
    """
    a, b = _binary("imagined", imagined), _binary("real", real)
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"imagined and real must be non-empty and of equal length; got {len(a)} and {len(b)}")
    p_o = float(np.mean(a == b))
    pa, pb = float(np.mean(a)), float(np.mean(b))
    p_e = pa * pb + (1 - pa) * (1 - pb)
    if p_e == 1.0:
        return 1.0
    return (p_o - p_e) / (1 - p_e)


def kruskal_wallis(
    imagined_outcomes: Sequence[float] | np.ndarray, real_outcomes: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Kruskal–Wallis H-test of trial-level outcomes (e.g. 0/1 successes), imagined vs real.

    As SimplerEnv's ``calc_metrics`` does per checkpoint: do both groups come from one distribution? A small
    p-value is evidence that imagined and real outcomes differ. Uses ``scipy.stats.kruskal`` (tie-corrected H,
    chi-square with 1 degree of freedom). Returns ``{"statistic": H, "pvalue": p}``.

    Degenerate case: when every value in both groups is identical (e.g. all failures), H is 0/0; depending on
    the version scipy raises or returns nan. We return ``{"statistic": 0.0, "pvalue": 1.0}``: no evidence of
    any difference. Each group needs at least one value.
    """
    x = _vector("imagined_outcomes", imagined_outcomes)
    y = _vector("real_outcomes", real_outcomes)
    if len(x) == 0 or len(y) == 0:
        raise ValueError(f"imagined_outcomes and real_outcomes must be non-empty; got {len(x)} and {len(y)}")
    both = np.concatenate([x, y])
    if np.all(both == both[0]):
        return {"statistic": 0.0, "pvalue": 1.0}
    from scipy.stats import kruskal

    res = kruskal(x, y)
    return {"statistic": float(res.statistic), "pvalue": float(res.pvalue)}


def agreement_report(imagined: Sequence[float], real: Sequence[float]) -> dict[str, float | int]:
    """All rate-level agreement metrics for paired (policy × task) success rates, imagined first."""
    x, y = _pair(imagined, real)
    out: dict[str, float | int] = {"n_points": len(x)}
    out["pearson"] = pearson(x, y) if len(x) >= 2 else float("nan")
    out["spearman"] = spearman(x, y) if len(x) >= 2 else float("nan")
    out["mmrv"] = mmrv(x, y)
    out["mean_signed_gap"] = mean_signed_gap(x, y)
    out["mean_absolute_gap"] = mean_absolute_gap(x, y)
    return out
