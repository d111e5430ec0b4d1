"""`psma-node db upgrade|current`: the schema migrations."""

from __future__ import annotations

import click

from db.audit import os_user, record
from db.session import (
    current_revision,
    head_revision,
    make_engine,
    make_session_factory,
    transaction,
    upgrade,
)
from dicom_node.cli.context import CliContext, pass_cli


@click.group("db")
def db_group() -> None:
    """Database schema migrations."""


@db_group.command("upgrade")
@pass_cli
def upgrade_command(ctx: CliContext) -> None:
    """Apply all pending migrations."""
    url = ctx.settings().database.url.get_secret_value()
    engine = make_engine(url)
    before = current_revision(engine)
    upgrade(url)
    after = current_revision(engine)
    if after != before:
        with transaction(make_session_factory(engine)) as session:
            record(session, "admin", "schema-upgraded", actor=os_user(), from_revision=before,
                   to_revision=after)
    engine.dispose()
    click.echo(f"database at revision {after}")


@db_group.command("current")
@pass_cli
def current_command(ctx: CliContext) -> None:
    """Show the database's schema revision and the one this software needs."""
    url = ctx.settings().database.url.get_secret_value()
    current = current_revision(make_engine(url))
    head = head_revision()
    state = "up to date" if current == head else "needs `psma-node db upgrade`"
    click.echo(f"current: {current or 'empty'}  head: {head}  ({state})")
