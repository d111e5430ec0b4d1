"""Alembic environment: migrations run against the URL the node is configured with."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import create_engine

from db.models import Base
from db.types import UTCDateTime

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None  # db.session.alembic_config always sets it


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """New migrations spell the UTC column type as the schema type it is, so they never import db.types."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


engine = create_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
