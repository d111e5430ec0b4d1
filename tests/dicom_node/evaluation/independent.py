"""The evaluation's figures computed again by other routes than dicom_node.evaluation.statistics takes.

Wilson intervals from SciPy's `binomtest` (the node uses statsmodels), balanced accuracy's MOVER interval by
hand, the AUC as a Mann-Whitney U (the node: scikit-learn) with DeLong's variance from the pairwise kernel
(the node: midranks), the Brier score and calibration by hand, Cohen's κ by scikit-learn with the textbook
large-sample variance (Fleiss, Levin & Paik, Statistical Methods for Rates and Proportions, 3rd ed., 18.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html.parser import HTMLParser
from statistics import NormalDist, fmean, variance

from scipy.stats import binomtest, mannwhitneyu
from sklearn.metrics import cohen_kappa_score

Z = NormalDist().inv_cdf(0.975)
Figure = tuple[float | None, tuple[float, float] | None]


def wilson(k: int, n: int) -> Figure:
    if n == 0:
        return None, None
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return k / n, (float(ci.low), float(ci.high))


def mover_mean(a: Figure, b: Figure) -> Figure:
    (va, ca), (vb, cb) = a, b
    if va is None or vb is None or ca is None or cb is None:
        return None, None
    low = va + vb - math.sqrt((va - ca[0]) ** 2 + (vb - cb[0]) ** 2)
    high = va + vb + math.sqrt((ca[1] - va) ** 2 + (cb[1] - vb) ** 2)
    return (va + vb) / 2, (low / 2, high / 2)


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def auc_delong(truth: Sequence[bool], scores: Sequence[float]) -> Figure:
    positives = [s for s, t in zip(scores, truth, strict=True) if t]
    negatives = [s for s, t in zip(scores, truth, strict=True) if not t]
    if not positives or not negatives:
        return None, None
    m, n = len(positives), len(negatives)
    auc = float(mannwhitneyu(positives, negatives).statistic) / (m * n)
    if m < 2 or n < 2:
        return auc, None
    v10 = [sum(_psi(x, y) for y in negatives) / n for x in positives]
    v01 = [sum(_psi(x, y) for x in positives) / m for y in negatives]
    half = Z * math.sqrt(variance(v10) / m + variance(v01) / n)
    return auc, (max(0.0, auc - half), min(1.0, auc + half))


def brier(truth: Sequence[bool], scores: Sequence[float]) -> float | None:
    return fmean((s - float(t)) ** 2 for s, t in zip(scores, truth, strict=True)) if truth else None


def kappa(first: Sequence[bool], second: Sequence[bool]) -> Figure:
    n = len(first)
    if n == 0:
        return None, None
    p = [[sum(1 for a, b in zip(first, second, strict=True) if a == i and b == j) / n for j in (0, 1)] for i in (0, 1)]
    rows = [sum(p[i]) for i in (0, 1)]
    cols = [p[0][j] + p[1][j] for j in (0, 1)]
    chance = sum(rows[i] * cols[i] for i in (0, 1))
    if chance == 1:
        return None, None
    k = float(cohen_kappa_score([int(a) for a in first], [int(b) for b in second]))
    diagonal = sum(p[i][i] * (1 - (rows[i] + cols[i]) * (1 - k)) ** 2 for i in (0, 1))
    off = (1 - k) ** 2 * sum(p[i][j] * (cols[i] + rows[j]) ** 2 for i in (0, 1) for j in (0, 1) if i != j)
    var = (diagonal + off - (k - chance * (1 - k)) ** 2) / ((1 - chance) ** 2 * n)
    half = Z * math.sqrt(var)
    return k, (k - half, k + half)


def figures(truth: Sequence[bool], scores: Sequence[float], threshold: float) -> dict[str, Figure]:
    """Every accuracy figure of `evaluate --json` for included cases (truth, probability)."""
    calls = [s >= threshold for s in scores]
    tp = sum(1 for t, c in zip(truth, calls, strict=True) if t and c)
    fp = sum(1 for t, c in zip(truth, calls, strict=True) if not t and c)
    tn = sum(1 for t, c in zip(truth, calls, strict=True) if not t and not c)
    fn = sum(1 for t, c in zip(truth, calls, strict=True) if t and not c)
    sensitivity, specificity = wilson(tp, tp + fn), wilson(tn, tn + fp)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": wilson(tp, tp + fp),
        "npv": wilson(tn, tn + fn),
        "accuracy": wilson(tp + tn, len(truth)),
        "balanced_accuracy": mover_mean(sensitivity, specificity),
        "auc": auc_delong(truth, scores),
        "brier": (brier(truth, scores), None),
        "confusion": ({"tp": tp, "fp": fp, "tn": tn, "fn": fn}, None),  # type: ignore[dict-item]
    }


def assert_figure(reported: dict, expected: Figure, tolerance: float = 1e-9) -> None:  # type: ignore[type-arg]
    """A JSON `{"value", "ci95"}` equals an independently computed figure (None where undefined)."""
    value, ci = expected
    if value is None:
        assert reported["value"] is None, reported
    else:
        assert reported["value"] is not None and math.isclose(reported["value"], value, abs_tol=tolerance), (
            reported,
            expected,
        )
    if ci is None:
        assert reported["ci95"] is None, reported
    else:
        assert reported["ci95"] is not None, reported
        for got, want in zip(reported["ci95"], ci, strict=True):
            assert math.isclose(got, want, abs_tol=tolerance), (reported, expected)


class _MetricsTable(HTMLParser):
    """The text of every table row of the report's metrics table."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_metrics = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._in_metrics = ("class", "list metrics") in attrs
        elif self._in_metrics and tag == "tr":
            self.rows.append([])
        elif self._in_metrics and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._in_metrics = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def formatted(figure: Figure) -> str:
    """A figure as the reports print it."""
    value, ci = figure
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ({ci[0]:.3f} to {ci[1]:.3f})" if ci else "")


LABELS = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "Positive predictive value",
    "npv": "Negative predictive value",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "auc": "ROC AUC",
}


def assert_metrics_table(page: str, expected: dict[str, Figure]) -> None:
    """The metrics table of a report or the dashboard page shows the independently computed figures."""
    parser = _MetricsTable()
    parser.feed(page)
    table = {row[0]: row[1] for row in parser.rows if row}
    for name, label in LABELS.items():
        assert table[label] == formatted(expected[name]), name
    assert table["Brier score"] == ("-" if expected["brier"][0] is None else f"{expected['brier'][0]:.3f}")


def expected_for(specs: Sequence[object], threshold: float) -> dict[str, Figure]:
    """`figures` of the seeded cases an evaluation includes (a classifier output and a reference)."""
    included = [s for s in specs if s.probability is not None and s.reference is not None]  # type: ignore[attr-defined]
    return figures(
        [bool(s.reference) for s in included],
        [float(s.probability) for s in included],  # type: ignore[attr-defined]
        threshold,
    )
