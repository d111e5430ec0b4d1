"""`psma-node outcomes import|list` against SQLite and a real PostgreSQL: every row applied or reported with
its line number and reason, nothing half-imported without --partial, duplicates refused, re-imports idempotent."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.audit import os_user
from db.models import AuditEvent, ReferenceStandard
from db.session import transaction
from dicom_node.cli.main import cli
from tests.db.seed import SeededStudy, seed_study

HEADER = "accession_number,study_instance_uid,recurrence,method,date,source\n"


def _world(sessions: sessionmaker[Session], db_url: str, tmp_path: Path) -> tuple[Path, SeededStudy]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}}))
    with transaction(sessions) as session:
        seed_study(session, storage=tmp_path / "s", results=tmp_path / "r", accession="ACC-1")
        second = seed_study(session, storage=tmp_path / "s", results=tmp_path / "r", accession="ACC-2")
    return config, second


def _import(config: Path, csv_text: str, tmp_path: Path, *options: str) -> Result:
    path = tmp_path / "outcomes.csv"
    path.write_text(csv_text, encoding="utf-8")
    return CliRunner().invoke(cli, ["--config", str(config), "outcomes", "import", str(path), *options])


def _stored(sessions: sessionmaker[Session]) -> list[ReferenceStandard]:
    with sessions() as session:
        return list(session.scalars(select(ReferenceStandard).order_by(ReferenceStandard.id)))


def test_a_good_file_is_applied_audited_as_the_os_user_and_a_second_import_changes_nothing(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    config, second = _world(sessions, db_url, tmp_path)
    good = (HEADER + "ACC-1,,yes,histopathology,2025-01-15,biopsy B-17\n"
            f",{second.study_uid},no,psa-response,2025-02-01,\n")
    first = _import(config, good, tmp_path)
    assert first.exit_code == 0, first.output
    assert "2 applied, 0 unchanged (already recorded), 0 refused" in first.output
    rows = _stored(sessions)
    assert [(r.recurrence, r.method, r.source, r.channel, r.actor) for r in rows] == [
        (True, "histopathology", "biopsy B-17", "csv", os_user()), (False, "psa-response", None, "csv", os_user())]
    with sessions() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "reference-standard-recorded"))
        assert [e.actor for e in events] == [os_user(), os_user()]
    again = _import(config, good, tmp_path)
    assert again.exit_code == 0 and "0 applied, 2 unchanged (already recorded), 0 refused" in again.output
    assert len(_stored(sessions)) == 2
    listed = CliRunner().invoke(cli, ["--config", str(config), "outcomes", "list", "--accession", "ACC-1"])
    assert "ACC-1: recurrence yes by histopathology on 2025-01-15 (via csv)" in listed.output


BAD = (HEADER
       + "ACC-1,,yes,histopathology,2025-01-15,biopsy\n"   # line 2: good
       + "ACC-404,,yes,histopathology,2025-01-15,\n"       # line 3: unknown accession
       + "ACC-2,,no,psa-response,15.01.2025,\n"            # line 4: malformed date
       + "ACC-2,,no,gut-feeling,2025-01-15,\n"             # line 5: method outside the list
       + "ACC-1,,yes,histopathology,2025-01-15,biopsy\n"   # line 6: duplicate of line 2
       + ",,yes,composite,2025-01-15,\n"                   # line 7: no identifier
       + "ACC-2,,maybe,composite,2025-01-15,\n"            # line 8: recurrence neither yes nor no
       + "ACC-2,,no,composite,2025-01-15,x,extra\n")       # line 9: one field too many
EXPECTED = [
    "line 3: no study with accession number ACC-404 on this node",
    "line 4: date: '15.01.2025' is not a date (YYYY-MM-DD)",
    "line 5: method: 'gut-feeling' is not one of histopathology, imaging-follow-up, psa-response, composite, other",
    "line 6: names the same study as line 2: one row per study",
    "line 7: neither accession_number nor study_instance_uid given",
    "line 8: recurrence: 'maybe' is not yes/no (true/false, 1/0)",
    "line 9: has more or fewer fields than the header",
]


def test_a_file_with_bad_rows_changes_nothing_and_reports_every_bad_line(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    config, _ = _world(sessions, db_url, tmp_path)
    outcome = _import(config, BAD, tmp_path)
    assert outcome.exit_code == 1
    for expected in EXPECTED:
        assert expected in outcome.output
    assert "nothing imported: 0 applied, 0 unchanged (already recorded), 7 refused" in outcome.output
    assert "csv: line 2:" not in outcome.output and _stored(sessions) == []


def test_partial_applies_the_good_rows_reports_the_bad_ones_and_still_fails(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    config, _ = _world(sessions, db_url, tmp_path)
    outcome = _import(config, BAD, tmp_path, "--partial")
    assert outcome.exit_code == 1
    assert "1 applied, 0 unchanged (already recorded), 7 refused" in outcome.output
    assert all(expected in outcome.output for expected in EXPECTED)
    assert [(r.method, r.source) for r in _stored(sessions)] == [("histopathology", "biopsy")]


def test_a_file_without_the_documented_header_is_refused_as_a_whole(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    config, _ = _world(sessions, db_url, tmp_path)
    semicolons = _import(config, HEADER.replace(",", ";") + "ACC-1;;yes;composite;2025-01-15;\n", tmp_path)
    assert semicolons.exit_code == 1
    assert "line 1 must be the header accession_number,study_instance_uid,recurrence,method,date,source" in (
        semicolons.output)
    assert "(separated by semicolons? use commas)" in semicolons.output
    assert _stored(sessions) == []
