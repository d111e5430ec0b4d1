"""`psma-node monitoring status|run|acknowledge`: drift and novelty alarms from the command line."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from dicom_node.cli.context import CliContext, pass_cli

if TYPE_CHECKING:
    from db.models import MonitoringAlarm


@click.group("monitoring")
def monitoring_group() -> None:
    """Drift of the AI's inputs and outputs per scanner, and new scanners, software and weights."""


def _line(alarm: MonitoringAlarm) -> str:
    where = f" [{alarm.scanner}]" if alarm.scanner and alarm.kind != "new-scanner" else ""
    return f"ALARM #{alarm.id} {alarm.kind}{where} since {alarm.raised_on.isoformat()}: {alarm.message}"


@monitoring_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the open alarms as a JSON list.")
@pass_cli
def status_command(ctx: CliContext, as_json: bool) -> None:
    """One line per open alarm (exit status 1 when there is one), else one line saying all is quiet."""
    from db.monitoring import open_alarms

    settings = ctx.settings()
    with ctx.sessions(settings)() as session:
        alarms = open_alarms(session)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": a.id,
                        "kind": a.kind,
                        "scanner": a.scanner,
                        "subject": a.subject,
                        "raised_on": a.raised_on.isoformat(),
                        "message": a.message,
                    }
                    for a in alarms
                ],
                indent=2,
            )
        )
    elif alarms:
        for alarm in alarms:
            click.echo(_line(alarm))
    else:
        state = "enabled" if settings.monitoring.enabled else "disabled (monitoring.enabled: false)"
        click.echo(f"monitoring {state}: no open alarm")
    if alarms:
        sys.exit(1)


@monitoring_group.command("run")
@pass_cli
def run_command(ctx: CliContext) -> None:
    """Judge the history now (as `serve` does every monitoring.tick_seconds) and print what changed."""
    from db.audit import os_user
    from dicom_node.evaluation.monitoring import run_monitoring

    settings = ctx.settings()
    outcome = run_monitoring(settings, ctx.sessions(settings), actor=f"cli:{os_user()}")
    for alarm in outcome.raised:
        click.echo("raised: " + _line(alarm))
    for alarm in outcome.cleared:
        click.echo("cleared: " + _line(alarm))
    scanners = outcome.state.scanners
    click.echo(
        f"{len(scanners)} scanner(s) watched, {len(outcome.raised)} alarm(s) raised, "
        f"{len(outcome.cleared)} cleared"
    )


@monitoring_group.command("acknowledge")
@click.argument("alarm_id", type=int)
@click.option("--note", default=None, help="Why the alarm can be closed (recorded in the audit trail).")
@pass_cli
def acknowledge_command(ctx: CliContext, alarm_id: int, note: str | None) -> None:
    """Close an open alarm after checking it (audited, with the operating-system user)."""
    from db.audit import os_user
    from db.clock import utcnow
    from db.monitoring import acknowledge
    from db.session import transaction

    with transaction(ctx.sessions()) as session:
        try:
            alarm = acknowledge(session, alarm_id, actor=f"cli:{os_user()}", note=note, now=utcnow())
        except (LookupError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"acknowledged: {_line(alarm)}")
