"""A migration is one transaction on both databases: a failure or a SIGKILL part-way leaves the
schema at the revision it started from, with no half-built table, and the next migrate ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.config import database_url
from etl.store import db
from tests.integration.test_migrations import TABLES, VIEWS, names

TRIGGER = "CREATE TABLE follow_lists"  # a statement half-way through migration 0002


class Midway(Exception):
    """Raised by the test in the middle of a migration."""


@pytest.fixture
def at_0001(db_url: URL) -> Iterator[sa.Engine]:
    """An engine on a database migrated to revision 0001 only."""
    engine = db.make_engine(db_url)
    db.upgrade(engine, "0001")
    yield engine
    engine.dispose()


def schema_of(engine: sa.Engine) -> tuple[str | None, set[str], set[str]]:
    """The revision, the tables and the views of the database."""
    tables, views = names(engine)
    return db.current_revision(engine), tables, views


def test_a_migration_that_fails_midway_leaves_the_previous_revision(
    at_0001: sa.Engine,
) -> None:
    """A statement that fails after 0002 created a table rolls the whole upgrade back: the
    database is at 0001 with 0001's tables, and a second migrate reaches head."""
    before = schema_of(at_0001)

    def fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith(TRIGGER):
            raise Midway(statement[:40])

    sa.event.listen(at_0001, "after_cursor_execute", fail)
    try:
        with pytest.raises(Midway):
            db.upgrade(at_0001)
    finally:
        sa.event.remove(at_0001, "after_cursor_execute", fail)
    assert schema_of(at_0001) == before
    assert before[0] == "0001"
    db.upgrade(at_0001)
    assert schema_of(at_0001) == (db.head_revision(), TABLES, VIEWS)


KILLABLE = """
import sys, time
import sqlalchemy as sa
from etl.cli import main

def stall(conn, cursor, statement, *args):
    if statement.lstrip().startswith({trigger!r}):
        print("midway", flush=True)
        time.sleep(60)

sa.event.listen(sa.engine.Engine, "after_cursor_execute", stall)
sys.exit(main(["migrate"]))
"""


def test_a_migrate_killed_midway_on_sqlite_leaves_the_previous_revision(tmp_path: Path) -> None:
    """SIGKILL while `migrate` is inside migration 0002 on SQLite (one table of it created):
    the file is at 0001 with 0001's tables, and the next `migrate` reaches head."""
    url = database_url(f"sqlite:///{tmp_path / 'follow.db'}")
    engine = db.make_engine(url)
    try:
        db.upgrade(engine, "0001")
        before = schema_of(engine)
        env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
        script = textwrap.dedent(KILLABLE).format(trigger=TRIGGER)
        proc = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "midway"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        engine.dispose()
        assert schema_of(engine) == before
        assert before[0] == "0001"
        done = subprocess.run(
            [sys.executable, "-m", "etl", "migrate"], env=env, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert schema_of(engine) == (db.head_revision(), TABLES, VIEWS)
    finally:
        engine.dispose()
