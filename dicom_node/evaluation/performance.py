"""Local performance of the AI on this site's own patients: the cohort's flow, its accuracy at the configured
threshold beside the published figures, the readers' view, and subgroups.

`evaluate` turns the rows `db.cohort` read into one `Evaluation`; the command line (text and `--json`), the
HTML report and the dashboard's performance page all show that one object, so they cannot disagree.
`Evaluation.to_json` is the documented, stable interface of `psma-node evaluate --json` (docs/monitoring.md).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from statistics import median, quantiles
from typing import Any

from db.clock import utcnow
from db.cohort import UNKNOWN_PROVENANCE, Assessment, Case, Cohort, Flow
from dicom_node.evaluation.statistics import (
    UNDEFINED,
    CalibrationBin,
    Comparison,
    Confusion,
    Estimate,
    RocPoint,
    brier,
    calibration,
    cohen_kappa,
    compare_with_published,
    diagnostic_accuracy,
    published,
    roc_auc,
    roc_points,
    wilson,
)
from dicom_node.evaluation.vocabulary import ReaderFinding, Verdict
from dicom_node.metrics import reason_class

SCHEMA = "psma-node/evaluation/1"
"""Names the JSON layout; a change that breaks scripts gets a new number (docs/monitoring.md)."""
METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "auc")
PSA_BANDS = ("< 0.5 ng/ml", "0.5-2 ng/ml", "> 2 ng/ml", "unknown (imputed)")
"""Below 0.5, 0.5 up to and including 2, above 2; an imputed or inferred PSA apart."""
AGREE = Verdict.AGREE.value
FINDING_PRESENT, FINDING_ABSENT = ReaderFinding.PRESENT.value, ReaderFinding.ABSENT.value


def psa_band(case: Case) -> str:
    if case.psa_ng_ml is None or case.psa_source in UNKNOWN_PROVENANCE:
        return PSA_BANDS[3]
    if case.psa_ng_ml < 0.5:
        return PSA_BANDS[0]
    return PSA_BANDS[1] if case.psa_ng_ml <= 2.0 else PSA_BANDS[2]


def prostatectomy_group(case: Case) -> str:
    if case.prostatectomy is None:
        return "unknown"
    return f"{'yes' if case.prostatectomy else 'no'} ({case.prostatectomy_source or 'unknown source'})"


def envelope_group(case: Case) -> str:
    return "outside the envelope" if case.envelope_violations else "inside the envelope"


SUBGROUPS: dict[str, Callable[[Case], str]] = {
    "scanner": lambda case: case.scanner,
    "prostatectomy": prostatectomy_group,
    "psa": psa_band,
    "weights": lambda case: case.weights,
    "envelope": envelope_group,
}
"""Subgroup dimensions: scanner model, prostatectomy status with its provenance (registered, tag, imputed),
PSA band, model weights, and whether the inputs were inside the validated envelope."""


@dataclass
class Accuracy:
    """Accuracy of the AI on a set of cases that have both a classifier output and a reference standard."""

    confusion: Confusion
    metrics: dict[str, Estimate]
    brier: Estimate
    roc: list[RocPoint]
    calibration: list[CalibrationBin]


def is_included(case: Case) -> bool:
    """A case the accuracy figures count: it has a classifier output and a reference standard."""
    return case.probability is not None and case.reference is not None


def accuracy(cases: Sequence[Case], threshold: float) -> Accuracy:
    """The AI's accuracy on those of `cases` that are included (the others are left out here)."""
    usable = [case for case in cases if is_included(case)]
    truth = [bool(case.reference) for case in usable]
    scores = [float(case.probability or 0.0) for case in usable]
    confusion = Confusion.of(truth, [score >= threshold for score in scores])
    metrics = diagnostic_accuracy(confusion)
    metrics["auc"] = roc_auc(truth, scores)
    return Accuracy(
        confusion, metrics, brier(truth, scores), roc_points(truth, scores), calibration(truth, scores)
    )


@dataclass
class Subgroup:
    label: str
    analysed: int
    included: int
    accuracy: Accuracy

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "analysed": self.analysed,
            "included": self.included,
            "confusion": self.accuracy.confusion.to_json(),
            **{name: self.accuracy.metrics[name].to_json() for name in METRICS},
        }


@dataclass
class ReaderSummary:
    """How readers judged the AI's results, and how they fared against the reference standard."""

    assessments: int = 0
    readers: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    seen_ai_before_report: dict[str, int] = field(default_factory=dict)
    agreement_rate: Estimate = UNDEFINED
    override_rate: Estimate = UNDEFINED
    """Share of definite reader findings (present / absent) that contradict the AI's call."""
    kappa: Estimate = UNDEFINED
    kappa_pairs: int = 0
    with_reference: int = 0
    reader_vs_reference: dict[str, Estimate] = field(default_factory=dict)
    ai_vs_reference: dict[str, Estimate] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        against = ("sensitivity", "specificity", "accuracy")
        return {
            "assessments": self.assessments,
            "readers": self.readers,
            "verdicts": self.verdicts,
            "reasons": self.reasons,
            "sources": self.sources,
            "seen_ai_before_report": self.seen_ai_before_report,
            "agreement_rate": self.agreement_rate.to_json(),
            "override_rate": self.override_rate.to_json(),
            "kappa": self.kappa.to_json(),
            "kappa_pairs": self.kappa_pairs,
            "versus_reference": {
                "pairs": self.with_reference,
                "readers": {k: self.reader_vs_reference.get(k, UNDEFINED).to_json() for k in against},
                "ai_same_studies": {k: self.ai_vs_reference.get(k, UNDEFINED).to_json() for k in against},
            },
        }


def _by_reason_class(by_reason: dict[str, int]) -> dict[str, int]:
    """Counts by reason summed per class of reason (the text up to its first colon), as /metrics counts them."""
    classes = Counter[str]()
    for reason, n in by_reason.items():
        classes[reason_class(reason)] += n
    return dict(sorted(classes.items()))


def _counts(values: Iterable[Any]) -> dict[str, int]:
    return {str(key): n for key, n in sorted(Counter(values).items(), key=lambda item: str(item[0]))}


def readers(cases: Sequence[Case], assessments: Sequence[Assessment], threshold: float) -> ReaderSummary:
    by_result = {case.result_id: case for case in cases}
    rows = [a for a in assessments if a.result_id in by_result]
    if not rows:
        return ReaderSummary()

    def ai_call(a: Assessment) -> bool | None:
        probability = by_result[a.result_id].probability
        return None if probability is None else probability >= threshold

    definite = [
        a for a in rows if a.reader_finding in (FINDING_PRESENT, FINDING_ABSENT) and ai_call(a) is not None
    ]
    reader_calls = [a.reader_finding == FINDING_PRESENT for a in definite]
    ai_calls = [bool(ai_call(a)) for a in definite]
    overrides = sum(1 for r, c in zip(reader_calls, ai_calls, strict=True) if r != c)
    verified = [a for a in definite if by_result[a.result_id].reference is not None]
    studies = {a.result_id: by_result[a.result_id] for a in verified}
    summary = ReaderSummary(
        assessments=len(rows),
        readers=len({a.reader for a in rows}),
        verdicts=_counts(a.verdict for a in rows),
        reasons=_counts(a.reason for a in rows if a.reason),
        sources=_counts(a.source for a in rows),
        seen_ai_before_report=_counts(
            "unknown" if a.seen_ai_before_report is None else ("yes" if a.seen_ai_before_report else "no")
            for a in rows
        ),
        agreement_rate=wilson(sum(1 for a in rows if a.verdict == AGREE), len(rows)),
        override_rate=wilson(overrides, len(definite)),
        kappa=cohen_kappa(ai_calls, reader_calls),
        kappa_pairs=len(definite),
        with_reference=len(verified),
    )
    if verified:
        reader_confusion = Confusion.of(
            [bool(by_result[a.result_id].reference) for a in verified],
            [a.reader_finding == FINDING_PRESENT for a in verified],
        )
        summary.reader_vs_reference = diagnostic_accuracy(reader_confusion)
        summary.ai_vs_reference = accuracy(list(studies.values()), threshold).metrics
    return summary


@dataclass
class Evaluation:
    generated_at: dt.datetime
    cohort: Cohort
    threshold: float
    accuracy: Accuracy
    comparisons: list[Comparison]
    readers: ReaderSummary
    subgroups: dict[str, list[Subgroup]]

    @property
    def flow(self) -> Flow:
        return self.cohort.flow

    @property
    def cases(self) -> list[Case]:
        return self.cohort.cases

    @property
    def with_output(self) -> list[Case]:
        return [case for case in self.cases if case.probability is not None]

    @property
    def with_reference(self) -> list[Case]:
        return [case for case in self.cases if case.reference is not None]

    @property
    def included(self) -> list[Case]:
        return [case for case in self.cases if is_included(case)]

    def counts(self) -> dict[str, Any]:
        flow = self.flow
        return {
            "received": flow.received,
            "rejected": flow.rejected,
            "rejected_by_reason": _by_reason_class(flow.rejected_by_reason),
            "failed": flow.failed,
            "failed_by_reason": _by_reason_class(flow.failed_by_reason),
            "not_finished": flow.not_finished,
            "analysed": flow.analysed,
            "excluded_by_filter": flow.excluded_by_filter,
            "in_cohort": len(self.cases),
            "with_classifier_output": len(self.with_output),
            "with_reference": len(self.with_reference),
            "with_reference_by_method": _counts(case.reference_method for case in self.with_reference),
            "included": len(self.included),
            "outside_envelope": sum(1 for case in self.cases if case.envelope_violations),
            "without_descriptors": sum(1 for case in self.cases if not case.has_descriptors),
            "by_results_mode": _counts(case.results_mode or "unknown" for case in self.cases),
            "made_at_other_thresholds": sum(
                1
                for case in self.cases
                if case.result_threshold is not None and abs(case.result_threshold - self.threshold) > 1e-12
            ),
        }

    def verification(self) -> dict[str, Any]:
        """Whether partial or differential verification may bias the figures, in plain words."""
        scored = self.with_output
        verified = [case for case in scored if case.reference is not None]
        unverified = [case for case in scored if case.reference is None]
        messages = []
        if scored and unverified:
            messages.append(
                f"Only {len(verified)} of {len(scored)} studies with a classifier output have a reference "
                "standard: if those that got one differ from those that did not (for example, histopathology"
                " only after a positive scan), sensitivity and specificity are biased (partial verification"
                " bias)."
            )
        methods = {case.reference_method for case in verified}
        if len(methods) > 1:
            messages.append(
                f"The reference standard was established by {len(methods)} different methods "
                f"({', '.join(sorted(m or 'unknown' for m in methods))}): if the method depends on the AI's"
                " or the reader's call, the figures are biased (differential verification)."
            )

        def positive_rate(group: list[Case]) -> Estimate:
            return wilson(sum(1 for c in group if (c.probability or 0.0) >= self.threshold), len(group))

        return {
            "risk": bool(messages),
            "reference_fraction": len(verified) / len(scored) if scored else None,
            "messages": messages,
            "ai_positive_rate_verified": positive_rate(verified).to_json(),
            "ai_positive_rate_unverified": positive_rate(unverified).to_json(),
        }

    def reference_timing(self) -> dict[str, Any]:
        """Days from result to reference standard date (STARD 2015 item 22), over the included studies."""
        days = sorted(
            (case.reference_date - case.result_created_at.date()).days
            for case in self.included
            if case.reference_date is not None
        )
        if not days:
            return {
                "studies": 0,
                "median_days": None,
                "quartiles_days": None,
                "min_days": None,
                "max_days": None,
            }
        quartiles = quantiles(days, n=4, method="inclusive") if len(days) > 1 else [days[0]] * 3
        return {
            "studies": len(days),
            "median_days": float(median(days)),
            "quartiles_days": [float(quartiles[0]), float(quartiles[2])],
            "min_days": days[0],
            "max_days": days[-1],
        }

    def to_json(self) -> dict[str, Any]:
        metrics = self.accuracy.metrics
        return {
            "schema": SCHEMA,
            "generated_at": self.generated_at.isoformat(),
            "filters": self.cohort.filters.describe(),
            "threshold": self.threshold,
            "counts": self.counts(),
            "verification_bias": self.verification(),
            "reference_timing": self.reference_timing(),
            "confusion": self.accuracy.confusion.to_json(),
            **{name: metrics[name].to_json() for name in METRICS},
            "brier": self.accuracy.brier.to_json(),
            "roc": [
                {"fpr": p.false_positive_rate, "tpr": p.true_positive_rate, "threshold": p.threshold}
                for p in self.accuracy.roc
            ],
            "calibration": [
                {
                    "low": b.low,
                    "high": b.high,
                    "count": b.count,
                    "mean_probability": b.mean_probability,
                    "observed_rate": b.observed_rate,
                }
                for b in self.accuracy.calibration
            ],
            "published": published(),
            "comparison": [comparison.to_json() for comparison in self.comparisons],
            "readers": self.readers.to_json(),
            "subgroups": {name: [g.to_json() for g in groups] for name, groups in self.subgroups.items()},
        }


def subgroups(cases: Sequence[Case], threshold: float) -> dict[str, list[Subgroup]]:
    found: dict[str, list[Subgroup]] = {}
    for dimension, key in SUBGROUPS.items():
        members: dict[str, list[Case]] = {}
        for case in cases:
            members.setdefault(key(case), []).append(case)
        found[dimension] = []
        order = PSA_BANDS.index if dimension == "psa" else str
        for label, group in sorted(members.items(), key=lambda item: order(item[0])):  # type: ignore[operator]
            included = sum(1 for case in group if is_included(case))
            found[dimension].append(Subgroup(label, len(group), included, accuracy(group, threshold)))
    return found


def evaluate(cohort: Cohort, threshold: float, *, now: dt.datetime | None = None) -> Evaluation:
    """Every figure of the local validation, at `threshold`, on the cases of `cohort`."""
    overall = accuracy(cohort.cases, threshold)
    return Evaluation(
        generated_at=now or utcnow(),
        cohort=cohort,
        threshold=threshold,
        accuracy=overall,
        comparisons=compare_with_published(overall.metrics),
        readers=readers(cohort.cases, cohort.assessments, threshold),
        subgroups=subgroups(cohort.cases, threshold),
    )
