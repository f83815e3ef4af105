"""``wvla-gym agreement RESULTS...``: imagined-vs-real agreement over every run found below the folders.

Writes ``agreement.json``, ``agreement.md``, ``agreement_scatter.png`` and ``agreement_tasks.png`` into --out
(default: the first results folder) and prints the table.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from wvla_gym.evaluation.agreement import DEFAULT_BOOTSTRAP, agreement_from_records, format_table
from wvla_gym.evaluation.runner import iter_records


@dataclass
class AgreementArgs:
    """Pearson and Spearman with paired-bootstrap CIs and leave-one-policy/task-out ranges, MMRV per task and
    pooled (SimplerEnv's convention, imagined first, real second), mean gaps, paired accuracy, Cohen's κ,
    Kruskal–Wallis per policy, and plots. Only episodes with an error-free twin in the other env count."""

    results: tyro.conf.Positional[list[Path]] = field(default_factory=lambda: [Path("results")])
    """Results folders (searched recursively for episodes.jsonl) or episodes.jsonl files."""
    out: Path | None = None
    policies: list[str] | None = None
    """Restrict to these policy names (default: all)."""
    plots: bool = True
    bootstrap: int = DEFAULT_BOOTSTRAP
    """Bootstrap resamples for the 95 % CIs (episodes resampled within each (policy, task) cell; 0: none)."""
    seed: int = 0
    """Seed of the bootstrap (numpy Generator): the same results and seed give the same report."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(AgreementArgs, args=argv, prog="wvla-gym agreement")
    missing = [str(p) for p in args.results if not p.exists()]
    if missing:
        print(
            f"error: results {missing} do not exist; expected folders containing episodes.jsonl",
            file=sys.stderr,
        )
        return 2
    records = [r for p in args.results for r in iter_records(p)]
    if args.policies:
        records = [r for r in records if r.get("policy") in set(args.policies)]
    if not records:
        print(
            f"error: no episode records under {[str(p) for p in args.results]}; run `wvla-gym eval` first",
            file=sys.stderr,
        )
        return 2
    if args.bootstrap < 0:
        print(
            f"error: --bootstrap {args.bootstrap}; expected a non-negative number of resamples",
            file=sys.stderr,
        )
        return 2
    report = agreement_from_records(records, bootstrap=args.bootstrap, seed=args.seed)
    out = args.out or (args.results[0] if args.results[0].is_dir() else args.results[0].parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    table = format_table(report)
    (out / "agreement.md").write_text(table + "\n")
    print(table)
    if args.plots and report["points"]:
        from wvla_gym.evaluation.plots import plot_scatter, plot_task_bars

        print(
            f"plots: {plot_scatter(report, out / 'agreement_scatter.png')}, "
            f"{plot_task_bars(report, out / 'agreement_tasks.png')}"
        )
    elif not report["points"]:
        print(
            "no task has both real and imagined episodes: nothing to correlate (use `wvla-gym eval --env both`)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
