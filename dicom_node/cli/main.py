"""Entry point of `psma-node`."""

from __future__ import annotations

from pathlib import Path

import click

from dicom_node import __version__
from dicom_node.cli.analyze_cmd import analyze_command
from dicom_node.cli.audit_cmd import audit_group
from dicom_node.cli.clinical_cmd import clinical_group
from dicom_node.cli.config_cmd import config_group
from dicom_node.cli.context import CliContext
from dicom_node.cli.dashboard_cmd import dashboard_group
from dicom_node.cli.db_cmd import db_group
from dicom_node.cli.doctor_cmd import doctor_command
from dicom_node.cli.models_cmd import models_group
from dicom_node.cli.outbox_cmd import outbox_group
from dicom_node.cli.retention_cmd import retention_group
from dicom_node.cli.serve_cmd import serve_command
from dicom_node.cli.studies_cmd import studies_group
from dicom_node.cli.synth_cmd import synth_command
from dicom_node.cli.worker_cmd import worker_command


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


cli.add_command(analyze_command)
cli.add_command(audit_group)
cli.add_command(clinical_group)
cli.add_command(config_group)
cli.add_command(dashboard_group)
cli.add_command(retention_group)
cli.add_command(db_group)
cli.add_command(outbox_group)
cli.add_command(doctor_command)
cli.add_command(models_group)
cli.add_command(serve_command)
cli.add_command(synth_command)
cli.add_command(studies_group)
cli.add_command(worker_command)


def main() -> None:
    cli(prog_name="psma-node")


if __name__ == "__main__":
    main()
