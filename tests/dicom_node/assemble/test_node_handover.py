"""A real node fed by dcmtk storescu: once storescu releases its association after the last instance, the
proven study is queued without waiting for the settle window (set to a minute here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db.models import AuditEvent, Job
from tests.dicom_node.assemble.test_node_assembly import database, send, state_is, synth

pytestmark = pytest.mark.slow
SETTLE_A_MINUTE = {"assembly": {"settle_seconds": 60, "quiet_seconds": 120}, "workers": {"count": 0}}


def test_released_association_queues_a_proven_study_without_the_settle_window(
    node_factory: Any, tmp_path: Path
) -> None:
    truth, pet, ct = synth(tmp_path / "study", seed=61)
    node = node_factory(SETTLE_A_MINUTE)
    sessions = database(node)
    send(node, pet + ct)  # one association, released by storescu at the end
    node.wait_until(state_is(sessions, truth.study_uid, "queued"), 30, "the study to be queued")
    with sessions() as session:
        complete = session.scalars(
            select(AuditEvent).where(AuditEvent.study_uid == truth.study_uid, AuditEvent.action == "complete")
        ).one()
        job = session.scalars(select(Job)).one()
    assert complete.detail["rule"] == "content-proof"
    assert "released" in job.flags["settle"]
