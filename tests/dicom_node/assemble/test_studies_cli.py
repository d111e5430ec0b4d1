"""`psma-node studies list|show|reprocess` against a database the assembler has worked on."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from sqlalchemy import select

from db.models import AuditEvent, Job, Study
from dicom_node.assemble import Assembler
from dicom_node.cli.main import cli
from dicom_node.config import Settings
from tests.dicom_node.assemble.rows import add_ct, add_pet, add_study, sessions_for

SETTINGS = Settings.model_validate({"assembly": {"settle_seconds": 0}})


def _setup(tmp_path: Path) -> tuple[Path, object]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    sessions = sessions_for(url)
    queued, _ = add_study(sessions, accession="ACC-Q")
    add_pet(sessions, queued)
    add_ct(sessions, queued)
    rejected, _ = add_study(sessions, accession="ACC-R")
    add_pet(sessions, rejected, tracer="FDG")
    add_ct(sessions, rejected)
    Assembler().tick(SETTINGS, sessions)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": url}}))
    return config, sessions


def test_list_filters_by_state(tmp_path: Path) -> None:
    config, _ = _setup(tmp_path)
    runner = CliRunner()
    everything = runner.invoke(cli, ["--config", str(config), "studies", "list"])
    assert everything.exit_code == 0 and "ACC-Q" in everything.output and "ACC-R" in everything.output
    rejected = runner.invoke(
        cli, ["--config", str(config), "studies", "list", "--state", "rejected", "--since", "1h"]
    )
    assert "ACC-R" in rejected.output and "ACC-Q" not in rejected.output
    assert "tracer is FDG, not PSMA" in rejected.output


def test_show_prints_the_timeline_with_rules(tmp_path: Path) -> None:
    config, _ = _setup(tmp_path)
    shown = CliRunner().invoke(cli, ["--config", str(config), "studies", "show", "ACC-Q"])
    assert shown.exit_code == 0, shown.output
    assert "state queued" in shown.output and "[content-proof]" in shown.output
    assert "job 1 gen 1 queued" in shown.output and "[PET analysed]" in shown.output
    missing = CliRunner().invoke(cli, ["--config", str(config), "studies", "show", "NOPE"])
    assert missing.exit_code == 3 and "no study" in missing.output


def test_reprocess_reopens_audited_and_a_new_job_follows(tmp_path: Path) -> None:
    config, sessions = _setup(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(config), "studies", "reprocess", "ACC-Q"])
    assert result.exit_code == 0, result.output
    Assembler().tick(SETTINGS, sessions)
    with sessions() as session:  # type: ignore[operator]
        study = session.scalars(select(Study).where(Study.accession_number == "ACC-Q")).one()
        jobs = session.scalars(select(Job).where(Job.study_id == study.id).order_by(Job.id)).all()
        admin = session.scalars(select(AuditEvent).where(AuditEvent.category == "admin")).all()
        reopened = session.scalars(select(AuditEvent).where(AuditEvent.action == "reopened")).one()
    assert study.state == "queued" and study.generation == 2
    assert [(j.generation, j.state) for j in jobs] == [(1, "cancelled"), (2, "queued")]
    assert admin[0].action == "reprocess" and admin[0].actor
    assert reopened.detail["rule"] == "admin-reprocess"
