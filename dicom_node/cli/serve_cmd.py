"""`psma-node serve`: run the node."""

from __future__ import annotations

import sys

import click

from db.session import SchemaOutOfDate
from dicom_node.cli.context import CliContext, pass_cli


@click.command("serve")
@pass_cli
def serve_command(ctx: CliContext) -> None:
    """Run the node: DICOM listener, assembly, workers, sending and the dashboard."""
    from dicom_node.serve import serve
    from dicom_node.web.server import DashboardError

    settings = ctx.settings()
    try:
        serve(settings)
    except (SchemaOutOfDate, DashboardError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
