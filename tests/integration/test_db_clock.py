"""The database's clock as the crawl sees it: ``etl.workers.db_now`` (inside a statement) and
``etl.workers.DbClock`` (this machine's clock plus a measured offset, for data rows), on SQLite
and PostgreSQL.

Both must tell one time: rows stamped with DbClock are compared with heartbeats and expiries
computed by db_now. On PostgreSQL that is the server's clock, even when this machine's is off;
on SQLite it is this machine's, the only one there is. Tolerances are seconds: CI is busy.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl.config import database_url
from etl.store import db
from etl.store.workers import DbClock, db_now

SLACK = timedelta(seconds=5)
SKEW = timedelta(hours=1)


def aware(value: datetime) -> datetime:
    """A stored or selected timestamp as an aware UTC datetime (SQLite gives naive UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def server_now(conn: sa.Connection) -> datetime:
    """The database's own idea of now, asked without etl code: clock_timestamp() on
    PostgreSQL; on SQLite, CURRENT_TIMESTAMP (whole seconds, UTC)."""
    if conn.dialect.name == "postgresql":
        value: datetime = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    else:
        value = conn.execute(sa.select(sa.func.current_timestamp())).scalar_one()
    return aware(value)


def selected_db_now(conn: sa.Connection, local: Skewed | None = None) -> datetime:
    """What ``db_now`` evaluates to in a statement (``local``: this machine's clock)."""
    now = db_now(conn) if local is None else db_now(conn, local=local)
    return aware(conn.execute(sa.select(now)).scalar_one())


class Skewed:
    """This machine's clock, off by ``skew``: handed to etl.store.workers as its local clock."""

    def __init__(self) -> None:
        self.skew = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.skew


@pytest.fixture
def local_clock() -> Skewed:
    """A machine clock the test can step (the database's is untouched)."""
    return Skewed()


def measured(engine: sa.Engine) -> DbClock:
    """A DbClock measured on one of ``engine``'s connections, as sync makes it."""
    with engine.connect() as conn:
        return DbClock(conn)


def test_db_clock_gives_aware_utc(engine: sa.Engine) -> None:
    for clock in (DbClock(), measured(engine)):
        value = clock()
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)


def test_db_clock_tracks_the_database_clock(engine: sa.Engine) -> None:
    """DbClock() lies between two readings of the database's own clock (within seconds)."""
    with engine.connect() as conn:
        clock = DbClock(conn)
        before = server_now(conn)
        value = clock()
        after = server_now(conn)
    assert before - SLACK <= value <= after + SLACK


def test_db_clock_agrees_with_db_now(engine: sa.Engine) -> None:
    """The two clocks of etl.workers tell one time: a data row stamped by DbClock and a
    heartbeat stamped by db_now in the same instant differ by no more than seconds."""
    with engine.connect() as conn:
        clock = DbClock(conn)
        stamped = selected_db_now(conn)
        value = clock()
    assert abs(value - stamped) <= SLACK


def test_db_clock_never_goes_back(engine: sa.Engine) -> None:
    clock = measured(engine)
    values = [clock() for _ in range(2000)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(values))
    assert values[-1] > values[0]  # and it moves


def test_on_postgresql_db_clock_follows_the_server_not_this_machine(
    pg_engine: sa.Engine, local_clock: Skewed
) -> None:
    """With this machine's clock an hour slow, a DbClock measured on a connection still tells
    the server's time (its offset is about an hour), and db_now (inside the statement) never
    reads this machine's clock at all."""
    local_clock.skew = -SKEW
    with pg_engine.connect() as conn:
        clock = DbClock(conn, local=local_clock)
        assert abs(clock.offset - SKEW) <= SLACK
        truth = server_now(conn)
        assert abs(clock() - truth) <= SLACK
        assert abs(selected_db_now(conn, local_clock) - truth) <= SLACK


def test_on_postgresql_an_unmeasured_clock_is_this_machines_until_measured(
    pg_engine: sa.Engine, local_clock: Skewed
) -> None:
    """DbClock() without a connection has no offset: it tells this machine's (here an hour
    slow) time, until ``measure`` brings it to the server's."""
    local_clock.skew = -SKEW
    clock = DbClock(local=local_clock)
    assert clock.offset == timedelta(0)
    with pg_engine.connect() as conn:
        assert abs(server_now(conn) - clock() - SKEW) <= SLACK
        clock.measure(conn)
        assert abs(clock.offset - SKEW) <= SLACK
        assert abs(clock() - server_now(conn)) <= SLACK


def test_on_postgresql_measure_follows_a_clock_that_stepped(
    pg_engine: sa.Engine, local_clock: Skewed
) -> None:
    """The offset is measured once and then applied: after this machine's clock steps, DbClock
    is off by the step until ``measure`` is called again, and right after it."""
    with pg_engine.connect() as conn:
        clock = DbClock(conn, local=local_clock)
        assert abs(clock.offset) <= SLACK  # server and tests on one machine
        local_clock.skew = timedelta(minutes=30)
        stale = clock() - server_now(conn)
        assert abs(stale - timedelta(minutes=30)) <= SLACK  # not re-measured on its own
        clock.measure(conn)
        assert abs(clock.offset + timedelta(minutes=30)) <= SLACK
        assert abs(clock() - server_now(conn)) <= SLACK
        local_clock.skew = -SKEW  # and back past where it started
        clock.measure(conn)
        assert abs(clock.offset - SKEW) <= SLACK
        assert abs(clock() - server_now(conn)) <= SLACK


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A migrated SQLite engine (the SQLite half of ``engine``)."""
    engine = db.make_engine(database_url(f"sqlite:///{tmp_path / 'clock.db'}"))
    db.upgrade(engine)
    yield engine
    engine.dispose()


def test_on_sqlite_this_machine_is_the_clock(sqlite_engine: sa.Engine, local_clock: Skewed) -> None:
    """SQLite has no server: DbClock has no offset and measure leaves it so, and both clocks
    follow this machine's, wherever it stands."""
    engine = sqlite_engine
    local_clock.skew = -SKEW
    with engine.connect() as conn:
        clock = DbClock(conn, local=local_clock)
        assert clock.offset == timedelta(0)
        clock.measure(conn)
        assert clock.offset == timedelta(0)
        expected = datetime.now(UTC) - SKEW
        assert abs(clock() - expected) <= SLACK
        assert abs(selected_db_now(conn, local_clock) - expected) <= SLACK


def test_db_now_is_the_time_of_the_statement(engine: sa.Engine) -> None:
    """Inside one transaction, each statement gets its own now (statement_timestamp, not the
    transaction's start as now() would give): a long writer transaction's later heartbeat or
    expiry check is not judged by the time the transaction began."""
    with engine.begin() as conn:
        first = selected_db_now(conn)
        time.sleep(0.3)
        second = selected_db_now(conn)
    assert second - first >= timedelta(seconds=0.25)
    assert second - first <= SLACK
