"""`psma-node audit export`: the audit trail as CSV or JSON lines, for auditors and external archives."""

from __future__ import annotations

import csv
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import click

from db.audit import os_user, record
from db.queries import audit_events, count_audit_events
from db.session import transaction
from dicom_node.cli.context import CliContext, pass_cli
from dicom_node.cli.times import parse_time

COLUMNS = [
    "id",
    "created_at",
    "category",
    "action",
    "outcome",
    "reason",
    "study_uid",
    "series_uid",
    "sop_instance_uid",
    "actor",
    "peer",
    "detail",
]


def event_dict(event: Any) -> dict[str, Any]:
    """One audit event (model object or row) as plain data, timestamps in UTC ISO format."""
    created = event.created_at
    return {
        "id": event.id,
        "created_at": created.isoformat() if created else None,
        "category": event.category,
        "action": event.action,
        "outcome": event.outcome,
        "reason": event.reason,
        "study_uid": event.study_uid,
        "series_uid": event.series_uid,
        "sop_instance_uid": event.sop_instance_uid,
        "actor": event.actor,
        "peer": event.peer,
        "detail": event.detail or {},
    }


def write_events(events: Any, out: IO[str], fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for event in events:
            data = event_dict(event)
            data["detail"] = json.dumps(data["detail"], sort_keys=True, ensure_ascii=False, default=str)
            writer.writerow(data)
            count += 1
    else:
        for event in events:
            out.write(json.dumps(event_dict(event), ensure_ascii=False, default=str) + "\n")
            count += 1
    return count


@click.group("audit")
def audit_group() -> None:
    """The append-only audit trail."""


@audit_group.command("export")
@click.option("--since", required=True, help="Start: ISO date/time (UTC) or an age such as 7d, 12h.")
@click.option("--until", default=None, help="End (exclusive), same forms as --since; default: now.")
@click.option("--category", default=None, help="Only this category (association, instance, study, job, ...).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl", show_default=True)
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of standard output.",
)
@pass_cli
def export_command(
    ctx: CliContext, since: str, until: str | None, category: str | None, fmt: str, output: Path | None
) -> None:
    """Export audit events (they hold patient identifiers: handle the output accordingly)."""
    start = parse_time(since)
    end = parse_time(until) if until else None
    sessions = ctx.sessions()
    with ExitStack() as stack:
        try:
            out = (
                stack.enter_context(output.open("w", encoding="utf-8", newline="")) if output else sys.stdout
            )
        except OSError as exc:
            click.echo(f"error: cannot write {output}: {exc.strerror or exc}", err=True)
            sys.exit(1)
        session = stack.enter_context(sessions())
        events = audit_events(session, since=start, until=end, category=category)
        if output is not None:  # stdout carries the export itself: no bar there
            total = count_audit_events(session, since=start, until=end, category=category)
            events = stack.enter_context(
                click.progressbar(events, length=total, label="exporting audit events", file=sys.stderr)
            )
        count = write_events(events, out, fmt)
    with transaction(sessions) as session:
        record(
            session,
            "admin",
            "audit-exported",
            actor=os_user(),
            since=start.isoformat(),
            until=end.isoformat() if end else None,
            only_category=category,
            format=fmt,
            events=count,
            output=str(output) if output else "stdout",
        )
    click.echo(f"exported {count} audit events", err=True)
