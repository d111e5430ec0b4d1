"""`psma-node serve`: run the node."""

from __future__ import annotations

import sys

import click

from dicom_node.cli.context import CONFIG_ERROR_EXIT, CliContext, pass_cli


@click.command("serve")
@pass_cli
def serve_command(ctx: CliContext) -> None:
    """Run the node: DICOM listener, assembly, workers, sending and the dashboard."""
    from db.session import SchemaOutOfDate
    from dicom_node.config import DEFAULT_CONFIG_FILE
    from dicom_node.preflight import StartupError
    from dicom_node.serve import serve
    from dicom_node.web.server import DashboardError

    settings = ctx.settings()
    source = (ctx.config_path or DEFAULT_CONFIG_FILE).resolve()
    try:
        serve(settings, config_file=source)
    except (StartupError, SchemaOutOfDate, DashboardError) as exc:
        click.echo(f"error: {exc} (configuration: {source})", err=True)
        sys.exit(CONFIG_ERROR_EXIT)
