"""Agreement and success-rate metrics against values computed by hand on small tables."""

from __future__ import annotations

import math

import pytest

from wvla_gym.evaluation.metrics import (
    Z95,
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

IMAG = [0.2, 0.5, 0.4]
REAL = [0.1, 0.3, 0.6]


def test_wilson_half_and_edges():
    # 5/10: centre 0.5, half-width z*sqrt(0.025 + z^2/400) / (1 + z^2/10)
    half = Z95 * math.sqrt(0.025 + Z95**2 / 400) / (1 + Z95**2 / 10)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.5 - half) and lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.5 + half) and hi == pytest.approx(0.7634, abs=1e-4)
    # 0/n: upper bound z^2/n / (1 + z^2/n); n/n: lower bound n / (n + z^2)
    assert wilson_interval(0, 10) == (0.0, pytest.approx((Z95**2 / 10) / (1 + Z95**2 / 10)))
    assert wilson_interval(50, 50)[0] == pytest.approx(50 / (50 + Z95**2))
    assert wilson_interval(50, 50)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("args", [(3, 2), (-1, 4), (1.5, 4), (True, 3)])
def test_wilson_rejects_bad_counts(args):
    with pytest.raises(ValueError, match="successes|n="):
        wilson_interval(*args)


def test_mmrv_hand_table_and_asymmetry():
    # Imagined ranks 1 > 2 > 0, real ranks 2 > 1 > 0: only the (1, 2) pair flips.
    # Points 1 and 2 each take the real gap |0.3 - 0.6| = 0.3; point 0 has none -> 0.6 / 3.
    assert mmrv(IMAG, REAL) == pytest.approx(0.2)
    # Swapped arguments measure the flip on the imagined scale |0.5 - 0.4| = 0.1 -> 0.2 / 3.
    assert mmrv(REAL, IMAG) == pytest.approx(0.2 / 3)
    assert mmrv(REAL, REAL) == 0.0


def test_mmrv_ties_follow_strict_ordering():
    # Imagined ties, real orders 0 < 1: only point 1 sees a violation (0.8 > 0.2 vs 0.5 > 0.5 false).
    assert mmrv([0.5, 0.5], [0.2, 0.8]) == pytest.approx(0.6 / 2)
    # The same pair the other way round is scaled by the (tied) second argument -> 0.
    assert mmrv([0.2, 0.8], [0.5, 0.5]) == 0.0


def test_pearson_spearman_hand_values():
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # Ties share ranks: [1.5, 1.5, 3] vs [1, 2, 3] -> 1.5 / sqrt(1.5 * 2)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3.0))
    assert pearson([0.1, 0.1], [0.1, 0.1]) == 1.0
    assert math.isnan(pearson([0.2, 0.2, 0.2], [0.1, 0.5, 0.9]))


def test_gaps():
    # differences 0.1, 0.2, -0.2
    assert mean_signed_gap(IMAG, REAL) == pytest.approx(0.1 / 3)
    assert mean_absolute_gap(IMAG, REAL) == pytest.approx(0.5 / 3)


def test_paired_accuracy_and_kappa():
    imag = [1, 1, 1, 0, 1, 0, 1, 1, 0, 0]  # 6 successes
    real = [1, 0, 0, 0, 1, 0, 1, 1, 1, 0]  # 5 successes
    # agree on 7 of 10; chance agreement 0.6*0.5 + 0.4*0.5 = 0.5 -> kappa (0.7-0.5)/0.5
    assert paired_accuracy(imag, real) == pytest.approx(0.7)
    assert cohen_kappa(imag, real) == pytest.approx(0.4)
    assert cohen_kappa([True, False], [True, False]) == pytest.approx(1.0)
    assert cohen_kappa([True, True], [True, True]) == 1.0
    # opposite constants: p_o = 0 and chance agreement 1*0 + 0*1 = 0 -> kappa 0
    assert cohen_kappa([True, True], [False, False]) == 0.0


def test_agreement_report_bundle():
    rep = agreement_report(IMAG, REAL)
    assert rep["n_points"] == 3 and rep["mmrv"] == pytest.approx(0.2)
    assert rep["pearson"] == pytest.approx(pearson(IMAG, REAL))


@pytest.mark.parametrize(
    "fn,args,match",
    [
        (mmrv, ([0.1, 0.2], [0.1]), "same length"),
        (pearson, ([0.1], [0.2]), "at least 2"),
        (mmrv, ([[0.1]], [[0.2]]), "1-D"),
        (pearson, ([0.1, float("nan")], [0.1, 0.2]), "NaN"),
        (cohen_kappa, ([0, 2], [0, 1]), "booleans"),
        (paired_accuracy, ([], []), "non-empty"),
    ],
)
def test_bad_input_raises_value_error(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)
