"""The run lifecycle in the destination database: a job's runs, the lists each run has, and
their counters. Functions take a connection and never commit: the caller (etl.sync, and the
writer's batch through etl.store.leases and etl.store.cursors) opens the transaction each
step needs.

The counters (sync_run_counters) say what a recount of the run's checkpoints would say: every
statement that changes a checkpoint's status, failures, pages or items adds the change to
them in the same transaction (``count_changes``), so ``status``, the progress display and the
metrics read a few rows instead of the run's millions of checkpoints. Each transaction adds to
the row of its own server backend (PostgreSQL's ``pg_backend_pid()``; SQLite has one writer):
a backend runs one transaction at a time, so two batches committing at once never wait for
one counter row. ``counts`` sums the run's rows; ``recount`` counts the checkpoints (tests).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.store import seen
from etl.store.dialect import dialect_of
from etl.store.schema import MAX_FAILURES as MAX_FAILURES  # where callers look for it
from etl.store.schema import is_open as is_open
from etl.store.schema import sync_checkpoints, sync_run_counters, sync_runs

STATUSES = ("pending", "running", "done", "skipped", "failed", "held")
# Statuses whose lists are still open while failures < MAX_FAILURES: a failed list is tried
# again by the next sync; a held list gets its confirming crawl (etl.holds), and one whose
# confirmation failed is given up for this run (failures = MAX_FAILURES).
RETRYABLE = ("failed", "held")
ADD_CHUNK = 5000  # lists added per statement and transaction: memory flat, a stop heard soon

ck = sync_checkpoints.c  # note: ck.items is a method of the collection; use ck["items"]
rc = sync_run_counters.c
# What the counters hold, besides moved_at: lists by status, open failed or held lists
# ("retryable"), pages, items.
COUNTED = (*STATUSES, "retryable", "pages", "items")


@dataclass(frozen=True)
class Run:
    """A row of sync_runs."""

    id: int
    job: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    options: dict[str, Any]
    requests: int
    edges_removed: int
    listed: bool = True  # every requested list is in (a sync adds them in chunks)


def _run(row: sa.Row[Any]) -> Run:
    return Run(
        id=row.id,
        job=row.job,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        options=dict(row.options),
        requests=int(row.requests),
        edges_removed=int(row.edges_removed),
        listed=bool(row.listed),
    )


def unfinished_run(conn: sa.Connection, job: str) -> Run | None:
    """The job's run that has not finished (at most one exists), if any."""
    row = conn.execute(
        sa.select(sync_runs).where(sync_runs.c.job == job, sync_runs.c.status == "running")
    ).first()
    return _run(row) if row else None


def status_of(conn: sa.Connection, run_id: int) -> str | None:
    """The run's status (running, done, abandoned); None if there is no such run."""
    status: str | None = conn.execute(
        sa.select(sync_runs.c.status).where(sync_runs.c.id == run_id)
    ).scalar_one_or_none()
    return status


def latest_run(conn: sa.Connection, job: str) -> Run | None:
    """The job's newest run, finished or not."""
    row = conn.execute(
        sa.select(sync_runs).where(sync_runs.c.job == job).order_by(sync_runs.c.id.desc()).limit(1)
    ).first()
    return _run(row) if row else None


def start_run(conn: sa.Connection, job: str, options: dict[str, Any], now: datetime) -> int:
    """Insert a new running run, its lists still to add (``listed`` false); the unique index
    refuses a second one for the same job."""
    return int(
        conn.execute(
            sa.insert(sync_runs)
            .values(job=job, status="running", started_at=now, options=options, listed=False)
            .returning(sync_runs.c.id)
        ).scalar_one()
    )


def set_options(conn: sa.Connection, run_id: int, options: dict[str, Any]) -> None:
    """Store the settings a resumed run now goes on with (workers read them)."""
    conn.execute(sa.update(sync_runs).where(sync_runs.c.id == run_id).values(options=options))


def add_lists(
    conn: sa.Connection,
    run_id: int,
    lists: Iterable[tuple[str, int]],
    now: datetime,
    *,
    chunk: int = ADD_CHUNK,
    sizes: Mapping[tuple[str, int], int] | None = None,
    touched: Collection[tuple[str, int]] = (),
) -> int:
    """Add pending lists to a run, ``chunk`` per statement, each with its expected size
    (``sizes``, else 0), those in ``touched`` marked touched (claimed first); those it already
    has stay as they are. How many were new. (etl.crawl.lister calls it once per committed
    chunk.)"""
    added = 0
    sizes = sizes or {}
    rows: list[dict[str, Any]] = []
    for account, follow_type in lists:
        rows.append(
            {
                "run_id": run_id,
                "account": account,
                "follow_type": follow_type,
                "expected_items": sizes.get((account, follow_type), 0),
                "touched": (account, follow_type) in touched,
                "updated_at": now,
            }
        )
        if len(rows) >= chunk:
            added += _add_chunk(conn, rows)
            rows = []
    if rows:
        added += _add_chunk(conn, rows)
    if added:
        changes = Changes()
        changes.counts["pending"] = added
        count_changes(conn, run_id, changes, now)
    return added


def present(conn: sa.Connection, run_id: int, keys: Iterable[tuple[str, int]]) -> set[Any]:
    """Which of these lists the run already has (by its primary key: a resumed run's listing
    reads a chunk, it does not write it again)."""
    wanted = set(keys)
    if not wanted:
        return set()
    # By account (a range of the primary key each), not by (account, follow_type) pairs: a
    # long IN list of row values is not an index lookup on PostgreSQL.
    rows = conn.execute(
        sa.select(ck.account, ck.follow_type).where(
            ck.run_id == run_id, ck.account.in_(sorted({account for account, _ in wanted}))
        )
    )
    return {key for key in ((a, int(t)) for a, t in rows) if key in wanted}


def mark_listed(conn: sa.Connection, run_id: int) -> None:
    """Record that every requested list of the run is in: from now on it may finish."""
    conn.execute(sa.update(sync_runs).where(sync_runs.c.id == run_id).values(listed=True))


def is_listed(conn: sa.Connection, run_id: int) -> bool:
    """Whether every requested list of the run is in (a run half listed cannot finish)."""
    return bool(
        conn.execute(sa.select(sync_runs.c.listed).where(sync_runs.c.id == run_id)).scalar()
    )


def _add_chunk(conn: sa.Connection, chunk: list[dict[str, Any]]) -> int:
    # Not ON CONFLICT DO NOTHING: PostgreSQL writes a speculative insert's confirmation to the
    # WAL (48 bytes a list, issue 18). One lister adds a run's lists (the job's one sync), so
    # no other transaction inserts the same ones; if one ever did, the primary key would say so.
    stmt = sa.text(
        "INSERT INTO sync_checkpoints "
        "(run_id, account, follow_type, status, expected_items, touched, updated_at) "
        "SELECT v.run_id, v.account, v.follow_type, 'pending', :expected_items, :touched, "
        ":updated_at FROM (SELECT CAST(:run_id AS INTEGER) AS run_id, "
        "CAST(:account AS VARCHAR) AS account, CAST(:follow_type AS SMALLINT) AS follow_type) v "
        "WHERE NOT EXISTS (SELECT 1 FROM sync_checkpoints c WHERE c.run_id = v.run_id "
        "AND c.account = v.account AND c.follow_type = v.follow_type)"
    ).bindparams(sa.bindparam("updated_at", type_=sync_checkpoints.c.updated_at.type))
    result = conn.execute(stmt, chunk)
    return max(result.rowcount, 0)


def abandon_run(conn: sa.Connection, run_id: int, now: datetime) -> bool:
    """Give up an unfinished run (``sync --restart``): store its counters as they stand, and
    its scratch rows go with it. False (nothing changed) if it was no longer running.

    On PostgreSQL the update waits for the run's batches in flight (each holds a share lock on
    the run's row: etl.store.leases.hold); every later batch, claim and heartbeat of the run finds
    it closed, and its processes stop."""
    if not _store(conn, run_id, counts(conn, run_id), {"status": "abandoned", "finished_at": now}):
        return False
    seen.forget_run(conn, run_id)
    return True


# ---- counters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """What the counters count of one checkpoint."""

    status: str
    failures: int
    pages: int
    items: int

    def add_to(self, counts: dict[str, int], sign: int) -> None:
        """Add (sign 1) or take away (-1) this checkpoint's share of the counters."""
        counts[self.status] += sign
        if self.status in RETRYABLE and self.failures < MAX_FAILURES:
            counts["retryable"] += sign
        counts["pages"] += sign * self.pages
        counts["items"] += sign * self.items


@dataclass
class Changes:
    """What some checkpoint changes do to the counters: a delta per counter."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))

    def move(self, before: Standing | None, after: Standing | None) -> None:
        """One checkpoint went from ``before`` to ``after`` (None: it did not exist)."""
        if before is not None:
            before.add_to(self.counts, -1)
        if after is not None:
            after.add_to(self.counts, 1)

    def __bool__(self) -> bool:
        return any(self.counts.values())


def standing(row: Any) -> Standing:
    """A Standing from a row with status, failures, pages and items."""
    return Standing(row.status, int(row.failures), int(row.pages), int(row.items))


def standings(conn: sa.Connection, run_id: int, keys: Iterable[tuple[str, int]]) -> dict[Any, Any]:
    """The Standing of each of these lists of the run, by (account, follow_type)."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = conn.execute(
        sa.select(ck.account, ck.follow_type, ck.status, ck.failures, ck.pages, ck["items"]).where(
            ck.run_id == run_id, sa.tuple_(ck.account, ck.follow_type).in_(wanted)
        )
    )
    return {(r.account, r.follow_type): standing(r) for r in rows}


_ADD = """
INSERT INTO sync_run_counters (run_id, shard, {names}, moved_at)
VALUES (:run_id, {shard}, {values}, :moved_at)
ON CONFLICT (run_id, shard) DO UPDATE SET {sums},
    moved_at = CASE WHEN sync_run_counters.moved_at IS NULL
                      OR excluded.moved_at > sync_run_counters.moved_at
                    THEN excluded.moved_at ELSE sync_run_counters.moved_at END
"""


@functools.cache
def _add_statement(shard: str) -> sa.TextClause:
    """The counters' upsert into the transaction's own row (``shard``: the dialect's)."""
    return sa.text(
        _ADD.format(
            names=", ".join(COUNTED),
            shard=shard,
            values=", ".join(f":{name}" for name in COUNTED),
            sums=", ".join(f"{n} = sync_run_counters.{n} + excluded.{n}" for n in COUNTED),
        )
    ).bindparams(sa.bindparam("moved_at", type_=rc.moved_at.type))


def count_changes(conn: sa.Connection, run_id: int, changes: Changes, now: datetime | None) -> None:
    """Add ``changes`` to the run's counters in this transaction; ``now``: lists moved then."""
    if not changes and now is None:
        return
    stmt = _add_statement(dialect_of(conn).shard)
    conn.execute(stmt, {"run_id": run_id, "moved_at": now, **changes.counts})


def _summed(result: dict[str, int]) -> dict[str, int]:
    """The counters as callers see them: lists by status, ``open`` (still to crawl: pending,
    half done, failed fewer than MAX_FAILURES times, or held awaiting their confirming crawl),
    ``total``, pages and items."""
    result["open"] = result["pending"] + result["running"] + result.pop("retryable")
    result["total"] = sum(result[s] for s in STATUSES)
    return result


def counts(conn: sa.Connection, run_id: int) -> dict[str, int]:
    """Lists by status (and ``open``, ``total``), pages and items, from the run's counters."""
    row = conn.execute(
        sa.select(*(sa.func.coalesce(sa.func.sum(rc[n]), 0) for n in COUNTED)).where(
            rc.run_id == run_id
        )
    ).one()
    return _summed({name: int(value) for name, value in zip(COUNTED, row, strict=True)})


def last_activity(conn: sa.Connection, run_id: int) -> datetime | None:
    """When any list of the run last moved (from its counters)."""
    value: datetime | None = conn.execute(
        sa.select(sa.func.max(rc.moved_at)).where(rc.run_id == run_id)
    ).scalar()
    return value


def recount(conn: sa.Connection, run_id: int) -> dict[str, int]:
    """What ``counts`` says, counted from the checkpoints themselves (a full walk of the run:
    for tests and checks, never on a hot path)."""
    result = dict.fromkeys(COUNTED, 0)
    retryable = sa.case((sa.and_(ck.status.in_(RETRYABLE), ck.failures < MAX_FAILURES), 1), else_=0)
    rows = conn.execute(
        sa.select(
            ck.status,
            sa.func.count(),
            sa.func.sum(retryable),
            sa.func.sum(ck.pages),
            sa.func.sum(ck["items"]),
        )
        .where(ck.run_id == run_id)
        .group_by(ck.status)
    ).all()
    for status, n, failed_open, pages, items in rows:
        result[status] = int(n)
        result["retryable"] += int(failed_open or 0)
        result["pages"] += int(pages or 0)
        result["items"] += int(items or 0)
    return _summed(result)


def close_run(
    conn: sa.Connection,
    run_id: int,
    *,
    finished: bool,
    requests: int,
    edges_removed: int,
    now: datetime,
) -> dict[str, int]:
    """Store the run's counters in its row; mark it done when no list is left to crawl (its
    sync_seen leftovers go then). Returns the counts (as ``counts``).

    Only a run still running is changed: a run another process abandoned (``sync
    --restart``) or closed stays as that process left it, and nothing is stored over it."""
    c = counts(conn, run_id)
    values: dict[str, Any] = {
        "requests": sync_runs.c.requests + requests,
        "edges_removed": sync_runs.c.edges_removed + edges_removed,
    }
    if finished:
        values.update(status="done", finished_at=now)
    if _store(conn, run_id, c, values) and finished:
        seen.forget_run(conn, run_id)
    return c


def _store(conn: sa.Connection, run_id: int, c: dict[str, int], values: dict[str, Any]) -> bool:
    """Write the counters and ``values`` into the run's row if it is still running (every
    change of a run's status goes through here); True if it was."""
    stored = {
        "lists_total": c["total"],
        "lists_done": c["done"],
        "lists_skipped": c["skipped"],
        "lists_failed": c["failed"],
        "pages": c["pages"],
        "items": c["items"],
    }
    result = conn.execute(
        sa.update(sync_runs)
        .where(sync_runs.c.id == run_id, sync_runs.c.status == "running")
        .values(stored | values)
    )
    return bool(result.rowcount)
