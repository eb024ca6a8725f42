"""Writes of crawled rows, a batch of pages at a time. Functions take a connection and never
commit: the batch transaction of a writer lane (etl.crawl.writer) holds them, with the cursors
that follow the rows (etl.leases.advance), so both commit together.

This module owns sync_seen, the working set of removal detection: what a crawl has seen of a
list it has not finished, remembered per page, checked for loss before removals, and dropped
when the list ends or its run does. Nothing else reads or writes it.

A batch goes into per-connection temporary staging tables (COPY on PostgreSQL), and set-based
statements move from there only what changed:
- an edge is inserted when new, updated only when its follow time changed or it came back;
- a profile version (user, sequence) already stored is never written again: the first content
  stored wins, and a sighting with other content is recorded as a conflict;
- a list crawled to its end marks the edges it no longer lists removed, touching only those;
- items that cannot be stored (see etl.transform) are recorded in quarantined_items, once per
  run, list and item.
Edge changes on lists with a baseline (crawled completely before) become follow_edge_events.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable

from etl.holds import Hold, Thresholds, decide
from etl.store.rows import Key, ListPart
from etl.store.schema import (
    ProfileSequence,
    Timestamp,
    follow_edges,
    profile_snapshots,
    quarantined_items,
    sqlite_sequence,
    sync_checkpoints,
)
from etl.tencent.profile import PROFILE_ROW, ProfileKey, ProfileRow
from etl.tencent.rows import CONFLICT, UNSTORABLE, PageRows, Profile, Quarantined, conflict

if TYPE_CHECKING:  # a type only: etl.crawl imports this module
    from etl.crawl.known import KnownProfiles

log = logging.getLogger(__name__)
_SQLITE = sqlite.dialect()


@dataclass
class Written:
    """What one batch changed."""

    edges_removed: int = 0
    events: int = 0
    recrawl: list[Key] = field(default_factory=list)  # lists whose sync_seen was lost
    held: list[Hold] = field(default_factory=list)  # completed lists held (etl.holds)
    quarantined: int = 0  # items newly recorded as unstorable
    conflicts: int = 0  # profile sightings newly recorded as conflicts
    profiles: int = 0  # profile versions stored for the first time


# The staging tables: temporary, one set per connection, emptied at each commit on PostgreSQL.
# Their columns come from the tables they feed, so a new column is declared once (etl.schema).
_staging = sa.MetaData()


def _temporary(name: str, *columns: sa.Column[Any], key: Sequence[str]) -> sa.Table:
    """A staging table; its rows are unique by ``key`` (the writer merges a batch first).

    Only SQLite gets an index on the key (``Loader.prepare``): it serves its correlated
    lookups. PostgreSQL hashes the few thousand staged rows where a statement needs them,
    and maintaining a key index cost more than the rest of the COPY (1.8 µs a row with it,
    0.6 without, measured on stage_edges).
    """
    return sa.Table(
        name,
        _staging,
        *columns,
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DELETE ROWS",
        info={"key": tuple(key)},
    )


def _like(table: sa.Table, *names: str) -> list[sa.Column[Any]]:
    """Copies of ``table``'s columns ``names`` (NOT NULL, as staged rows always have them)."""
    return [sa.Column(name, table.c[name].type, nullable=False) for name in names]


stage_edges = _temporary(
    "stage_edges",
    *_like(follow_edges, "account", "follow_type", "to_account"),
    sa.Column("follow_time", sa.BigInteger),  # Unix seconds; follow_edges keeps a timestamp
    sa.Column("baseline", sa.Boolean, nullable=False),
    sa.Column("keep_seen", sa.Boolean, nullable=False),
    sa.Column("fresh", sa.Boolean, nullable=False),  # ListPart.fresh
    key=("account", "follow_type", "to_account"),
)
stage_lists = _temporary(
    "stage_lists",
    *_like(follow_edges, "account", "follow_type"),
    sa.Column("fresh", sa.Boolean, nullable=False),  # ListPart.fresh: no removal search
    *_like(sync_checkpoints, "crawl_started_at"),  # ListPart.started: what it may remove
    key=("account", "follow_type"),
)
stage_profiles = _temporary(
    "stage_profiles",
    *_like(profile_snapshots, "user_id", "profile_sequence"),
    *(
        sa.Column(
            name,
            sa.Text if name == "tags" else profile_snapshots.c[name].type,  # tags: JSON text
            nullable=name not in ("tags", "content_digest"),
        )
        for name in PROFILE_ROW[2:]  # the order etl.transform builds rows in
    ),
    key=("user_id", "profile_sequence"),
)
_STAGES = (stage_edges, stage_lists, stage_profiles)
_STAGED_MARK = "etl.store.load.staged"  # in the DBAPI connection's info: its staging tables exist


def _forget_stages(conn: sa.Connection) -> None:
    # An invalidated connection has no DBAPI connection to ask (asking would reconnect); its
    # info goes with it, and the next DBAPI connection starts with an empty one.
    if not conn.invalidated and not conn.closed:
        conn.connection.info.pop(_STAGED_MARK, None)


# The few places where the two dialects spell a thing differently.
_SQL = {
    "postgresql": {
        # Rows stored before revision 0003 have no digest: their tags are compared instead.
        "legacy_differs": "s.tags_raw IS NOT NULL OR p.tags <> CAST(s.tags AS jsonb)",
        "time": "to_timestamp(s.follow_time)",
        "differs": "IS DISTINCT FROM",
        "tags": "CAST(s.tags AS jsonb)",
        # A staged row's stored twin, looked up by key one staged row at a time: LATERAL with
        # LIMIT cannot be turned into a hash join that reads all of follow_edges, which the
        # planner chose when its statistics lagged behind a table that had just grown.
        "stored_edge": """LEFT JOIN LATERAL (
    SELECT x.account, x.follow_time, x.removed_at, x.changed_at FROM follow_edges x
    WHERE x.account = s.account AND x.follow_type = s.follow_type AND x.to_account = s.to_account
    LIMIT 1) e ON true""",
        # The listed edges and sync_seen rows of the staged lists, read list by list through
        # their keys (OFFSET 0 keeps the planner from flattening it into a join it may hash).
        "listed": """stage_lists l CROSS JOIN LATERAL (
        SELECT x.account, x.follow_type, x.to_account FROM follow_edges x
        WHERE x.account = l.account AND x.follow_type = l.follow_type AND x.removed_at IS NULL
          AND (x.changed_at IS NULL OR x.changed_at < l.crawl_started_at)
        OFFSET 0) c
    WHERE NOT l.fresh""",
        "seen": """stage_lists l CROSS JOIN LATERAL (
        SELECT y.account, y.follow_type, y.to_account FROM sync_seen y
        WHERE y.run_id = :run_id AND y.account = l.account AND y.follow_type = l.follow_type
        OFFSET 0) x""",
    },
    "sqlite": {
        "legacy_differs": (
            "s.tags_raw IS NOT NULL"
            " OR EXISTS (SELECT key, type, value FROM json_each(p.tags)"
            " EXCEPT SELECT key, type, value FROM json_each(s.tags))"
            " OR EXISTS (SELECT key, type, value FROM json_each(s.tags)"
            " EXCEPT SELECT key, type, value FROM json_each(p.tags))"
        ),
        # SQLAlchemy's text form of a SQLite DateTime, so stored and staged values compare.
        "time": "(datetime(s.follow_time, 'unixepoch') || '.000000')",
        "differs": "IS NOT",
        "tags": "s.tags",
        # SQLite always joins by nested loops, through the key indexes.
        "stored_edge": """LEFT JOIN follow_edges e
  ON e.account = s.account AND e.follow_type = s.follow_type AND e.to_account = s.to_account""",
        "listed": """follow_edges c
    JOIN stage_lists l ON l.account = c.account AND l.follow_type = c.follow_type
    WHERE NOT l.fresh AND c.removed_at IS NULL
      AND (c.changed_at IS NULL OR c.changed_at < l.crawl_started_at)""",
        "seen": """sync_seen x
    JOIN stage_lists l ON l.account = x.account AND l.follow_type = x.follow_type
    WHERE x.run_id = :run_id""",
    },
}

# Two runs may crawl one list at once (jobs whose accounts overlap, `verify --repair`): one
# rule keeps either from undoing what the other observed later. A crawl changes only edges
# unchanged since it began (its list's crawl_started_at): it inserts new edges, lists again
# those removed before it began, updates their follow time, and (_UNLISTED_SOURCE) removes
# what it no longer lists, but leaves an edge another run inserted, listed again, changed or
# removed after it began: that observation is newer than its own. follow_edges.changed_at
# records each such change (null: none since revision 0008).
_UNCHANGED = "({row}.changed_at IS NULL OR {row}.changed_at < {start})"
# The start of a staged row's crawl, from its list's checkpoint (by primary key). Read only for
# rows whose stored twin changed or was removed since revision 0008 (a few per batch), never
# per staged row: a start copied into every staged row doubled the COPY of a batch (a
# timestamptz parsed per row: 0.6 -> 1.2 µs a row).
_START = """coalesce(
    (SELECT c.crawl_started_at FROM sync_checkpoints c
     WHERE c.run_id = :run_id AND c.account = {row}.account
       AND c.follow_type = {row}.follow_type), :now)"""

_ADDED_EVENTS = """
INSERT INTO follow_edge_events (account, follow_type, to_account, event, observed_at, run_id)
SELECT s.account, s.follow_type, s.to_account, 'added', :now, :run_id
FROM stage_edges s
{stored_edge}
WHERE s.baseline AND (e.account IS NULL OR (e.removed_at IS NOT NULL AND {unchanged}))
"""

# ON CONFLICT meets the row as it stands when the statement reaches it, which a concurrent
# batch of another run may have changed since the lookup in the SELECT: the rule is checked
# again on that row ({still_unchanged}).
# The WHERE before ON CONFLICT is needed by SQLite's parser and keeps unchanged rows out.
_UPSERT_EDGES = """
INSERT INTO follow_edges (account, follow_type, to_account, follow_time, first_seen_at, changed_at)
SELECT s.account, s.follow_type, s.to_account, {time}, :now, :now
FROM stage_edges s
{stored_edge}
WHERE NOT s.fresh
  AND (e.account IS NULL
       OR ((e.removed_at IS NOT NULL OR e.follow_time {differs} {time}) AND {unchanged}))
ORDER BY s.account, s.follow_type, s.to_account
ON CONFLICT (account, follow_type, to_account)
DO UPDATE SET follow_time = excluded.follow_time, removed_at = NULL,
    changed_at = excluded.changed_at
WHERE {still_unchanged}
"""

# Lists with no current edge stored (ListPart.fresh): nearly every row is new, so no join
# looks for the stored ones first; a removed edge listed again, or an item the API repeated,
# meets its row in ON CONFLICT, which writes it only if it changed.
_INSERT_FRESH_EDGES = """
INSERT INTO follow_edges AS e (account, follow_type, to_account, follow_time, first_seen_at,
                               changed_at)
SELECT s.account, s.follow_type, s.to_account, {time}, :now, :now
FROM stage_edges s
WHERE s.fresh
ORDER BY s.account, s.follow_type, s.to_account
ON CONFLICT (account, follow_type, to_account)
DO UPDATE SET follow_time = excluded.follow_time, removed_at = NULL,
    changed_at = excluded.changed_at
WHERE (e.removed_at IS NOT NULL OR e.follow_time {differs} excluded.follow_time)
  AND {still_unchanged}
"""

_REMEMBER_SEEN = """
INSERT INTO sync_seen (run_id, account, follow_type, to_account)
SELECT :run_id, s.account, s.follow_type, s.to_account FROM stage_edges s
WHERE s.keep_seen AND s.account = :account AND s.follow_type = :follow_type
ON CONFLICT DO NOTHING
"""

# PostgreSQL: every list's new sync_seen rows and its seen counter in one statement.
_REMEMBER_SEEN_PG = """
WITH added AS (
    INSERT INTO sync_seen (run_id, account, follow_type, to_account)
    SELECT :run_id, s.account, s.follow_type, s.to_account FROM stage_edges s WHERE s.keep_seen
    ON CONFLICT DO NOTHING
    RETURNING account, follow_type
), n AS (
    SELECT account, follow_type, count(*) AS k FROM added GROUP BY account, follow_type
)
UPDATE sync_checkpoints c SET seen = c.seen + n.k
FROM n
WHERE c.run_id = :run_id AND c.account = n.account AND c.follow_type = n.follow_type
"""

_SEEN_MISMATCH = """
SELECT c.account, c.follow_type FROM sync_checkpoints c
JOIN stage_lists l ON l.account = c.account AND l.follow_type = c.follow_type
WHERE NOT l.fresh AND c.run_id = :run_id AND c.seen > 0 AND c.seen <> (
    SELECT count(*) FROM sync_seen x
    WHERE x.run_id = c.run_id AND x.account = c.account AND x.follow_type = c.follow_type)
"""

# What "removed" means, once: a listed edge of a list this crawl finished (stage_lists l, not
# fresh: see ListPart.fresh), unchanged since the crawl began (another run may have added or
# listed it again meanwhile: not this crawl's to remove), that the crawl did not see, neither
# in this batch (stage_edges) nor in earlier ones (sync_seen). A set difference, so no plan
# can turn it into a search of the staged rows per stored edge (stage_edges has no index on
# PostgreSQL; see _temporary).
_UNLISTED_SOURCE = """FROM (
    SELECT c.account, c.follow_type, c.to_account FROM {listed}
    EXCEPT
    SELECT s.account, s.follow_type, s.to_account FROM stage_edges s
    EXCEPT
    SELECT x.account, x.follow_type, x.to_account FROM {seen}
) AS gone"""
_UNLISTED = """e.account = gone.account AND e.follow_type = gone.follow_type
  AND e.to_account = gone.to_account AND e.removed_at IS NULL"""
# How many edges the removal statement would mark, per list: the same source and condition,
# counted before anything is applied, so a mass removal can be held (etl.holds).
_REMOVAL_COUNTS = """SELECT e.account, e.follow_type, count(*) {source}
JOIN follow_edges e ON {where}
GROUP BY e.account, e.follow_type"""
# An account that no longer exists (30003): every listed edge of its list.
_OF_LIST = """e.account = :account AND e.follow_type = :follow_type AND e.removed_at IS NULL
  AND (e.changed_at IS NULL OR e.changed_at < :started)"""

_MARK = """UPDATE follow_edges AS e SET removed_at = :now, changed_at = :now {source} WHERE {where}
RETURNING {columns}"""
# PostgreSQL records the events in the same statement; SQLite has no data-modifying WITH, so
# its events are inserted from the rows the UPDATE returns.
_MARK_PG = """WITH gone AS ({mark}), recorded AS (
    INSERT INTO follow_edge_events (account, follow_type, to_account, event, observed_at, run_id)
    SELECT account, follow_type, to_account, 'removed', :now, :run_id FROM gone
    RETURNING 1
)
SELECT count(*) FROM recorded"""
# SQLite refuses qualified names in RETURNING; PostgreSQL needs them (gone has these columns too).
_RETURNED = "account, follow_type, to_account"
_RETURNED_PG = "e.account, e.follow_type, e.to_account"
_REMOVED_EVENT = """INSERT INTO follow_edge_events
    (account, follow_type, to_account, event, observed_at, run_id)
VALUES (:account, :follow_type, :to_account, 'removed', :now, :run_id)"""


@functools.cache
def _mark_statement(pg: bool, where: str, source: str) -> sa.TextClause:
    """The removal statement for a dialect, built once."""
    if pg:
        return _text(
            _MARK_PG.format(mark=_MARK.format(source=source, where=where, columns=_RETURNED_PG))
        )
    return _text(_MARK.format(source=source, where=where, columns=_RETURNED))


def _mark_removed(conn: sa.Connection, *, where: str, source: str, params: dict[str, Any]) -> int:
    """Set removed_at on the listed edges ``where`` selects (follow_edges as e, with
    ``source`` joined), record a 'removed' event for each; return how many."""
    pg = conn.dialect.name == "postgresql"
    statement = _mark_statement(pg, where, source)
    if pg:
        return int(conn.execute(statement, params).scalar_one())
    gone = conn.execute(statement, params).all()
    if gone:
        conn.execute(
            _text(_REMOVED_EVENT),
            [{**params, "account": a, "follow_type": t, "to_account": to} for a, t, to in gone],
        )
    return len(gone)


# A finished list is a baseline from now on, and its size is what the next run sizes it by
# (etl.sizes); the row is written only when that size changed.
_BASELINES = """
INSERT INTO follow_lists (account, follow_type, baseline_run_id, baseline_at, items)
SELECT l.account, l.follow_type, :run_id, :now, c.items
FROM stage_lists l
JOIN sync_checkpoints c
  ON c.run_id = :run_id AND c.account = l.account AND c.follow_type = l.follow_type
WHERE true
ON CONFLICT (account, follow_type) DO UPDATE SET items = excluded.items
WHERE follow_lists.items IS NULL OR follow_lists.items <> excluded.items
"""

_FORGET_SEEN = """
DELETE FROM sync_seen WHERE run_id = :run_id AND EXISTS (
    SELECT 1 FROM stage_lists l
    WHERE l.account = sync_seen.account AND l.follow_type = sync_seen.follow_type)
"""

_PROFILE_COLUMNS = ", ".join(PROFILE_ROW)
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
_DIFFERS = """CASE WHEN p.content_digest IS NULL THEN ({legacy_differs})
               ELSE p.content_digest <> s.content_digest END"""
_CONFLICTS = """
SELECT s.user_id, s.profile_sequence, p.content_digest
FROM stage_profiles s
JOIN profile_snapshots p ON p.user_id = s.user_id AND p.profile_sequence = s.profile_sequence
WHERE {differs}
"""

# PostgreSQL: the insert and the conflict check in one statement, one lookup of each staged
# version in profile_snapshots (LATERAL ... LIMIT 1: a hash join read the whole table per batch
# while its statistics lagged, 216 ms a batch at 150,000 versions). The
# last row (user_id NULL) counts the versions inserted and those it meant to insert: fewer
# says a concurrent writer stored some of them meanwhile (ON CONFLICT skipped them), and this
# statement cannot see those rows; _CONFLICTS can.
# (Counts, not an anti-join with "inserted": its estimate was high enough to JIT-compile.)
_INSERT_PROFILES_PG = """
WITH s AS (
    SELECT s.*, p.content_digest AS stored_digest, p.user_id IS NOT NULL AS found,
           p.user_id IS NOT NULL AND {differs} AS differs
    FROM stage_profiles s
    LEFT JOIN LATERAL (
        SELECT q.user_id, q.content_digest, q.tags FROM profile_snapshots q
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


def _text(sql: str) -> sa.TextClause:
    times = [name for name in ("now", "started") if f":{name}" in sql]
    return sa.text(sql).bindparams(*(sa.bindparam(name, type_=Timestamp) for name in times))


class Loader:
    """Writes batches on one connection; makes its staging tables on first use. A completed
    list whose removals would be a mass removal (``thresholds``, etl.holds) is held: none of
    its removals is applied."""

    def __init__(self, dialect: str, thresholds: Thresholds | None = None) -> None:
        self.dialect = dialect
        self.thresholds = thresholds or Thresholds()
        self.pg = dialect == "postgresql"
        sql = _SQL["postgresql" if self.pg else "sqlite"]
        edge = sql["stored_edge"]
        self._upsert = _text(
            _UPSERT_EDGES.format(
                time=sql["time"],
                differs=sql["differs"],
                stored_edge=edge,
                unchanged=_UNCHANGED.format(row="e", start=_START.format(row="s")),
                still_unchanged=_UNCHANGED.format(
                    row="follow_edges", start=_START.format(row="excluded")
                ),
            )
        )
        self._added_events = _text(
            _ADDED_EVENTS.format(
                stored_edge=edge,
                unchanged=_UNCHANGED.format(row="e", start=_START.format(row="s")),
            )
        )
        self._unlisted_source = _UNLISTED_SOURCE.format(listed=sql["listed"], seen=sql["seen"])
        self._removal_counts = sa.text(
            _REMOVAL_COUNTS.format(source=self._unlisted_source, where=_UNLISTED)
        )
        self._insert_fresh = _text(
            _INSERT_FRESH_EDGES.format(
                time=sql["time"],
                differs=sql["differs"],
                still_unchanged=_UNCHANGED.format(row="e", start=_START.format(row="excluded")),
            )
        )
        staged = ", ".join(sql["tags"] if c == "tags" else f"s.{c}" for c in PROFILE_ROW)
        self._profiles = _text(_INSERT_PROFILES.format(columns=_PROFILE_COLUMNS, staged=staged))
        differs = _DIFFERS.format(legacy_differs=sql["legacy_differs"])
        self._profiles_pg = _text(
            _INSERT_PROFILES_PG.format(columns=_PROFILE_COLUMNS, staged=staged, differs=differs)
        ).columns(
            sa.column("user_id", sa.String),
            sa.column("profile_sequence", ProfileSequence()),
            sa.column("stored_digest", sa.String),
            sa.column("found", sa.Boolean),
        )
        self._conflicts = sa.text(_CONFLICTS.format(differs=differs)).columns(
            sa.column("user_id", sa.String),
            sa.column("profile_sequence", ProfileSequence()),
            sa.column("content_digest", sa.String),
        )
        insert = postgresql.insert if self.pg else sqlite.insert
        q = quarantined_items.c
        self._quarantine = (
            insert(quarantined_items)
            .on_conflict_do_nothing(
                index_elements=[q.run_id, q.account, q.follow_type, q.item_digest]
            )
            .returning(q.kind)
        )
        # SQLite compares times as text: a staged start must be spelled as the stored ones are.
        self._time: Callable[[datetime], Any] = (
            (lambda value: value)
            if self.pg
            else Timestamp.dialect_impl(_SQLITE).bind_processor(_SQLITE)  # type: ignore[assignment]
        )

    def prepare(self, conn: sa.Connection) -> None:
        """Create the staging tables on this connection (once) and empty them."""
        # Temporary tables live as long as the DBAPI connection: the mark that they exist
        # lives in that connection's own info dict, which SQLAlchemy clears when it reconnects
        # or invalidates. (An id() of the connection could be reused by a new one.)
        info = conn.connection.info
        if not info.get(_STAGED_MARK):
            for table in _STAGES:
                conn.execute(CreateTable(table, if_not_exists=True))
                if not self.pg:
                    key = ", ".join(table.info["key"])
                    conn.execute(
                        sa.text(
                            f"CREATE UNIQUE INDEX IF NOT EXISTS temp.ix_{table.name} "
                            f"ON {table.name} ({key})"
                        )
                    )
            info[_STAGED_MARK] = True
            # Created inside a transaction, which a rollback undoes: then forget them too. (A
            # later rollback forgets them as well; making them again is harmless: IF NOT EXISTS.)
            sa.event.listen(conn, "rollback", _forget_stages, once=True)
        if not self.pg:  # PostgreSQL empties them at each commit (ON COMMIT DELETE ROWS)
            for table in _STAGES:
                conn.execute(sa.delete(table))

    def write(
        self,
        conn: sa.Connection,
        run_id: int,
        parts: Sequence[ListPart],
        pages: Sequence[tuple[Key, PageRows]],
        now: datetime,
        *,
        known: KnownProfiles | None = None,
    ) -> Written:
        """Store a batch: edges, removals and events of ``parts``; the profile versions of
        ``pages`` (every page of the batch, in order, held or not: profiles are facts about
        users) and their conflicts; the unstorable items of the pages of ``parts``' lists.
        ``known`` (the fetchers' cache) learns what is stored for each version staged."""
        self.prepare(conn)
        params = {"run_id": run_id, "now": now}
        written = Written()
        restarted = [p.key for p in parts if p.restarted and p.had_seen]
        if restarted:
            forget_seen(conn, run_id, restarted)
        if any(p.edges for p in parts):
            self._stage_edges(conn, parts)
            if any(p.baseline for p in parts):
                written.events += conn.execute(self._added_events, params).rowcount
            if any(p.fresh and p.edges for p in parts):
                conn.execute(self._insert_fresh, params)
            if any(not p.fresh and p.edges for p in parts):
                conn.execute(self._upsert, params)
        self._remember_seen(
            conn, run_id, [p for p in parts if not p.complete and p.edges and not p.fresh]
        )

        complete = [p for p in parts if p.complete]
        if complete:
            self._stage(
                conn,
                stage_lists,
                [(*p.key, p.fresh, self._time(p.started or now)) for p in complete],
            )
            self._analyze(conn, "stage_lists")
            searched = [p for p in complete if not p.fresh]
            written.recrawl = self._lost_seen(conn, run_id, searched)
            if written.recrawl:
                # Their removals cannot be trusted: they are crawled again (etl.sync resets them).
                self._unstage_lists(conn, written.recrawl)
            if searched and self._hold_back(conn, run_id, searched, params, written):
                removed = _mark_removed(
                    conn, where=_UNLISTED, source=self._unlisted_source, params=params
                )
                written.edges_removed = removed
                written.events += removed
            conn.execute(_text(_BASELINES), params)
            if any(p.had_seen for p in complete):
                conn.execute(sa.text(_FORGET_SEEN), {"run_id": run_id})
        held = {p.key for p in parts}
        records = [(key, q) for key, rows in pages if key in held for q in rows.quarantined]
        records += self._write_profiles(conn, pages, params, known, written)
        if records:
            self._record(conn, run_id, records, now, written)
        return written

    def _hold_back(
        self,
        conn: sa.Connection,
        run_id: int,
        searched: Sequence[ListPart],
        params: dict[str, Any],
        written: Written,
    ) -> bool:
        """Count each completed list's removals first; hold (in ``written.held``, unstaged,
        their sync_seen dropped) those that are a mass removal. Whether the other lists have
        any removal to apply."""
        removals = {
            (account, follow_type): int(n)
            for account, follow_type, n in conn.execute(self._removal_counts, params)
        }
        for part in searched:
            removed = removals.get(part.key, 0)
            if removed < self.thresholds.min_edges:
                continue  # never a mass removal: no count of the list needed
            held = decide(
                self.thresholds,
                part.key,
                removed,
                current_edges(conn, *part.key),
                confirming=part.confirming,
                count=part.info_count,
            )
            if held is not None:
                written.held.append(held)
        keys = [h.key for h in written.held]
        if keys:
            self._unstage_lists(conn, keys)
            forget_seen(conn, run_id, keys)
        return any(n for key, n in removals.items() if key not in keys)

    def _write_profiles(
        self,
        conn: sa.Connection,
        pages: Sequence[tuple[Key, PageRows]],
        params: dict[str, Any],
        known: KnownProfiles | None,
        written: Written,
    ) -> list[tuple[Key, Quarantined]]:
        """Insert the batch's new profile versions (counted in ``written``); return the
        conflicts: sightings of a version with other content than the one stored first (first
        in batch order, here)."""
        first: dict[ProfileKey, tuple[Key, Profile]] = {}
        again: list[tuple[Key, Profile]] = []
        for list_key, rows in pages:
            for profile in rows.profiles:
                if first.setdefault(profile.key, (list_key, profile))[1] is not profile:
                    again.append((list_key, profile))
        if not first:
            return []
        staged: list[ProfileRow] = [profile.row for _, profile in first.values()]
        if not self.pg:
            staged = [(row[0], sqlite_sequence(row[1]), *row[2:]) for row in staged]
        self._stage(conn, stage_profiles, staged)
        stored, written.profiles = self._insert_profiles(conn, params)
        found: list[tuple[Key, Quarantined]] = []
        for key, (list_key, profile) in first.items():
            if key in stored:
                found.append((list_key, conflict(profile)))
                if known is not None:
                    known.settle(key, stored[key])
            elif known is not None:
                known.remember(key, profile.mark)
        for list_key, profile in again:
            if profile.digest != stored.get(profile.key, first[profile.key][1].digest):
                found.append((list_key, conflict(profile)))
        return found

    def _insert_profiles(
        self, conn: sa.Connection, params: dict[str, Any]
    ) -> tuple[dict[ProfileKey, str | None], int]:
        """Insert the staged versions not stored yet; return the stored digest (None: a row
        from before revision 0003) of those stored with other content, and how many versions
        were inserted."""
        raced = False
        stored: dict[ProfileKey, str | None] = {}
        if self.pg:
            inserted = 0
            for user, sequence, digest, count, wanted in conn.execute(self._profiles_pg, params):
                if user is not None:
                    stored[(user, sequence)] = digest
                else:
                    inserted, raced = int(count), count < wanted
        else:
            inserted = conn.execute(self._profiles, params).rowcount
        if raced or not self.pg:
            for user, sequence, digest in conn.execute(self._conflicts):
                stored[(user, sequence)] = digest
        return stored, inserted

    def _record(
        self,
        conn: sa.Connection,
        run_id: int,
        records: Sequence[tuple[Key, Quarantined]],
        now: datetime,
        written: Written,
    ) -> None:
        """Add quarantined items; those this run already has for the same list are skipped."""
        rows = {
            (key, q.item_digest): {
                "run_id": run_id,
                "account": key[0],
                "follow_type": key[1],
                "to_account": q.to_account,
                "kind": q.kind,
                "reason": q.reason,
                "item": q.item,
                "item_digest": q.item_digest,
                "observed_at": now,
            }
            for key, q in records
        }
        kinds = conn.execute(self._quarantine, list(rows.values())).scalars().all()
        written.quarantined += kinds.count(UNSTORABLE)
        written.conflicts += kinds.count(CONFLICT)
        if kinds:  # the run's summary gives the totals; this says when
            log.info(
                "quarantined %d items that cannot be stored and %d profile conflicts "
                "(`status` lists them)",
                written.quarantined,
                written.conflicts,
            )

    def _analyze(self, conn: sa.Connection, table: str) -> None:
        """Temporary tables get no statistics from autovacuum; without them the planner joins
        a batch of a few lists against all of follow_edges by scanning it."""
        if self.pg:
            conn.execute(sa.text(f"ANALYZE {table}"))

    def _stage_edges(self, conn: sa.Connection, parts: Sequence[ListPart]) -> None:
        """Fill stage_edges; on PostgreSQL as one block of COPY text, built at C speed."""
        if not self.pg:
            rows = [
                (p.account, p.follow_type, to, when, p.baseline, _keeps_seen(p), p.fresh)
                for p in parts
                for to, when in p.edges.items()
            ]
            self._stage(conn, stage_edges, rows)
            return
        chunks: list[str] = []
        for p in parts:
            if not p.edges:
                continue
            head = f"{_escape(p.account)}\t{p.follow_type}\t"
            flags = (p.baseline, _keeps_seen(p), p.fresh)
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
        names = ", ".join(_STAGE_EDGE_COLUMNS)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY stage_edges ({names}) FROM STDIN") as copy:
            copy.write("".join(chunks))

    def _stage(self, conn: sa.Connection, table: sa.Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Fill ``table`` with ``rows`` (in its column order): COPY on PostgreSQL."""
        if not rows:
            return
        columns = table.c.keys()
        names = ", ".join(columns)
        if self.pg:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join(f":{c}" for c in columns)
        conn.execute(
            sa.text(f"INSERT INTO {table.name} ({names}) VALUES ({marks})"),
            [dict(zip(columns, row, strict=True)) for row in rows],
        )

    def _remember_seen(self, conn: sa.Connection, run_id: int, parts: Sequence[ListPart]) -> None:
        """Keep the To_Accounts of lists not yet complete, for their removal check."""
        if not parts:
            return
        if self.pg:
            conn.execute(sa.text(_REMEMBER_SEEN_PG), {"run_id": run_id})
            return
        for part in parts:
            added = conn.execute(
                sa.text(_REMEMBER_SEEN),
                {"run_id": run_id, "account": part.account, "follow_type": part.follow_type},
            ).rowcount
            conn.execute(
                sa.text(
                    "UPDATE sync_checkpoints SET seen = seen + :added WHERE run_id = :run_id "
                    "AND account = :account AND follow_type = :follow_type"
                ),
                {"added": added, "run_id": run_id, **_key(part.key)},
            )

    def _lost_seen(
        self, conn: sa.Connection, run_id: int, complete: Sequence[ListPart]
    ) -> list[Key]:
        """Complete lists whose sync_seen rows are not all there (a crash emptied it)."""
        if not any(p.had_seen for p in complete):
            return []
        rows = conn.execute(sa.text(_SEEN_MISMATCH), {"run_id": run_id})
        return [(account, follow_type) for account, follow_type in rows]

    def _unstage_lists(self, conn: sa.Connection, keys: Sequence[Key]) -> None:
        conn.execute(
            sa.text(
                "DELETE FROM stage_lists WHERE account = :account AND follow_type = :follow_type"
            ),
            [_key(key) for key in keys],
        )


def _key(key: Key) -> dict[str, Any]:
    return {"account": key[0], "follow_type": key[1]}


# COPY text format: backslash, tab and line breaks are escaped; \N is NULL.
_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escape(text: str) -> str:
    return text.translate(_COPY_ESCAPES)


_STAGE_EDGE_COLUMNS = tuple(stage_edges.c.keys())


def _keeps_seen(part: ListPart) -> bool:
    """Its edges go to sync_seen: the list goes on after this batch, and its completion will
    search for removed edges (a fresh list's will not)."""
    return not part.complete and not part.fresh


def mark_all_removed(
    conn: sa.Connection,
    run_id: int,
    account: str,
    follow_type: int,
    now: datetime,
    *,
    started: datetime | None = None,
) -> int:
    """The account no longer exists (30003): every listed edge of this list is removed, but
    those another run added or listed again since this crawl ``started`` (None: now)."""
    params = {
        "run_id": run_id,
        "now": now,
        "account": account,
        "follow_type": follow_type,
        "started": started or now,
    }
    return _mark_removed(conn, where=_OF_LIST, source="", params=params)


def current_edges(conn: sa.Connection, account: str, follow_type: int) -> int:
    """How many current (not removed) edges are stored for the list."""
    return int(
        conn.execute(
            sa.text(
                "SELECT count(*) FROM follow_edges WHERE account = :account "
                "AND follow_type = :follow_type AND removed_at IS NULL"
            ),
            {"account": account, "follow_type": follow_type},
        ).scalar_one()
    )


def forget_run_seen(conn: sa.Connection, run_id: int) -> None:
    """Drop a run's whole removal-check working set (the run ended or was abandoned)."""
    conn.execute(sa.text("DELETE FROM sync_seen WHERE run_id = :run_id"), {"run_id": run_id})


def forget_seen(conn: sa.Connection, run_id: int, keys: Sequence[Key]) -> None:
    """Drop what earlier pages of these lists recorded in sync_seen."""
    if keys:
        conn.execute(
            sa.text(
                "DELETE FROM sync_seen WHERE run_id = :run_id "
                "AND account = :account AND follow_type = :follow_type"
            ),
            [{"run_id": run_id, **_key(key)} for key in keys],
        )
