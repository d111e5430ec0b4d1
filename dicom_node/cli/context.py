"""What every command receives: the validated settings, loaded once from --config and the environment."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from dicom_node.config import ConfigError, Settings, load_settings

CONFIG_ERROR_EXIT = 2


@dataclass
class CliContext:
    config_path: Path | None

    def settings(self) -> Settings:
        """Load and validate; a bad configuration ends the command with exit status 2 and one message."""
        try:
            return load_settings(self.config_path)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(CONFIG_ERROR_EXIT)


pass_cli = click.make_pass_decorator(CliContext)
