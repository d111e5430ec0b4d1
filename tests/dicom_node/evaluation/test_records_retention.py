"""Records outlive images: retention purges a study's images but never its result, descriptors, assessments,
reference standards or audit trail, and the configuration refuses a records period under six months."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, ReaderAssessment, ReferenceStandard, Result, ResultDescriptors, Study
from db.outcomes import StudyRef, record_assessment, record_reference_standard
from db.session import transaction
from dicom_node.config import ConfigError, load_settings
from dicom_node.retention import run_retention
from tests.db.seed import seed_study
from tests.support.settings import make_settings


def test_a_records_period_under_six_months_is_refused_citing_the_ai_act(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("retention:\n  keep_records_days: 90\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={})
    assert str(raised.value) == (
        f"invalid configuration in {config}: retention.keep_records_days: Value error, must be at least 183 days: "
        "EU AI Act Art. 26(6) asks deployers to keep the logs of a high-risk AI system at least six months "
        "(got 90)")
    config.write_text("retention:\n  keep_records_days: 365\n")
    assert load_settings(config, environ={}).retention.keep_records_days == 365


def _counts(session: Session) -> dict[str, int]:
    return {model.__name__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Result, ResultDescriptors, ReaderAssessment, ReferenceStandard, AuditEvent)}


def test_purging_a_study_s_images_keeps_every_record_of_it(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, db_url)
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)
    with transaction(sessions) as session:
        seeded = seed_study(session, storage=tmp_path / "storage", results=tmp_path / "results",
                            accession="ACC-OLD", delivered_at=long_ago)
        result = session.scalars(select(Result)).one()
        session.add(ResultDescriptors(result_id=result.id, study_id=result.study_id, results_mode="live",
                                      envelope_violations=[]))
        record_assessment(session, StudyRef("ACC-OLD"), reader="dr.a", source="api", verdict="agree",
                          reader_finding="present", reason=None, comment=None, seen_ai_before_report=None,
                          actor="token:ris")
        record_reference_standard(session, StudyRef("ACC-OLD"), recurrence=True, method="histopathology",
                                  reference_date=dt.date(2024, 1, 1), source=None, channel="api", actor=None)
    with sessions() as session:
        before = _counts(session)
    report = run_retention(settings, sessions, dry_run=False, actor="tester")
    assert [s.accession_number for s in report.studies] == ["ACC-OLD"]
    assert not any(path.exists() for path in seeded.instance_paths)
    with sessions() as session:
        after = _counts(session)
        study = session.scalars(select(Study)).one()
        purged = session.scalars(select(AuditEvent).where(AuditEvent.action == "purged")).one()
    assert study.purged_at is not None
    assert {k: v for k, v in after.items() if k != "AuditEvent"} == {
        k: v for k, v in before.items() if k != "AuditEvent"}
    assert after["AuditEvent"] == before["AuditEvent"] + 1  # the purge itself, nothing removed
    assert purged.detail["records_kept_days"] == 183
