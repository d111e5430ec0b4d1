"""Every command of `psma-node` has help text, and --version works."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from dicom_node import __version__
from dicom_node.cli.main import cli


def _subcommand(group: click.Group, name: str) -> click.Command:
    """Through get_command: the top-level group imports its commands only when asked for them."""
    command = group.get_command(click.Context(group), name)
    assert command is not None, name
    return command


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name in group.list_commands(click.Context(group)):
        command = _subcommand(group, name)
        if isinstance(command, click.Group):
            found += _commands(command, prefix + (name,))
        else:
            found.append(prefix + (name,))
    return found


@pytest.mark.parametrize("path", _commands(cli), ids=lambda p: " ".join(p) or "psma-node")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = _subcommand(command, name)
    assert (command.help or command.short_help or "").strip(), f"{' '.join(path)} has no help text"


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output
