"""follow_edges and follow_edge_events: a batch's edges upserted from stage_edges, the
removals of the lists that end (stage_lists), and the baselines those lists become.

- an edge is inserted when new, updated only when its follow time changed, it came back, or
  its time is provisional (a callback's EventTime, etl.store.live: the crawl stores the API's
  FollowTime over it);
- a list crawled to its end marks the edges it no longer lists removed, touching only those;
- edge changes on lists with a baseline (crawled completely before) become follow_edge_events;
- a list crawled to its end records its size and its crawl's start (follow_lists), and moves
  its live_from past that start (etl.store.reconcile).

Two runs may crawl one list at once (jobs whose accounts overlap, `verify --repair`): one
rule keeps either from undoing what the other observed later. A crawl changes only edges
unchanged since it began (its list's crawl_started_at): it inserts new edges, lists again
those removed before it began, updates their follow time (a provisional one too), and
(_UNLISTED_SOURCE) removes what it no longer lists, but leaves an edge another run (or a
callback) inserted, listed again, changed or removed after it began: that observation is newer
than its own. follow_edges.changed_at
records each such change (null: none since revision 0008).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.store import reconcile
from etl.store.dialect import Dialect, dialect_of
from etl.store.dialect.base import text
from etl.store.rows import Key, ListPart

_UNCHANGED = "({row}.changed_at IS NULL OR {row}.changed_at < {start})"
# The start of a staged row's crawl, from its list's checkpoint (by primary key). Read only for
# rows whose stored twin changed or was removed since revision 0008 (a few per batch), never
# per staged row: a start copied into every staged row doubled the COPY of a batch (a
# timestamptz parsed per row: 0.6 -> 1.2 µs a row).
_START = """coalesce(
    (SELECT c.crawl_started_at FROM sync_checkpoints c
     WHERE c.run_id = :run_id AND c.account = {row}.account
       AND c.follow_type = {row}.follow_type), :now)"""

# An 'added' event: a staged edge of a list with a baseline that was not stored, or was removed
# (and unchanged since the crawl began), before the batch wrote it.
_ADDED = """
INSERT INTO follow_edge_events (account, follow_type, to_account, event, observed_at, run_id)
SELECT s.account, s.follow_type, s.to_account, 'added', :now, :run_id
FROM stage_edges s
{written}{stored_edge}
WHERE s.baseline AND (e.account IS NULL OR (e.removed_at IS NOT NULL AND {unchanged}))
"""
# Where a backend runs transactions side by side (Dialect.writes_with_events), the events come
# from the statement that writes the edges, for the rows it did write: a callback (or another
# run) that commits the same edge between the lookup and the write leaves it unwritten (the
# rule, checked again in ON CONFLICT), and then no event either. Every part of the statement
# sees the rows as they were before it, so ``e`` is the edge before this batch.
_WITH_WRITES = """WITH written AS ({write}RETURNING {target}.account, {target}.follow_type,
    {target}.to_account)"""
_WRITTEN = """JOIN written w
  ON w.account = s.account AND w.follow_type = s.follow_type AND w.to_account = s.to_account
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
       OR ((e.removed_at IS NOT NULL OR e.follow_time {differs} {time} OR e.time_provisional)
           AND {unchanged}))
ORDER BY s.account, s.follow_type, s.to_account
ON CONFLICT (account, follow_type, to_account)
DO UPDATE SET follow_time = excluded.follow_time, removed_at = NULL,
    changed_at = excluded.changed_at, time_provisional = false
WHERE {still_unchanged}
"""

# Lists with no current edge stored (Mode.fresh): nearly every row is new, so no join looks
# for the stored ones first; a removed edge listed again, or an item the API repeated, meets
# its row in ON CONFLICT, which writes it only if it changed.
_INSERT_FRESH_EDGES = """
INSERT INTO follow_edges AS e (account, follow_type, to_account, follow_time, first_seen_at,
                               changed_at)
SELECT s.account, s.follow_type, s.to_account, {time}, :now, :now
FROM stage_edges s
WHERE s.fresh
ORDER BY s.account, s.follow_type, s.to_account
ON CONFLICT (account, follow_type, to_account)
DO UPDATE SET follow_time = excluded.follow_time, removed_at = NULL,
    changed_at = excluded.changed_at, time_provisional = false
WHERE (e.removed_at IS NOT NULL OR e.follow_time {differs} excluded.follow_time
       OR e.time_provisional)
  AND {still_unchanged}
"""

# What "removed" means, once: a listed edge of a list this crawl finished (stage_lists l, not
# fresh: see Mode.searches), unchanged since the crawl began (another run may have added or
# listed it again meanwhile: not this crawl's to remove), that the crawl did not see, neither
# in this batch (stage_edges) nor in earlier ones (sync_seen). A set difference, so no plan
# can turn it into a search of the staged rows per stored edge (stage_edges has no index on
# PostgreSQL; see etl.store.staging).
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

# A finished list is a baseline from now on, and its size is what the next run sizes it by
# (etl.tencent.sizes). crawled_at is its crawl's start (callbacks older than it are stale for
# the list: etl.store.live), never moved back by a crawl that began earlier and ended later (two
# runs on one list); live_from moves past that start (etl.store.reconcile). Not one upsert: the
# insert of the lists without a row (ON CONFLICT DO NOTHING: a conflict found before inserting
# writes nothing), then, in statements that see what a concurrent insert committed meanwhile,
# the update of the rows that change, one list a statement (by primary key, whatever the
# planner believes of the tables' sizes). An upsert writes a lock record before it decides
# (with the page's image, about 100 bytes of WAL a list, measured: issue 18); an update writes
# the row alone, a HOT update (crawled_at and items are in no index, and follow_lists keeps
# room on its pages: its fillfactor). crawled_at moves on every complete crawl that began
# later than the stored one, so an unchanged re-sync still writes each list once: a delayed
# callback older than the crawl must stay stale for the list even when the crawl changed
# nothing (a follow and its unfollow, neither applied yet when the crawl read the list: the
# follow, arriving late, would make the edge current again). Each list's checkpoint (a staged
# list's exists) is looked up on its own, by a correlated subquery: a join could read the whole
# run (see HOLD in etl.store.dialect.postgres_checkpoints).
_NEW_BASELINES = text("""
INSERT INTO follow_lists (account, follow_type, baseline_run_id, baseline_at, items, crawled_at)
SELECT l.account, l.follow_type, :run_id, :now,
    (SELECT c.items FROM sync_checkpoints c
     WHERE c.run_id = :run_id AND c.account = l.account AND c.follow_type = l.follow_type),
    l.crawl_started_at
FROM stage_lists l
WHERE true
ON CONFLICT (account, follow_type) DO NOTHING
""")
_MOVED_BASELINE = text(f"""
UPDATE follow_lists SET items = n.items,
    crawled_at = CASE WHEN follow_lists.crawled_at > n.crawled_at
                      THEN follow_lists.crawled_at ELSE n.crawled_at END,
    live_from = {reconcile.NEXT_LIVE_FROM.format(new="n")}
FROM (SELECT c.account, c.follow_type, c.items, :crawled_at AS crawled_at
      FROM sync_checkpoints c
      WHERE c.run_id = :run_id AND c.account = :account AND c.follow_type = :follow_type) n
WHERE follow_lists.account = :account AND follow_lists.follow_type = :follow_type
  AND (follow_lists.items IS DISTINCT FROM n.items
       OR follow_lists.crawled_at IS NULL OR follow_lists.crawled_at < n.crawled_at
       OR follow_lists.live_from < n.crawled_at)
""")


class _Statements:
    """The edge statements of one dialect, built once."""

    def __init__(self, d: Dialect) -> None:
        unchanged = _UNCHANGED.format(row="e", start=_START.format(row="s"))
        self.upsert = text(
            _UPSERT_EDGES.format(
                time=d.time,
                differs=d.differs,
                stored_edge=d.stored_edge,
                unchanged=unchanged,
                still_unchanged=_UNCHANGED.format(
                    row="follow_edges", start=_START.format(row="excluded")
                ),
            )
        )
        insert_fresh = _INSERT_FRESH_EDGES.format(
            time=d.time,
            differs=d.differs,
            still_unchanged=_UNCHANGED.format(row="e", start=_START.format(row="excluded")),
        )
        self.insert_fresh = text(insert_fresh)
        self.insert_fresh_plain = text(insert_fresh[: insert_fresh.index("ON CONFLICT")])
        added = functools.partial(_ADDED.format, stored_edge=d.stored_edge, unchanged=unchanged)
        self.added_events = text(added(written=""))
        # The writes with their events (Dialect.writes_with_events).
        self.upsert_events, self.insert_fresh_events = (
            text(_WITH_WRITES.format(write=write.text, target=target) + added(written=_WRITTEN))
            for write, target in ((self.upsert, "follow_edges"), (text(insert_fresh), "e"))
        )
        self.unlisted_source = _UNLISTED_SOURCE.format(listed=d.listed, seen=d.seen_of_ending)
        self.removal_counts = sa.text(
            _REMOVAL_COUNTS.format(source=self.unlisted_source, where=_UNLISTED)
        )


@functools.cache
def _statements(d: Dialect) -> _Statements:
    return _Statements(d)


def write(
    conn: sa.Connection, d: Dialect, parts: Sequence[ListPart], params: dict[str, Any]
) -> int:
    """Upsert the edges of ``parts`` (staged first); return how many 'added' events."""
    if not any(p.edges for p in parts):
        return 0
    statements = _statements(d)
    d.stage_edges(conn, parts)
    baseline = any(p.baseline for p in parts)
    together = baseline and d.writes_with_events
    events = 0
    if baseline and not together:  # one writer: nothing commits between the two statements
        events = conn.execute(statements.added_events, params).rowcount
    writes = (
        (True, statements.insert_fresh, statements.insert_fresh_events),
        (False, statements.upsert, statements.upsert_events),
    )
    for fresh, alone, with_events in writes:
        if any(p.mode.fresh is fresh and p.edges for p in parts):
            if together:
                events += conn.execute(with_events, params).rowcount  # the events it inserted
            elif fresh and d.savepoints:
                _insert_fresh(conn, statements, params)
            else:
                conn.execute(alone, params)
    return events


def _insert_fresh(conn: sa.Connection, statements: _Statements, params: dict[str, Any]) -> None:
    """The fresh lists' edges (lists without a baseline): a plain INSERT first, with no
    conflict check per row (an upsert's costs PostgreSQL about a third more a row); the upsert
    when a key is already stored (an edge removed earlier, revived, or one another run's crawl
    stored since this one began), from a savepoint, so the batch goes on."""
    savepoint = conn.begin_nested()
    try:
        conn.execute(statements.insert_fresh_plain, params)
    except sa.exc.IntegrityError as exc:
        _forget(exc)
        savepoint.rollback()
        conn.execute(statements.insert_fresh, params)
    else:
        savepoint.commit()


def _forget(exc: BaseException | None) -> None:
    """Drop the tracebacks of a handled error and its causes: their frames hold the error and
    the connection in a cycle, which would keep the connection for the cyclic collector."""
    while exc is not None:
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def removal_counts(conn: sa.Connection, d: Dialect, params: dict[str, Any]) -> dict[Key, int]:
    """How many edges each staged list that ends would have removed (by ``mark_unlisted``)."""
    rows = conn.execute(_statements(d).removal_counts, params)
    return {(account, follow_type): int(n) for account, follow_type, n in rows}


def mark_unlisted(conn: sa.Connection, d: Dialect, params: dict[str, Any]) -> int:
    """Mark removed the edges the staged lists that end no longer list; how many."""
    source = _statements(d).unlisted_source
    return d.mark_removed(conn, where=_UNLISTED, source=source, params=params)


def record_baselines(
    conn: sa.Connection, params: dict[str, Any], starts: Sequence[tuple[str, int, Any]]
) -> None:
    """The staged lists that end are baselines from now on, with their size and their
    crawl's start; their live_from moves past that start. ``starts``: (account, follow_type,
    crawl start as staged) of each list still staged. A list whose row would not change is
    not written."""
    conn.execute(_NEW_BASELINES, params)
    if starts:
        conn.execute(
            _MOVED_BASELINE,
            [
                {"run_id": params["run_id"], "account": a, "follow_type": t, "crawled_at": at}
                for a, t, at in starts
            ],
        )


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
    return dialect_of(conn).mark_removed(conn, where=_OF_LIST, source="", params=params)


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
