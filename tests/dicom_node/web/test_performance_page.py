"""The dashboard's performance page and /api/evaluation show the figures `evaluate --json` prints, with the
same filters, computed independently here; bad filters are refused with a clear message."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent
from db.session import transaction
from dicom_node.cli.main import cli
from dicom_node.web.app import create_app
from tests.db.seed_cases import EPOCH, CaseSpec, mixed_cohort, seed_case
from tests.dicom_node.evaluation import independent
from tests.support.settings import PASSWORD, TOKEN, make_settings

BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def specs(sessions: sessionmaker[Session]) -> list:  # type: ignore[type-arg]
    cohort = mixed_cohort(seed=5, n=40)
    with transaction(sessions) as session:
        for spec in cohort:
            seed_case(session, spec)
    return cohort


def test_page_api_and_cli_agree_with_an_independent_computation(
    specs: list,
    sessions: sessionmaker[Session],
    db_url: str,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    settings = make_settings(tmp_path, db_url)
    expected = independent.expected_for(specs, 0.5)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}}))
    printed = json.loads(CliRunner().invoke(cli, ["--config", str(config), "evaluate", "--json"]).stdout)
    with TestClient(create_app(settings, sessions)) as client:
        served = client.get("/api/evaluation", headers=BEARER).json()
        for payload in (printed, served):
            payload.pop("generated_at")
        assert served == printed
        client.post("/login", data={"username": "alice", "password": PASSWORD})
        page = client.get("/performance")
    assert page.status_code == 200
    independent.assert_metrics_table(page.text, expected)
    assert page.text.count('src="data:image/png;base64,') == 2
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert f'<td class="num" id="fn">{expected["confusion"][0]["fn"]}</td>' in page.text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_filters_on_the_page_are_those_of_the_command_line(
    specs: list,
    sessions: sessionmaker[Session],
    db_url: str,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    with transaction(sessions) as session:
        seed_case(session, CaseSpec(0.9, reference=True, at=EPOCH + dt.timedelta(days=3)))
    settings = make_settings(tmp_path, db_url)
    mct = [s for s in specs if s.scanner_model == "Biograph mCT"]
    with TestClient(create_app(settings, sessions)) as client:
        assert client.get("/api/evaluation").status_code == 401
        client.post("/login", data={"username": "alice", "password": PASSWORD})
        narrowed = client.get(
            "/performance", params={"scanner": "SIEMENS Biograph mCT", "until": "2025-03-04"}
        )
        independent.assert_metrics_table(narrowed.text, independent.expected_for(mct, 0.5))
        assert '<option value="SIEMENS Biograph mCT" selected>' in narrowed.text
        lower = client.get("/api/evaluation", params={"threshold": "0.3"}, headers=BEARER).json()
        assert lower["threshold"] == 0.3
        independent.assert_figure(
            lower["sensitivity"],
            independent.expected_for([*specs, CaseSpec(0.9, reference=True)], 0.3)["sensitivity"],
        )
        bad = client.get("/performance", params={"since": "03/03/2025"})
        assert bad.status_code == 200 and "since: &#39;03/03/2025&#39; is not a date (YYYY-MM-DD)" in bad.text
        refused = client.get("/api/evaluation", params={"threshold": "2"}, headers=BEARER)
        assert refused.status_code == 422 and refused.json()["detail"] == (
            "invalid input: threshold: must lie between 0 and 1"
        )
    with sessions() as session:
        reasons = set(session.scalars(select(AuditEvent.reason).where(AuditEvent.action == "api-refused")))
    # the first refusal is recorded at once; the next ones from the same source are summarised (refusals.py)
    assert "invalid input: since: '03/03/2025' is not a date (YYYY-MM-DD)" in reasons
