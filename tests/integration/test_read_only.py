"""25006 (read_only_sql_transaction: a PostgreSQL standby, or a failover in progress) is a
wait like a lost connection, not exit 5: the work reconnects until the server takes writes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.results import SyncRequest
from etl.sandbox import Graph, SandboxServer
from etl.store import db
from etl.sync import sync
from tests.conftest import api_settings, make_client, nonempty, stored_lists

pytestmark = pytest.mark.postgres
Start = Callable[..., SandboxServer]


@pytest.fixture
def read_only(pg_server: sa.Engine, pg_url: URL) -> Iterator[Callable[[bool], None]]:
    """``read_only(True)`` makes the test database's new sessions read-only and ends its open
    ones (what a failover does to clients); ``read_only(False)`` undoes it."""

    def switch(on: bool) -> None:
        with pg_server.connect() as conn:
            conn.execute(
                sa.text(
                    f'ALTER DATABASE "{pg_url.database}" SET default_transaction_read_only = '
                    + ("on" if on else "off")
                )
            )
            if on:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": pg_url.database},
                )

    yield switch
    switch(False)


def test_read_only_transaction_is_transient(pg_engine: sa.Engine) -> None:
    """A write in a read-only transaction raises 25006, which is_transient calls transient."""
    with pg_engine.connect() as conn:
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text("CREATE TABLE nope (x int)"))
        conn.rollback()
    assert caught.value.connection_invalidated  # the pool drops the read-only session
    assert isinstance(caught.value.orig, psycopg.Error)
    assert caught.value.orig.sqlstate == "25006"
    assert db.is_transient(caught.value)
    assert db.is_transient(psycopg.errors.ReadOnlySqlTransaction("read-only"))
    assert not db.is_transient(psycopg.errors.InsufficientPrivilege("denied"))


def test_a_retried_write_waits_for_the_server_to_take_writes(
    pg_engine: sa.Engine, read_only: Callable[[bool], None], caplog: pytest.LogCaptureFixture
) -> None:
    """A write retried by db.retrying while the database is read-only waits, then lands once
    when writes are back: the pooled read-only session is replaced, not reused forever."""
    with pg_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE landed (x int)"))
        conn.execute(sa.text("SELECT 1"))  # a pooled session, read-write until the switch
    read_only(True)
    failed = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "reconnecting" in record.getMessage():
                failed.set()

    seen = Seen()
    logging.getLogger("etl.store.db").addHandler(seen)
    done: list[object] = []

    def write() -> None:
        done.append(
            db.retrying(
                pg_engine,
                lambda conn: conn.execute(sa.text("INSERT INTO landed VALUES (1)")).rowcount,
                what="test write",
                seconds=30,
            )
        )

    writer = threading.Thread(target=write)
    try:
        with caplog.at_level(logging.WARNING, logger="etl.store.db"):
            writer.start()
            assert failed.wait(10), "the write never met the read-only database"
            read_only(False)
            writer.join(30)
    finally:
        logging.getLogger("etl.store.db").removeHandler(seen)
    assert done == [1]
    assert "cannot execute INSERT in a read-only transaction" in caplog.text
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM landed")).scalar_one() == 1


def test_a_sync_through_a_read_only_spell_stores_everything(
    pg_engine: sa.Engine, read_only: Callable[[bool], None], running_sandbox: Start
) -> None:
    """A sync whose database turns read-only mid-crawl (sessions ended, new ones read-only)
    waits, and once writes are back finishes with every list exact."""
    graph = Graph(users=40, seed=25006)
    server = running_sandbox(graph, latency_ms=5)
    switched = threading.Event()

    def on_progress(progress: object) -> None:
        if not switched.is_set():
            switched.set()
            read_only(True)
            threading.Timer(2.0, read_only, args=(False,)).start()

    request = SyncRequest(job="ro", accounts=graph.accounts, page_size=5, db_seconds=60)
    with make_client(api_settings(server, rate=200)) as client:
        report = sync(pg_engine, client, request, on_progress=on_progress)
    assert switched.is_set()
    assert report.finished
    assert stored_lists(pg_engine) == nonempty(graph.truth(graph.accounts, (1, 2, 3)))
