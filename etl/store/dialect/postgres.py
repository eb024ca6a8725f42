"""PostgreSQL: COPY into the staging tables, LATERAL lookups, data-modifying WITH, and the
server's clock inside every liveness statement."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Engine

from etl.store import seen
from etl.store.dialect.base import (
    PROFILE_COLUMNS,
    Clock,
    Dialect,
    Row,
    StoredDigests,
    machine_now,
    text,
)
from etl.store.dialect.postgres_checkpoints import (
    ADVANCE,
    CLAIMS,
    HOLD,
    LEASED,
    RUN_OPEN,
    advance_params,
    leased_keys,
)
from etl.store.dialect.postgres_session import PG_CONNECT, read_only_is_a_disconnect
from etl.store.meta import Timestamp
from etl.store.rows import Key, ListPart, ListState
from etl.store.staging import STAGE_EDGE_COLUMNS
from etl.store.types import ProfileSequence

# Events recorded in the removal statement itself.
_MARK_WITH_EVENTS = """WITH gone AS ({mark}), recorded AS (
    INSERT INTO follow_edge_events (account, follow_type, to_account, event, observed_at, run_id)
    SELECT account, follow_type, to_account, 'removed', :now, :run_id FROM gone
    RETURNING 1
)
SELECT count(*) FROM recorded"""

# The insert and the conflict check in one statement, one lookup of each staged version in
# profile_snapshots (LATERAL ... LIMIT 1: a hash join read the whole table per batch while its
# statistics lagged, 216 ms a batch at 150,000 versions). The last row (user_id NULL) counts the
# versions inserted and those it meant to insert: fewer says a concurrent writer stored some of
# them meanwhile (ON CONFLICT skipped them), and this statement cannot see those rows;
# the shared conflicts statement can. (Counts, not an anti-join with "inserted": its estimate
# was high enough to JIT-compile.)
_INSERT_PROFILES = """
WITH s AS (
    SELECT s.*, p.content_digest AS stored_digest, p.user_id IS NOT NULL AS found,
           p.user_id IS NOT NULL AND {differs} AS differs
    FROM stage_profiles s
    LEFT JOIN LATERAL (
        SELECT q.user_id, q.content_digest FROM profile_snapshots q
        WHERE q.user_id = s.user_id AND q.profile_sequence = s.profile_sequence
        LIMIT 1) p ON true
), inserted AS (
    INSERT INTO profile_snapshots ({columns}, first_seen_at, run_id)
    SELECT {staged}, :now, :run_id FROM s WHERE NOT s.found
    ORDER BY s.user_id, s.profile_sequence
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT s.user_id, s.profile_sequence, s.stored_digest,
       NULL::bigint AS inserted, NULL::bigint AS wanted
FROM s WHERE s.differs
UNION ALL
SELECT NULL, NULL, NULL, (SELECT count(*) FROM inserted), (SELECT count(*) FROM s WHERE NOT s.found)
"""

# A staged list's follow_lists row, by its key (lists without one left out): never a hash join
# reading all of follow_lists, whatever its statistics say (etl.store.reconcile).
_LIST_ROW = """CROSS JOIN LATERAL (
        SELECT x.live_from, x.crawled_at FROM follow_lists x
        WHERE x.account = l.account AND x.follow_type = l.follow_type
        OFFSET 0) f"""

# COPY text format: backslash, tab and line breaks are escaped; \N is NULL.
_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escape(value: str) -> str:
    return value.translate(_COPY_ESCAPES)


# A staged row's stored twin, looked up by key one staged row at a time: LATERAL with
# LIMIT cannot be turned into a hash join that reads all of follow_edges, which the
# planner chose when its statistics lagged behind a table that had just grown.
_STORED_EDGE = """LEFT JOIN LATERAL (
SELECT x.account, x.follow_time, x.removed_at, x.changed_at, x.time_provisional
FROM follow_edges x
WHERE x.account = s.account AND x.follow_type = s.follow_type AND x.to_account = s.to_account
LIMIT 1) e ON true"""
# The listed edges of the staged lists, read list by list through their keys (OFFSET 0
# keeps the planner from flattening it into a join it may hash).
_LISTED = """stage_lists l CROSS JOIN LATERAL (
    SELECT x.account, x.follow_type, x.to_account FROM follow_edges x
    WHERE x.account = l.account AND x.follow_type = l.follow_type AND x.removed_at IS NULL
      AND (x.changed_at IS NULL OR x.changed_at < l.crawl_started_at)
    OFFSET 0) c
WHERE NOT l.fresh"""


class Postgres(Dialect):
    """PostgreSQL (psycopg 3)."""

    name = "postgresql"
    writers = 2  # one stages a batch while the other waits for the server
    serves_workers = True
    time = "to_timestamp(s.follow_time)"
    differs = "IS DISTINCT FROM"
    tags = "CAST(s.tags AS jsonb)"
    stored_edge = _STORED_EDGE
    listed = _LISTED
    seen_of_ending = seen.SEEN_OF_ENDING_PG
    list_row = _LIST_ROW
    writes_with_events = True
    savepoints = True
    returned = "e.account, e.follow_type, e.to_account"  # gone has these columns too
    json_rows = ("json_array_elements(CAST(:{name} AS json)) AS x", "CAST(x ->> {i} AS {kind})")
    probe_join = (
        "CROSS JOIN LATERAL (SELECT * FROM {table} {alias} WHERE {on} OFFSET 0 {lock}) {alias}"
    )
    shard = "pg_backend_pid()"  # its backend runs no other transaction until this one ends

    def __init__(self) -> None:
        super().__init__()
        self.insert_profiles_returning = text(
            _INSERT_PROFILES.format(
                columns=PROFILE_COLUMNS,
                staged=self.profile_values,
                differs=self.profile_differs,
            )
        ).columns(
            sa.column("user_id", sa.String),
            sa.column("profile_sequence", ProfileSequence()),
            sa.column("stored_digest", sa.String),
            sa.column("found", sa.Boolean),
        )

    def create_engine(self, url: URL, *, schema: str | None = None) -> Engine:
        connect = dict(PG_CONNECT)
        if schema is not None:  # a checked identifier (etl.config)
            connect["options"] = f"{connect['options']} -c search_path={schema}"
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect)
        sa.event.listen(engine, "handle_error", read_only_is_a_disconnect)
        return engine

    @contextmanager
    def migration_connection(self, engine: Engine) -> Iterator[sa.Connection]:
        with engine.begin() as connection:  # PostgreSQL has transactional DDL
            yield connection

    def now(self, local: Clock = machine_now) -> sa.ColumnElement[datetime]:
        return sa.func.statement_timestamp(type_=Timestamp)

    def expiry(self, seconds: float, local: Clock = machine_now) -> sa.ColumnElement[datetime]:
        return self.now() + timedelta(seconds=seconds)

    def server_time(self, conn: sa.Connection) -> datetime | None:
        value: datetime = conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
        return value

    def analyze(self, conn: sa.Connection, table: str) -> None:
        # Temporary tables get no statistics from autovacuum; without them the planner joins
        # a batch of a few lists against all of follow_edges by scanning it.
        conn.execute(sa.text(f"ANALYZE {table}"))

    def stage(self, conn: sa.Connection, table: sa.Table, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        names = ", ".join(table.c.keys())
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def stage_edges(self, conn: sa.Connection, parts: Sequence[ListPart]) -> None:
        """One block of COPY text, built at C speed."""
        chunks: list[str] = []
        for p in parts:
            if not p.edges:
                continue
            head = f"{_escape(p.account)}\t{p.follow_type}\t"
            flags = (p.baseline, p.mode.keeps_seen, p.mode.fresh)
            tail = "".join("\tt" if flag else "\tf" for flag in flags) + "\n"
            accounts: Iterable[str] = p.edges.keys()
            blob = "".join(accounts)  # one scan of the list finds any character to escape
            if "\\" in blob or "\t" in blob or "\n" in blob or "\r" in blob:
                accounts = [_escape(to) for to in accounts]
            chunks.append(
                "".join(
                    [
                        f"{head}{to}\t{_NULL if when is None else when}{tail}"
                        for to, when in zip(accounts, p.edges.values(), strict=True)
                    ]
                )
            )
        names = ", ".join(STAGE_EDGE_COLUMNS)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY stage_edges ({names}) FROM STDIN") as copy:
            copy.write("".join(chunks))

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def insert_profiles(
        self, conn: sa.Connection, params: dict[str, Any]
    ) -> tuple[StoredDigests, int]:
        raced = False
        stored: StoredDigests = {}
        inserted = 0
        for user, sequence, digest, count, wanted in conn.execute(
            self.insert_profiles_returning, params
        ):
            if user is not None:
                stored[(user, sequence)] = digest
            else:
                inserted, raced = int(count), count < wanted
        if raced:
            stored.update(self.stored_conflicts(conn))
        return stored, inserted

    def _mark(self, where: str, source: str) -> sa.TextClause:
        mark = super()._mark(where, source).text
        return text(_MARK_WITH_EVENTS.format(mark=mark))

    def mark_removed(
        self, conn: sa.Connection, *, where: str, source: str, params: dict[str, Any]
    ) -> int:
        return int(conn.execute(self.mark_statement(where, source), params).scalar_one())

    def remember_seen(self, conn: sa.Connection, run_id: int, keys: Sequence[Key]) -> None:
        seen.remember_all(conn, run_id)

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
        params: dict[str, Any] = {"run_id": run_id, "owner": owner, "limit": limit}
        if not held:
            params["failed_before"] = failed_before
        return [
            ListState(
                r.account,
                r.follow_type,
                r.cursor,
                int(r.seen),
                bool(r.baseline),
                r.expected_items,
                bool(r.fresh),
                confirming=bool(r.confirming),
                started=r.crawl_started_at,
                touched=bool(r.touched),
            )
            for r in conn.execute(CLAIMS[held], params)
        ]

    def hold(
        self, conn: sa.Connection, run_id: int, owner: str, wanted: Sequence[Key]
    ) -> set[Key] | None:
        if conn.execute(RUN_OPEN, {"run_id": run_id}).first() is None:
            return None
        return leased_keys(conn, HOLD, run_id, owner, wanted)

    def leased(
        self, conn: sa.Connection, run_id: int, owner: str, wanted: Sequence[Key]
    ) -> set[Key]:
        return leased_keys(conn, LEASED, run_id, owner, wanted)

    def advance(
        self, conn: sa.Connection, run_id: int, parts: Sequence[ListPart], now: datetime
    ) -> list[Row]:
        return list(conn.execute(ADVANCE, advance_params(run_id, parts, now, None)))

    def advance_leased(
        self,
        conn: sa.Connection,
        run_id: int,
        parts: Sequence[ListPart],
        now: datetime,
        owner: str,
    ) -> list[Row]:
        return list(conn.execute(ADVANCE, advance_params(run_id, parts, now, owner)))
