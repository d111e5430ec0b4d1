"""`psma-node config check|example|reference`: validate the configuration, show it, print the documented
example to start from, and print its reference."""

from __future__ import annotations

import sys

import click

from dicom_node.cli.context import CONFIG_ERROR_EXIT, CliContext, pass_cli


@click.group("config")
def config_group() -> None:
    """Inspect and validate the configuration."""


@config_group.command("check")
@pass_cli
def check(ctx: CliContext) -> None:
    """Validate the configuration and print the effective settings (secrets masked).

    Beyond the file's own validity it checks, without lasting side effects, what `serve` would trip over:
    the database URL and its driver, that the folders can be created, the TLS files, dashboard exposure.
    Calling AE titles allowed from any host on a network-facing port are a warning, not an error.
    """
    import yaml

    from dicom_node.admission import unbound_exposure
    from dicom_node.config import DEFAULT_CONFIG_FILE, effective_config
    from dicom_node.preflight import problems

    settings = ctx.settings()
    source = (ctx.config_path or DEFAULT_CONFIG_FILE).resolve()
    found = problems(settings)
    for problem in found:
        click.echo(f"error: {problem} (configuration: {source})", err=True)
    if found:
        sys.exit(CONFIG_ERROR_EXIT)
    exposure = unbound_exposure(settings.node)
    if exposure is not None:
        click.echo(f"warning: {exposure} (configuration: {source})", err=True)
    click.echo(yaml.safe_dump(effective_config(settings), sort_keys=False), nl=False)
    click.echo(f"configuration OK: {source}", err=True)


@config_group.command("example")
def example() -> None:
    """Print the documented example configuration shipped with the package (every key, commented).

    Start a site's configuration with `psma-node config example > config.yaml`.
    """
    from dicom_node.config import EXAMPLE_CONFIG_FILE

    click.echo(EXAMPLE_CONFIG_FILE.read_text(encoding="utf-8"), nl=False)


@config_group.command("reference")
def reference() -> None:
    """Print the configuration reference (Markdown) generated from the typed settings."""
    from dicom_node.config_reference import render_reference

    click.echo(render_reference(), nl=False)
