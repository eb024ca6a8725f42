"""The crawl checks the callbacks (etl.store.live): reconciliation, in the batch transaction that
completes lists with a baseline (etl.store.load.Loader._end_lists), and its figures; and the
lists callbacks touched since their last complete crawl, which ``sync --changed-first`` marks
touched in its run (etl.crawl.lister) so that claims take them first.

Per list that completes (stage_lists, after its removals):

- live: the list's callback events (source 'callback') observed from the start of its last
  complete crawl (``follow_lists.crawled_at``) up to the start of this one, read only when
  ``live_from`` says there are some: the changes callbacks brought since the list's last
  complete crawl, which this crawl found already made;
- added / removed: this run's crawl events of the list (source 'crawl'): the edges the crawl
  had to add or remove, which the callbacks missed (the drift).

A list_reconciliation row is written only when one of them is not zero; the view
run_reconciliation sums them per run. Then (etl.store.edges' baselines statement, which writes
the list's follow_lists row anyway) ``live_from`` moves to the list's earliest callback event at
or after this crawl's start (NEXT_LIVE_FROM): changes that came while the crawl ran are the
next crawl's to reconcile.

One statement per batch, set-based over the batch's ending lists (none when no ending list has
a baseline). A list without a baseline is read past by its follow_lists key; one with a
baseline costs one index probe of follow_edge_events (its account's events since the run
began) and, only when ``live_from`` is set, a count of its callback events; a list with nothing
to reconcile writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from etl.store.dialect import Dialect
from etl.store.meta import Timestamp
from etl.store.rows import Key
from etl.store.schema import OPEN_STATUSES, follow_lists, sync_runs

# The crawl events of a run are read from its start on (the account's events by the index on
# (account, observed_at), not the account's whole history). Every process of a run stamps rows
# with its estimate of the database's clock, re-measured every second; the margin covers any
# error in that estimate many times over.
EVENTS_MARGIN = timedelta(hours=1)
ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)  # before any event: the bound of "since ever"

# Counted in two steps, each materialized: PostgreSQL would otherwise copy each count's
# subquery into the final WHERE and run it twice. A list with a baseline costs one probe of the
# account's events since the run began (its crawl events: none, in the common case); the
# removed ones are counted only where there are some, the callback events only where
# live_from is set. The callback events of a list since its last reconciliation are those from
# the start of its last complete crawl (crawled_at; none yet: all of them) to this crawl's
# start; live_from is the first of them (or one stamped a statement after it: a transaction's
# clock moves between its statements), so it says whether there are any, not where they begin.
_RECONCILE = """
WITH listed AS MATERIALIZED (
    SELECT l.account, l.follow_type, l.crawl_started_at, f.live_from, f.crawled_at,
        (SELECT count(*) FROM follow_edge_events v
         WHERE v.account = l.account AND v.follow_type = l.follow_type
           AND v.observed_at >= :events_from AND v.run_id = :run_id
           AND v.source = 'crawl') AS crawled
    FROM stage_lists l
    {list_row}
), counted AS MATERIALIZED (
    SELECT s.account, s.follow_type, s.crawled,
        CASE WHEN s.live_from IS NULL THEN 0 ELSE (
            SELECT count(*) FROM follow_edge_events v
            WHERE v.account = s.account AND v.follow_type = s.follow_type
              AND v.observed_at >= coalesce(s.crawled_at, :origin)
              AND v.observed_at < s.crawl_started_at
              AND v.source = 'callback') END AS live,
        CASE WHEN s.crawled = 0 THEN 0 ELSE (
            SELECT count(*) FROM follow_edge_events v
            WHERE v.account = s.account AND v.follow_type = s.follow_type
              AND v.observed_at >= :events_from AND v.run_id = :run_id
              AND v.source = 'crawl' AND v.event = 'removed') END AS removed
    FROM listed s
)
INSERT INTO list_reconciliation (run_id, account, follow_type, live, added, removed, reconciled_at)
SELECT :run_id, c.account, c.follow_type, c.live, c.crawled - c.removed, c.removed, :now
FROM counted c
WHERE c.live > 0 OR c.crawled > 0
ON CONFLICT (run_id, account, follow_type) DO UPDATE SET
    live = list_reconciliation.live + excluded.live, added = excluded.added,
    removed = excluded.removed, reconciled_at = excluded.reconciled_at
"""


@functools.cache
def _reconcile(list_row: str) -> sa.TextClause:
    """The reconciliation statement, with the dialect's join of a staged list's row."""
    return sa.text(_RECONCILE.format(list_row=list_row)).bindparams(
        sa.bindparam("now", type_=Timestamp),
        sa.bindparam("events_from", type_=Timestamp),
        sa.bindparam("origin", ORIGIN, type_=Timestamp),
    )


# The SET expression of follow_lists.live_from in the statement that records the baselines of
# the lists that end (etl.store.edges; ``{new}`` is the staged list, crawled_at its crawl's
# start). NULL stays NULL (no callback since the last crawl), and so does a live_from at or
# after the start (read from the row as it stands when the statement locks it, which a
# callback committed meanwhile may have set: its event may be too new for this statement to
# see); any other moves to the first callback event since the start, if any.
NEXT_LIVE_FROM = """CASE
    WHEN follow_lists.live_from IS NULL OR follow_lists.live_from >= {new}.crawled_at
    THEN follow_lists.live_from
    ELSE (SELECT min(v.observed_at) FROM follow_edge_events v
          WHERE v.account = {new}.account AND v.follow_type = {new}.follow_type
            AND v.observed_at >= {new}.crawled_at AND v.source = 'callback')
    END"""


def events_from(conn: sa.Connection, run_id: int) -> datetime:
    """From when the run's crawl events are read: its start, less EVENTS_MARGIN."""
    started: datetime = conn.execute(
        sa.select(sync_runs.c.started_at).where(sync_runs.c.id == run_id)
    ).scalar_one()
    return started - EVENTS_MARGIN


def record(conn: sa.Connection, d: Dialect, params: dict[str, Any]) -> int:
    """Reconcile the staged lists that end (``params``: run_id, now, events_from); how many
    lists had anything to reconcile."""
    return max(conn.execute(_reconcile(d.list_row), params).rowcount, 0)


# ---- the figures ---------------------------------------------------------------------------

run_reconciliation = sa.table(
    "run_reconciliation",
    sa.column("run_id", sa.Integer),
    sa.column("lists", sa.BigInteger),
    sa.column("live", sa.BigInteger),
    sa.column("missed_added", sa.BigInteger),
    sa.column("missed_removed", sa.BigInteger),
    sa.column("drift", sa.BigInteger),
    sa.column("live_share", sa.Float),
)
RECONCILED = ("lists", "live", "missed_added", "missed_removed", "drift")


def of_runs(conn: sa.Connection, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each run's reconciliation (run_reconciliation): lists, live, missed_added,
    missed_removed, drift (ints) and live_share (None: nothing changed); runs with nothing
    reconciled are missing."""
    if not run_ids:
        return {}
    v = run_reconciliation.c
    rows = conn.execute(
        sa.select(v.run_id, *(v[name] for name in RECONCILED), v.live_share).where(
            v.run_id.in_(run_ids)
        )
    ).all()
    return {
        int(row.run_id): {
            **{name: int(row._mapping[name] or 0) for name in RECONCILED},
            "live_share": None if row.live_share is None else float(row.live_share),
        }
        for row in rows
    }


def summary(conn: sa.Connection, run_id: int) -> dict[str, Any]:
    """A run's reconciliation as `status` shows it (zeros when it reconciled nothing), and
    ``touched``: the lists callbacks changed that no crawl has completed since (all jobs)."""
    found = of_runs(conn, [run_id]).get(run_id)
    figures = found or {**dict.fromkeys(RECONCILED, 0), "live_share": None}
    return {**figures, "touched": touched(conn)}


# ---- the lists callbacks touched (sync --changed-first) -------------------------------------


def touched_lists(conn: sa.Connection, keys: Collection[Key]) -> set[Key]:
    """Which of these lists callbacks changed since their last complete crawl (live_from set),
    read by account through follow_lists' primary key."""
    if not keys:
        return set()
    f = follow_lists.c
    rows = conn.execute(
        sa.select(f.account, f.follow_type).where(
            f.account.in_(sorted({account for account, _ in keys})), f.live_from.is_not(None)
        )
    )
    return {key for key in ((a, int(t)) for a, t in rows) if key in keys}


def mark_touched(conn: sa.Connection, run_id: int, keys: Collection[Key]) -> None:
    """Mark these lists of the run touched where they are still open (a resumed run's lists
    that callbacks changed since it listed them)."""
    if keys:
        conn.execute(
            sa.text(
                "UPDATE sync_checkpoints SET touched = true WHERE run_id = :run_id "
                "AND account = :account AND follow_type = :follow_type AND NOT touched "
                f"AND {OPEN_STATUSES}"
            ),
            [{"run_id": run_id, "account": a, "follow_type": t} for a, t in sorted(keys)],
        )


def touched(conn: sa.Connection) -> int:
    """How many lists carry callback changes no complete crawl has reconciled yet (the partial
    index of follow_lists.live_from)."""
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(follow_lists)
            .where(follow_lists.c.live_from.is_not(None))
        ).scalar_one()
    )
