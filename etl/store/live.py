"""Callback changes applied to the graph (`follow-etl listen`, etl.live): the edges of the
lists the store keeps, their events (source 'callback'), and the ordering state in live_pairs.
What a change does is etl.store.live_rules' (pure); this module reads the state a batch needs
and writes back what it decided, in a fixed handful of statements whatever the batch's size
(each row set bound whole: etl.store.dialect's ``rows``).

Functions take a connection and never commit: the listener's batch transaction holds them, and
acknowledges the callbacks only after it committed.

Concurrency. ``apply`` makes sure every pair of the batch has its live_pairs row, then locks
them all in one statement in key order, so two batches decide the two directions of a pair one
at a time (a mutual follow is decided once) and never wait for each other in a cycle: after the
pairs, a batch locks only the edges of its own pairs, and the follow_lists rows it sets
live_from on, those too in key order. It also locks the edges it read, so a concurrent crawl
cannot change them between the read and the write (a crawl's later write still obeys its
"unchanged since the crawl began" rule: changed_at is the database's now). An edge a crawl
inserts between the read and the write (there was no row to lock) is left as the crawl wrote
it, with no event of the batch's. On SQLite the batch's first statement writes, which takes
the database's one write lock for the whole transaction: call ``apply`` before any read in
that transaction. A deadlock or serialization failure on PostgreSQL (or a busy SQLite) is an
OperationalError: the caller retries the whole batch, which replays harmlessly.

now: the database's clock (Dialect.now) read once as the batch begins: its edges' first_seen_at
and changed_at, its events' observed_at and the live_from it sets are that one time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.store.dialect import Dialect, dialect_of
from etl.store.dialect.base import RowColumns, text
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
    pair_edges,
    plan,
    time_of,
)
from etl.store.meta import Timestamp

__all__ = ["Applied", "Change", "apply"]

_PAIRS: RowColumns = (("low", "text"), ("high", "text"))
_ACCOUNTS: RowColumns = (("account", "text"),)
_EDGE_KEYS: RowColumns = (("account", "text"), ("follow_type", "smallint"), ("to_account", "text"))
_LIST_KEYS: RowColumns = (("account", "text"), ("follow_type", "smallint"))
_EDGES: RowColumns = (
    *_EDGE_KEYS,
    ("current", "boolean"),
    ("timed", "boolean"),  # made current by the batch: its follow time, provisional
    ("follow_time", "timestamptz"),
)
_EVENTS: RowColumns = (*_EDGE_KEYS, ("event", "text"), ("n", "int"))
_PAIR_STATES: RowColumns = (
    *_PAIRS,
    ("low_ms", "bigint"),
    ("low_follows", "boolean"),
    ("high_ms", "bigint"),
    ("high_follows", "boolean"),
)

# Insert the missing rows in key order (two batches inserting the same new pairs meet them in
# the same order), WHERE true for SQLite's parser (INSERT ... SELECT ... ON CONFLICT).
_INSERT_PAIRS = """
INSERT INTO live_pairs (low, high, updated_at)
SELECT v.low, v.high, :now FROM {pairs} WHERE true
ORDER BY v.low, v.high
ON CONFLICT (low, high) DO NOTHING
"""
_LOCK_PAIRS = """
SELECT p.low, p.high, p.low_ms, p.low_follows, p.high_ms, p.high_follows
FROM live_pairs p JOIN {pairs} ON p.low = v.low AND p.high = v.high
ORDER BY p.low, p.high
{lock}
"""
# The kept lists of the batch's accounts, with the start of their last complete crawl.
_KEPT_LISTS = """
SELECT l.account, l.follow_type, l.crawled_at
FROM follow_lists l JOIN {accounts} ON l.account = v.account
"""
_LOCK_EDGES = """
SELECT e.account, e.follow_type, e.to_account, e.removed_at
FROM follow_edges e
JOIN {edges} ON e.account = v.account AND e.follow_type = v.follow_type
    AND e.to_account = v.to_account
ORDER BY e.account, e.follow_type, e.to_account
{lock}
"""
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
_UPDATE_EDGES = """
UPDATE follow_edges AS e SET
    removed_at = CASE WHEN v.current THEN NULL ELSE :now END,
    changed_at = :now,
    follow_time = CASE WHEN v.timed THEN v.follow_time ELSE e.follow_time END,
    time_provisional = CASE WHEN v.timed THEN true ELSE e.time_provisional END
FROM {edges}
WHERE e.account = v.account AND e.follow_type = v.follow_type AND e.to_account = v.to_account
"""
_INSERT_EVENTS = """
INSERT INTO follow_edge_events (account, follow_type, to_account, event, observed_at, source)
SELECT v.account, v.follow_type, v.to_account, v.event, :now, 'callback'
FROM {events}
ORDER BY v.n
"""
# The lists are locked in key order before they are written (the subquery): two batches
# setting live_from on the same lists never wait for each other in a cycle.
_LIVE_FROM = """
UPDATE follow_lists SET live_from = :now
WHERE live_from IS NULL AND (account, follow_type) IN (
    SELECT l.account, l.follow_type
    FROM follow_lists l
    JOIN {lists} ON l.account = v.account AND l.follow_type = v.follow_type
    WHERE l.live_from IS NULL
    ORDER BY l.account, l.follow_type
    {lock})
"""
_UPDATE_PAIRS = """
UPDATE live_pairs SET low_ms = v.low_ms, low_follows = v.low_follows,
    high_ms = v.high_ms, high_follows = v.high_follows, updated_at = :now
FROM {pairs}
WHERE live_pairs.low = v.low AND live_pairs.high = v.high
"""


class _Statements:
    """The statements of one dialect, built once."""

    def __init__(self, d: Dialect) -> None:
        pairs, edge_keys = d.rows("v", _PAIRS), d.rows("v", _EDGE_KEYS)
        self.insert_pairs = text(_INSERT_PAIRS.format(pairs=pairs))
        self.lock_pairs = sa.text(_LOCK_PAIRS.format(pairs=pairs, lock=d.lock("p")))
        self.kept_lists = sa.text(_KEPT_LISTS.format(accounts=d.rows("v", _ACCOUNTS))).columns(
            crawled_at=Timestamp
        )
        self.lock_edges = sa.text(_LOCK_EDGES.format(edges=edge_keys, lock=d.lock("e")))
        self.insert_edges = text(_INSERT_EDGES.format(edges=d.rows("v", _EDGES)))
        self.update_edges = text(_UPDATE_EDGES.format(edges=d.rows("v", _EDGES)))
        self.insert_events = text(_INSERT_EVENTS.format(events=d.rows("v", _EVENTS)))
        self.live_from = text(_LIVE_FROM.format(lists=d.rows("v", _LIST_KEYS), lock=d.lock("l")))
        self.update_pairs = text(_UPDATE_PAIRS.format(pairs=d.rows("v", _PAIR_STATES)))


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
    conn.execute(s.insert_pairs, {"now": now, **d.row_params("v", _PAIRS, pairs)})
    locked = _lock_pairs(conn, d, pairs)
    lists = _kept_lists(conn, d, pairs)
    edges = _lock_edges(conn, d, [e for p in pairs for e in pair_edges(p) if e[:2] in lists])
    decided = plan(changes, locked, lists, edges)
    _write_edges(conn, d, decided, now)
    _write_pairs(conn, d, decided, now)
    return decided.applied


def _lock_pairs(conn: sa.Connection, d: Dialect, pairs: list[Pair]) -> dict[Pair, PairState]:
    """The live_pairs rows of ``pairs``, locked in key order."""
    rows = conn.execute(_statements(d).lock_pairs, d.row_params("v", _PAIRS, pairs))
    return {
        (low, high): PairState(
            None if low_ms is None else (int(low_ms), 0 if low_follows else 1),
            None if high_ms is None else (int(high_ms), 0 if high_follows else 1),
        )
        for low, high, low_ms, low_follows, high_ms, high_follows in rows
    }


def _kept_lists(conn: sa.Connection, d: Dialect, pairs: list[Pair]) -> dict[ListKey, int | None]:
    """The kept lists of the accounts of ``pairs``: the start of their last complete crawl in
    Unix microseconds (None: not recorded)."""
    accounts = sorted({account for pair in pairs for account in pair})
    rows = conn.execute(
        _statements(d).kept_lists, d.row_params("v", _ACCOUNTS, [(a,) for a in accounts])
    )
    return {
        (account, int(follow_type)): None if crawled is None else micros(crawled)
        for account, follow_type, crawled in rows
    }


def _lock_edges(conn: sa.Connection, d: Dialect, keys: list[EdgeKey]) -> dict[EdgeKey, EdgeState]:
    """The stored edges among ``keys``, locked in key order."""
    if not keys:
        return {}
    rows = conn.execute(_statements(d).lock_edges, d.row_params("v", _EDGE_KEYS, keys))
    return {
        (account, int(follow_type), to): EdgeState(stored=True, current=removed is None)
        for account, follow_type, to, removed in rows
    }


def _write_edges(conn: sa.Connection, d: Dialect, decided: Plan, now: datetime) -> None:
    """Insert and update the edges the batch changed, then their events and live_from."""
    s = _statements(d)
    new: list[tuple[Any, ...]] = []
    old: list[tuple[Any, ...]] = []
    for key, edge in decided.changed_edges():
        at = None if edge.made_current_ms is None else time_of(edge.made_current_ms)
        row = (
            *key,
            edge.current,
            edge.made_current_ms is not None,
            None if at is None else d.bind_time(at),
        )
        (old if edge.stored else new).append(row)
    if new:
        inserted = conn.execute(s.insert_edges, {"now": now, **d.row_params("v", _EDGES, new)})
        lost = {r[:3] for r in new} - {(a, int(t), b) for a, t, b in inserted}
        decided.drop(lost)
    if old:
        conn.execute(s.update_edges, {"now": now, **d.row_params("v", _EDGES, old)})
    events = [
        (*key, event, n)
        for n, (key, event) in enumerate(
            (key, event) for key, edge in decided.changed_edges() for event in edge.events
        )
    ]
    if not events:
        return
    conn.execute(s.insert_events, {"now": now, **d.row_params("v", _EVENTS, events)})
    lists = sorted({row[:2] for row in events})
    conn.execute(s.live_from, {"now": now, **d.row_params("v", _LIST_KEYS, lists)})


def _write_pairs(conn: sa.Connection, d: Dialect, decided: Plan, now: datetime) -> None:
    """Write back the newest key of each direction the batch applied a change to."""
    rows = [
        (*pair, *_columns(state.low), *_columns(state.high))
        for pair, state in sorted(decided.pairs.items())
        if state.changed
    ]
    if rows:
        conn.execute(
            _statements(d).update_pairs, {"now": now, **d.row_params("v", _PAIR_STATES, rows)}
        )


def _columns(key: Key | None) -> tuple[int | None, bool | None]:
    """A direction's key as live_pairs holds it: EventTime and whether it followed."""
    return (None, None) if key is None else (key[0], key[1] == 0)
