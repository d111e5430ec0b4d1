"""The evaluation cohort as plain rows: which studies arrived, what became of them, and for those analysed,
the current result with its descriptors, the newest reference standard and each reader's latest assessment.

Read-side only, and free of statistics: `psma-node evaluate`, the dashboard's performance page and the HTML
report all start from `load_cohort`, so they count the same studies: the latest non-superseded result per
study, and, by the rules the listings and the study page show as "latest" (`db.outcomes`), the newest
reference standard per study and per reader the latest assessment of that result (an assessment of a
superseded result belongs to a result no longer shown).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ReferenceStandard, Result, ResultDescriptors, Study, StudyState
from db.outcomes import chunks, latest_assessments, latest_reference_standards

ProstatectomyFilter = Literal["yes", "no", "unknown"]
UNKNOWN_PROVENANCE = ("imputed", "inferred")
"""Provenances that mean the value was not known but assumed: the published imputation, or a guess."""


def scanner_label(manufacturer: str | None, model: str | None) -> str:
    """How a scanner is named everywhere (filters, subgroups, monitoring): manufacturer and model name."""
    label = " ".join(part.strip() for part in (manufacturer, model) if part and part.strip())
    return label or "unknown"


def weights_label(model_id: str | None, weights_sha256: str | None) -> str:
    """A model and its weights in a few characters: `D 3f2a9c1b0d4e` (the sha256's first 12 digits)."""
    if not model_id and not weights_sha256:
        return "none"
    return f"{model_id or '?'} {(weights_sha256 or 'unknown')[:12]}"


@dataclass(frozen=True)
class CohortFilter:
    """Which studies an evaluation looks at. Dates apply to when the node first received the study; the
    others to the analysed study's current result, so they narrow only the analysed part of the flow."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    model: str | None = None
    """A model id (`D`) or the start of a weights sha256."""
    scanner: str | None = None
    """A scanner label as `scanner_label` writes it."""
    prostatectomy: ProstatectomyFilter | None = None
    """yes / no: a known status; unknown: imputed or inferred."""

    def describe(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "model": self.model,
            "scanner": self.scanner,
            "prostatectomy": self.prostatectomy,
        }


@dataclass(frozen=True)
class Case:
    """One analysed study: its current result, what the result was made from, and the truth if known."""

    study_id: int
    study_uid: str
    accession_number: str | None
    received_at: dt.datetime
    result_id: int
    result_created_at: dt.datetime
    probability: float | None
    finding: str
    model_id: str | None
    weights_sha256: str | None
    scanner: str
    software_versions: str | None
    psa_ng_ml: float | None
    psa_source: str | None
    prostatectomy: bool | None
    prostatectomy_source: str | None
    result_threshold: float | None
    results_mode: str | None
    envelope_violations: tuple[str, ...]
    has_descriptors: bool
    reference: bool | None = None
    reference_method: str | None = None
    reference_date: dt.date | None = None

    @property
    def weights(self) -> str:
        return weights_label(self.model_id, self.weights_sha256)

    @property
    def prostatectomy_known(self) -> bool:
        return self.prostatectomy is not None and self.prostatectomy_source not in UNKNOWN_PROVENANCE


@dataclass(frozen=True)
class Assessment:
    """One reader's latest assessment of a current result."""

    result_id: int
    study_id: int
    reader: str
    source: str
    verdict: str
    reader_finding: str
    reason: str | None
    seen_ai_before_report: bool | None
    assessed_at: dt.datetime


@dataclass
class Flow:
    """STARD-style participant flow: from every study received to those with a result and a reference."""

    received: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    not_finished: int = 0
    """Received but neither rejected, failed nor analysed yet (receiving, queued, running)."""
    analysed: int = 0
    """With a current result (before the model / scanner / prostatectomy filters)."""
    excluded_by_filter: int = 0

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def failed(self) -> int:
        return sum(self.failed_by_reason.values())


@dataclass
class Cohort:
    filters: CohortFilter
    flow: Flow
    cases: list[Case]
    assessments: list[Assessment]


def _matches(case: Case, filters: CohortFilter) -> bool:
    if filters.scanner and case.scanner != filters.scanner:
        return False
    if (
        filters.model
        and filters.model != case.model_id
        and not (case.weights_sha256 and case.weights_sha256.startswith(filters.model.lower()))
    ):
        return False
    if filters.prostatectomy == "unknown":
        return not case.prostatectomy_known
    if filters.prostatectomy in ("yes", "no"):
        return case.prostatectomy_known and case.prostatectomy == (filters.prostatectomy == "yes")
    return True


def _received(session: Session, filters: CohortFilter) -> list[Study]:
    query = select(Study).order_by(Study.first_received_at, Study.id)
    if filters.since is not None:
        query = query.where(Study.first_received_at >= filters.since)
    if filters.until is not None:
        query = query.where(Study.first_received_at < filters.until)
    return list(session.scalars(query))


def current_results(
    session: Session, study_ids: list[int]
) -> dict[int, tuple[Result, ResultDescriptors | None]]:
    """The latest non-superseded result of each study, with its descriptors when they were recorded."""
    found: dict[int, tuple[Result, ResultDescriptors | None]] = {}
    for chunk in chunks(study_ids):
        rows = session.execute(
            select(Result, ResultDescriptors)
            .outerjoin(ResultDescriptors, ResultDescriptors.result_id == Result.id)
            .where(Result.study_id.in_(chunk), Result.superseded_by_id.is_(None))
            .order_by(Result.created_at, Result.id)
        )
        for result, descriptors in rows:
            found[result.study_id] = (result, descriptors)  # ordered: the latest stays
    return found


def _case(
    study: Study, result: Result, descriptors: ResultDescriptors | None, reference: ReferenceStandard | None
) -> Case:
    d = descriptors
    return Case(
        study_id=study.id,
        study_uid=study.study_uid,
        accession_number=study.accession_number,
        received_at=study.first_received_at,
        result_id=result.id,
        result_created_at=result.created_at,
        probability=result.probability,
        finding=result.finding,
        model_id=result.model_id,
        weights_sha256=result.weights_sha256,
        scanner=scanner_label(d.manufacturer, d.scanner_model) if d else "unknown",
        software_versions=d.software_versions if d else None,
        psa_ng_ml=d.psa_ng_ml if d else None,
        psa_source=d.psa_source if d else None,
        prostatectomy=d.prostatectomy if d else None,
        prostatectomy_source=d.prostatectomy_source if d else None,
        result_threshold=d.threshold if d else None,
        results_mode=d.results_mode if d else None,
        envelope_violations=tuple(d.envelope_violations or ()) if d else (),
        has_descriptors=d is not None,
        reference=reference.recurrence if reference else None,
        reference_method=reference.method if reference else None,
        reference_date=reference.reference_date if reference else None,
    )


def load_cohort(session: Session, filters: CohortFilter | None = None) -> Cohort:
    """Every study received in the date range, its flow, and the analysed ones as cases."""
    filters = filters or CohortFilter()
    studies = _received(session, filters)
    results = current_results(session, [s.id for s in studies])
    references = latest_reference_standards(session, list(results))
    flow = Flow(received=len(studies))
    rejected: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    cases: list[Case] = []
    for study in studies:
        if study.id in results:
            flow.analysed += 1
            result, descriptors = results[study.id]
            case = _case(study, result, descriptors, references.get(study.id))
            if _matches(case, filters):
                cases.append(case)
            else:
                flow.excluded_by_filter += 1
        elif study.state == StudyState.REJECTED.value:
            rejected[study.state_reason or ""] += 1
        elif study.state == StudyState.FAILED.value:
            failed[study.state_reason or ""] += 1
        else:
            flow.not_finished += 1
    flow.rejected_by_reason = dict(rejected)
    flow.failed_by_reason = dict(failed)
    assessments = [
        Assessment(
            result_id=row.result_id,
            study_id=row.study_id,
            reader=row.reader,
            source=row.source,
            verdict=row.verdict,
            reader_finding=row.reader_finding,
            reason=row.reason,
            seen_ai_before_report=row.seen_ai_before_report,
            assessed_at=row.assessed_at,
        )
        for rows in latest_assessments(session, [case.result_id for case in cases]).values()
        for row in rows
    ]
    return Cohort(filters, flow, cases, assessments)


@dataclass
class FilterChoices:
    """What the dashboard's filter form offers: the scanners and models that occur in analysed results."""

    scanners: list[str]
    models: list[str]


def filter_choices(session: Session) -> FilterChoices:
    scanners = {
        scanner_label(manufacturer, model)
        for manufacturer, model in session.execute(
            select(ResultDescriptors.manufacturer, ResultDescriptors.scanner_model).distinct()
        )
    }
    models = {model for model in session.scalars(select(Result.model_id).distinct()) if model}
    return FilterChoices(sorted(scanners), sorted(models))
