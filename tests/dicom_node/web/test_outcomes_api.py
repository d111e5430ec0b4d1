"""Reader assessments and reference standards over HTTP, on a real database: the documented JSON shapes, the
lists, clear 4xx answers for every bad input (audited, nothing written), and the study page's forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import AuditEvent, ReaderAssessment, ReferenceStandard, Result
from dicom_node.web.app import create_app
from tests.db.seed import Seeded
from tests.support.settings import PASSWORD, TOKEN, make_settings

BEARER = {"Authorization": f"Bearer {TOKEN}"}
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
ASSESSMENT = {"accession_number": "ACC-DONE", "reader": "dr.rita", "verdict": "disagree",
              "reader_finding": "absent", "reason": "false-positive-physiological",
              "comment": "uptake is urine in a diverticulum", "seen_ai_before_report": False}
REFERENCE = {"accession_number": "ACC-DONE", "recurrence": False, "method": "imaging-follow-up",
             "date": "2025-03-01", "source": "MRI follow-up"}


def _rows(seeded: Seeded, model: type) -> list[Any]:
    with seeded.sessions() as session:
        return list(session.scalars(select(model)))


def _events(seeded: Seeded, action: str) -> list[AuditEvent]:
    with seeded.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_a_ris_posts_an_assessment_gets_the_stored_row_and_lists_it(client: TestClient, seeded: Seeded) -> None:
    answer = client.post("/api/assessments", headers=BEARER, json=ASSESSMENT)
    assert answer.status_code == 201, answer.text
    stored = answer.json()
    assert stored["study_instance_uid"] == seeded.done.study_uid and stored["accession_number"] == "ACC-DONE"
    assert (stored["verdict"], stored["reader_finding"], stored["reason"], stored["source"]) == (
        "disagree", "absent", "false-positive-physiological", "api")
    assert stored["ai_finding"] == "present" and stored["latest"] is True and stored["sr_sop_instance_uid"]
    assert stored["actor"].startswith("token:") and TOKEN not in stored["actor"]
    correction = client.post("/api/assessments", headers=BEARER, json={**ASSESSMENT, "verdict": "agree",
                                                                        "reader_finding": "present",
                                                                        "reason": None})
    assert correction.status_code == 201
    listed = client.get("/api/assessments", headers=BEARER, params={"accession_number": "ACC-DONE"}).json()
    assert [(a["verdict"], a["latest"]) for a in listed] == [("agree", True), ("disagree", False)]
    assert client.get("/api/assessments", headers=BEARER, params={"accession_number": "ACC-FAIL"}).json() == []


def test_a_ris_posts_reference_standards_and_lists_the_history(client: TestClient, seeded: Seeded) -> None:
    first = client.post("/api/reference-standards", headers=BEARER, json=REFERENCE)
    assert first.status_code == 201, first.text
    assert (first.json()["channel"], first.json()["reference_date"], first.json()["recurrence"]) == (
        "api", "2025-03-01", False)
    later = {**REFERENCE, "study_instance_uid": seeded.done.study_uid, "recurrence": True,
             "method": "histopathology", "date": "2025-04-02"}
    assert client.post("/api/reference-standards", headers=BEARER, json=later).status_code == 201
    listed = client.get("/api/reference-standards", headers=BEARER, params={"accession_number": "ACC-DONE"})
    assert [(r["method"], r["latest"]) for r in listed.json()] == [("histopathology", True),
                                                                   ("imaging-follow-up", False)]
    assert [e.detail["channel"] for e in _events(seeded, "reference-standard-recorded")] == ["api", "api"]


@pytest.mark.parametrize(("path", "body", "status", "detail"), [
    ("/api/assessments", {**ASSESSMENT, "verdict": "maybe"}, 422,
     "invalid input: verdict: Input should be 'agree', 'disagree' or 'modified'"),
    ("/api/assessments", {**ASSESSMENT, "reason": "gut feeling"}, 422, "invalid input: reason: Input should be"),
    ("/api/assessments", {**ASSESSMENT, "accession_number": "NOPE"}, 404,
     "no study with accession number NOPE on this node"),
    ("/api/assessments", {**ASSESSMENT, "accession_number": "ACC-FAIL"}, 404,
     "study ACC-FAIL has no result yet: nothing to assess"),
    ("/api/assessments", {k: v for k, v in ASSESSMENT.items() if k != "accession_number"}, 422,
     "name the study: give accession_number or study_instance_uid"),
    ("/api/assessments", {**ASSESSMENT, "study_instance_uid": "1.2.3"}, 404,
     "no study with Study Instance UID 1.2.3 on this node"),
    ("/api/reference-standards", {**REFERENCE, "date": "2025-13-01"}, 422, "invalid input: date:"),
    ("/api/reference-standards", {**REFERENCE, "method": "gut feeling"}, 422, "invalid input: method:"),
    ("/api/reference-standards", {**REFERENCE, "date": "2999-01-01"}, 422, "date 2999-01-01 is in the future"),
    ("/api/reference-standards", {**REFERENCE, "accession_number": "NOPE"}, 404, "no study with accession"),
])
def test_bad_input_gets_a_clear_4xx_is_audited_and_writes_nothing(
    client: TestClient, seeded: Seeded, path: str, body: dict, status: int, detail: str
) -> None:
    answer = client.post(path, headers=BEARER, json=body)
    assert answer.status_code == status and detail in answer.json()["detail"], answer.text
    assert _rows(seeded, ReaderAssessment) == [] and _rows(seeded, ReferenceStandard) == []
    refusals = _events(seeded, "api-refused") + _events(seeded, "assessment-refused") + _events(
        seeded, "reference-standard-refused")
    assert any(detail.removeprefix("invalid input: ") in (e.reason or "") for e in refusals)


@SQLITE_ONLY
def test_writes_need_a_token_or_a_user_with_the_csrf_token(client: TestClient, seeded: Seeded) -> None:
    assert client.post("/api/assessments", json=ASSESSMENT).status_code == 401
    assert client.get("/api/reference-standards").status_code == 401
    client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert client.post("/api/assessments", json=ASSESSMENT).status_code == 403  # a session without its CSRF token
    assert _rows(seeded, ReaderAssessment) == []


@SQLITE_ONLY
def test_the_study_page_records_an_assessment_and_a_reference_standard_as_the_user(
    client: TestClient, seeded: Seeded
) -> None:
    client.post("/login", data={"username": "alice", "password": PASSWORD})
    page = client.get(f"/studies/{seeded.done.study_uid}")
    assert "Your assessment of this result" in page.text and "No assessment recorded." in page.text
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    form = {"csrf": csrf, "verdict": "modified", "reader_finding": "present", "reason": "wrong-region",
            "comment": "focus lies in the seminal vesicle", "seen_ai_before_report": "yes"}
    forged = client.post(f"/studies/{seeded.done.study_uid}/assessments", data={**form, "csrf": "forged"})
    assert forged.status_code == 403
    posted = client.post(f"/studies/{seeded.done.study_uid}/assessments", data=form, follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"].endswith("#assessments")
    tampered = client.post(f"/studies/{seeded.done.study_uid}/assessments", data={**form, "verdict": "meh"})
    assert tampered.status_code == 422 and "verdict: 'meh' is not one of" in tampered.json()["detail"]
    reference = {"csrf": csrf, "recurrence": "yes", "method": "histopathology", "date": "2025-02-03",
                 "source": "biopsy B-17"}
    assert client.post(f"/studies/{seeded.done.study_uid}/reference-standards", data={**reference, "date": "3.2."},
                       ).status_code == 422
    assert client.post(f"/studies/{seeded.done.study_uid}/reference-standards", data=reference,
                       follow_redirects=False).status_code == 303
    (assessment,) = _rows(seeded, ReaderAssessment)
    assert (assessment.reader, assessment.actor, assessment.source, assessment.seen_ai_before_report) == (
        "alice", "alice", "dashboard", True)
    (standard,) = _rows(seeded, ReferenceStandard)
    assert (standard.channel, standard.actor, standard.recurrence) == ("dashboard", "alice", True)
    shown = client.get(f"/studies/{seeded.done.study_uid}").text
    assert "Wrong region: the analysed region is not the prostate" in shown
    assert "focus lies in the seminal vesicle" in shown and "biopsy B-17" in shown
    assert "Histopathology (biopsy or resection)" in shown


@SQLITE_ONLY
def test_anonymous_visitors_see_the_history_but_no_form(seeded: Seeded, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, seeded.settings.database.url.get_secret_value(), allow_anonymous=True)
    with TestClient(create_app(settings, seeded.sessions)) as client:
        page = client.get(f"/studies/{seeded.done.study_uid}")
        assert "Anonymous access is read-only" in page.text and 'action="/studies/' not in page.text.split(
            "Your assessment of this result", 1)[1].split("</aside>", 1)[0]
        refused = client.post(f"/studies/{seeded.done.study_uid}/assessments",
                              data={"csrf": "x", "verdict": "agree", "reader_finding": "present"})
        assert refused.status_code == 403
    assert _rows(seeded, ReaderAssessment) == []


@SQLITE_ONLY
def test_the_study_page_says_when_a_result_was_made_in_shadow_mode_or_outside_the_envelope(
    client: TestClient, seeded: Seeded
) -> None:
    with seeded.sessions() as session:
        result = session.scalars(select(Result)).one()
        result.summary = {"results_mode": "shadow", "envelope_violations": ["uptake time 240 min > 150 min"]}
        session.commit()
    client.post("/login", data={"username": "alice", "password": PASSWORD})
    page = client.get(f"/studies/{seeded.done.study_uid}").text
    assert "Shadow mode: this result was sent to evaluation destinations only" in page
    assert "Outside the conditions the model was validated for:" in page
    assert "<li>uptake time 240 min &gt; 150 min</li>" in page
