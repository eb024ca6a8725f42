"""Engines and migrations: how follow-etl opens a database and brings its schema to head."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from etl.errors import DatabaseError, Stopped
from etl.store.dialect import dialect_of, for_name
from etl.store.dialect.postgres_session import READ_ONLY_TRANSACTION
from etl.store.schema import SCHEMA_REVISION

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used: it pulls in mako and pygments, a second of start-up
# that `sync` and `status` do not need.

log = logging.getLogger(__name__)
T = TypeVar("T")

# The Alembic scripts: etl/_migrations inside an installed wheel, which is the top-level
# migrations/ of a checkout mapped in by pyproject.toml (the checkout, an editable install and
# the `alembic` command use that one directly).
_PACKAGE = Path(__file__).resolve().parent.parent  # etl/
INSTALLED_MIGRATIONS = _PACKAGE / "_migrations"
CHECKOUT_MIGRATIONS = _PACKAGE.parent / "migrations"
RECONNECT_SECONDS = 180.0  # how long a run waits for a lost database (DATABASE_RETRY_SECONDS)


def make_engine(url: URL, *, schema: str | None = None) -> Engine:
    """An engine tuned for this job: WAL and a busy timeout on SQLite; on PostgreSQL, the
    timeouts of its session and connection, and with ``schema`` a search_path of that schema
    alone, so every table, view and alembic_version of this app lives there (etl.store.dialect
    says how)."""
    return for_name(url.get_backend_name()).create_engine(url, schema=schema)


def create_schema(engine: Engine, schema: str) -> bool:
    """Create ``schema`` if it is missing (``migrate`` does); True if it was created."""
    with engine.begin() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": schema}
        ).first()
        if exists is None:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    return exists is None


# SQLSTATE classes and codes worth a reconnect and a retry: the connection or the server went
# away (08, 57P01-57P03), the server is read-only for now (25006: a standby, or a failover in
# progress), or the statement lost a race it may win next time (40001, 40P01, 55P03 lock
# timeout).
_TRANSIENT_STATES = (
    "08",
    READ_ONLY_TRANSACTION,
    "40001",
    "40P01",
    "55P03",
    "57P01",
    "57P02",
    "57P03",
)


def is_transient(exc: BaseException) -> bool:
    """True for a database error that reconnecting and retrying may cure, whichever layer
    raised it (SQLAlchemy, or psycopg itself, as COPY on the raw cursor does)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, psycopg.Error):
        state = orig.sqlstate or ""
        if state.startswith(_TRANSIENT_STATES):
            return True
        # No SQLSTATE: the client side noticed the connection died.
        return not state and isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
    if isinstance(orig, sqlite3.OperationalError):
        return "locked" in str(orig) or "busy" in str(orig)
    return isinstance(exc, sa.exc.DisconnectionError)


def is_database_error(exc: BaseException) -> bool:
    """True for any error a database layer raised."""
    return isinstance(exc, sa.exc.SQLAlchemyError | psycopg.Error | sqlite3.Error)


def first_line(exc: BaseException) -> str:
    """The driver's first line of an error, never the SQL or its parameters."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def as_database_error(exc: BaseException) -> DatabaseError:
    """Any database layer's error as one line: exit 5."""
    return DatabaseError(f"database error: {first_line(exc)}")


def retrying(
    engine: Engine,
    work: Callable[[sa.Connection], T],
    *,
    what: str,
    stop: threading.Event | None = None,
    seconds: float = RECONNECT_SECONDS,
) -> T:
    """Run ``work`` in one transaction; on a transient error, reconnect with backoff and run
    it again, for up to ``seconds``. A stop request cuts the wait short (Stopped)."""
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            with engine.begin() as conn:
                result = work(conn)
            if attempt:
                log.info("%s: reconnected to the database", what)
            return result
        except Exception as exc:  # noqa: BLE001 - wait_to_retry re-raises all but transient errors
            attempt += 1
            wait_to_retry(exc, attempt, deadline, what=what, stop=stop, seconds=seconds)


def wait_to_retry(
    exc: Exception,
    attempt: int,
    deadline: float,
    *,
    what: str,
    stop: threading.Event | None,
    seconds: float,
) -> None:
    """Sleep before retry ``attempt`` of what ``exc`` interrupted; re-raise ``exc`` unless it is
    transient, DatabaseError once ``deadline`` has passed, Stopped if ``stop`` is set first."""
    if not is_transient(exc):
        raise exc
    if time.monotonic() >= deadline:
        raise DatabaseError(
            f"database error: {what}: gave up after {seconds:.0f} s without the database "
            f"({first_line(exc)})"
        ) from None
    delay = reconnect_delay(attempt, deadline)
    log.warning(
        "%s: the database connection failed (%s); reconnecting in %.1f s",
        what,
        first_line(exc),
        delay,
    )
    if stop is None:
        time.sleep(delay)
    elif stop.wait(delay):
        raise Stopped(what) from None


def reconnect_delay(attempt: int, deadline: float) -> float:
    """Jittered exponential backoff from 0.25 s to 5 s, never past ``deadline``."""
    ceiling = min(5.0, 0.25 * 2.0 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    return float(max(0.0, min(delay, deadline - time.monotonic())))


def describe(url: URL) -> str:
    """The URL as it may be shown to a person: never with its password."""
    return url.render_as_string(hide_password=True)


def migrations_dir() -> Path:
    """The directory of the Alembic scripts, installed or in the checkout; DatabaseError if
    neither has them."""
    for location in (INSTALLED_MIGRATIONS, CHECKOUT_MIGRATIONS):
        if (location / "env.py").is_file():
            return location
    raise DatabaseError(
        f"migrations not found in {INSTALLED_MIGRATIONS} or {CHECKOUT_MIGRATIONS}: "
        "reinstall follow-etl (its wheel ships them)"
    )


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config for the project's migrations, bound to ``connection`` if given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def migration_connection(engine: Engine) -> AbstractContextManager[sa.Connection]:
    """A connection whose one transaction holds a whole migration, DDL included, so a failure
    or a kill part-way leaves the schema at the revision it started from (etl.store.dialect
    says how on each backend)."""
    return dialect_of(engine).migration_connection(engine)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest), in one transaction."""
    from alembic import command

    with migration_connection(engine) as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (``base`` drops everything), in one transaction."""
    from alembic import command

    with migration_connection(engine) as connection:
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
