"""SQLite: one process, one writer. INSERT into indexed staging tables, nested-loop joins,
RETURNING instead of data-modifying WITH, and this machine's clock (the only one there is)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Engine

from etl.store import seen
from etl.store.dialect.base import Clock, Dialect, Row, StoredDigests, expires, machine_now, text
from etl.store.meta import Timestamp
from etl.store.rows import Key, ListPart, ListState
from etl.store.schema import (
    MAX_FAILURES,
    OPEN_STATUSES,
    follow_edges,
    follow_lists,
    is_open,
    sync_checkpoints,
    sync_runs,
)
from etl.store.staging import STAGES, stage_edges
from etl.store.types import sqlite_sequence

_SQLITE = sqlite.dialect()
_REMOVED_EVENT = """INSERT INTO follow_edge_events
    (account, follow_type, to_account, event, observed_at, run_id)
VALUES (:account, :follow_type, :to_account, 'removed', :now, :run_id)"""
ck = sync_checkpoints.c


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Sqlite(Dialect):
    """SQLite (pysqlite)."""

    name = "sqlite"
    writers = 1  # one writer at a time anyway
    serves_workers = False  # the embedded file serves one process
    # SQLAlchemy's text form of a SQLite DateTime, so stored and staged values compare.
    time = "(datetime(s.follow_time, 'unixepoch') || '.000000')"
    differs = "IS NOT"
    tags = "s.tags"
    # SQLite always joins by nested loops, through the key indexes.
    stored_edge = """LEFT JOIN follow_edges e
  ON e.account = s.account AND e.follow_type = s.follow_type AND e.to_account = s.to_account"""
    listed = """follow_edges c
    JOIN stage_lists l ON l.account = c.account AND l.follow_type = c.follow_type
    WHERE NOT l.fresh AND c.removed_at IS NULL
      AND (c.changed_at IS NULL OR c.changed_at < l.crawl_started_at)"""
    seen_of_ending = seen.SEEN_OF_ENDING_SQLITE
    returned = "account, follow_type, to_account"  # SQLite refuses qualified names here
    json_rows = ("json_each(:{name}) AS x", "json_extract(x.value, '$[{i}]')")  # true: 1

    def __init__(self) -> None:
        super().__init__()
        # SQLite compares times as text: a staged start must be spelled as the stored ones are.
        self._time: Callable[[datetime], Any] = Timestamp.dialect_impl(_SQLITE).bind_processor(
            _SQLITE
        )  # type: ignore[assignment]

    def create_engine(self, url: URL, *, schema: str | None = None) -> Engine:
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _pragmas)
        return engine

    @contextmanager
    def migration_connection(self, engine: Engine) -> Iterator[sa.Connection]:
        """pysqlite, left to itself, opens a transaction only before DML, so each CREATE or
        ALTER would commit on its own. As in SQLAlchemy's pysqlite recipe ("Serializable
        isolation / Savepoints / Transactional DDL"), the driver is told to stay out
        (AUTOCOMMIT, i.e. isolation_level None) and the transaction is ours: BEGIN IMMEDIATE
        (the writer's lock from the start: a migration writes), COMMIT at the end."""
        with engine.connect() as plain:
            connection = plain.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                if connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
                    connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")

    def now(self, local: Clock = machine_now) -> sa.ColumnElement[datetime]:
        return sa.literal(local(), Timestamp)

    def expiry(self, seconds: float, local: Clock = machine_now) -> sa.ColumnElement[datetime]:
        return expires(seconds, local)

    def _made(self, conn: sa.Connection, table: sa.Table) -> None:
        key = ", ".join(table.info["key"])
        conn.execute(
            sa.text(
                f"CREATE UNIQUE INDEX IF NOT EXISTS temp.ix_{table.name} ON {table.name} ({key})"
            )
        )

    def _empty(self, conn: sa.Connection) -> None:
        # PostgreSQL empties them at each commit (ON COMMIT DELETE ROWS); SQLite does not.
        for table in STAGES:
            conn.execute(sa.delete(table))

    def bind_time(self, value: datetime) -> Any:
        return self._time(value)

    def staged_profile(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        return (row[0], sqlite_sequence(row[1]), *row[2:])

    def stage(self, conn: sa.Connection, table: sa.Table, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        columns = table.c.keys()
        names = ", ".join(columns)
        marks = ", ".join(f":{c}" for c in columns)
        conn.execute(
            sa.text(f"INSERT INTO {table.name} ({names}) VALUES ({marks})"),
            [dict(zip(columns, row, strict=True)) for row in rows],
        )

    def stage_edges(self, conn: sa.Connection, parts: Sequence[ListPart]) -> None:
        rows = [
            (p.account, p.follow_type, to, when, p.baseline, p.mode.keeps_seen, p.mode.fresh)
            for p in parts
            for to, when in p.edges.items()
        ]
        self.stage(conn, stage_edges, rows)

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)

    def insert_profiles(
        self, conn: sa.Connection, params: dict[str, Any]
    ) -> tuple[StoredDigests, int]:
        inserted = conn.execute(self.insert_new_profiles, params).rowcount
        return self.stored_conflicts(conn), inserted

    def mark_removed(
        self, conn: sa.Connection, *, where: str, source: str, params: dict[str, Any]
    ) -> int:
        # No data-modifying WITH: the events are inserted from the rows the UPDATE returns.
        gone = conn.execute(self.mark_statement(where, source), params).all()
        if gone:
            conn.execute(
                text(_REMOVED_EVENT),
                [{**params, "account": a, "follow_type": t, "to_account": to} for a, t, to in gone],
            )
        return len(gone)

    def remember_seen(self, conn: sa.Connection, run_id: int, keys: Sequence[Key]) -> None:
        seen.remember_each(conn, run_id, keys)

    def claim(
        self,
        conn: sa.Connection,
        run_id: int,
        owner: str,
        limit: int,
        failed_before: datetime,
        *,
        held: bool,
    ) -> list[ListState]:
        free = _free(run_id, owner, limit, failed_before, held=held, live=self.live_ids())
        states = [
            ListState(
                r.account,
                r.follow_type,
                r.cursor,
                int(r.seen),
                expected=r.expected_items,
                fresh=bool(r.fresh),  # a crawl under way; one at its start is decided below
                confirming=r.held_at is not None,
                started=r.crawl_started_at,
            )
            for r in conn.execute(_lease(run_id, owner, free, self.now())).all()
        ]
        if states:
            _baselines_and_fresh(conn, states)
        return states

    def hold(
        self, conn: sa.Connection, run_id: int, owner: str, wanted: Sequence[Key]
    ) -> set[Key] | None:
        status = conn.execute(sa.select(sync_runs.c.status).where(sync_runs.c.id == run_id))
        if status.scalar_one_or_none() != "running":
            return None
        rows = conn.execute(
            sa.select(ck.account, ck.follow_type)
            .where(
                ck.run_id == run_id,
                ck.lease_owner == owner,
                sa.tuple_(ck.account, ck.follow_type).in_(wanted),
            )
            .with_for_update()
        )
        return {(account, follow_type) for account, follow_type in rows}

    def advance(
        self, conn: sa.Connection, run_id: int, parts: Sequence[ListPart], now: datetime
    ) -> list[Row]:
        keys = [p.key for p in parts]
        before = list(
            conn.execute(
                sa.select(
                    ck.account, ck.follow_type, ck.status, ck.failures, ck.pages, ck["items"]
                ).where(ck.run_id == run_id, sa.tuple_(ck.account, ck.follow_type).in_(keys))
            )
        )
        for p in parts:
            values: dict[str, Any] = {
                "cursor": p.next_cursor,
                "status": "done" if p.mode.ends else "running",
                "pages": ck.pages + p.pages,
                "items": ck["items"] + len(p.edges),
                "last_error": None,
                "updated_at": now,
                "fresh": p.mode.fresh,
            }
            if p.mode.ends:
                values["lease_owner"] = None
            if p.mode.restarted:
                # The list began again from "": what was counted before no longer describes it.
                values.update(pages=p.pages, items=len(p.edges), restarts=ck.restarts + 1, seen=0)
                values["crawl_started_at"] = p.started or now  # what the crawl may now undo
            conn.execute(
                sa.update(sync_checkpoints)
                .where(
                    ck.run_id == run_id, ck.account == p.account, ck.follow_type == p.follow_type
                )
                .values(values)
            )
        return before


def _free(
    run_id: int,
    owner: str,
    limit: int,
    failed_before: datetime,
    *,
    held: bool,
    live: sa.Select[tuple[str]],
) -> sa.Select[Any]:
    """The free lists a claim picks: open, of a running run, leased by nobody ``live``
    (``owner`` never takes its own back), biggest first."""
    pick = (
        sa.and_(ck.status == "held", ck.failures < MAX_FAILURES)
        if held
        else sa.and_(ck.status != "held", is_open(failed_before))
    )
    return (
        sa.select(ck.account, ck.follow_type)
        .where(
            ck.run_id == run_id,
            sa.exists().where(sync_runs.c.id == run_id, sync_runs.c.status == "running"),
            sa.text(OPEN_STATUSES),
            pick,
            sa.or_(
                ck.lease_owner.is_(None),
                sa.and_(ck.lease_owner != owner, ck.lease_owner.not_in(live)),
            ),
        )
        .order_by(ck.expected_items.desc())
        .limit(limit)
    )


def _lease(
    run_id: int, owner: str, free: sa.Select[Any], now: sa.ColumnElement[datetime]
) -> sa.Update:
    """Lease the ``free`` lists; stamp the start of each crawl at its first page."""
    run_start = sa.select(sync_runs.c.started_at).where(sync_runs.c.id == run_id)
    return (
        sa.update(sync_checkpoints)
        .where(ck.run_id == run_id, sa.tuple_(ck.account, ck.follow_type).in_(free))
        .values(
            lease_owner=owner,
            crawl_started_at=sa.case(
                (ck.cursor == "", now),
                else_=sa.func.coalesce(ck.crawl_started_at, run_start.scalar_subquery()),
            ),
        )
        .returning(
            ck.account,
            ck.follow_type,
            ck.cursor,
            ck.seen,
            ck.expected_items,
            ck.fresh,
            # the column, not "held_at IS NOT NULL": SQLite 3.40's RETURNING answers 1 for it
            ck.held_at,
            ck.crawl_started_at,
        )
    )


def _baselines_and_fresh(conn: sa.Connection, states: list[ListState]) -> None:
    """Say which claimed lists have a baseline, and which starting ones are fresh (no current
    edge stored)."""
    f, fe = follow_lists.c, follow_edges.c
    keys = [s.key for s in states]
    known = {
        (row.account, row.follow_type)
        for row in conn.execute(
            sa.select(f.account, f.follow_type).where(sa.tuple_(f.account, f.follow_type).in_(keys))
        )
    }
    starting = [s.key for s in states if s.cursor == ""]
    stored = (
        {
            (row.account, row.follow_type)
            for row in conn.execute(
                sa.select(fe.account, fe.follow_type)
                .distinct()
                .where(sa.tuple_(fe.account, fe.follow_type).in_(starting), fe.removed_at.is_(None))
            )
        }
        if starting
        else set()
    )
    for state in states:
        state.baseline = state.key in known
        if state.cursor == "":
            state.fresh = state.key not in stored
