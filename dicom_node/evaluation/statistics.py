"""Diagnostic-accuracy statistics on plain values: no database, no files, no configuration.

Everything a local validation reports is computed here, from sequences of booleans and probabilities, so
that the figures can be checked against independent computations (tests/dicom_node/evaluation) and shared
by the command line, the HTML report and the dashboard. Where a figure is undefined (no positives, a
constant rater, too few cases for an interval) it is `None`, never NaN or a guess.

Methods (docs/monitoring.md gives the sources):
- proportions: Wilson score interval (statsmodels `proportion_confint(method="wilson")`);
- balanced accuracy: MOVER (Newcombe's hybrid, Zou & Donner 2008) over the Wilson intervals of
  sensitivity and specificity, halved;
- ROC AUC: scikit-learn's `roc_auc_score`, 95 % interval from DeLong's variance (DeLong et al. 1988,
  midrank form of Sun & Xu 2014), normal approximation, clipped to [0, 1];
- Cohen's κ: statsmodels `cohens_kappa` with its asymptotic interval;
- Brier score, ROC curve: scikit-learn; calibration: equal-width bins as scikit-learn's
  `calibration_curve(strategy="uniform")` forms them, with the count of each bin.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

Z95 = float(norm.ppf(0.975))
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Estimate:
    """A figure and its 95 % interval; either may be None where it is undefined."""

    value: float | None
    ci95: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": list(self.ci95) if self.ci95 is not None else None}

    def excludes(self, reference: float) -> bool | None:
        """Whether the interval leaves `reference` out (None without an interval)."""
        if self.ci95 is None:
            return None
        low, high = self.ci95
        return not low <= reference <= high


UNDEFINED = Estimate(None, None)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def wilson(successes: int, trials: int) -> Estimate:
    """A proportion with its Wilson score interval; undefined without trials."""
    from statsmodels.stats.proportion import proportion_confint

    if trials <= 0:
        return UNDEFINED
    low, high = proportion_confint(successes, trials, alpha=0.05, method="wilson")
    return Estimate(successes / trials, (float(low), float(high)))


@dataclass(frozen=True)
class Confusion:
    """Counts at one threshold: true and false positives and negatives."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @classmethod
    def of(cls, truth: Sequence[bool], calls: Sequence[bool]) -> Confusion:
        pairs = list(zip(truth, calls, strict=True))
        return cls(
            tp=sum(1 for t, c in pairs if t and c),
            fp=sum(1 for t, c in pairs if not t and c),
            tn=sum(1 for t, c in pairs if not t and not c),
            fn=sum(1 for t, c in pairs if t and not c),
        )

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def to_json(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def balanced_accuracy(sensitivity: Estimate, specificity: Estimate) -> Estimate:
    """(sensitivity + specificity) / 2, interval by MOVER from the two Wilson intervals (independent
    samples: the diseased and the healthy)."""
    s, p = sensitivity, specificity
    if s.value is None or p.value is None:
        return UNDEFINED
    value = (s.value + p.value) / 2
    if s.ci95 is None or p.ci95 is None:
        return Estimate(value, None)
    low = s.value + p.value - math.hypot(s.value - s.ci95[0], p.value - p.ci95[0])
    high = s.value + p.value + math.hypot(s.ci95[1] - s.value, p.ci95[1] - p.value)
    return Estimate(value, (low / 2, high / 2))


def diagnostic_accuracy(confusion: Confusion) -> dict[str, Estimate]:
    """Sensitivity, specificity, PPV, NPV, accuracy and balanced accuracy of one confusion matrix."""
    c = confusion
    sensitivity = wilson(c.tp, c.tp + c.fn)
    specificity = wilson(c.tn, c.tn + c.fp)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": wilson(c.tp, c.tp + c.fp),
        "npv": wilson(c.tn, c.tn + c.fn),
        "accuracy": wilson(c.tp + c.tn, c.n),
        "balanced_accuracy": balanced_accuracy(sensitivity, specificity),
    }


def _both_classes(truth: Sequence[bool]) -> bool:
    return any(truth) and not all(truth)


def roc_auc(truth: Sequence[bool], scores: Sequence[float]) -> Estimate:
    """Area under the ROC curve with DeLong's 95 % interval; undefined unless both classes occur."""
    from sklearn.metrics import roc_auc_score

    if not _both_classes(truth):
        return UNDEFINED
    y = np.asarray(truth, dtype=bool)
    x = np.asarray(scores, dtype=float)
    auc = float(roc_auc_score(y, x))
    positives, negatives = x[y], x[~y]
    m, n = len(positives), len(negatives)
    if m < 2 or n < 2:
        return Estimate(auc, None)
    # Structural components from midranks: V10 for each positive, V01 for each negative.
    combined = rankdata(np.concatenate([positives, negatives]))
    v10 = (combined[:m] - rankdata(positives)) / n
    v01 = 1.0 - (combined[m:] - rankdata(negatives)) / m
    variance = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    half = Z95 * math.sqrt(max(variance, 0.0))
    return Estimate(auc, (max(0.0, auc - half), min(1.0, auc + half)))


def brier(truth: Sequence[bool], scores: Sequence[float]) -> Estimate:
    """Mean squared difference between probability and outcome (0 is perfect; no interval)."""
    from sklearn.metrics import brier_score_loss

    if not truth:
        return UNDEFINED
    return Estimate(float(brier_score_loss(np.asarray(truth, dtype=int), np.asarray(scores, dtype=float))))


@dataclass(frozen=True)
class RocPoint:
    false_positive_rate: float
    true_positive_rate: float
    threshold: float | None
    """None for the curve's starting point (scikit-learn's +inf: nothing called positive)."""


def roc_points(truth: Sequence[bool], scores: Sequence[float]) -> list[RocPoint]:
    """The empirical ROC curve (empty unless both classes occur)."""
    from sklearn.metrics import roc_curve

    if not _both_classes(truth):
        return []
    fpr, tpr, thresholds = roc_curve(np.asarray(truth, dtype=int), np.asarray(scores, dtype=float))
    points = zip(fpr, tpr, thresholds, strict=True)
    return [RocPoint(float(f), float(t), _finite(float(h))) for f, t, h in points]


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    count: int
    mean_probability: float | None
    observed_rate: float | None


def calibration(
    truth: Sequence[bool], scores: Sequence[float], bins: int = CALIBRATION_BINS
) -> list[CalibrationBin]:
    """Reliability table: per equal-width probability bin, the mean predicted probability and the
    observed share of recurrences. Bins are closed on the right, (0.4, 0.5], the first also holds 0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    x = np.asarray(scores, dtype=float)
    y = np.asarray(truth, dtype=float)
    index = np.searchsorted(edges[1:-1], x)
    table = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        table.append(
            CalibrationBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                count=count,
                mean_probability=float(x[members].mean()) if count else None,
                observed_rate=float(y[members].mean()) if count else None,
            )
        )
    return table


def cohen_kappa(first: Sequence[bool], second: Sequence[bool]) -> Estimate:
    """Cohen's κ between two binary raters with its asymptotic 95 % interval; undefined when the
    chance agreement is total (both raters constant and equal) or there are no pairs."""
    from statsmodels.stats.inter_rater import cohens_kappa

    pairs = list(zip(first, second, strict=True))
    if not pairs:
        return UNDEFINED
    table = np.zeros((2, 2))
    for a, b in pairs:
        table[int(a), int(b)] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 on degenerate tables: reported as None
        result = cohens_kappa(table)
    kappa = _finite(float(result.kappa))
    if kappa is None:
        return UNDEFINED
    low, high = _finite(float(result.kappa_low)), _finite(float(result.kappa_upp))
    return Estimate(kappa, (low, high) if low is not None and high is not None else None)


@dataclass(frozen=True)
class Comparison:
    """A local figure beside the published one, and whether the local interval leaves the latter out."""

    metric: str
    published: float
    local: Estimate

    @property
    def excludes_published(self) -> bool | None:
        return self.local.excludes(self.published)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "published": self.published,
            "local": self.local.to_json(),
            "local_interval_excludes_published": self.excludes_published,
        }


PUBLISHED_CONFUSION = Confusion(tp=63, fp=10, tn=79, fn=48)
PUBLISHED_FIGURES = {"accuracy": 0.71, "balanced_accuracy": 0.728, "sensitivity": 0.568, "specificity": 0.888}
PUBLISHED_SOURCE = (
    "Korb et al., Cancers 2025;17(9):1575, independent test set (200 examinations, 2024), final model D "
    "applied to all patients at probability >= 0.5"
)


def published() -> dict[str, Any]:
    """The paper's test-set figures as stated, with its confusion matrix."""
    return {
        "source": PUBLISHED_SOURCE,
        "n": PUBLISHED_CONFUSION.n,
        "threshold": 0.5,
        "confusion": PUBLISHED_CONFUSION.to_json(),
        **PUBLISHED_FIGURES,
    }


def compare_with_published(local: dict[str, Estimate]) -> list[Comparison]:
    return [Comparison(metric, value, local[metric]) for metric, value in PUBLISHED_FIGURES.items()]
