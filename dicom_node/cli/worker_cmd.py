"""`psma-node worker`: analysis workers without the receiver (e.g. a GPU machine sharing the database)."""

from __future__ import annotations

import sys

import click

from dicom_node.cli.context import CONFIG_ERROR_EXIT, CliContext, pass_cli


@click.command("worker")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: workers.count, at least 1).",
)
@pass_cli
def worker_command(ctx: CliContext, count: int | None) -> None:
    """Run analysis workers until SIGTERM/SIGINT; they take jobs from the shared database."""
    from dicom_node.preflight import StartupError, check_device
    from dicom_node.worker import run_workers

    settings = ctx.settings()
    try:
        check_device(settings.models.device)
    except StartupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(CONFIG_ERROR_EXIT)
    ctx.sessions(settings, may_upgrade=True).kw["bind"].dispose()  # schema gate only: workers open their own
    run_workers(settings, count or max(1, settings.workers.count))
