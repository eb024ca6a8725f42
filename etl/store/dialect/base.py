"""What both backends share: the methods every dialect answers, and the statements they
spell alike (with the fragments each dialect fills in)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.schema import CreateTable

from etl.store import staging
from etl.store.meta import Timestamp
from etl.store.rows import Key, ListPart, ListState
from etl.store.schema import sync_workers
from etl.store.types import ProfileSequence
from etl.tencent.profile import PROFILE_ROW, ProfileKey

StoredDigests = dict[ProfileKey, str | None]
Clock = Callable[[], datetime]  # a machine clock: aware UTC now
Row = Any  # a result row with the columns a statement's docstring names


def machine_now() -> datetime:
    """This machine's clock, aware UTC."""
    return datetime.now(UTC)


def text(sql: str) -> sa.TextClause:
    """``sql`` as a statement, with :now and :started bound as timestamps."""
    times = [name for name in ("now", "started") if f":{name}" in sql]
    return sa.text(sql).bindparams(*(sa.bindparam(name, type_=Timestamp) for name in times))


# The removal statement: set removed_at on the listed edges ``where`` selects (follow_edges as
# e, with ``source`` joined); each dialect records a 'removed' event for each (mark_removed).
MARK = """UPDATE follow_edges AS e SET removed_at = :now, changed_at = :now {source} WHERE {where}
RETURNING {columns}"""

PROFILE_COLUMNS = ", ".join(PROFILE_ROW)
_INSERT_PROFILES = """
INSERT INTO profile_snapshots ({columns}, first_seen_at, run_id)
SELECT {staged}, :now, :run_id FROM stage_profiles s
WHERE NOT EXISTS (SELECT 1 FROM profile_snapshots p
                  WHERE p.user_id = s.user_id AND p.profile_sequence = s.profile_sequence)
ORDER BY s.user_id, s.profile_sequence
ON CONFLICT DO NOTHING
"""
# Staged versions stored with other content. Run after the insert: a concurrent writer's row of
# the same version is committed by then (the insert waited for it), so a second content is
# caught whichever process stored first.
# (Every stored version has its digest since revision 0010.)
DIFFERS = "p.content_digest <> s.content_digest"
_CONFLICTS = """
SELECT s.user_id, s.profile_sequence, p.content_digest
FROM stage_profiles s
JOIN profile_snapshots p ON p.user_id = s.user_id AND p.profile_sequence = s.profile_sequence
WHERE {differs}
"""


class Dialect:
    """One backend's spelling of the statements that differ; chosen once per engine
    (etl.store.dialect.dialect_of). Subclasses fill in the fragments and the methods."""

    name: ClassVar[str]
    # Fragments of the shared edge statements (etl.store.edges).
    time: ClassVar[str]  # a staged follow_time (Unix seconds) as a stored timestamp
    differs: ClassVar[str]  # NULL-safe "is different from"
    tags: ClassVar[str]  # a staged profile's tags (JSON text) as stored
    stored_edge: ClassVar[str]  # join: a staged edge's stored twin, as e
    listed: ClassVar[str]  # the listed edges of the staged lists that end, as c
    seen_of_ending: ClassVar[str]  # their sync_seen rows, as x (etl.store.seen)
    list_row: ClassVar[str]  # join: a staged list's follow_lists row, as f (etl.store.reconcile)
    # Transactions run side by side: a batch's 'added' events come from the statement that
    # writes its edges (a data-modifying WITH), not from a lookup before it (etl.store.edges).
    writes_with_events: ClassVar[bool] = False
    savepoints: ClassVar[bool] = False  # a failed statement can be undone alone (SAVEPOINT)
    returned: ClassVar[str]  # the columns MARK returns
    # Row sets (rowsets.rows): the elements of the JSON array :{name}, as x; element {i} of
    # x as the SQL type {kind}.
    json_rows: ClassVar[tuple[str, str]]
    # A probe (rowsets.probe): nested loops through the key, the one writer needing no lock.
    probe_join: ClassVar[str] = "JOIN {table} {alias} ON {on}"
    shard: ClassVar[str] = "0"  # the run counters' row of this transaction (etl.store.runs)
    # What the backend lets a run do: writer lanes in one process, worker processes on a run.
    writers: ClassVar[int] = 1
    serves_workers: ClassVar[bool] = False

    def __init__(self) -> None:
        staged = ", ".join(self.tags if c == "tags" else f"s.{c}" for c in PROFILE_ROW)
        self.profile_values = staged
        self.profile_differs = DIFFERS
        self.insert_new_profiles = text(
            _INSERT_PROFILES.format(columns=PROFILE_COLUMNS, staged=staged)
        )
        self.conflicts = sa.text(_CONFLICTS.format(differs=self.profile_differs)).columns(
            sa.column("user_id", sa.String),
            sa.column("profile_sequence", ProfileSequence()),
            sa.column("content_digest", sa.String),
        )
        self._marks: dict[tuple[str, str], sa.TextClause] = {}

    # ---- engines ---------------------------------------------------------------------------

    def create_engine(self, url: URL, *, schema: str | None = None) -> Engine:
        """An engine tuned for this job on this backend (etl.store.db.make_engine)."""
        raise NotImplementedError

    def migration_connection(self, engine: Engine) -> AbstractContextManager[sa.Connection]:
        """A connection whose one transaction holds a whole migration, DDL included."""
        raise NotImplementedError

    # ---- clocks ----------------------------------------------------------------------------

    def now(self, local: Clock = machine_now) -> sa.ColumnElement[datetime]:
        """The database's clock inside the statement (``local``: this machine's clock, for a
        backend with no clock of its own)."""
        raise NotImplementedError

    def expiry(self, seconds: float, local: Clock = machine_now) -> sa.ColumnElement[datetime]:
        """``seconds`` after ``now``."""
        raise NotImplementedError

    def server_time(self, conn: sa.Connection) -> datetime | None:
        """The server's clock, read now; None where the database has none (SQLite)."""
        return None

    def live_ids(self) -> sa.Select[tuple[str]]:
        """The ids of every live process (a subquery for lease checks)."""
        w = sync_workers.c
        return sa.select(w.id).where(w.expires_at > self.now())

    # ---- staging ---------------------------------------------------------------------------

    def prepare(self, conn: sa.Connection) -> None:
        """Create the staging tables on this connection (once) and empty them."""
        # Temporary tables live as long as the DBAPI connection: the mark that they exist
        # lives in that connection's own info dict, which SQLAlchemy clears when it reconnects
        # or invalidates. (An id() of the connection could be reused by a new one.)
        info = conn.connection.info
        if not info.get(staging.STAGED_MARK):
            for table in staging.STAGES:
                conn.execute(CreateTable(table, if_not_exists=True))
                self._made(conn, table)
            info[staging.STAGED_MARK] = True
            # Created inside a transaction, which a rollback undoes: then forget them too. (A
            # later rollback forgets them as well; making them again is harmless: IF NOT EXISTS.)
            sa.event.listen(conn, "rollback", staging.forget_stages, once=True)
        self._empty(conn)

    def _made(self, conn: sa.Connection, table: sa.Table) -> None:
        """A staging table was just created on this connection."""

    def _empty(self, conn: sa.Connection) -> None:
        """Empty the staging tables before a batch."""

    def stage(self, conn: sa.Connection, table: sa.Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Fill ``table`` with ``rows`` (in its column order)."""
        raise NotImplementedError

    def stage_edges(self, conn: sa.Connection, parts: Sequence[ListPart]) -> None:
        """Fill stage_edges with the edges of ``parts``."""
        raise NotImplementedError

    def analyze(self, conn: sa.Connection, table: str) -> None:
        """Give a just filled staging table statistics, where the planner needs them."""

    def bind_time(self, value: datetime) -> Any:
        """A time as a staged row holds it (compared with stored ones)."""
        return value

    def staged_profile(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A profile row (PROFILE_ROW order) as stage_profiles holds it."""
        return row

    # ---- writes ----------------------------------------------------------------------------

    def insert(self, table: sa.Table) -> Any:
        """This backend's INSERT (with ON CONFLICT) of ``table``."""
        raise NotImplementedError

    def insert_profiles(
        self, conn: sa.Connection, params: dict[str, Any]
    ) -> tuple[StoredDigests, int]:
        """Insert the staged versions not stored yet; return the stored digest of those stored
        with other content, and how many versions were inserted."""
        raise NotImplementedError

    def stored_conflicts(self, conn: sa.Connection) -> StoredDigests:
        """The staged versions stored with other content, and the digest stored."""
        return {(user, sequence): digest for user, sequence, digest in conn.execute(self.conflicts)}

    def mark_statement(self, where: str, source: str) -> sa.TextClause:
        """MARK for ``where`` and ``source``, built once."""
        statement = self._marks.get((where, source))
        if statement is None:
            statement = self._marks[(where, source)] = self._mark(where, source)
        return statement

    def _mark(self, where: str, source: str) -> sa.TextClause:
        return text(MARK.format(source=source, where=where, columns=self.returned))

    def mark_removed(
        self, conn: sa.Connection, *, where: str, source: str, params: dict[str, Any]
    ) -> int:
        """Set removed_at on the listed edges ``where`` selects (follow_edges as e, with
        ``source`` joined), record a 'removed' event for each; return how many."""
        raise NotImplementedError

    def remember_seen(self, conn: sa.Connection, run_id: int, keys: Sequence[Key]) -> None:
        """Keep the staged To_Accounts of these lists in sync_seen (etl.store.seen)."""
        raise NotImplementedError

    # ---- leases and cursors ----------------------------------------------------------------

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
        """Lease up to ``limit`` free lists of the run (held ones, or all others) to
        ``owner``, as etl.store.leases.claim says; in no particular order."""
        raise NotImplementedError

    def hold(
        self, conn: sa.Connection, run_id: int, owner: str, wanted: Sequence[Key]
    ) -> set[Key] | None:
        """The lists among ``wanted`` that ``owner`` still holds, locked; None when the run
        is no longer open (etl.store.leases.hold)."""
        raise NotImplementedError

    def advance(
        self, conn: sa.Connection, run_id: int, parts: Sequence[ListPart], now: datetime
    ) -> list[Row]:
        """Move the checkpoints of ``parts`` on; return their rows as they were before
        (account, follow_type, status, failures, pages, items)."""
        raise NotImplementedError

    def leased(
        self, conn: sa.Connection, run_id: int, owner: str, wanted: Sequence[Key]
    ) -> set[Key]:
        """The lists among ``wanted`` that ``owner`` still holds, checked but not locked:
        ``advance_leased`` locks them (SQLite: its one writer holds the database)."""
        return self.hold(conn, run_id, owner, wanted) or set()

    def advance_leased(
        self,
        conn: sa.Connection,
        run_id: int,
        parts: Sequence[ListPart],
        now: datetime,
        owner: str,
    ) -> list[Row]:
        """``advance``, of the lists ``owner`` still leases only (the others are left out)."""
        return self.advance(conn, run_id, parts, now)


def expires(seconds: float, local: Clock) -> sa.ColumnElement[datetime]:
    """A literal time ``seconds`` after ``local()`` (a backend with no clock)."""
    return sa.literal(local() + timedelta(seconds=seconds), Timestamp)
