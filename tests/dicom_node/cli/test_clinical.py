"""`psma-node clinical set|show` against SQLite and a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from sqlalchemy import select

from db.models import AuditEvent, ClinicalInfo
from db.session import make_engine, make_session_factory, transaction
from dicom_node.cli.main import cli


def _run(config: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--config", str(config), "clinical", *args])


def test_set_writes_a_row_and_an_audit_event_and_show_reads_it_back(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}}))
    assert _run(config, "set", "ACC42", "--psa", "3.2", "--prostatectomy", "yes").exit_code == 0
    corrected = _run(config, "set", "ACC42", "--prostatectomy", "no")
    assert corrected.exit_code == 0, corrected.output
    shown = _run(config, "show", "ACC42")
    assert shown.exit_code == 0
    assert "accession ACC42: PSA 3.2 ng/ml, prostatectomy no" in shown.output
    assert shown.output.count("source=cli") == 2
    engine = make_engine(db_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            rows = session.scalars(select(ClinicalInfo).where(ClinicalInfo.accession_number == "ACC42")).all()
            assert len(rows) == 2
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "clinical-registered")
            ).all()
            assert [e.detail["accession_number"] for e in events] == ["ACC42", "ACC42"]
    finally:
        engine.dispose()


def test_set_without_values_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": f"sqlite:///{tmp_path / 'node.db'}"}}))
    outcome = _run(config, "set", "ACC1")
    assert outcome.exit_code == 1 and "give a PSA value" in outcome.output
    assert "nothing registered" in _run(config, "show", "ACC1").output
