"""`db.cohort`: which rows an evaluation counts, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session, sessionmaker

from db.cohort import CohortFilter, filter_choices, load_cohort
from db.models import Job, ReaderAssessment, ReferenceStandard, Result
from db.session import transaction
from tests.db.seed_cases import EPOCH, CaseSpec, Reading, seed_case, seed_unanalysed


def test_each_study_counts_once_with_its_current_result_newest_reference_and_latest_readings(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        case = seed_case(
            session,
            CaseSpec(
                0.3,
                reference=False,
                readings=[Reading("dr-a", "disagree", "present"), Reading("dr-b", "agree", "absent")],
            ),
        )
        # reprocessed: a newer result supersedes the first one
        job = Job(study_id=case.study_id, generation=2, state="done", created_at=EPOCH)
        session.add(job)
        session.flush()
        newer = Result(
            study_id=case.study_id,
            job_id=job.id,
            created_at=EPOCH + dt.timedelta(hours=2),
            model_id="D",
            weights_sha256="d0" * 32,
            software_version="0.1.0",
            probability=0.8,
            finding="present",
        )
        session.add(newer)
        session.flush()
        session.get(Result, case.result_id).superseded_by_id = newer.id  # type: ignore[union-attr]
        later = EPOCH + dt.timedelta(days=60)
        session.add(
            ReferenceStandard(
                study_id=case.study_id, recurrence=True, method="composite", channel="api", created_at=later
            )
        )
        for when, verdict in ((later, "disagree"), (later + dt.timedelta(hours=1), "agree")):
            session.add(
                ReaderAssessment(
                    result_id=newer.id,
                    study_id=case.study_id,
                    reader="dr-a",
                    source="dashboard",
                    verdict=verdict,
                    reader_finding="present",
                    assessed_at=when,
                    created_at=when,
                )
            )
        newer_id = newer.id
    with sessions() as session:
        cohort = load_cohort(session)
    (only,) = cohort.cases
    assert (only.result_id, only.probability) == (newer_id, 0.8)
    assert (only.reference, only.reference_method) == (True, "composite")
    assert only.has_descriptors is False  # the newer result was made without descriptors
    # the first result's readings belong to a result no longer shown; dr-a's correction counts
    assert [(a.reader, a.verdict) for a in cohort.assessments] == [("dr-a", "agree")]


def test_flow_counts_rejections_by_reason_failures_and_studies_on_their_way(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        seed_case(session, CaseSpec(0.7, reference=True))
        seed_case(session, CaseSpec(None))
        seed_unanalysed(session, "rejected", "no PET series in the study")
        seed_unanalysed(session, "rejected", "no PET series in the study")
        seed_unanalysed(session, "rejected", "instances name more than one patient: PatientID differs")
        seed_unanalysed(session, "failed", "SUV: RadiopharmaceuticalStartDateTime missing")
        seed_unanalysed(session, "queued", None)
    with sessions() as session:
        flow = load_cohort(session).flow
    assert flow.received == 7
    assert flow.rejected_by_reason == {
        "no PET series in the study": 2,
        "instances name more than one patient: PatientID differs": 1,
    }
    assert flow.failed == 1 and flow.not_finished == 1 and flow.analysed == 2


def test_filters_narrow_by_received_date_model_scanner_and_prostatectomy(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        seed_case(session, CaseSpec(0.7, at=EPOCH))
        seed_case(session, CaseSpec(0.7, at=EPOCH + dt.timedelta(days=10), scanner_model="Biograph mCT"))
        seed_case(
            session,
            CaseSpec(
                0.7,
                at=EPOCH + dt.timedelta(days=10),
                model_id="C",
                weights_sha256="c1" * 32,
                prostatectomy=False,
            ),
        )
        seed_case(session, CaseSpec(0.7, at=EPOCH + dt.timedelta(days=10), prostatectomy_source="imputed"))

    def count(**given: object) -> tuple[int, int, int]:
        with sessions() as session:
            cohort = load_cohort(session, CohortFilter(**given))  # type: ignore[arg-type]
        return cohort.flow.received, len(cohort.cases), cohort.flow.excluded_by_filter

    assert count() == (4, 4, 0)
    assert count(since=EPOCH + dt.timedelta(days=1)) == (3, 3, 0)
    assert count(until=EPOCH + dt.timedelta(days=1)) == (1, 1, 0)
    assert count(scanner="SIEMENS Biograph mCT") == (4, 1, 3)
    assert count(model="C") == (4, 1, 3)
    assert count(model="c1c1") == (4, 1, 3)
    assert count(prostatectomy="no") == (4, 1, 3)
    assert count(prostatectomy="yes") == (4, 2, 2)
    assert count(prostatectomy="unknown") == (4, 1, 3)
    with sessions() as session:
        choices = filter_choices(session)
    assert choices.scanners == ["SIEMENS Biograph Vision 600", "SIEMENS Biograph mCT"]
    assert choices.models == ["C", "D"]
