"""`psma-node config check|reference`: validate the configuration, show it, and print its reference."""

from __future__ import annotations

import click
import yaml

from dicom_node.cli.context import CliContext, pass_cli
from dicom_node.config import effective_config


@click.group("config")
def config_group() -> None:
    """Inspect and validate the configuration."""


@config_group.command("check")
@pass_cli
def check(ctx: CliContext) -> None:
    """Validate the configuration and print the effective settings (secrets masked)."""
    settings = ctx.settings()
    click.echo(yaml.safe_dump(effective_config(settings), sort_keys=False), nl=False)
    click.echo("configuration OK", err=True)


@config_group.command("reference")
def reference() -> None:
    """Print the configuration reference (Markdown) generated from the typed settings."""
    from dicom_node.config_reference import render_reference

    click.echo(render_reference(), nl=False)
