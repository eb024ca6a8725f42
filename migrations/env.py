"""Alembic environment: the URL comes from etl.config, the target schema from etl.store.schema."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from etl.config import load_settings
from etl.store import schema  # noqa: F401  (its import puts every table in metadata)
from etl.store.db import create_schema, make_engine, migration_connection
from etl.store.meta import metadata

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=load_settings().database_url,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run against the connection handed in by etl.store.db, or one made from DATABASE_URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    settings = load_settings()
    engine = make_engine(settings.database_url, schema=settings.schema)
    if settings.schema is not None:
        create_schema(engine, settings.schema)
    with migration_connection(engine) as fresh:  # one transaction, on SQLite too
        _configure(fresh)
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
