"""Imagined-vs-real agreement from paired evaluation results (``--env both`` or separate runs).

**Pairing.** An episode counts only when its twin exists: the same (policy, suite, task, start mode, init state,
seed) finished without error in both env kinds. Error episodes are dropped first (``errors_excluded``), and
episodes whose twin is missing or errored are counted in ``pairing`` and left out of every number below, so
real and imagined rates always come from the same starts. The start mode is ``"init_state"`` (the protocol) or
what the record's ``placement`` / ``perturb_radius`` say; policies evaluated under another start under a
suffixed name (``A@sampled``) are simply other policies.

Everything is passed imagined first, real second (SimplerEnv's ``calc_metrics`` order).

* **points**: one per (policy, suite, task, start) cell -> ``task_level`` (Pearson, Spearman, MMRV pooled over
  all points, signed and absolute gap); the same over one point per policy (``policy_level``).
* **statistics**: what an evaluator study reports over the points (see :func:`agreement_statistics`): Pearson
  and Spearman with a paired, cell-stratified bootstrap 95 % CI, leave-one-policy-out and leave-one-task-out
  Pearson (minimum, maximum, largest shift), MMRV per task averaged over tasks (SimplerEnv's setting) and
  pooled, mean signed and absolute gap, paired accuracy and Cohen's κ, each with its CI.
* **episodes**: paired accuracy and Cohen's κ over all pairs (``episode_level``); per policy
  (``kruskal_wallis``), SimplerEnv's Kruskal–Wallis H-test of that policy's paired 0/1 outcomes, imagined vs
  real (p < 0.05 = evidence that imagined and real outcomes differ).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from wvla_gym.evaluation.metrics import (
    agreement_report,
    cohen_kappa,
    kruskal_wallis,
    mean_absolute_gap,
    mean_signed_gap,
    mmrv,
    paired_accuracy,
    pearson,
    spearman,
)
from wvla_gym.evaluation.results import latest_records

#: Bootstrap resamples used unless told otherwise.
DEFAULT_BOOTSTRAP = 2000
#: Start mode of the protocol's fixed LIBERO init states.
PROTOCOL_START = "init_state"

#: (policy, suite, task_id, start): one point of the agreement scatter.
CellKey = tuple[str, str, int, str]
#: Paired outcomes of one episode: (imagined success, real success).
Pair = tuple[bool, bool]


def start_label(record: Mapping[str, Any]) -> str:
    """``"init_state"`` for the protocol's starts, else e.g. ``"sampled"``, ``"perturb0.03"``,
    ``"sampled+perturb0.03"`` (from the fields the runner writes for off-protocol starts)."""
    placement = str(record.get("placement") or PROTOCOL_START)
    radius = float(record.get("perturb_radius") or 0.0)
    parts = [] if placement == PROTOCOL_START else [placement]
    if radius:
        parts.append(f"perturb{radius:g}")
    return "+".join(parts) or PROTOCOL_START


def pair_episodes(records: Iterable[dict[str, Any]]) -> tuple[dict[CellKey, list[Pair]], dict[str, int]]:
    """Paired outcomes per (policy, suite, task, start) cell, and what was left out.

    Returns ``(cells, pairing)``: ``cells`` maps each cell (sorted) to its ``(imagined, real)`` pairs in
    (init state, seed) order; ``pairing`` counts ``pairs``, ``errors_excluded`` (error episodes, either env)
    and ``unpaired_real`` / ``unpaired_imagined`` (error-free episodes whose twin is missing or errored).
    """
    latest = list(latest_records(records).values())
    errors = sum(r.get("error") is not None for r in latest)
    twins: dict[tuple[str, str, int, str, int, int], dict[str, bool]] = {}
    for r in latest:
        if r.get("error") is not None or r.get("env") not in ("real", "imagined"):
            continue
        cell = (str(r["policy"]), str(r["suite"]), int(r["task_id"]), start_label(r))
        key = (*cell, int(r["init_state_id"]), int(r["seed"]))
        twins.setdefault(key, {})[str(r["env"])] = bool(r["success"])
    cells: dict[CellKey, list[Pair]] = {}
    unpaired = {"real": 0, "imagined": 0}
    for key, kinds in sorted(twins.items()):
        if "real" in kinds and "imagined" in kinds:
            cells.setdefault(key[:4], []).append((kinds["imagined"], kinds["real"]))
        else:
            unpaired[next(iter(kinds))] += 1
    pairing = {
        "pairs": sum(len(v) for v in cells.values()),
        "errors_excluded": errors,
        "unpaired_real": unpaired["real"],
        "unpaired_imagined": unpaired["imagined"],
    }
    return cells, pairing


def agreement_from_records(
    records: Iterable[dict[str, Any]],
    *,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The agreement report of episode records (see the module docstring for its parts).

    ``bootstrap`` resamples (0: no confidence intervals) with ``numpy.random.default_rng(seed)`` give the
    ``level`` percentile intervals of ``statistics``; the same records and seed give the same report.
    """
    cells, pairing = pair_episodes(records)
    points = []
    for (policy, suite, task, start), pairs in cells.items():
        n = len(pairs)
        points.append(
            {
                "policy": policy,
                "suite": suite,
                "task_id": task,
                "start": start,
                "imagined": sum(p[0] for p in pairs) / n,
                "real": sum(p[1] for p in pairs) / n,
                "n_pairs": n,
                # Kept for readers of older reports; both equal n_pairs now that only twins count.
                "n_imagined": n,
                "n_real": n,
            }
        )
    out: dict[str, Any] = {
        "errors_excluded": pairing["errors_excluded"],
        "pairing": pairing,
        "points": points,
    }
    by_policy: dict[str, list[Pair]] = {}
    for key, pairs in cells.items():
        by_policy.setdefault(key[0], []).extend(pairs)
    if not points:
        out["task_level"] = None
        out["policy_level"] = None
        out["statistics"] = None
    else:
        out["task_level"] = agreement_report([p["imagined"] for p in points], [p["real"] for p in points])
        pol_points = [
            {
                "policy": p,
                "imagined": sum(a for a, _ in pp) / len(pp),
                "real": sum(b for _, b in pp) / len(pp),
            }
            for p, pp in sorted(by_policy.items())
        ]
        out["policy_points"] = pol_points
        out["policy_level"] = agreement_report(
            [p["imagined"] for p in pol_points], [p["real"] for p in pol_points]
        )
        out["statistics"] = agreement_statistics(cells, bootstrap=bootstrap, seed=seed, level=level)
    all_pairs = [p for pairs in cells.values() for p in pairs]
    if all_pairs:
        imag, real = [p[0] for p in all_pairs], [p[1] for p in all_pairs]
        out["episode_level"] = {
            "n_pairs": len(all_pairs),
            "paired_accuracy": paired_accuracy(imag, real),
            "cohen_kappa": cohen_kappa(imag, real),
            "imagined_only_success": sum(a and not b for a, b in all_pairs),
            "real_only_success": sum(b and not a for a, b in all_pairs),
        }
    else:
        out["episode_level"] = None
    # Per policy: Kruskal-Wallis on the paired trials' outcomes (imagined vs real).
    kw = []
    for policy, pp in sorted(by_policy.items()):
        imag, real = [p[0] for p in pp], [p[1] for p in pp]
        kw.append(
            {
                "policy": policy,
                "n_pairs": len(pp),
                "imagined_success": sum(imag) / len(pp),
                "real_success": sum(real) / len(pp),
                **kruskal_wallis(imag, real),
            }
        )
    out["kruskal_wallis"] = kw
    return out


# ---------------------------------------------------------------------------------------------------- statistics
def _task_label(suite: str, task_id: int, start: str | None = None) -> str:
    return f"{suite}/{task_id}" + ("" if start in (None, PROTOCOL_START) else f"@{start}")


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of two (B, C) arrays, with :func:`metrics.pearson`'s conventions: 1.0 where a row's
    x equals its y (SimplerEnv's rule, so perfect agreement on constant rates counts as agreement), nan where
    one side is otherwise constant (r undefined: such a resample is *degenerate*)."""
    dx = x - x.mean(axis=1, keepdims=True)
    dy = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip((dx * dy).sum(1) / np.sqrt((dx * dx).sum(1) * (dy * dy).sum(1)), -1.0, 1.0)
    # ptp, not the centred sums: a constant row's mean can be off by an ulp, leaving dx tiny but non-zero.
    r = np.where((np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0), np.nan, r)
    return np.where(np.all(x == y, axis=1), 1.0, r)


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return _rowwise_pearson(rankdata(x, method="average", axis=1), rankdata(y, method="average", axis=1))


def _rowwise_mmrv(x: np.ndarray, y: np.ndarray, max_elems: int = 1 << 21) -> np.ndarray:
    """:func:`metrics.mmrv` of each row of two (B, C) arrays; chunked over rows because the (rows, C, C)
    comparison tensor of a 100-point study would otherwise take hundreds of MB."""
    b, c = x.shape
    out = np.empty(b)
    step = max(1, max_elems // max(1, c * c))
    for s in range(0, b, step):
        xs, ys = x[s : s + step], y[s : s + step]
        flip = (xs[:, :, None] > xs[:, None, :]) != (ys[:, :, None] > ys[:, None, :])
        gap = np.abs(ys[:, :, None] - ys[:, None, :])
        out[s : s + step] = np.where(flip, gap, 0.0).max(axis=2).mean(axis=1)
    return out


def _stat(value: float, samples: np.ndarray | None, level: float) -> dict[str, Any]:
    """``value`` with the percentile interval of its finite bootstrap values (``ci``), the bootstrap's bias
    (mean resampled value − value) and, when some resamples left it undefined, how many (left out).

    The bias is reported because resampling episodes adds binomial noise to both rates of every point: that
    pulls r towards 0 and MMRV / |gap| up, so with few episodes per cell the percentile interval can sit beside
    the estimate rather than around it; ``format_table`` marks such rows.
    """
    out: dict[str, Any] = {"value": value, "ci": None}
    if samples is None:
        return out
    ok = samples[np.isfinite(samples)]
    if ok.size:
        lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
        out["ci"] = [float(lo), float(hi)]
        out["bias"] = float(ok.mean() - value) if math.isfinite(value) else None
    if ok.size < samples.size:
        out["degenerate_resamples"] = int(samples.size - ok.size)
    return out


def _leave_one_out(x: np.ndarray, y: np.ndarray, labels: Sequence[str], full: float) -> dict[str, Any] | None:
    """Pearson without each label's points: min / max (and which label gives them) and the largest shift."""
    uniq = sorted(set(labels))
    if len(uniq) < 2:
        return None
    lab = np.asarray(labels)
    values = []
    for u in uniq:
        keep = lab != u
        r = pearson(x[keep], y[keep]) if keep.sum() >= 2 else float("nan")
        values.append({"left_out": u, "n_points": int(keep.sum()), "pearson": r})
    finite = [v for v in values if math.isfinite(v["pearson"])]
    if not finite:
        none = dict.fromkeys(("min", "min_without", "max", "max_without", "max_shift"))
        return {**none, "values": values}
    lo = min(finite, key=lambda v: v["pearson"])  # ties: the first label in sorted order
    hi = max(finite, key=lambda v: v["pearson"])
    shift = max(abs(v["pearson"] - full) for v in finite) if math.isfinite(full) else None
    return {
        "min": lo["pearson"],
        "min_without": lo["left_out"],
        "max": hi["pearson"],
        "max_without": hi["left_out"],
        "max_shift": shift,
        "values": values,
    }


def agreement_statistics(
    cells: Mapping[CellKey, Sequence[Pair]],
    *,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Evaluator-study statistics over (policy, suite, task, start) cells of paired ``(imagined, real)`` outcomes.

    Each cell is one point (imagined success rate, real success rate). Reported, each as
    ``{"value", "ci"}`` (``ci`` = ``[lo, hi]`` or None):

    * ``pearson``, ``spearman`` over the points; ``loo_policy`` / ``loo_task``: Pearson recomputed without each
      policy (all its points) / each (suite, task), with the minimum, the maximum, which one gives each, and
      the largest move from the full r (None with fewer than two policies / tasks).
    * ``mmrv_per_task``: **MMRV as SimplerEnv defines it** (``simpler_env/utils/metrics.py``,
      ``mean_maximum_rank_violation(sim, real)``, here sim = imagined):
      ``MMRV = (1/N) Σ_i max_j |real_i − real_j| · 1[(imagined_i > imagined_j) ≠ (real_i > real_j)]``, strict
      ``>`` (so with tied imagined rates the violation is charged to the point with the higher real rate),
      computed over the policies of each task (suite, task, start; SimplerEnv ranks checkpoints within a
      task) and averaged over tasks with at least two policies; per-task values, Pearson and gaps in
      ``tasks`` and the worst task (highest MMRV, then largest mean |gap|) in ``worst_task``.
      ``mmrv_pooled``: the same formula over all points at once (``task_level["mmrv"]``); it also charges
      cross-task rank flips, so it is not what SimplerEnv-style papers report.
    * ``mean_signed_gap`` (imagined − real; > 0 = optimistic) and ``mean_absolute_gap`` over the points;
      ``paired_accuracy`` and ``cohen_kappa`` over all paired episodes.

    Bootstrap (``bootstrap`` resamples, 0 = none): within each cell its paired episodes are resampled with
    replacement, each real/imagined twin kept together, so every cell keeps its size (stratified) and the
    points keep their identity; rates and every statistic are recomputed per resample and ``level`` percentile
    intervals taken. Only counts of the four outcome kinds (both succeed, imagined only, real only, neither)
    matter to the rates, so a cell's resample is drawn as one multinomial over those kinds with the cell's
    empirical frequencies, which is the same distribution as drawing its episodes with replacement.
    Resamples in which r is undefined (one side constant, the sides not identical) are left out of that
    interval and counted in ``degenerate_resamples``. ``numpy.random.default_rng(seed)``: deterministic.
    """
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap!r}; expected a non-negative int (0 disables the intervals)")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; expected a confidence level in (0, 1), e.g. 0.95")
    keys = sorted(k for k, v in cells.items() if len(v) > 0)
    if not keys:
        raise ValueError("no cell has a paired episode; nothing to compute")
    # Counts per cell of the outcome kinds (imagined, real) = (1,1), (1,0), (0,1), (0,0).
    counts = np.zeros((len(keys), 4), np.int64)
    for c, k in enumerate(keys):
        for imag, real in cells[k]:
            counts[c, (0 if real else 1) if imag else (2 if real else 3)] += 1
    n = counts.sum(1)
    x = (counts[:, 0] + counts[:, 1]) / n
    y = (counts[:, 0] + counts[:, 2]) / n
    groups: dict[tuple[str, int, str], list[int]] = {}
    for c, (_, suite, task, start) in enumerate(keys):
        groups.setdefault((suite, task, start), []).append(c)
    ranked = {g: np.asarray(ix) for g, ix in groups.items() if len(ix) >= 2}  # MMRV needs two policies

    boot: np.ndarray | None = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        boot = np.empty((bootstrap, len(keys), 4), np.int64)
        for c in range(len(keys)):
            boot[:, c, :] = rng.multinomial(n[c], counts[c] / n[c], size=bootstrap)
    bx = None if boot is None else (boot[..., 0] + boot[..., 1]) / n
    by = None if boot is None else (boot[..., 0] + boot[..., 2]) / n

    r = pearson(x, y) if len(x) >= 2 else float("nan")
    rho = spearman(x, y) if len(x) >= 2 else float("nan")
    out: dict[str, Any] = {
        "n_points": len(keys),
        "n_policies": len({k[0] for k in keys}),
        "n_tasks": len({k[1:3] for k in keys}),
        "n_pairs": int(n.sum()),
        "pearson": _stat(r, None if bx is None or len(x) < 2 else _rowwise_pearson(bx, by), level),
        "spearman": _stat(rho, None if bx is None or len(x) < 2 else _rowwise_spearman(bx, by), level),
        "loo_policy": _leave_one_out(x, y, [k[0] for k in keys], r),
        "loo_task": _leave_one_out(x, y, [_task_label(k[1], k[2]) for k in keys], r),
    }
    tasks = []
    for (suite, task, start), ix in ranked.items():
        tasks.append(
            {
                "task": _task_label(suite, task, start),
                "suite": suite,
                "task_id": task,
                "start": start,
                "n_policies": len(ix),
                "mmrv": mmrv(x[ix], y[ix]),
                "pearson": pearson(x[ix], y[ix]),
                "mean_absolute_gap": mean_absolute_gap(x[ix], y[ix]),
            }
        )
    per_task_boot = None
    if bx is not None and ranked:
        per_task_boot = np.mean([_rowwise_mmrv(bx[:, ix], by[:, ix]) for ix in ranked.values()], axis=0)
    worst = max(tasks, key=lambda t: (t["mmrv"], t["mean_absolute_gap"]), default=None)
    out["mmrv_per_task"] = {
        **_stat(float(np.mean([t["mmrv"] for t in tasks])) if tasks else float("nan"), per_task_boot, level),
        "n_tasks": len(tasks),
        "worst_task": None if worst is None else worst["task"],
        "tasks": tasks,
    }
    out["mmrv_pooled"] = _stat(mmrv(x, y), None if bx is None else _rowwise_mmrv(bx, by), level)
    out["mean_signed_gap"] = _stat(mean_signed_gap(x, y), None if bx is None else (bx - by).mean(1), level)
    out["mean_absolute_gap"] = _stat(
        mean_absolute_gap(x, y), None if bx is None else np.abs(bx - by).mean(1), level
    )

    # Episode level, pooled over cells but resampled within them (same draws as the rates).
    total = int(n.sum())
    acc_boot = kappa_boot = None
    if boot is not None:
        tot = boot.sum(1)  # (B, 4) counts pooled over cells
        acc_boot = (tot[:, 0] + tot[:, 3]) / total
        pa, pb = (tot[:, 0] + tot[:, 1]) / total, (tot[:, 0] + tot[:, 2]) / total
        pe = pa * pb + (1 - pa) * (1 - pb)
        with np.errstate(invalid="ignore", divide="ignore"):
            # pe == 1 only when both sides are the same constant: they agree everywhere (metrics.cohen_kappa).
            kappa_boot = np.where(pe == 1.0, 1.0, (acc_boot - pe) / (1 - pe))
    kinds = counts.sum(0)  # the pooled episodes, rebuilt from the counts of each outcome kind
    imag_all, real_all = (
        np.repeat([True, True, False, False], kinds),
        np.repeat([True, False, True, False], kinds),
    )
    out["paired_accuracy"] = _stat(paired_accuracy(imag_all, real_all), acc_boot, level)
    out["cohen_kappa"] = _stat(cohen_kappa(imag_all, real_all), kappa_boot, level)
    out["bootstrap"] = {
        "resamples": int(bootstrap),
        "seed": int(seed),
        "level": float(level),
        "method": "paired percentile bootstrap: episodes resampled with replacement within each "
        "(policy, suite, task, start) cell, real/imagined twins kept together",
    }
    return out


# ---------------------------------------------------------------------------------------------------- tables
def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{0.0 if abs(x) < 0.5 * 10**-digits else x:.{digits}f}"  # no "-0.000" from rounding noise
    return str(x)


def _n(k: int, noun: str) -> str:
    return f"{k} {noun}" if k == 1 else f"{k} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _outside(s: Mapping[str, Any]) -> bool:
    """Whether the estimate lies outside its own percentile interval (see :func:`_stat`)."""
    ci, v = s.get("ci"), s.get("value")
    return ci is not None and v is not None and math.isfinite(v) and not ci[0] - 1e-12 <= v <= ci[1] + 1e-12


def _ci(s: Mapping[str, Any]) -> str:
    ci = s.get("ci")
    return "n/a" if ci is None else f"[{_f(ci[0])}, {_f(ci[1])}]" + ("†" if _outside(s) else "")


def _loo(name: str, loo: Mapping[str, Any] | None) -> str:
    if not loo or loo.get("min") is None:
        return ""
    return (
        f"{name} min {_f(loo['min'])} without {loo['min_without']}, max {_f(loo['max'])} without "
        f"{loo['max_without']} (largest shift {_f(loo['max_shift'])})"
    )


def _statistics_table(s: Mapping[str, Any]) -> list[str]:
    b = s["bootstrap"]
    pct = f"{100 * b['level']:g} %"
    pr, mt = s["pearson"], s["mmrv_per_task"]
    loo_p = s.get("loo_policy")
    head = f"Pearson {_f(pr['value'])} {_ci(pr)}"
    if loo_p and loo_p.get("min") is not None:
        head += f" (LOO-policy min {_f(loo_p['min'])} without {loo_p['min_without']})"
    gap, acc, kappa = s["mean_absolute_gap"], s["paired_accuracy"], s["cohen_kappa"]
    head += (
        f"; MMRV {_f(mt['value'])} {_ci(mt)} (per-task mean over {_n(mt['n_tasks'], 'task')}); "
        f"mean |imagined − real| {_f(gap['value'])} {_ci(gap)}; "
        f"paired accuracy {_f(acc['value'])}, κ {_f(kappa['value'])}."
    )
    if b["resamples"]:
        how = (
            f"{pct} CIs: paired percentile bootstrap, {b['resamples']} resamples of the episodes within "
            f"each (policy, task) cell with real/imagined twins kept together, seed {b['seed']}"
        )
    else:
        how = "no bootstrap (CIs n/a)"
    rows = [
        "",
        f"**Evaluator statistics** over {s['n_points']} (policy × task) points ({_n(s['n_policies'], 'policy')}, "
        f"{_n(s['n_tasks'], 'task')}) from {s['n_pairs']} paired episodes; {how}.",
        "",
        head,
        "",
        f"| statistic | value | {pct} CI | robustness |",
        "|---|---|---|---|",
    ]

    def deg(st: Mapping[str, Any]) -> str:
        d = st.get("degenerate_resamples")
        return f"{d} degenerate resamples (r undefined) left out" if d else ""

    loo_t = _loo("LOO-task", s.get("loo_task"))
    rob = "; ".join(x for x in (_loo("LOO-policy", loo_p), loo_t, deg(pr)) if x)
    rows.append(f"| Pearson r ↑ | {_f(pr['value'])} | {_ci(pr)} | {rob} |")
    rows.append(
        f"| Spearman ρ ↑ | {_f(s['spearman']['value'])} | {_ci(s['spearman'])} | {deg(s['spearman'])} |"
    )
    worst = f"; worst task {mt['worst_task']}" if mt["worst_task"] and mt["n_tasks"] > 1 else ""
    rows.append(
        f"| MMRV per task, mean ↓ | {_f(mt['value'])} | {_ci(mt)} | over {_n(mt['n_tasks'], 'task')}{worst} |"
    )
    rows.append(
        f"| MMRV pooled over all points ↓ | {_f(s['mmrv_pooled']['value'])} | {_ci(s['mmrv_pooled'])} | |"
    )
    for key, name in (
        ("mean_signed_gap", "mean imagined − real"),
        ("mean_absolute_gap", "mean \\|imagined − real\\| ↓"),
        ("paired_accuracy", "paired accuracy ↑"),
        ("cohen_kappa", "Cohen's κ ↑"),
    ):
        rows.append(f"| {name} | {_f(s[key]['value'])} | {_ci(s[key])} | |")
    rows += [
        "",
        "MMRV is SimplerEnv's `mean_maximum_rank_violation(imagined, real)`: for each point the largest real-rate "
        "gap to a point whose strict order (>) under imagined differs from its order under real, averaged over "
        "points; computed over the policies of each task and averaged over tasks (the pooled row ranks all "
        "points together).",
    ]
    stats = ("pearson", "spearman", "mmrv_per_task", "mmrv_pooled", "mean_absolute_gap", "mean_signed_gap")
    off = [k for k in stats if _outside(s[k])]
    if off:
        biases = ", ".join(f"{k} {s[k]['bias']:+.3f}" for k in off if s[k].get("bias") is not None)
        rows += [
            "",
            "† The estimate lies outside its percentile interval: resampling the episodes adds binomial noise to "
            "both rates of every point, which pulls r towards 0 and MMRV / |gap| up; with few episodes per cell "
            f"this shifts the resampled values (bootstrap bias: {biases}).",
        ]
    if mt["n_tasks"] > 1:
        rows += ["", "| task | policies | MMRV ↓ | Pearson ↑ | mean \\|gap\\| ↓ |", "|---|---|---|---|---|"]
        rows += [
            f"| {t['task']} | {t['n_policies']} | {_f(t['mmrv'])} | {_f(t['pearson'])} | {_f(t['mean_absolute_gap'])} |"
            for t in mt["tasks"]
        ]
    return rows


def format_table(report: dict[str, Any]) -> str:
    """Markdown of the headline numbers (for the README and the terminal): the rate-level table, the
    evaluator statistics with their CIs and leave-one-out ranges, the episode pairs and Kruskal–Wallis."""
    f = _f
    rows = [
        "| level | points | Pearson ↑ | Spearman ↑ | MMRV ↓ | mean signed gap | mean abs gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in ("task_level", "policy_level"):
        r = report.get(level)
        if r:
            rows.append(
                f"| {level.replace('_', ' ')} | {r['n_points']} | {f(r['pearson'])} | {f(r['spearman'])} | "
                f"{f(r['mmrv'])} | {f(r['mean_signed_gap'])} | {f(r['mean_absolute_gap'])} |"
            )
    if report.get("statistics"):
        rows += _statistics_table(report["statistics"])
    e = report.get("episode_level")
    if e:
        rows.append("")
        rows.append(
            f"Per-episode pairs: {e['n_pairs']}, paired accuracy {f(e['paired_accuracy'])}, "
            f"Cohen's κ {f(e['cohen_kappa'])} (imagined-only successes {e['imagined_only_success']}, "
            f"real-only {e['real_only_success']})."
        )
    kw = report.get("kruskal_wallis")
    if kw:
        rows += [
            "",
            "| policy | paired trials | imagined success | real success | Kruskal–Wallis H | p |",
            "|---|---|---|---|---|---|",
        ]
        for k in kw:
            rows.append(
                f"| {k['policy']} | {k['n_pairs']} | {f(k['imagined_success'])} | {f(k['real_success'])} | "
                f"{f(k['statistic'])} | {f(k['pvalue'])} |"
            )
    rows.append(f"Error episodes excluded: {report['errors_excluded']}.")
    p = report.get("pairing")
    if p and (p["unpaired_real"] or p["unpaired_imagined"]):
        rows.append(
            f"Episodes without an error-free twin in the other env, left out: {p['unpaired_real']} real, "
            f"{p['unpaired_imagined']} imagined."
        )
    return "\n".join(rows)


def clipped_action_share(
    records: Iterable[dict[str, Any]], action_min: Any, action_max: Any, env: str = "imagined"
) -> dict[str, dict[str, Any]]:
    """Per policy: the share of action values outside the world model's action bins ``[min, max]``.

    Such values land in an edge bin, so the world model cannot tell them apart (dx = -0.05 and dx = -1.0 are
    one token when min is -0.044). Computed over the ``actions`` of the policy's ``env`` records (written with
    ``EvalConfig(record_actions=True)``), per dimension and overall.
    """
    lo, hi = np.asarray(action_min, np.float64), np.asarray(action_max, np.float64)
    acts: dict[str, list[Any]] = {}
    for r in latest_records(records).values():
        if r.get("env") == env and r.get("actions"):
            acts.setdefault(str(r["policy"]), []).extend(r["actions"])
    out: dict[str, dict[str, Any]] = {}
    for policy, rows in sorted(acts.items()):
        a = np.asarray(rows, np.float64)
        clipped = (a < lo) | (a > hi)
        out[policy] = {
            "share": float(clipped.mean()),
            "per_dim": [round(float(x), 4) for x in clipped.mean(0)],
            "values": int(a.size),
        }
    return out
