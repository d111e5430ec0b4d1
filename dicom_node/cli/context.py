"""What every command receives: the validated settings, loaded once from --config and the environment, and
the configured database (an engine for the quick listings, sessions for everything else).

The configuration and database modules are imported when a command first asks for them, so that
`psma-node --version` and `--help` load neither pydantic nor SQLAlchemy, and the ORM only with `sessions`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from dicom_node.config import Settings

CONFIG_ERROR_EXIT = 2


@dataclass
class CliContext:
    config_path: Path | None

    def settings(self) -> Settings:
        """Load and validate; a bad configuration ends the command with exit status 2 and one message."""
        from dicom_node.config import ConfigError, load_settings

        try:
            return load_settings(self.config_path)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(CONFIG_ERROR_EXIT)

    def engine(self, settings: Settings | None = None, *, may_upgrade: bool = False) -> Engine:
        """The configured database once its schema is current (SQLAlchemy Core: no ORM loaded).

        An older schema ends the command with exit status 2 and the command that fixes it; commands that
        may change the schema (workers, registrations) upgrade it when `database.auto_upgrade` says so.
        """
        from db.session import SchemaOutOfDate, ensure_schema, make_engine

        settings = settings or self.settings()
        url = settings.database.url.get_secret_value()
        engine = make_engine(url)
        try:
            ensure_schema(engine, url, may_upgrade and settings.database.auto_upgrade)
        except SchemaOutOfDate as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(CONFIG_ERROR_EXIT)
        return engine

    def sessions(self, settings: Settings | None = None, *, may_upgrade: bool = False) -> sessionmaker[Session]:
        """ORM sessions on `engine()`, with its schema gate."""
        from db.session import make_session_factory

        return make_session_factory(self.engine(settings, may_upgrade=may_upgrade))


pass_cli = click.make_pass_decorator(CliContext)
