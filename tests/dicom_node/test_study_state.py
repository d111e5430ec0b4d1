"""The study state machine on real databases: audited compare-and-set, refused transitions, lost races."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Study, StudyState
from db.session import transaction
from dicom_node.study_state import IllegalTransition, reopen_candidates, transition


def _add_study(sessions: sessionmaker[Session], uid: str = "1.2.3.4", **values: object) -> int:
    with transaction(sessions) as session:
        study = Study(study_uid=uid, accession_number="ACC1", patient_id="PID", **values)
        session.add(study)
        session.flush()
        return study.id


def _load(sessions: sessionmaker[Session], study_id: int) -> Study:
    with sessions() as session:
        study = session.get(Study, study_id)
        assert study is not None
        return study


def _study_events(sessions: sessionmaker[Session]) -> list[AuditEvent]:
    with sessions() as session:
        query = select(AuditEvent).where(AuditEvent.category == "study").order_by(AuditEvent.id)
        return list(session.scalars(query))


def test_a_transition_changes_the_row_and_records_one_audit_event_with_its_rule(
    sessions: sessionmaker[Session],
) -> None:
    study_id = _add_study(sessions)
    with transaction(sessions) as session:
        study = session.get(Study, study_id)
        assert study is not None
        assert transition(session, study, StudyState.COMPLETE, reason="PET: all 20 slices",
                          rule="content-proof", actor="assembler")
    study = _load(sessions, study_id)
    assert (study.state, study.state_reason, study.generation) == ("complete", "PET: all 20 slices", 1)
    [event] = _study_events(sessions)
    assert (event.action, event.outcome, event.reason, event.actor) == (
        "complete", "ok", "PET: all 20 slices", "assembler")
    assert event.detail["rule"] == "content-proof"
    assert (event.detail["from_state"], event.detail["to_state"]) == ("receiving", "complete")


def test_reopening_bumps_the_generation_and_forgets_the_completeness_proof(
    sessions: sessionmaker[Session],
) -> None:
    proven = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    study_id = _add_study(sessions, state="done", completeness_proven_at=proven)
    with transaction(sessions) as session:
        study = session.get(Study, study_id)
        assert study is not None
        assert transition(session, study, StudyState.RECEIVING, reason="3 new instances", rule="new-data")
    study = _load(sessions, study_id)
    assert (study.state, study.generation, study.completeness_proven_at) == ("receiving", 2, None)
    [event] = _study_events(sessions)
    assert event.action == "reopened" and event.detail["generation"] == 2


def test_a_transition_the_machine_lacks_is_refused_and_changes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    study_id = _add_study(sessions)
    with pytest.raises(IllegalTransition, match="receiving -> done is not a transition"):
        with transaction(sessions) as session:
            study = session.get(Study, study_id)
            assert study is not None
            transition(session, study, StudyState.DONE, reason="skipping ahead", rule="bug")
    assert _load(sessions, study_id).state == "receiving"
    assert _study_events(sessions) == []


def test_a_decision_on_a_stale_row_loses_the_race_and_records_nothing(
    sessions: sessionmaker[Session],
) -> None:
    study_id = _add_study(sessions)
    stale_session = sessions()
    try:
        stale = stale_session.get(Study, study_id)
        assert stale is not None and stale.state == "receiving"
        with transaction(sessions) as session:
            fresh = session.get(Study, study_id)
            assert fresh is not None
            assert transition(session, fresh, StudyState.COMPLETE, reason="proven", rule="content-proof")
        assert not transition(stale_session, stale, StudyState.REJECTED, reason="quiet period",
                              rule="quiet-period")
        stale_session.commit()
    finally:
        stale_session.close()
    assert _load(sessions, study_id).state == "complete"
    assert [e.action for e in _study_events(sessions)] == ["complete"]


def test_an_instance_arriving_after_the_assessment_voids_the_transition(
    sessions: sessionmaker[Session],
) -> None:
    arrived = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    study_id = _add_study(sessions, instance_count=40, last_received_at=arrived)
    with transaction(sessions) as session:
        study = session.get(Study, study_id)
        assert study is not None
        assessed_on_fewer = (39, arrived)
        assert not transition(session, study, StudyState.COMPLETE, reason="proven", rule="content-proof",
                              assessed=assessed_on_fewer)
    assert _load(sessions, study_id).state == "receiving"
    assert _study_events(sessions) == []


def test_only_settled_studies_that_received_data_since_their_assessment_are_reopen_candidates(
    sessions: sessionmaker[Session],
) -> None:
    arrived = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    quiet = _add_study(sessions, "1.1", instance_count=40, last_received_at=arrived)
    grown = _add_study(sessions, "1.2", instance_count=40, last_received_at=arrived)
    still_receiving = _add_study(sessions, "1.3", instance_count=40, last_received_at=arrived)
    for study_id in (quiet, grown):
        with transaction(sessions) as session:
            study = session.get(Study, study_id)
            assert study is not None
            assert transition(session, study, StudyState.COMPLETE, reason="proven", rule="content-proof",
                              assessed=(40, arrived))
    later = arrived + dt.timedelta(seconds=5)
    with transaction(sessions) as session:
        session.execute(update(Study).where(Study.id.in_([grown, still_receiving]))
                        .values(instance_count=41, last_received_at=later))
    with sessions() as session:
        candidates = {study.id for study in session.scalars(reopen_candidates())}
    assert candidates == {grown}
