"""Evaluator-study statistics of the agreement report: pairing, Pearson/Spearman with a paired bootstrap CI,
leave-one-policy/task-out, MMRV per task (SimplerEnv's convention) and pooled, gaps, accuracy and κ.

Expected values are worked out by hand in the comments, not taken from the implementation.
"""

from __future__ import annotations

import json
import math
import random
import time

import numpy as np
import pytest

from wvla_gym.evaluation.agreement import (
    agreement_from_records,
    agreement_statistics,
    format_table,
    start_label,
)
from wvla_gym.evaluation.metrics import mmrv

T, F = True, False
SUITE = "libero_object"


def _rec(policy, env, task, init, success, error=None, **extra):
    return {"policy": policy, "env": env, "suite": SUITE, "task_id": task, "init_state_id": init, "seed": 0,
            "success": success, "steps": 5, "wall_time_s": 0.1, "error": error, "traceback": None, **extra}  # fmt: skip


def _records(spec):
    """{(policy, task): [(imagined, real), ...]} -> twin records, init state = position in the list."""
    out = []
    for (policy, task), pairs in spec.items():
        for k, (imag, real) in enumerate(pairs):
            out += [_rec(policy, "imagined", task, k, imag), _rec(policy, "real", task, k, real)]
    return out


def _cell(both=0, imag_only=0, real_only=0, neither=0):
    return [(T, T)] * both + [(T, F)] * imag_only + [(F, T)] * real_only + [(F, F)] * neither


# One task, three policies, four paired episodes each (imagined, real):
#   P1: 0/4 vs 0/4; P2: 2/4 vs 4/4; P3: 4/4 vs 2/4  -> points x = imagined = (0, .5, 1), y = real = (0, 1, .5).
THREE = {
    ("P1", 0): _cell(neither=4),
    ("P2", 0): _cell(both=2, real_only=2),
    ("P3", 0): _cell(both=2, imag_only=2),
}
# A second task on which the same three policies agree perfectly: x = y = (0, .5, 1).
TASK1 = {("P1", 1): _cell(neither=4), ("P2", 1): _cell(both=2, neither=2), ("P3", 1): _cell(both=4)}


def test_three_policies_one_rank_swap_by_hand():
    rep = agreement_from_records(_records(THREE), bootstrap=500)
    assert [(p["policy"], p["imagined"], p["real"], p["n_pairs"]) for p in rep["points"]] == [
        ("P1", 0.0, 0.0, 4),
        ("P2", 0.5, 1.0, 4),
        ("P3", 1.0, 0.5, 4),
    ]
    s = rep["statistics"]
    assert (s["n_points"], s["n_policies"], s["n_tasks"], s["n_pairs"]) == (3, 3, 1, 12)
    # Pearson: means .5 and .5; dx = (-.5, 0, .5), dy = (-.5, .5, 0); Σdxdy = .25, Σdx² = Σdy² = .5 -> r = .5.
    assert s["pearson"]["value"] == pytest.approx(0.5)
    # Spearman: ranks (1, 2, 3) vs (1, 3, 2): Σdd = 1, Σd² = 2 each -> .5.
    assert s["spearman"]["value"] == pytest.approx(0.5)
    # MMRV (SimplerEnv): P1 has no flipped pair -> 0; P2 vs P3: imagined .5 > 1 is false, real 1 > .5 is true
    # -> violation |1 - .5| = .5, and likewise for P3 vs P2 -> .5. Mean (0 + .5 + .5) / 3 = 1/3.
    assert s["mmrv_per_task"]["value"] == pytest.approx(1 / 3)
    assert s["mmrv_per_task"]["n_tasks"] == 1
    assert s["mmrv_pooled"]["value"] == pytest.approx(1 / 3)  # one task: pooled = per task
    # Leave one policy out (two points left, so r = ±1): without P1 -> (.5, 1) vs (1, .5): r = -1;
    # without P2 -> (0, 1) vs (0, .5): 1; without P3 -> (0, .5) vs (0, 1): 1. Min -1 (P1), max 1, shift 1.5.
    loo = s["loo_policy"]
    assert (loo["min"], loo["min_without"]) == (pytest.approx(-1.0), "P1")
    assert loo["max"] == pytest.approx(1.0) and loo["max_without"] == "P2"  # tie with P3: first in order
    assert loo["max_shift"] == pytest.approx(1.5)
    assert [v["left_out"] for v in loo["values"]] == ["P1", "P2", "P3"]
    assert s["loo_task"] is None  # one task: nothing to leave out
    # Gaps: imagined - real = (0, -.5, .5): signed mean 0, absolute mean 1/3.
    assert s["mean_signed_gap"]["value"] == pytest.approx(0.0)
    assert s["mean_absolute_gap"]["value"] == pytest.approx(1 / 3)
    # Episodes: P1 agrees 4/4, P2 2/4, P3 2/4 -> 8/12. Marginals 6/12 and 6/12 -> p_e = .5, κ = (2/3-.5)/.5.
    assert s["paired_accuracy"]["value"] == pytest.approx(2 / 3)
    assert s["cohen_kappa"]["value"] == pytest.approx(1 / 3)
    # Backward compatible: the old levels are still there and agree.
    assert rep["task_level"]["pearson"] == pytest.approx(0.5) and rep["task_level"]["mmrv"] == pytest.approx(
        1 / 3
    )
    assert rep["episode_level"]["paired_accuracy"] == pytest.approx(2 / 3)


def test_two_tasks_per_task_mmrv_mean_differs_from_pooled_and_leave_one_task_out():
    s = agreement_from_records(_records({**THREE, **TASK1}), bootstrap=200)["statistics"]
    # Per task: task 0 has MMRV 1/3 (above), task 1 agrees perfectly -> 0. Mean 1/6.
    per = {t["task"]: t["mmrv"] for t in s["mmrv_per_task"]["tasks"]}
    assert per == {f"{SUITE}/0": pytest.approx(1 / 3), f"{SUITE}/1": pytest.approx(0.0)}
    assert s["mmrv_per_task"]["value"] == pytest.approx(1 / 6)
    assert s["mmrv_per_task"]["worst_task"] == f"{SUITE}/0"
    # Pooled over the six points a=(0,0) b=(.5,1) c=(1,.5) d=(0,0) e=(.5,.5) f=(1,1) as (imagined, real):
    # a, d: never flipped -> 0. b: vs c flipped (.5>1 F, 1>.5 T) gap .5; vs e (.5>.5 F, 1>.5 T) gap .5 -> .5.
    # c: vs b flipped gap .5; vs e (1>.5 T, .5>.5 F) gap 0 -> .5. e: vs b, c, f no flip -> 0.
    # f: vs b (1>.5 T, 1>1 F) gap 0; vs c (1>1 F, 1>.5 T) gap .5 -> .5. Mean 1.5 / 6 = .25.
    assert s["mmrv_pooled"]["value"] == pytest.approx(0.25)
    # Pooled Pearson: dx = (-.5,0,.5,-.5,0,.5), dy = (-.5,.5,0,-.5,0,.5): Σdxdy = .75, Σdx² = Σdy² = 1 -> .75.
    assert s["pearson"]["value"] == pytest.approx(0.75)
    # Leave one task out: only task 1 left -> 1.0; only task 0 left -> .5.
    lt = s["loo_task"]
    assert (lt["min"], lt["min_without"]) == (pytest.approx(0.5), f"{SUITE}/1")
    assert (lt["max"], lt["max_without"]) == (pytest.approx(1.0), f"{SUITE}/0")
    # Leave one policy out over both tasks: without P1, x = (.5,1,.5,1), y = (1,.5,.5,1): Σdxdy = 0 -> r = 0.
    # Without P2 (or P3, by symmetry): Σdxdy = .75, Σdx² = 1, Σdy² = 11/16 -> r = .75 / sqrt(11/16) = 3/sqrt(11).
    lp = s["loo_policy"]
    assert (lp["min"], lp["min_without"]) == (pytest.approx(0.0), "P1")
    assert lp["max"] == pytest.approx(3 / math.sqrt(11))


def test_perfect_agreement_gives_r_1_with_ci_1_1_and_mmrv_0():
    # Every twin agrees, so every resample keeps imagined == real in every cell (pairs are resampled together).
    spec = {
        ("A", 0): _cell(neither=5),
        ("B", 0): _cell(both=1, neither=4),
        ("C", 0): _cell(both=3, neither=2),
        ("D", 0): _cell(both=5),
    }
    s = agreement_from_records(_records(spec), bootstrap=1000, seed=7)["statistics"]
    assert s["pearson"]["value"] == 1.0 and s["pearson"]["ci"] == [1.0, 1.0]
    assert s["spearman"]["ci"] == [1.0, 1.0]
    assert s["mmrv_per_task"]["value"] == 0.0 and s["mmrv_per_task"]["ci"] == [0.0, 0.0]
    assert s["mmrv_pooled"]["ci"] == [0.0, 0.0]
    assert s["mean_absolute_gap"]["ci"] == [0.0, 0.0] and s["mean_signed_gap"]["ci"] == [0.0, 0.0]
    assert s["paired_accuracy"]["ci"] == [1.0, 1.0] and s["cohen_kappa"]["ci"] == [1.0, 1.0]
    assert "degenerate_resamples" not in s["pearson"]


def test_bootstrap_is_stratified_by_cell():
    # Outcomes are constant within each cell, so a resample of a cell's own episodes never changes its rates:
    # the interval has zero width. (Pooling episodes across cells would move them.)
    # x = (0, 1, 1), y = (0, 0, 1): dx = (-2/3, 1/3, 1/3), dy = (-1/3, -1/3, 2/3): Σdxdy = 1/3, Σdx² = Σdy² = 2/3
    # -> r = .5. MMRV: only (1,1) vs (1,0) flips (1>1 F, 1>0 T) with gap 1 -> (0 + 0 + 1) / 3.
    spec = {("A", 0): _cell(neither=3), ("B", 0): _cell(imag_only=3), ("C", 0): _cell(both=3)}
    s = agreement_from_records(_records(spec), bootstrap=300)["statistics"]
    assert s["pearson"]["value"] == pytest.approx(0.5)
    assert s["pearson"]["ci"] == pytest.approx([0.5, 0.5])
    assert s["mmrv_per_task"]["ci"] == pytest.approx([1 / 3, 1 / 3])


def _agreeing_study():
    # Five policies of graded quality, 20 paired episodes each, twins mostly agreeing.
    return {
        ("P1", 0): _cell(both=1, imag_only=1, neither=18),
        ("P2", 0): _cell(both=5, imag_only=1, real_only=2, neither=12),
        ("P3", 0): _cell(both=10, imag_only=2, real_only=1, neither=7),
        ("P4", 0): _cell(both=14, real_only=2, neither=4),
        ("P5", 0): _cell(both=18, imag_only=1, neither=1),
    }


def test_bootstrap_is_deterministic_contains_the_estimate_and_ignores_record_order():
    recs = _records(_agreeing_study())
    a = agreement_from_records(recs, seed=3)["statistics"]
    shuffled = list(recs)
    random.Random(0).shuffle(shuffled)
    b = agreement_from_records(shuffled, seed=3)["statistics"]
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = agreement_from_records(recs, seed=4)["statistics"]
    assert c["pearson"]["ci"] != a["pearson"]["ci"]  # another seed, other draws
    assert a["bootstrap"]["resamples"] == 2000 and a["bootstrap"]["seed"] == 3
    for key in ("pearson", "spearman", "mmrv_per_task", "mean_absolute_gap", "mean_signed_gap", "paired_accuracy",
                "cohen_kappa"):  # fmt: skip
        lo, hi = a[key]["ci"]
        assert lo <= a[key]["value"] <= hi, key
        assert lo < hi, key  # outcomes vary within cells, so the interval has width


def test_bootstrap_matches_a_naive_resampling_loop():
    # Independent reference: draw episode indices with replacement within each cell (twins together), B times,
    # and take the percentile interval of r. Monte Carlo error of a 2.5 % quantile at B = 4000 is ~0.01 here.
    spec = _agreeing_study()
    rng = np.random.default_rng(123)
    cells = [np.array(pairs, dtype=float) for pairs in spec.values()]
    rs, gaps = [], []
    for _ in range(4000):
        xs, ys = [], []
        for pairs in cells:
            pick = pairs[rng.integers(0, len(pairs), len(pairs))]
            xs.append(pick[:, 0].mean())
            ys.append(pick[:, 1].mean())
        rs.append(np.corrcoef(xs, ys)[0, 1])
        gaps.append(np.mean(np.abs(np.subtract(xs, ys))))
    s = agreement_from_records(_records(spec), bootstrap=4000, seed=0)["statistics"]
    assert s["pearson"]["ci"] == pytest.approx(list(np.quantile(rs, [0.025, 0.975])), abs=0.03)
    assert s["mean_absolute_gap"]["ci"] == pytest.approx(list(np.quantile(gaps, [0.025, 0.975])), abs=0.02)


def test_degenerate_resamples_are_left_out_and_counted():
    # A: one episode (F, F) -> always (0, 0). B: twins (F, T) and (T, T) -> real always 1; imagined 0 when both
    # draws pick the first twin (probability 1/4): then imagined is constant (0, 0) while real is (0, 1), so r
    # is undefined. Otherwise two points with both rates higher for B: r = 1.
    spec = {("A", 0): _cell(neither=1), ("B", 0): _cell(both=1, real_only=1)}
    s = agreement_from_records(_records(spec), bootstrap=2000, seed=1)["statistics"]
    assert s["pearson"]["value"] == 1.0 and s["pearson"]["ci"] == [1.0, 1.0]
    # Binomial(2000, 1/4): mean 500, sd 19.4; 400..600 is over 5 sd either way.
    assert 400 < s["pearson"]["degenerate_resamples"] < 600
    assert "degenerate_resamples" not in s["mmrv_pooled"]  # MMRV is always defined


def test_pairing_keeps_only_error_free_twins_and_reports_the_rest():
    recs = _records({("A", 0): _cell(neither=3), ("B", 0): _cell(both=2, neither=1)})
    recs.append(_rec("A", "real", 0, 3, True))  # no imagined twin
    recs.append(_rec("A", "imagined", 0, 4, True))  # no real twin
    recs += [_rec("A", "real", 0, 5, True), _rec("A", "imagined", 0, 5, True, error="RuntimeError: x")]
    rep = agreement_from_records(recs, bootstrap=100)
    a = next(p for p in rep["points"] if p["policy"] == "A")
    # Only inits 0-2 are twins: real 0/3, not 2/5 as all of A's real episodes would give.
    assert (a["real"], a["imagined"], a["n_pairs"], a["n_real"], a["n_imagined"]) == (0.0, 0.0, 3, 3, 3)
    assert rep["pairing"] == {"pairs": 6, "errors_excluded": 1, "unpaired_real": 2, "unpaired_imagined": 1}
    assert rep["errors_excluded"] == 1
    assert rep["policy_points"][0] == {"policy": "A", "imagined": 0.0, "real": 0.0}
    assert rep["statistics"]["n_pairs"] == 6
    assert "left out: 2 real, 1 imagined" in format_table(rep)


def test_start_modes_are_separate_cells():
    assert start_label({}) == "init_state"
    assert start_label({"placement": "init_state", "perturb_radius": 0.0}) == "init_state"
    assert start_label({"placement": "sampled"}) == "sampled"
    assert start_label({"placement": "init_state", "perturb_radius": 0.03}) == "perturb0.03"
    recs = _records({("A", 0): _cell(both=1, neither=1), ("B", 0): _cell(neither=2)})
    for k, (imag, real) in enumerate([(T, T), (T, F)], start=10):
        recs += [_rec("A", env, 0, k, s, placement="sampled", perturb_radius=0.0)
                 for env, s in (("imagined", imag), ("real", real))]  # fmt: skip
    rep = agreement_from_records(recs, bootstrap=0)
    pts = {(p["policy"], p["start"]): (p["imagined"], p["real"]) for p in rep["points"]}
    assert pts == {
        ("A", "init_state"): (0.5, 0.5),
        ("A", "sampled"): (1.0, 0.5),
        ("B", "init_state"): (0.0, 0.0),
    }
    tasks = rep["statistics"]["mmrv_per_task"]["tasks"]
    assert [t["task"] for t in tasks] == [f"{SUITE}/0"]  # the sampled start has one policy: nothing to rank
    assert rep["statistics"]["pearson"]["ci"] is None  # bootstrap=0: no intervals


def test_mmrv_follows_simplerenv_strict_greater_convention_on_ties():
    # SimplerEnv compares (sim_i > sim_j) with (real_i > real_j). Imagined all tied at .5, real (0, 0, 1):
    # only i = the real-1 point sees flips (F vs T) with gaps 1, 1 -> (0 + 0 + 1) / 3. Reading the rule with
    # '<' instead would charge the two real-0 points and give 2/3.
    assert mmrv([0.5, 0.5, 0.5], [0.0, 0.0, 1.0]) == pytest.approx(1 / 3)
    spec = {("A", 0): _cell(imag_only=1, neither=1), ("B", 0): _cell(imag_only=1, neither=1),
            ("C", 0): _cell(both=1, real_only=1)}  # fmt: skip
    s = agreement_from_records(_records(spec), bootstrap=0)["statistics"]
    assert s["mmrv_per_task"]["value"] == pytest.approx(1 / 3)
    # The bootstrap's MMRV uses the same rule: cells constant within (imagined 1, 1, 1; real 0, 0, 1) never
    # change under resampling, so the interval is [1/3, 1/3]. r is undefined in every resample (imagined is
    # constant, real is not): no interval, all resamples counted as degenerate.
    spec = {("A", 0): _cell(imag_only=2), ("B", 0): _cell(imag_only=2), ("C", 0): _cell(both=2)}
    s = agreement_from_records(_records(spec), bootstrap=50)["statistics"]
    assert s["mmrv_per_task"]["ci"] == pytest.approx([1 / 3, 1 / 3])
    assert math.isnan(s["pearson"]["value"]) and s["pearson"]["ci"] is None
    assert s["pearson"]["degenerate_resamples"] == 50


def test_format_table_reports_headline_ci_and_leave_one_out():
    rep = agreement_from_records(_records({**THREE, **TASK1}), bootstrap=200)
    table = format_table(rep)
    s = rep["statistics"]
    lo, hi = s["pearson"]["ci"]
    assert f"Pearson 0.750 [{lo:.3f}, {hi:.3f}] (LOO-policy min 0.000 without P1)" in table
    assert "MMRV 0.167 [" in table and "(per-task mean over 2 tasks)" in table
    assert "LOO-task min 0.500 without libero_object/1" in table
    assert "SimplerEnv" in table and "| libero_object/0 | 3 | 0.333 | 0.500 | 0.333 |" in table
    assert "| paired accuracy ↑ | 0.833 |" in table  # (8 + 12) / 24 twins agree
    # a study without any pair: no statistics section, as before
    assert agreement_from_records([_rec("A", "real", 0, 0, True)])["statistics"] is None


def test_bad_bootstrap_arguments():
    cells = {("A", SUITE, 0, "init_state"): [(T, T)], ("B", SUITE, 0, "init_state"): [(F, F)]}
    with pytest.raises(ValueError, match="bootstrap"):
        agreement_statistics(cells, bootstrap=-1)
    with pytest.raises(ValueError, match="level"):
        agreement_statistics(cells, level=95)


def test_bootstrap_is_fast_for_a_400_episode_study():
    # 10 policies x 2 tasks x 20 twins, B = 2000: vectorised, ~0.1 s here; the bound leaves room for a busy box.
    rng = np.random.default_rng(0)
    spec = {}
    for p in range(10):
        for t in range(2):
            q = rng.uniform()
            spec[(f"P{p}", t)] = [(bool(u < q + 0.05), bool(u < q)) for u in rng.uniform(size=20)]
    recs = _records(spec)
    t0 = time.perf_counter()
    s = agreement_from_records(recs)["statistics"]
    assert time.perf_counter() - t0 < 5.0
    assert s["n_pairs"] == 400 and s["bootstrap"]["resamples"] == 2000


def test_cli_bootstrap_and_seed(tmp_path, capsys):
    from wvla_gym.cli.agreement import main
    from wvla_gym.evaluation.results import ResultsWriter

    with ResultsWriter(tmp_path / "run" / "episodes.jsonl") as w:
        for r in _records({**THREE, **TASK1}):
            w.write(r)
    assert main([str(tmp_path), "--bootstrap", "300", "--seed", "5", "--no-plots"]) == 0
    report = json.loads((tmp_path / "agreement.json").read_text())
    assert (
        report["statistics"]["bootstrap"]["resamples"] == 300
        and report["statistics"]["bootstrap"]["seed"] == 5
    )
    assert report["statistics"]["mmrv_per_task"]["value"] == pytest.approx(1 / 6)
    out = capsys.readouterr().out
    assert "Evaluator statistics" in out and "300 resamples" in out
    assert (tmp_path / "agreement.md").read_text().startswith("| level |")
    assert main([str(tmp_path), "--bootstrap", "-1"]) == 2
