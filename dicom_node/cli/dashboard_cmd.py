"""`psma-node dashboard hash-password`: the password hash to put into dashboard.users in the config."""

from __future__ import annotations

import sys

import click

from dicom_node.web.auth import DEFAULT_ITERATIONS, hash_password

MIN_LENGTH = 8


@click.group("dashboard")
def dashboard_group() -> None:
    """Web dashboard administration."""


@dashboard_group.command("hash-password")
@click.option(
    "--iterations",
    type=click.IntRange(min=100_000),
    default=DEFAULT_ITERATIONS,
    show_default=True,
    help="PBKDF2-SHA256 rounds.",
)
def hash_password_command(iterations: int) -> None:
    """Prompt for a password (or read one line from standard input) and print its pbkdf2_sha256 hash."""
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_LENGTH:
        click.echo(f"error: the password must have at least {MIN_LENGTH} characters", err=True)
        sys.exit(1)
    click.echo(hash_password(password, iterations=iterations))
