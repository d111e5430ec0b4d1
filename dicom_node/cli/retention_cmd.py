"""`psma-node retention run [--dry-run]`: delete images of studies delivered longer ago than keep_days."""

from __future__ import annotations

import sys

import click

from db.audit import os_user
from dicom_node.cli.context import CliContext, pass_cli
from dicom_node.retention import run_retention


@click.group("retention")
def retention_group() -> None:
    """Retention of stored images."""


@retention_group.command("run")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Override retention.keep_days for this run.",
)
@pass_cli
def run_command(ctx: CliContext, dry_run: bool, keep_days: float | None) -> None:
    """Purge instance files of delivered studies; rows and audit events stay."""
    settings = ctx.settings()
    sessions = ctx.sessions(settings)
    if not settings.retention.enabled and not dry_run:
        click.echo(
            "note: retention.enabled is false, so `serve` does not purge on its own; purging now as asked",
            err=True,
        )
    report = run_retention(
        settings, sessions, dry_run=dry_run, actor=os_user(), keep_days=keep_days
    )
    verb = "would purge" if dry_run else "purged"
    for study in report.studies:
        click.echo(
            f"{verb} {study.study_uid} (accession {study.accession_number or '-'}, delivered "
            f"{study.delivered_at:%Y-%m-%d %H:%M} UTC): {len(study.files)} files, {study.bytes} bytes"
        )
    total = sum(len(s.files) for s in report.studies)
    size = sum(s.bytes for s in report.studies)
    click.echo(
        f"{verb} {len(report.studies)} studies, {total} files, {size} bytes "
        f"(delivered before {report.cutoff:%Y-%m-%d %H:%M} UTC)"
    )
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    if report.errors:
        sys.exit(1)
