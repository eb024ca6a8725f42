"""Callback changes applied to the graph (`follow-etl listen`, etl.live): the edges of the
lists the store keeps, their events (source 'callback'), and the ordering state in live_pairs.
What a change does is etl.store.live_rules' (pure); this module reads the state a batch needs
and writes back what it decided, in a fixed handful of statements whatever the batch's size
(each row set bound whole: etl.store.dialect's ``rows``).

Functions take a connection and never commit: the listener's batch transaction holds them, and
acknowledges the callbacks only after it committed.

Concurrency. ``apply`` makes sure every pair of the batch has its live_pairs row (inserted in
key order), then locks them all in one statement in key order, so two batches decide the two
directions of a pair one at a time (a mutual follow is decided once) and never wait for each
other in a cycle: after the pairs, a batch locks only the edges of its own pairs, and the
follow_lists rows it sets live_from on, those too in key order. It also locks the edges it
read, so a concurrent crawl cannot change them between the read and the write (a crawl's
later write still obeys its "unchanged since the crawl began" rule: changed_at is the
database's now). An edge a crawl inserts between the read and the write (there was no row to
lock) is left as the crawl wrote it, with no event of the batch's. On SQLite the batch begins
with a write (the live_pairs insert), which takes the database's one write lock for the whole
transaction: call ``apply`` before any read in that transaction. A deadlock or serialization
failure on PostgreSQL (or a busy SQLite) is an OperationalError: the caller retries the whole
batch, which replays harmlessly.

now: the database's clock (Dialect.now) read once as the batch begins: its edges' first_seen_at
and changed_at, its events' observed_at and the live_from it sets are that one time.
"""

from __future__ import annotations

import functools
from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.store.dialect import Dialect, dialect_of, rowsets
from etl.store.dialect.base import text
from etl.store.dialect.rowsets import RowColumns
from etl.store.live_rules import (
    Applied,
    Change,
    EdgeKey,
    EdgeState,
    Key,
    ListKey,
    Pair,
    PairState,
    Plan,
    micros,
    plan,
    time_of,
)
from etl.store.meta import Timestamp

__all__ = ["Applied", "Change", "apply"]

_PAIRS: RowColumns = (("low", "text"), ("high", "text"))
_ACCOUNTS: RowColumns = (("account", "text"),)
_DIRECTIONS: RowColumns = (("account", "text"), ("to_account", "text"))
_EDGE_KEYS: RowColumns = (("account", "text"), ("follow_type", "smallint"), ("to_account", "text"))
_EDGES: RowColumns = (
    *_EDGE_KEYS,
    ("current", "boolean"),
    ("timed", "boolean"),  # made current by the batch: its follow time, provisional
    ("follow_time", "timestamptz"),
)
_EVENTS: RowColumns = (*_EDGE_KEYS, ("event", "text"), ("n", "int"))
_LISTS: RowColumns = (
    ("account", "text"),
    ("follow_type", "smallint"),
    ("baseline_run_id", "int"),
    ("baseline_at", "timestamptz"),
)
_PAIR_STATES: RowColumns = (
    *_PAIRS,
    ("low_ms", "bigint"),
    ("low_follows", "boolean"),
    ("high_ms", "bigint"),
    ("high_follows", "boolean"),
)

# Every statement finds each row through its table's key: an upsert's conflict, or a probe
# (etl.store.dialect), so no plan reads a whole table, whatever the batch's size.
# Rows to insert go in key order (two batches meeting on new keys meet them in one order);
# WHERE true is for SQLite's parser (INSERT ... SELECT ... ON CONFLICT).
_INSERT_PAIRS = """
INSERT INTO live_pairs (low, high, updated_at)
SELECT v.low, v.high, :now FROM {pairs} WHERE true
ORDER BY v.low, v.high
ON CONFLICT (low, high) DO NOTHING
"""
# The batch's pairs come sorted: the probe locks them in key order.
_LOCK_PAIRS = """
SELECT p.low, p.high, p.low_ms, p.low_follows, p.high_ms, p.high_follows
FROM {pairs} {probe}
"""
# The kept lists of the batch's accounts.
_KEPT_LISTS = """
SELECT l.account, l.follow_type, l.crawled_at, l.live_from, l.baseline_run_id, l.baseline_at
FROM {accounts} {probe}
"""
# Every stored edge between the two accounts of each pair, both ways: three keys each way.
_LOCK_EDGES = """
SELECT e.account, e.follow_type, e.to_account, e.removed_at
FROM {directions}
CROSS JOIN (SELECT 1 AS follow_type UNION ALL SELECT 2 UNION ALL SELECT 3) AS t
{probe}
"""
# New edges; an edge another transaction inserted since the read is left as it is (RETURNING
# says which were inserted).
_INSERT_EDGES = """
INSERT INTO follow_edges (account, follow_type, to_account, follow_time, first_seen_at,
                          removed_at, changed_at, time_provisional)
SELECT v.account, v.follow_type, v.to_account, v.follow_time, :now,
       CASE WHEN v.current THEN NULL ELSE :now END, :now, true
FROM {edges} WHERE true
ORDER BY v.account, v.follow_type, v.to_account
ON CONFLICT (account, follow_type, to_account) DO NOTHING
RETURNING account, follow_type, to_account
"""
# Stored edges (read and locked above): an upsert that always meets its row, and updates it.
_UPDATE_EDGES = """
INSERT INTO follow_edges AS e (account, follow_type, to_account, follow_time, first_seen_at,
                               removed_at, changed_at, time_provisional)
SELECT v.account, v.follow_type, v.to_account, v.follow_time, :now,
       CASE WHEN v.current THEN NULL ELSE :now END, :now, v.timed
FROM {edges} WHERE true
ON CONFLICT (account, follow_type, to_account) DO UPDATE SET
    removed_at = excluded.removed_at,
    changed_at = excluded.changed_at,
    follow_time = CASE WHEN excluded.time_provisional THEN excluded.follow_time
                       ELSE e.follow_time END,
    time_provisional = e.time_provisional OR excluded.time_provisional
"""
_INSERT_EVENTS = """
INSERT INTO follow_edge_events (account, follow_type, to_account, event, observed_at, source)
SELECT v.account, v.follow_type, v.to_account, v.event, :now, 'callback'
FROM {events}
ORDER BY v.n
"""
# Kept lists read with no live_from (rows nothing deletes): an upsert that meets each row and
# sets live_from where it is still unset, locking the rows in key order.
_LIVE_FROM = """
INSERT INTO follow_lists AS l (account, follow_type, baseline_run_id, baseline_at, live_from)
SELECT v.account, v.follow_type, v.baseline_run_id, v.baseline_at, :now
FROM {lists} WHERE true
ORDER BY v.account, v.follow_type
ON CONFLICT (account, follow_type) DO UPDATE SET live_from = excluded.live_from
WHERE l.live_from IS NULL
"""
# Pairs read and locked above: an upsert that meets each row.
_UPDATE_PAIRS = """
INSERT INTO live_pairs AS p (low, high, low_ms, low_follows, high_ms, high_follows, updated_at)
SELECT v.low, v.high, v.low_ms, v.low_follows, v.high_ms, v.high_follows, :now
FROM {pairs} WHERE true
ON CONFLICT (low, high) DO UPDATE SET
    low_ms = excluded.low_ms, low_follows = excluded.low_follows,
    high_ms = excluded.high_ms, high_follows = excluded.high_follows,
    updated_at = excluded.updated_at
"""


class _Statements:
    """The statements of one dialect, built once."""

    def __init__(self, d: Dialect) -> None:
        pairs, edges = rowsets.rows(d, "v", _PAIRS), rowsets.rows(d, "v", _EDGES)
        self.insert_pairs = text(_INSERT_PAIRS.format(pairs=pairs))
        on = "p.low = v.low AND p.high = v.high"
        probe = rowsets.probe(d, "live_pairs", "p", on, lock=True)
        self.lock_pairs = sa.text(_LOCK_PAIRS.format(pairs=pairs, probe=probe))
        probe = rowsets.probe(d, "follow_lists", "l", "l.account = v.account")
        self.kept_lists = sa.text(
            _KEPT_LISTS.format(accounts=rowsets.rows(d, "v", _ACCOUNTS), probe=probe)
        ).columns(crawled_at=Timestamp, live_from=Timestamp, baseline_at=Timestamp)
        on = "e.account = v.account AND e.follow_type = t.follow_type"
        on += " AND e.to_account = v.to_account"
        probe = rowsets.probe(d, "follow_edges", "e", on, lock=True)
        self.lock_edges = sa.text(
            _LOCK_EDGES.format(directions=rowsets.rows(d, "v", _DIRECTIONS), probe=probe)
        )
        self.insert_edges = text(_INSERT_EDGES.format(edges=edges))
        self.update_edges = text(_UPDATE_EDGES.format(edges=edges))
        self.insert_events = text(_INSERT_EVENTS.format(events=rowsets.rows(d, "v", _EVENTS)))
        self.live_from = text(_LIVE_FROM.format(lists=rowsets.rows(d, "v", _LISTS)))
        self.update_pairs = text(_UPDATE_PAIRS.format(pairs=rowsets.rows(d, "v", _PAIR_STATES)))


@functools.cache
def _statements(d: Dialect) -> _Statements:
    return _Statements(d)


def apply(conn: sa.Connection, changes: Sequence[Change]) -> Applied:
    """Apply ``changes`` (any order, duplicates allowed) in the caller's transaction."""
    if not changes:
        return Applied()
    d = dialect_of(conn)
    s = _statements(d)
    now: datetime = conn.execute(sa.select(d.now())).scalar_one()
    pairs = sorted({c.pair for c in changes})
    conn.execute(s.insert_pairs, {"now": now, **rowsets.params("v", pairs)})
    locked = _lock_pairs(conn, d, pairs)
    lists, unset = _kept_lists(conn, d, pairs)
    edges = _lock_edges(conn, d, pairs, lists)
    decided = plan(changes, locked, lists, edges)
    touched = _write_edges(conn, d, decided, now)
    live = [(*key, *unset[key]) for key in sorted(touched) if key in unset]
    if live:
        conn.execute(s.live_from, {"now": now, **rowsets.params("v", live)})
    _write_pairs(conn, d, decided, now)
    return decided.applied


def _lock_pairs(conn: sa.Connection, d: Dialect, pairs: list[Pair]) -> dict[Pair, PairState]:
    """The live_pairs rows of ``pairs``, locked in key order."""
    rows = conn.execute(_statements(d).lock_pairs, rowsets.params("v", pairs)).all()
    return {
        (low, high): PairState(
            None if low_ms is None else (int(low_ms), 0 if low_follows else 1),
            None if high_ms is None else (int(high_ms), 0 if high_follows else 1),
        )
        for low, high, low_ms, low_follows, high_ms, high_follows in rows
    }


def _kept_lists(
    conn: sa.Connection, d: Dialect, pairs: list[Pair]
) -> tuple[dict[ListKey, int | None], dict[ListKey, tuple[Any, Any]]]:
    """The kept lists of the accounts of ``pairs``, with the start of their last complete
    crawl in Unix microseconds (None: not recorded); and those with no live_from, with their
    baseline (run id and time, as a row set binds them)."""
    accounts = sorted({account for pair in pairs for account in pair})
    rows = conn.execute(
        _statements(d).kept_lists, rowsets.params("v", [(a,) for a in accounts])
    ).all()
    lists: dict[ListKey, int | None] = {}
    unset: dict[ListKey, tuple[Any, Any]] = {}
    for account, follow_type, crawled, live_from, run_id, baseline_at in rows:
        key = (account, int(follow_type))
        lists[key] = None if crawled is None else micros(crawled)
        if live_from is None:
            unset[key] = (run_id, d.bind_time(baseline_at))
    return lists, unset


def _lock_edges(
    conn: sa.Connection, d: Dialect, pairs: list[Pair], lists: Container[ListKey]
) -> dict[EdgeKey, EdgeState]:
    """The stored edges between the accounts of ``pairs`` that are in ``lists``, locked. (Only
    this batch locks edges of its pairs among listeners: their order matters against a crawl
    alone, which a deadlock would make retry.)"""
    directions = sorted({(a, b) for low, high in pairs for a, b in ((low, high), (high, low))})
    rows = conn.execute(_statements(d).lock_edges, rowsets.params("v", directions)).all()
    return {
        (account, int(follow_type), to): EdgeState(stored=True, current=removed is None)
        for account, follow_type, to, removed in rows
        if (account, int(follow_type)) in lists
    }


def _write_edges(conn: sa.Connection, d: Dialect, decided: Plan, now: datetime) -> set[ListKey]:
    """Insert and update the edges the batch changed, and record their events; return the
    lists they are in."""
    s = _statements(d)
    new: list[tuple[Any, ...]] = []
    old: list[tuple[Any, ...]] = []
    changed = decided.changed_edges()
    for key, edge in changed:
        at = None if edge.made_current_ms is None else time_of(edge.made_current_ms)
        row = (
            *key,
            edge.current,
            edge.made_current_ms is not None,
            None if at is None else d.bind_time(at),
        )
        (old if edge.stored else new).append(row)
    if new:
        inserted = conn.execute(s.insert_edges, {"now": now, **rowsets.params("v", new)}).all()
        lost = {r[:3] for r in new} - {(a, int(t), b) for a, t, b in inserted}
        decided.drop(lost)
        changed = [(key, edge) for key, edge in changed if key not in lost]
    if old:
        conn.execute(s.update_edges, {"now": now, **rowsets.params("v", old)})
    events = [
        (*key, event, n)
        for n, (key, event) in enumerate(
            (key, event) for key, edge in changed for event in edge.events
        )
    ]
    if events:
        conn.execute(s.insert_events, {"now": now, **rowsets.params("v", events)})
    return {(account, follow_type) for account, follow_type, *_ in events}


def _write_pairs(conn: sa.Connection, d: Dialect, decided: Plan, now: datetime) -> None:
    """Write back the newest key of each direction the batch applied a change to."""
    rows = [
        (*pair, *_columns(state.low), *_columns(state.high))
        for pair, state in sorted(decided.pairs.items())
        if state.changed
    ]
    if rows:
        conn.execute(_statements(d).update_pairs, {"now": now, **rowsets.params("v", rows)})


def _columns(key: Key | None) -> tuple[int | None, bool | None]:
    """A direction's key as live_pairs holds it: EventTime and whether it followed."""
    return (None, None) if key is None else (key[0], key[1] == 0)
