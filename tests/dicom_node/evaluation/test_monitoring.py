"""Drift monitoring over a real database (SQLite and PostgreSQL) with an injected clock: backdated results fed
day by day give exactly one alarm per change, raised on the right day, as an audit event, a Prometheus gauge,
a dashboard banner and a `monitoring status` line; judging again raises nothing twice."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, MonitoringAlarm
from db.session import transaction
from dicom_node.cli.main import cli
from dicom_node.evaluation.monitoring import monitoring_tick, run_monitoring
from dicom_node.metrics import make_registry
from dicom_node.web.app import create_app
from tests.db.seed_cases import CaseSpec, seed_case
from tests.dicom_node.evaluation import drift_scenario as scenario
from tests.support.settings import PASSWORD, make_settings


def _tick_after(day_number: int) -> dt.datetime:
    """The scheduled evaluation one hour into the next day."""
    return scenario.START + dt.timedelta(days=day_number + 1, hours=1)


def seed_scenario(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        for made in scenario.results():
            seed_case(
                session,
                CaseSpec(
                    made.probability,
                    at=made.at,
                    manufacturer=made.scanner[0],
                    scanner_model=made.scanner[1],
                    software=made.software,
                    weights_sha256=made.weights,
                ),
            )


def _settings(tmp_path: Path, db_url: str):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, db_url)
    settings.monitoring = scenario.SETTINGS
    return settings


def _alarms(sessions: sessionmaker[Session]) -> list[MonitoringAlarm]:
    with sessions() as session:
        return list(session.scalars(select(MonitoringAlarm).order_by(MonitoringAlarm.raised_on)))


def test_backdated_days_fed_one_by_one_raise_one_alarm_per_change_on_its_day(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, db_url)
    seed_scenario(sessions)
    raised_at: dict[tuple[str, str], dt.datetime] = {}
    for number in range(scenario.DAYS):
        outcome = run_monitoring(settings, sessions, now=_tick_after(number), actor="tests")
        for alarm in outcome.raised:
            raised_at[(alarm.kind, alarm.subject)] = _tick_after(number)
        assert outcome.cleared == []
    alarms = _alarms(sessions)
    assert [(a.kind, a.raised_on) for a in alarms] == [
        ("statistic", scenario.day(scenario.DRIFT_ALARM_DAY)),
        ("new-scanner", scenario.day(scenario.NEW_SCANNER_DAY)),
        ("new-software", scenario.day(scenario.NEW_SOFTWARE_DAY)),
        ("new-weights", scenario.day(scenario.NEW_WEIGHTS_DAY)),
    ]
    # each was raised by the first evaluation after its day ended, and stored with that time
    for alarm in alarms:
        expected = _tick_after((alarm.raised_on - scenario.day(0)).days)
        assert raised_at[(alarm.kind, alarm.subject)] == expected == alarm.created_at
    assert alarms[0].subject == "positive_rate" and alarms[0].scanner == "SIEMENS Biograph Vision 600"

    # judging the same history again, later, raises nothing twice
    assert run_monitoring(settings, sessions, now=_tick_after(scenario.DAYS + 3)).raised == []
    with sessions() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.category == "monitoring")))
    assert sorted((e.action, e.detail["kind"], e.outcome) for e in events) == sorted(
        ("alarm-raised", a.kind, "warning") for a in alarms
    )
    assert all(e.reason == next(a.message for a in alarms if a.id == e.detail["alarm_id"]) for e in events)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_alarm_is_a_gauge_a_banner_on_every_page_and_a_status_line(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, db_url)
    seed_scenario(sessions)
    monitoring_tick(settings, sessions, clock=lambda: _tick_after(scenario.DAYS))
    alarms = _alarms(sessions)
    assert len(alarms) == 4

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            generate_latest(make_registry(settings, sessions)).decode()
        )
        for s in family.samples
    }
    for alarm in alarms:
        labels = (("kind", alarm.kind), ("scanner", alarm.scanner), ("subject", alarm.subject))
        assert samples[("psma_node_monitoring_alarm", labels)] == 1.0
    assert samples[("psma_node_monitoring_alarms_open", (("kind", "statistic"),))] == 1.0

    with TestClient(create_app(settings, sessions)) as client:
        client.post("/login", data={"username": "alice", "password": PASSWORD})
        for page in ("/studies", "/health", "/performance", "/monitoring"):
            text = client.get(page).text
            assert (
                "4 monitoring alarms" in text and "positive-call rate on SIEMENS Biograph Vision 600" in text
            ), page
        monitoring = client.get("/monitoring").text
        assert monitoring.count('class="plot series"') == 9  # scanner A: all but the disagreement rate
        csrf = re.search(r'name="csrf" value="([^"]+)"', monitoring).group(1)  # type: ignore[union-attr]
        done = client.post(
            f"/monitoring/alarms/{alarms[1].id}/acknowledge",
            data={"csrf": csrf, "note": "new PET/CT"},
            follow_redirects=False,
        )
        assert done.status_code == 303
        assert "3 monitoring alarms" in client.get("/studies").text
        api = client.get("/api/monitoring/alarms").json()
        assert {a["kind"]: a["cleared_at"] is not None for a in api}["new-scanner"] is True
        forged = client.post(f"/monitoring/alarms/{alarms[2].id}/acknowledge", data={"csrf": "wrong"})
        assert forged.status_code == 403

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}}))
    status = CliRunner().invoke(cli, ["--config", str(config), "monitoring", "status"])
    assert status.exit_code == 1
    lines = status.output.splitlines()
    assert len(lines) == 3 and lines[0].startswith(
        f"ALARM #{alarms[0].id} statistic [SIEMENS Biograph Vision 600]"
    )
    acknowledged = CliRunner().invoke(
        cli, ["--config", str(config), "monitoring", "acknowledge", str(alarms[0].id), "--note", "reviewed"]
    )
    assert acknowledged.exit_code == 0, acknowledged.output
    again = CliRunner().invoke(cli, ["--config", str(config), "monitoring", "acknowledge", str(alarms[0].id)])
    assert again.exit_code == 1 and "already cleared" in again.output
    unknown = CliRunner().invoke(cli, ["--config", str(config), "monitoring", "acknowledge", "99999"])
    assert unknown.exit_code == 1 and "no monitoring alarm 99999" in unknown.output
    with sessions() as session:
        actions = [
            e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.category == "monitoring"))
        ]
    assert actions.count("alarm-acknowledged") == 2
    # an acknowledged episode is not raised again while it lasts
    assert run_monitoring(settings, sessions, now=_tick_after(scenario.DAYS + 1)).raised == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_statistic_back_inside_its_interval_clears_its_alarm(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, db_url)
    seed_scenario(sessions)
    run_monitoring(settings, sessions, now=_tick_after(scenario.DAYS - 1))
    with transaction(sessions) as session:  # three normal days after the scenario
        for number in range(scenario.DAYS, scenario.DAYS + 3):
            at = scenario.START + dt.timedelta(days=number, hours=8)
            for index, probability in enumerate([0.9] * 3 + [0.3] * 7):
                seed_case(
                    session,
                    CaseSpec(
                        probability,
                        at=at + dt.timedelta(minutes=index),
                        software="VG80C",
                        weights_sha256=scenario.WEIGHTS_NEW,
                    ),
                )
    outcome = run_monitoring(settings, sessions, now=_tick_after(scenario.DAYS))
    assert [(a.kind, a.subject) for a in outcome.cleared] == [("statistic", "positive_rate")]
    status = CliRunner().invoke(cli, ["--config", str(_config(tmp_path, db_url)), "monitoring", "status"])
    kinds = [line.split()[2] for line in status.output.splitlines()]
    assert kinds == ["new-scanner", "new-software", "new-weights"]


def _config(tmp_path: Path, db_url: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}}))
    return config


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_quiet_node_says_so(sessions: sessionmaker[Session], db_url: str, tmp_path: Path) -> None:
    status = CliRunner().invoke(cli, ["--config", str(_config(tmp_path, db_url)), "monitoring", "status"])
    assert status.exit_code == 0 and status.output == "monitoring enabled: no open alarm\n"
    ran = CliRunner().invoke(cli, ["--config", str(_config(tmp_path, db_url)), "monitoring", "run"])
    assert ran.exit_code == 0 and "0 alarm(s) raised" in ran.output
