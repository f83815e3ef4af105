"""Kruskal–Wallis H-test of imagined vs real trial outcomes, and its place in the agreement report."""

from __future__ import annotations

import math

import pytest

from wvla_gym.evaluation.agreement import agreement_from_records, format_table
from wvla_gym.evaluation.metrics import kruskal_wallis


def _hand_h(imagined, real):
    """Tie-corrected H for two groups of 0/1 outcomes, with average ranks worked out by hand."""
    n_i, n_r = len(imagined), len(real)
    n = n_i + n_r
    zeros = (n_i - sum(imagined)) + (n_r - sum(real))
    ones = n - zeros
    rank0 = (1 + zeros) / 2  # zeros share ranks 1..zeros
    rank1 = zeros + (1 + ones) / 2  # ones share ranks zeros+1..n
    r_i = sum(rank1 if v else rank0 for v in imagined)
    r_r = sum(rank1 if v else rank0 for v in real)
    h = 12 / (n * (n + 1)) * (r_i**2 / n_i + r_r**2 / n_r) - 3 * (n + 1)
    return h / (1 - (zeros**3 - zeros + ones**3 - ones) / (n**3 - n))


def test_kruskal_hand_computed_h_and_p():
    imagined, real = [1, 1, 1, 0], [1, 0, 0, 0]
    # N = 8: four 0s (ranks 1..4, mean 2.5), four 1s (ranks 5..8, mean 6.5). R_imagined = 3*6.5 + 2.5 = 22,
    # R_real = 6.5 + 3*2.5 = 14. H0 = 12/72 * (22^2/4 + 14^2/4) - 27 = 170/6 - 27 = 4/3.
    # Ties: C = 1 - ((64 - 4) + (64 - 4)) / (512 - 8) = 1 - 120/504 = 16/21. H = (4/3) / (16/21) = 7/4.
    h = 7 / 4
    assert _hand_h(imagined, real) == pytest.approx(h)
    res = kruskal_wallis(imagined, real)
    assert set(res) == {"statistic", "pvalue"}
    assert res["statistic"] == pytest.approx(h, rel=1e-12)
    # chi-square with 1 dof: P(X > h) = erfc(sqrt(h / 2))
    assert res["pvalue"] == pytest.approx(math.erfc(math.sqrt(h / 2)), rel=1e-9)
    # unequal group sizes, booleans accepted
    imagined2, real2 = [True, False, True, True, True], [False, False, True]
    assert kruskal_wallis(imagined2, real2)["statistic"] == pytest.approx(
        _hand_h(imagined2, real2), rel=1e-12
    )


def test_kruskal_degenerate_and_errors():
    assert kruskal_wallis([0, 0, 0], [0, 0]) == {"statistic": 0.0, "pvalue": 1.0}
    assert kruskal_wallis([True, True], [True]) == {"statistic": 0.0, "pvalue": 1.0}
    with pytest.raises(ValueError, match="non-empty"):
        kruskal_wallis([], [1, 0])


def _rec(policy, env, init, success, error=None):
    return {
        "policy": policy,
        "env": env,
        "suite": "libero_object",
        "task_id": 0,
        "init_state_id": init,
        "seed": 0,
        "success": success,
        "steps": 5,
        "wall_time_s": 0.1,
        "error": error,
        "traceback": None,
    }


def test_agreement_report_has_kruskal_per_policy():
    recs = []
    for init, (i, r) in enumerate([(True, True), (True, False), (True, False), (False, False)]):
        recs += [_rec("A", "imagined", init, i), _rec("A", "real", init, r)]
    recs.append(_rec("A", "imagined", 4, True))  # no real counterpart: not a pair
    for init in range(3):
        recs += [_rec("B", "imagined", init, False), _rec("B", "real", init, False)]
    recs.append(_rec("B", "real", 3, True, error="RuntimeError: x"))  # errors are dropped
    rep = agreement_from_records(recs)
    assert {"points", "task_level", "policy_level", "episode_level", "errors_excluded"} <= set(rep)
    kw = {k["policy"]: k for k in rep["kruskal_wallis"]}
    assert kw["A"]["n_pairs"] == 4
    assert kw["A"]["imagined_success"] == 0.75 and kw["A"]["real_success"] == 0.25
    assert kw["A"]["statistic"] == pytest.approx(7 / 4)
    assert kw["A"]["pvalue"] == pytest.approx(math.erfc(math.sqrt(7 / 8)))
    assert kw["B"]["n_pairs"] == 3 and kw["B"]["statistic"] == 0.0 and kw["B"]["pvalue"] == 1.0
    table = format_table(rep)
    assert "Kruskal–Wallis H" in table
    assert "| A | 4 | 0.750 | 0.250 | 1.750 |" in table
    assert "| B | 3 | 0.000 | 0.000 | 0.000 | 1.000 |" in table
    # no pairs at all: an empty list, and the table stays as before
    rep2 = agreement_from_records([_rec("A", "real", 0, True)])
    assert rep2["kruskal_wallis"] == [] and "Kruskal" not in format_table(rep2)
