"""Engines and migrations: how follow-etl opens a database and brings its schema to head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from etl.errors import DatabaseError
from etl.schema import SCHEMA_REVISION

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used: it pulls in mako and pygments, a second of start-up
# that `sync` and `status` do not need.

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: URL) -> Engine:
    """An engine tuned for this job: WAL and a busy timeout on SQLite, timeouts on Postgres."""
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10, "application_name": "follow-etl"},
    )


def describe(url: URL) -> str:
    """The URL as it may be shown to a person: never with its password."""
    return url.render_as_string(hide_password=True)


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config for the project's migrations, bound to ``connection`` if given."""
    from alembic.config import Config

    if not (MIGRATIONS / "env.py").is_file():
        raise DatabaseError(f"migrations not found at {MIGRATIONS}: install follow-etl from source")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest)."""
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (``base`` drops everything)."""
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


def head_revision() -> str | None:
    """The newest migration's revision id, as Alembic sees it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        value = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        return str(value) if value is not None else None


def require_schema(engine: Engine) -> None:
    """Raise DatabaseError unless the database is at the revision this code was written for."""
    current = current_revision(engine)
    if current != SCHEMA_REVISION:
        state = f"at revision {current}" if current else "not migrated"
        raise DatabaseError(
            f"the database is {state}, this follow-etl needs {SCHEMA_REVISION}: "
            "run `follow-etl migrate`"
        )
