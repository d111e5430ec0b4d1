"""`psma-node outbox list|retry`: an admin sees why a delivery failed and sends it again."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner
from sqlalchemy import select

from db.models import AuditEvent, OutboxItem
from db.session import transaction
from dicom_node import outbox
from dicom_node.cli.main import cli
from tests.dicom_node.report.synthetic import make_sessions


def test_list_shows_the_failure_reason_and_retry_requeues_it(tmp_path: Path, db_url: str) -> None:
    sessions = make_sessions(db_url)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}, "storage": {"directory": str(tmp_path)}}))
    path = tmp_path / "sr.dcm"
    path.write_bytes(b"x")
    with transaction(sessions) as session:
        item = outbox.enqueue(session, result_id=None, study_uid="1.2.3", destination="pacs", path=path,
                              sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34", sop_instance_uid="1.2.3.4")
        item.state = "failed"
        item.last_error = "gave up after 9 attempts: association rejected by ORTHANC@127.0.0.1:4242"
        session.flush()
        item_id = item.id
    runner = CliRunner()
    listed = runner.invoke(cli, ["--config", str(config), "outbox", "list", "--state", "failed"])
    assert listed.exit_code == 0, listed.output
    assert "failed" in listed.output and "SR-3D" in listed.output and "1.2.3.4" in listed.output
    assert "association rejected by ORTHANC" in listed.output and "failed 1" in listed.output
    retried = runner.invoke(cli, ["--config", str(config), "outbox", "retry", str(item_id)])
    assert retried.exit_code == 0 and "1 item(s) queued" in retried.output
    with transaction(sessions) as session:
        assert session.get(OutboxItem, item_id).state == "pending"
        event = session.execute(select(AuditEvent).where(AuditEvent.action == "manual-retry")).scalar_one()
        assert event.actor.startswith("cli:") and event.detail["previous_state"] == "failed"
        session.get(OutboxItem, item_id).state = "delivered"
    refused = runner.invoke(cli, ["--config", str(config), "outbox", "retry", str(item_id)])
    assert refused.exit_code != 0 and "only failed or pending" in refused.output
    missing = runner.invoke(cli, ["--config", str(config), "outbox", "retry", "999"])
    assert missing.exit_code != 0 and "no outbox item 999" in missing.output
