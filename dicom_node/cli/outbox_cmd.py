"""`psma-node outbox list|retry [ID]`: what waits to be delivered, what failed and why; retry it."""

from __future__ import annotations

import getpass

import click

from db.listings import list_outbox, outbox_counts
from db.states import OutboxState
from dicom_node.cli.context import CliContext, pass_cli

_SHORT_CLASS = {  # literal UIDs: importing pydicom would slow this quick command
    "1.2.840.10008.5.1.4.1.1.88.34": "SR-3D",
    "1.2.840.10008.5.1.4.1.1.88.33": "SR",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
}


@click.group("outbox")
def outbox_group() -> None:
    """Result objects waiting for, or done with, delivery to PACS."""


@outbox_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in OutboxState]), default=None, help="Only this state.")
@click.option("--study", "study_uid", default=None, help="Only this StudyInstanceUID.")
@click.option("--limit", type=int, default=100, show_default=True)
@pass_cli
def list_command(ctx: CliContext, state: str | None, study_uid: str | None, limit: int) -> None:
    """One line per object and destination, newest first, with the last error."""
    with ctx.engine().connect() as connection:
        rows = list_outbox(connection, state=state, study_uid=study_uid, limit=limit)
        counts = outbox_counts(connection)
    click.echo(f"{'ID':>6}  {'STATE':<10} {'DESTINATION':<16} {'TRY':>3}  {'CLASS':<5} {'NEXT ATTEMPT (UTC)':<19}  "
               "SOP INSTANCE UID / LAST ERROR")
    for row in rows:
        when = row.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S") if row.state == "pending" else "-"
        kind = _SHORT_CLASS.get(row.sop_class_uid, "?")
        click.echo(f"{row.id:>6}  {row.state:<10} {row.destination[:16]:<16} {row.attempts:>3}  {kind:<5} "
                   f"{when:<19}  {row.sop_instance_uid}")
        if row.last_error:
            click.echo(f"{'':>8}error: {row.last_error}")
    click.echo("totals: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty"))


@outbox_group.command("retry")
@click.argument("item_id", type=int, required=False)
@pass_cli
def retry_command(ctx: CliContext, item_id: int | None) -> None:
    """Send FAILED items again now (or one item by ID), with a fresh retry window."""
    from db.models import OutboxItem  # the ORM and the sender's rules: only here, `list` stays quick
    from db.session import transaction
    from dicom_node import outbox

    sessions = ctx.sessions()
    with transaction(sessions) as session:
        if item_id is not None:
            row = session.get(OutboxItem, item_id)
            if row is None:
                raise click.ClickException(f"no outbox item {item_id}")
            if row.state not in (OutboxState.FAILED.value, OutboxState.PENDING.value):
                raise click.ClickException(
                    f"outbox item {item_id} is {row.state}: only failed or pending items can be retried")
        changed = outbox.retry(session, [item_id] if item_id is not None else None, actor=f"cli:{getpass.getuser()}")
    click.echo(f"{len(changed)} item(s) queued for delivery" + (f": {', '.join(map(str, changed))}" if changed else ""))
