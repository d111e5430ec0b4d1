"""The whole trust loop on a real node, as a site validating the AI would run it.

A checkpoint is imported with `psma-node models import`, the node runs in shadow mode (results made and kept,
sent nowhere clinical), a cohort of synthetic studies whose truth is known arrives over storescu, the reference
standards come from a CSV through `psma-node outcomes import`, readers assess the results in the dashboard (in
Chromium), through the HTTP API and as DICOM SRs sent back over storescu; then `psma-node evaluate --json` and
its HTML report must show exactly the figures computed here, independently, from the same rows. Bad input on
the way (an unknown accession, a duplicate CSV row, a verdict outside the list, an SR that references no known
result) is refused with a clear reason and writes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, OutboxItem, ReaderAssessment, ReferenceStandard, Result, Study
from db.session import make_engine, make_session_factory
from dicom_node.cli.main import cli
from dicom_node.synth import GroundTruth
from tests.dicom_node.evaluation import independent
from tests.dicom_node.evaluation.reader_sr import reader_sr, save, study_object
from tests.dicom_node.receive.clients import storescu
from tests.inference.studies import write_random_checkpoint
from tests.support.browser import logged_in
from tests.support.dicom import StudyMaker
from tests.support.node import REPO, NodeProcess, wait_for_port, write_config
from tests.support.settings import FAST_HASH, TOKEN
from tests.support.tools import require_tool

COHORT = [  # (seed, recurrence, prostatectomy, PSA ng/ml)
    (61, True, True, 0.4),
    (62, False, True, 0.3),
    (63, True, False, 4.1),
    (64, False, False, 1.2),
    (65, True, True, 2.5),
    (66, False, False, 0.9),
]
UNVERIFIED = 66
"""The one study without a reference standard: partial verification, as at a real site."""


def _csv(truths: dict[int, GroundTruth]) -> str:
    """Reference standards from the generator's truth; one study named by its UID, the rest by accession."""
    lines = ["accession_number,study_instance_uid,recurrence,method,date,source"]
    for seed, truth in truths.items():
        if seed == UNVERIFIED:
            continue
        method = "histopathology" if truth.recurrence else "imaging-follow-up"
        name = f",{truth.study_uid}" if seed == 62 else f"{truth.accession_number},"
        lines.append(f"{name},{'yes' if truth.recurrence else 'no'},{method},2025-06-0{seed % 9 + 1},tumour board")
    return "\n".join(lines) + "\n"


def _results(sessions: sessionmaker[Session]) -> dict[str, Result]:
    with sessions() as session:
        rows = session.execute(select(Study.study_uid, Result).join(Result, Result.study_id == Study.id)).all()
    return {uid: result for uid, result in rows}


def _assess_in_the_browser(base: str, study_uid: str, verdict: str, finding: str) -> None:
    with logged_in(base, f"/studies/{study_uid}", "rita") as page:
        assert "shadow mode" in page.inner_text("body").lower()
        form = page.locator("form.assessment")
        form.locator("select[name=verdict]").select_option(verdict)
        form.locator("select[name=reader_finding]").select_option(finding)
        form.locator("select[name=seen_ai_before_report]").select_option("yes")
        form.locator("button[type=submit]").click()
        page.wait_for_url(f"**/studies/{study_uid}#assessments")
        assert "rita" in page.inner_text("table.assessments")


@pytest.mark.slow
def test_a_site_validates_the_ai_from_cohort_to_report(small_study: StudyMaker, tmp_path: Path) -> None:
    require_tool("storescu")
    config = write_config(tmp_path / "node", {
        "assembly": {"tick_seconds": 0.2, "settle_seconds": 0},
        "results": {"mode": "shadow", "assessment_intake_seconds": 0.3},
        "dashboard": {"enabled": True, "users": [{"name": "rita", "password_hash": FAST_HASH}],
                      "tokens": [TOKEN], "session_secret": "whole-loop"},
    })
    checkpoint = write_random_checkpoint(tmp_path / "model_D.pt", seed=3)
    imported = CliRunner().invoke(cli, ["--config", str(config), "models", "import", str(checkpoint), "--as", "D"])
    assert imported.exit_code == 0, imported.output
    truths = {seed: small_study(seed=seed, recurrence=recurrence, prostatectomy=operated, psa=psa)[1]
              for seed, recurrence, operated, psa in COHORT}
    node = NodeProcess(config).start()
    engine = make_engine(node.config["database"]["url"])
    sessions = make_session_factory(engine)
    try:
        for seed, *_ in COHORT:
            folder, _truth = small_study(seed=seed, recurrence=truths[seed].recurrence,
                                         prostatectomy=truths[seed].prostatectomy, psa=truths[seed].psa)
            assert storescu(node.port, sorted(folder.glob("*/*.dcm"))).returncode == 0
        results = node.wait_until(lambda: len(found := _results(sessions)) == len(COHORT) and found,
                                  240, "a result for every study of the cohort")
        assert all(r.probability is not None for r in results.values()), "the imported model ran"
        with sessions() as session:
            assert session.scalars(select(OutboxItem)).all() == [], "shadow mode: nothing queued for a PACS"
        by_seed = {seed: results[truth.study_uid] for seed, truth in truths.items()}
        threshold = float(node.config.get("models", {}).get("threshold", 0.5))

        # Reference standards from a CSV: a duplicate row refuses the whole file, the corrected one applies.
        good = _csv(truths)
        duplicate = good + good.splitlines()[1] + "\n"
        outcomes = tmp_path / "outcomes.csv"
        outcomes.write_text(duplicate, encoding="utf-8")
        command = [sys.executable, "-m", "dicom_node.cli.main", "--config", str(config), "outcomes", "import"]
        refused = subprocess.run([*command, str(outcomes)], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert refused.returncode != 0 and f"line {len(COHORT) + 1}: names the same study as line 2" in (
            refused.stdout + refused.stderr)
        with sessions() as session:
            assert session.scalars(select(ReferenceStandard)).all() == [], "nothing half-imported"
        outcomes.write_text(good, encoding="utf-8")
        applied = subprocess.run([*command, str(outcomes)], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert applied.returncode == 0, applied.stdout + applied.stderr

        # Assessments: the dashboard (Chromium), the API (bearer token) and a DICOM SR (storescu).
        dashboard = f"http://127.0.0.1:{node.config['dashboard']['port']}"
        wait_for_port(int(node.config["dashboard"]["port"]))
        first = by_seed[61]
        ai_first = "present" if first.probability >= threshold else "absent"
        _assess_in_the_browser(dashboard, truths[61].study_uid, "agree", ai_first)
        api = httpx.Client(base_url=dashboard, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        bodies = [
            {"accession_number": truths[62].accession_number, "reader": "dr-api", "verdict": "disagree",
             "reader_finding": "present", "reason": "missed-focus", "comment": "focus left of the bed",
             "seen_ai_before_report": False},
            {"study_instance_uid": truths[63].study_uid, "reader": "dr-api", "verdict": "agree",
             "reader_finding": "present" if by_seed[63].probability >= threshold else "absent",
             "seen_ai_before_report": True},
            {"accession_number": truths[64].accession_number, "reader": "dr-api", "verdict": "modified",
             "reader_finding": "indeterminate", "reason": "image-quality", "seen_ai_before_report": True},
        ]
        for body in bodies:
            answer = api.post("/api/assessments", json=body)
            assert answer.status_code == 201, answer.text
            assert answer.json()["source"] == "api" and answer.json()["reader"] == "dr-api"
        unknown = api.post("/api/assessments", json={**bodies[0], "accession_number": "NO-SUCH-ACC"})
        assert unknown.status_code == 404 and "NO-SUCH-ACC" in unknown.text
        bad_verdict = api.post("/api/assessments", json={**bodies[0], "verdict": "perhaps"})
        assert bad_verdict.status_code == 422 and "perhaps" in bad_verdict.text

        node_sr = pydicom.dcmread(Path(by_seed[65].summary["results_folder"]) /
                                  f"SR-{by_seed[65].sr_sop_instance_uid}.dcm", stop_before_pixels=True)
        from_pacs = save(reader_sr(node_sr, finding="present", reference="evidence"), tmp_path / "sr")
        stranger = save(reader_sr(study_object(truths[65].study_uid, accession=truths[65].accession_number)),
                        tmp_path / "sr")
        assert storescu(node.port, [from_pacs, stranger], calling="PACS").returncode == 0

        def dicom_outcomes() -> tuple[ReaderAssessment, AuditEvent] | None:
            with sessions() as session:
                recorded = session.scalars(select(ReaderAssessment).where(ReaderAssessment.source == "dicom")).first()
                refusal = session.scalars(select(AuditEvent).where(
                    AuditEvent.action == "assessment-sr-refused")).first()
            return (recorded, refusal) if recorded is not None and refusal is not None else None

        recorded, refusal = node.wait_until(dicom_outcomes, 60, "the reader SR recorded and the stranger refused")
        assert recorded.result_id == by_seed[65].id and recorded.reader_finding == "present"
        assert "references no result of this node" in (refusal.reason or "")
        with sessions() as session:
            assessments = session.scalars(select(ReaderAssessment).order_by(ReaderAssessment.id)).all()
            standards = {s.study_id: s for s in session.scalars(select(ReferenceStandard))}
            studies = {s.study_uid: s for s in session.scalars(select(Study))}
        assert sorted(a.source for a in assessments) == ["api", "api", "api", "dashboard", "dicom"]
        assert all(s.state == "done" and s.generation == 1 for s in studies.values()), "no study reopened"

        # The report, against an independent computation on the same rows.
        included = [(standards[r.study_id].recurrence, float(r.probability)) for r in results.values()
                    if r.study_id in standards]
        assert len(included) == len(COHORT) - 1
        truth_of = {studies[t.study_uid].id: t.recurrence for t in truths.values()}
        assert all(recurrence == truth_of[study_id] for study_id, recurrence in
                   ((s.study_id, s.recurrence) for s in standards.values())), "the CSV carried the truth"
        expected = independent.figures([t for t, _ in included], [p for _, p in included], threshold)
        report_file = tmp_path / "validation.html"
        evaluated = subprocess.run(
            [sys.executable, "-m", "dicom_node.cli.main", "--config", str(config), "evaluate", "--json",
             "--html", str(report_file)], check=False, capture_output=True, text=True, cwd=REPO, timeout=180)
        assert evaluated.returncode == 0, evaluated.stderr
        report = json.loads(evaluated.stdout)
        assert report["counts"]["analysed"] == len(COHORT)
        assert report["counts"]["with_reference"] == len(COHORT) - 1
        assert report["threshold"] == threshold
        assert report["confusion"] == expected["confusion"][0]
        for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "auc"):
            independent.assert_figure(report[name], expected[name])
        assert report["published"]["accuracy"] == 0.71 and report["published"]["sensitivity"] == 0.568

        ai_call = {r.id: r.probability >= threshold for r in results.values()}
        agree = sum(1 for a in assessments if a.verdict == "agree")
        independent.assert_figure(report["readers"]["agreement_rate"], independent.wilson(agree, len(assessments)))
        definite = [a for a in assessments if a.reader_finding in ("present", "absent")]
        independent.assert_figure(report["readers"]["kappa"], independent.kappa(
            [ai_call[a.result_id] for a in definite], [a.reader_finding == "present" for a in definite]))
        assert report["readers"]["assessments"] == len(assessments)
        independent.assert_metrics_table(report_file.read_text(encoding="utf-8"), expected)
    finally:
        engine.dispose()
        node.stop()
