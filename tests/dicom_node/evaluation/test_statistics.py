"""Every statistic of the local validation against an independent computation (tests/.../independent.py)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from dicom_node.evaluation.statistics import (
    PUBLISHED_CONFUSION,
    PUBLISHED_FIGURES,
    Confusion,
    Estimate,
    brier,
    calibration,
    cohen_kappa,
    compare_with_published,
    diagnostic_accuracy,
    roc_auc,
    roc_points,
    wilson,
)
from tests.dicom_node.evaluation import independent


def _scores(seed: int, n: int, ties: bool = False) -> tuple[list[bool], list[float]]:
    rng = random.Random(seed)
    truth = [rng.random() < 0.45 for _ in range(n)]
    scores = [min(1.0, max(0.0, rng.gauss(0.62 if t else 0.4, 0.2))) for t in truth]
    if ties:
        scores = [round(s, 1) for s in scores]
    return truth, scores


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 12), (12, 12), (63, 111), (79, 89), (5, 200), (1, 3)])
def test_proportions_carry_the_wilson_interval_scipy_computes(k: int, n: int) -> None:
    got = wilson(k, n)
    independent.assert_figure(got.to_json(), independent.wilson(k, n))


def test_a_proportion_of_nothing_is_undefined() -> None:
    assert wilson(0, 0) == Estimate(None, None)


def test_the_published_confusion_matrix_gives_the_published_figures() -> None:
    figures = diagnostic_accuracy(PUBLISHED_CONFUSION)
    for name, published in PUBLISHED_FIGURES.items():
        assert round(figures[name].value or 0, 3) == pytest.approx(published, abs=0.0011), name


@pytest.mark.parametrize(
    "confusion", [Confusion(63, 10, 79, 48), Confusion(3, 0, 5, 0), Confusion(0, 2, 9, 1)]
)
def test_balanced_accuracy_interval_is_mover_over_the_wilson_intervals(confusion: Confusion) -> None:
    c = confusion
    expected = independent.mover_mean(
        independent.wilson(c.tp, c.tp + c.fn), independent.wilson(c.tn, c.tn + c.fp)
    )
    independent.assert_figure(diagnostic_accuracy(c)["balanced_accuracy"].to_json(), expected)


@pytest.mark.parametrize("seed, n, ties", [(1, 40, False), (2, 150, False), (3, 60, True), (4, 7, True)])
def test_auc_equals_mann_whitney_and_its_interval_delong_from_pairs(seed: int, n: int, ties: bool) -> None:
    truth, scores = _scores(seed, n, ties)
    independent.assert_figure(roc_auc(truth, scores).to_json(), independent.auc_delong(truth, scores))


def test_auc_of_a_perfect_separation_is_one_with_a_degenerate_interval() -> None:
    assert roc_auc([False, False, True, True], [0.1, 0.2, 0.8, 0.9]) == Estimate(1.0, (1.0, 1.0))


def test_brier_score_and_roc_curve_match_hand_and_scikit_learn() -> None:
    truth, scores = _scores(5, 80)
    assert math.isclose(
        brier(truth, scores).value or -1, independent.brier(truth, scores) or 0, abs_tol=1e-12
    )
    fpr, tpr, _ = roc_curve(truth, scores)
    points = roc_points(truth, scores)
    assert [p.false_positive_rate for p in points] == list(fpr)
    assert [p.true_positive_rate for p in points] == list(tpr)
    assert points[0].threshold is None and all(p.threshold is not None for p in points[1:])


def test_calibration_bins_are_scikit_learns_with_their_counts() -> None:
    truth, scores = _scores(6, 120)
    scores[:3] = [0.0, 0.5, 1.0]  # edges: 0.5 closes (0.4, 0.5], 1.0 the last bin
    table = calibration(truth, scores)
    observed, predicted = calibration_curve(truth, scores, n_bins=10, strategy="uniform")
    filled = [b for b in table if b.count]
    assert np.allclose([b.observed_rate for b in filled], observed)
    assert np.allclose([b.mean_probability for b in filled], predicted)
    assert sum(b.count for b in table) == 120
    by_hand = [sum(1 for s in scores if (b.low < s <= b.high) or (b.low == 0 and s == 0)) for b in table]
    assert [b.count for b in table] == by_hand


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_kappa_matches_the_textbook_estimate_and_variance(seed: int) -> None:
    rng = random.Random(seed)
    first = [rng.random() < 0.5 for _ in range(70)]
    second = [a if rng.random() < 0.7 else not a for a in first]
    independent.assert_figure(cohen_kappa(first, second).to_json(), independent.kappa(first, second))


def test_undefined_figures_are_null_not_nan() -> None:
    no_positives = diagnostic_accuracy(Confusion(tp=0, fp=3, tn=7, fn=0))
    assert no_positives["sensitivity"] == Estimate(None, None)
    assert no_positives["balanced_accuracy"] == Estimate(None, None)
    assert no_positives["specificity"].value == 0.7
    assert roc_auc([False, False, False], [0.2, 0.6, 0.9]) == Estimate(None, None)
    assert roc_points([False, False], [0.2, 0.6]) == []
    empty = diagnostic_accuracy(Confusion())
    assert all(e == Estimate(None, None) for e in empty.values())
    assert brier([], []) == Estimate(None, None)
    assert cohen_kappa([True, True], [True, True]) == Estimate(None, None)
    assert cohen_kappa([], []) == Estimate(None, None)
    assert all(b.count == 0 and b.mean_probability is None for b in calibration([], []))


def test_comparison_says_where_the_local_interval_excludes_the_published_value() -> None:
    local = diagnostic_accuracy(Confusion(tp=40, fp=30, tn=30, fn=0))
    found = {c.metric: c.excludes_published for c in compare_with_published(local)}
    assert found == {"accuracy": False, "balanced_accuracy": False, "sensitivity": True, "specificity": True}
    undefined = compare_with_published(diagnostic_accuracy(Confusion()))
    assert all(c.excludes_published is None for c in undefined)
