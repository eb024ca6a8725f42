"""Loader.prepare's staging tables are known per DBAPI connection, in that connection's own
info dict: a reconnect (or a rolled-back creation) makes them anew, never trusts stale state."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from etl.store.load import Loader
from etl.store.rows import ListPart, Mode
from tests.conftest import stored_lists

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def staged(conn: sa.Connection) -> bool:
    """True if this connection's staging table exists (a query, not the Loader's belief)."""
    if conn.dialect.name == "postgresql":
        query = "SELECT to_regclass('pg_temp.stage_edges') IS NOT NULL"
    else:
        query = "SELECT count(*) > 0 FROM sqlite_temp_master WHERE name = 'stage_edges'"
    found = bool(conn.execute(sa.text(query)).scalar_one())
    conn.commit()
    return found


def a_run(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sync_runs (id, job, status, started_at, options) "
                "VALUES (1, 'j', 'running', CURRENT_TIMESTAMP, '{}')"
            )
        )


def test_a_new_connection_after_invalidation_gets_its_tables_again(engine: sa.Engine) -> None:
    """After the writer's connection is invalidated, the next connection knows of no staging
    tables and the Loader creates them there, so a batch still lands."""
    a_run(engine)
    loader = Loader(engine.dialect.name)
    conn = engine.connect()
    with conn.begin():
        loader.prepare(conn)
    assert staged(conn)
    assert conn.connection.info  # the mark lives on the DBAPI connection
    conn.invalidate()
    conn.close()
    with engine.connect() as fresh:
        assert not fresh.connection.info, "stale staging state on a new connection"
        assert not staged(fresh)
        part = ListPart("a", 1, edges={"b": 1_700_000_000}, pages=1, mode=Mode.FIRST_END)
        with fresh.begin():
            loader.write(fresh, 1, [part], [], NOW)
        assert staged(fresh)
    assert stored_lists(engine) == {("a", 1): {"b": 1_700_000_000}}


def test_a_rolled_back_creation_is_forgotten(engine: sa.Engine) -> None:
    """Tables created in a transaction that rolls back are gone (PostgreSQL; pysqlite commits
    the CREATE at once): the next prepare on the same connection creates them again instead of
    trusting a mark, and a batch lands."""
    a_run(engine)
    loader = Loader(engine.dialect.name)
    with engine.connect() as conn:
        conn.begin()
        loader.prepare(conn)
        conn.rollback()
        assert not conn.connection.info, "a rolled-back creation is still believed"
        assert staged(conn) is (conn.dialect.name == "sqlite")
        part = ListPart("a", 1, edges={"b": 1_700_000_000}, pages=1, mode=Mode.FIRST_END)
        with conn.begin():
            loader.write(conn, 1, [part], [], NOW)
    assert stored_lists(engine) == {("a", 1): {"b": 1_700_000_000}}


def test_a_fresh_list_whose_edges_are_already_stored_is_upserted(engine: sa.Engine) -> None:
    """A fresh list's edges go in by a plain INSERT; when one is already stored (removed
    earlier, or another run's crawl stored it since this crawl began) the batch still lands:
    the upsert revives and re-times what it must, and the batch's other rows are there once."""
    a_run(engine)
    loader = Loader(engine.dialect.name)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO follow_edges (account, follow_type, to_account, follow_time, "
                "first_seen_at, removed_at) VALUES ('a', 1, 'b', :t, :t, :t)"
            ),
            {"t": NOW},
        )
    edges: dict[str, int | None] = {"b": 1_700_000_000, "c": 1_700_000_001}
    part = ListPart("a", 1, edges=edges, pages=1, mode=Mode.FRESH_END)
    with engine.begin() as conn:
        loader.write(conn, 1, [part], [], NOW)
    assert stored_lists(engine) == {("a", 1): edges}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM follow_edges")).scalar_one()
    assert rows == 2
