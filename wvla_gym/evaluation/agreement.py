"""Imagined-vs-real agreement from paired evaluation results (``--env both`` or separate runs).

Two levels, both with imagined first and real second (SimplerEnv's ``calc_metrics`` order):

* **rates**: one point per (policy, suite, task) with both env kinds -> Pearson, Spearman, MMRV, signed and
  absolute gap; plus the same over one point per policy (suite-level success), the SimplerEnv setting.
* **episodes**: pairs of episodes with the same (policy, suite, task, init state, seed) -> paired accuracy and
  Cohen's κ; and per policy (``kruskal_wallis``), SimplerEnv's Kruskal–Wallis H-test of the 0/1 outcomes of
  that policy's paired episodes, imagined vs real (same trials on both sides; p < 0.05 = evidence that
  imagined and real outcomes differ).

Error episodes are dropped before anything is computed (and counted in ``errors``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wvla_gym.evaluation.metrics import agreement_report, cohen_kappa, kruskal_wallis, paired_accuracy
from wvla_gym.evaluation.results import latest_records


def _rates(recs: list[dict[str, Any]]) -> tuple[float, int]:
    return sum(bool(r["success"]) for r in recs) / len(recs), len(recs)


def agreement_from_records(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    latest = list(latest_records(records).values())
    errors = sum(r.get("error") is not None for r in latest)
    valid = [r for r in latest if r.get("error") is None]
    by_task: dict[tuple[str, str, int], dict[str, list[dict[str, Any]]]] = {}
    for r in valid:
        by_task.setdefault((r["policy"], r["suite"], int(r["task_id"])), {}).setdefault(r["env"], []).append(r)
    points = []
    for (policy, suite, task), kinds in sorted(by_task.items()):
        if "real" in kinds and "imagined" in kinds:
            ri, ni = _rates(kinds["imagined"])
            rr, nr = _rates(kinds["real"])
            points.append({"policy": policy, "suite": suite, "task_id": task, "imagined": ri, "real": rr,
                           "n_imagined": ni, "n_real": nr})
    out: dict[str, Any] = {"errors_excluded": errors, "points": points}
    if not points:
        out["task_level"] = None
        out["policy_level"] = None
    else:
        out["task_level"] = agreement_report([p["imagined"] for p in points], [p["real"] for p in points])
        pol: dict[str, dict[str, list[bool]]] = {}
        for r in valid:
            pol.setdefault(r["policy"], {}).setdefault(r["env"], []).append(bool(r["success"]))
        pol_points = [
            {"policy": p, "imagined": sum(k["imagined"]) / len(k["imagined"]), "real": sum(k["real"]) / len(k["real"])}
            for p, k in sorted(pol.items())
            if "imagined" in k and "real" in k
        ]
        out["policy_points"] = pol_points
        out["policy_level"] = agreement_report([p["imagined"] for p in pol_points], [p["real"] for p in pol_points])
    # Per-episode pairs: same trial in both envs.
    eps: dict[tuple, dict[str, bool]] = {}
    for r in valid:
        key = (r["policy"], r["suite"], int(r["task_id"]), int(r["init_state_id"]), int(r["seed"]))
        eps.setdefault(key, {})[r["env"]] = bool(r["success"])
    pairs = [(v["imagined"], v["real"]) for v in eps.values() if "imagined" in v and "real" in v]
    if pairs:
        imag, real = [p[0] for p in pairs], [p[1] for p in pairs]
        out["episode_level"] = {
            "n_pairs": len(pairs),
            "paired_accuracy": paired_accuracy(imag, real),
            "cohen_kappa": cohen_kappa(imag, real),
            "imagined_only_success": sum(a and not b for a, b in pairs),
            "real_only_success": sum(b and not a for a, b in pairs),
        }
    else:
        out["episode_level"] = None
    # Per policy: Kruskal-Wallis on the paired trials' outcomes (imagined vs real).
    by_policy: dict[str, list[tuple[bool, bool]]] = {}
    for key, v in eps.items():
        if "imagined" in v and "real" in v:
            by_policy.setdefault(key[0], []).append((v["imagined"], v["real"]))
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


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table of the headline numbers (for the README and the terminal)."""

    def f(x: Any) -> str:
        return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    rows = ["| level | points | Pearson ↑ | Spearman ↑ | MMRV ↓ | mean signed gap | mean abs gap |",
            "|---|---|---|---|---|---|---|"]
    for level in ("task_level", "policy_level"):
        r = report.get(level)
        if r:
            rows.append(f"| {level.replace('_', ' ')} | {r['n_points']} | {f(r['pearson'])} | {f(r['spearman'])} | "
                        f"{f(r['mmrv'])} | {f(r['mean_signed_gap'])} | {f(r['mean_absolute_gap'])} |")
    e = report.get("episode_level")
    if e:
        rows.append("")
        rows.append(f"Per-episode pairs: {e['n_pairs']}, paired accuracy {f(e['paired_accuracy'])}, "
                    f"Cohen's κ {f(e['cohen_kappa'])} (imagined-only successes {e['imagined_only_success']}, "
                    f"real-only {e['real_only_success']}).")
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
    return "\n".join(rows)


def clipped_action_share(records: Iterable[dict[str, Any]], action_min: Any, action_max: Any,
                         env: str = "imagined") -> dict[str, dict[str, Any]]:
    """Per policy: the share of action values outside the world model's action bins ``[min, max]``.

    Such values land in an edge bin, so the world model cannot tell them apart (dx = -0.05 and dx = -1.0 are
    one token when min is -0.044). Computed over the ``actions`` of the policy's ``env`` records (written with
    ``EvalConfig(record_actions=True)``), per dimension and overall.
    """
    import numpy as np

    lo, hi = np.asarray(action_min, np.float64), np.asarray(action_max, np.float64)
    acts: dict[str, list[Any]] = {}
    for r in latest_records(records).values():
        if r.get("env") == env and r.get("actions"):
            acts.setdefault(str(r["policy"]), []).extend(r["actions"])
    out: dict[str, dict[str, Any]] = {}
    for policy, rows in sorted(acts.items()):
        a = np.asarray(rows, np.float64)
        clipped = (a < lo) | (a > hi)
        out[policy] = {"share": float(clipped.mean()), "per_dim": [round(float(x), 4) for x in clipped.mean(0)],
                       "values": int(a.size)}
    return out
