"""Entry point of `psma-node`."""

from __future__ import annotations

from pathlib import Path

import click

from dicom_node import __version__
from dicom_node.cli.config_cmd import config_group
from dicom_node.cli.context import CliContext
from dicom_node.cli.db_cmd import db_group
from dicom_node.cli.serve_cmd import serve_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psma-node")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="PSMA_NODE_CONFIG",
    default=None,
    help="Configuration file (default: the embedded config.yaml). Env: PSMA_NODE_CONFIG.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """PSMA PET/CT local-recurrence DICOM node (research use only, NOT FOR DIAGNOSTIC USE)."""
    ctx.obj = CliContext(config_path=config_path)


cli.add_command(config_group)
cli.add_command(db_group)
cli.add_command(serve_command)


def main() -> None:
    cli(prog_name="psma-node")


if __name__ == "__main__":
    main()
