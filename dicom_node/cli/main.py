"""Entry point of `psma-node`.

Each command's module is imported only when that command runs (or its help is shown): `--version`,
`config check` and the listing commands answer without loading torch, MONAI, pydicom or the synthesiser.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from dicom_node import __version__
from dicom_node.cli.context import CliContext

# command name -> "module:attribute" of its click command
COMMANDS: dict[str, str] = {
    "analyze": "dicom_node.cli.analyze_cmd:analyze_command",
    "audit": "dicom_node.cli.audit_cmd:audit_group",
    "clinical": "dicom_node.cli.clinical_cmd:clinical_group",
    "config": "dicom_node.cli.config_cmd:config_group",
    "dashboard": "dicom_node.cli.dashboard_cmd:dashboard_group",
    "db": "dicom_node.cli.db_cmd:db_group",
    "doctor": "dicom_node.cli.doctor_cmd:doctor_command",
    "evaluate": "dicom_node.cli.evaluate_cmd:evaluate_command",
    "models": "dicom_node.cli.models_cmd:models_group",
    "monitoring": "dicom_node.cli.monitoring_cmd:monitoring_group",
    "outbox": "dicom_node.cli.outbox_cmd:outbox_group",
    "outcomes": "dicom_node.cli.outcomes_cmd:outcomes_group",
    "retention": "dicom_node.cli.retention_cmd:retention_group",
    "serve": "dicom_node.cli.serve_cmd:serve_command",
    "studies": "dicom_node.cli.studies_cmd:studies_group",
    "synth": "dicom_node.cli.synth_cmd:synth_command",
    "worker": "dicom_node.cli.worker_cmd:worker_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported by name on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name, _, attribute = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise RuntimeError(f"{COMMANDS[cmd_name]} is not the click command {cmd_name!r}")
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    cli(prog_name="psma-node")


if __name__ == "__main__":
    main()
