"""The run lifecycle in the destination database: a job's runs, the lists each run has, and
their counters when a process stops. Functions take a connection and never commit: the
caller (etl.sync) opens the short transaction each step needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl import load
from etl.schema import sync_checkpoints, sync_runs

STATUSES = ("pending", "running", "done", "skipped", "failed")
MAX_FAILURES = 3  # a list that failed in this many syncs of its run is given up
ADD_CHUNK = 5000  # lists inserted per statement when a run starts: memory stays flat

ck = sync_checkpoints.c  # note: ck.items is a method of the collection; use ck["items"]


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
    )


def unfinished_run(conn: sa.Connection, job: str) -> Run | None:
    """The job's run that has not finished (at most one exists), if any."""
    row = conn.execute(
        sa.select(sync_runs).where(sync_runs.c.job == job, sync_runs.c.status == "running")
    ).first()
    return _run(row) if row else None


def latest_run(conn: sa.Connection, job: str) -> Run | None:
    """The job's newest run, finished or not."""
    row = conn.execute(
        sa.select(sync_runs).where(sync_runs.c.job == job).order_by(sync_runs.c.id.desc()).limit(1)
    ).first()
    return _run(row) if row else None


def start_run(conn: sa.Connection, job: str, options: dict[str, Any], now: datetime) -> int:
    """Insert a new running run; the unique index refuses a second one for the same job."""
    return int(
        conn.execute(
            sa.insert(sync_runs)
            .values(job=job, status="running", started_at=now, options=options)
            .returning(sync_runs.c.id)
        ).scalar_one()
    )


def set_options(conn: sa.Connection, run_id: int, options: dict[str, Any]) -> None:
    """Store the settings a resumed run now goes on with (workers read them)."""
    conn.execute(sa.update(sync_runs).where(sync_runs.c.id == run_id).values(options=options))


def add_lists(
    conn: sa.Connection, run_id: int, lists: Iterable[tuple[str, int]], now: datetime
) -> int:
    """Add pending lists to a run, a chunk at a time; those it already has stay as they are."""
    added = 0
    chunk: list[dict[str, Any]] = []
    for account, follow_type in lists:
        chunk.append(
            {"run_id": run_id, "account": account, "follow_type": follow_type, "updated_at": now}
        )
        if len(chunk) >= ADD_CHUNK:
            added += _add_chunk(conn, chunk)
            chunk = []
    if chunk:
        added += _add_chunk(conn, chunk)
    return added


def _add_chunk(conn: sa.Connection, chunk: list[dict[str, Any]]) -> int:
    stmt = sa.text(
        "INSERT INTO sync_checkpoints (run_id, account, follow_type, status, updated_at) "
        "VALUES (:run_id, :account, :follow_type, 'pending', :updated_at) ON CONFLICT DO NOTHING"
    ).bindparams(sa.bindparam("updated_at", type_=sync_checkpoints.c.updated_at.type))
    result = conn.execute(stmt, chunk)
    return max(result.rowcount, 0)


def abandon_run(conn: sa.Connection, run_id: int, now: datetime) -> None:
    """Give up an unfinished run (``sync --restart``); its scratch rows go with it."""
    conn.execute(
        sa.update(sync_runs)
        .where(sync_runs.c.id == run_id)
        .values(status="abandoned", finished_at=now)
    )
    load.forget_run_seen(conn, run_id)


def is_open(failed_before: datetime | None = None) -> sa.ColumnElement[bool]:
    """Lists a run still has to crawl: not started, half done, or failed fewer than 3 times
    (and, with ``failed_before``, before that time)."""
    failed = sa.and_(ck.status == "failed", ck.failures < MAX_FAILURES)
    if failed_before is not None:
        failed = sa.and_(failed, ck.updated_at < failed_before)
    return sa.or_(ck.status.in_(("pending", "running")), failed)


def counts(conn: sa.Connection, run_id: int) -> dict[str, int]:
    """Lists by status, and pages and items, computed from the checkpoints."""
    result = dict.fromkeys(STATUSES, 0)
    open_now = sa.case((is_open(), 1), else_=0)
    rows = conn.execute(
        sa.select(
            ck.status,
            sa.func.count(),
            sa.func.sum(open_now),
            sa.func.sum(ck.pages),
            sa.func.sum(ck["items"]),
        )
        .where(ck.run_id == run_id)
        .group_by(ck.status)
    ).all()
    result["open"] = result["pages"] = result["items"] = 0
    for status, n, still_open, pages, items in rows:
        result[status] = int(n)
        result["open"] += int(still_open or 0)
        result["pages"] += int(pages or 0)
        result["items"] += int(items or 0)
    result["total"] = sum(result[s] for s in STATUSES)
    return result


def close_run(
    conn: sa.Connection,
    run_id: int,
    *,
    finished: bool,
    requests: int,
    edges_removed: int,
    now: datetime,
) -> None:
    """Store the run's counters; mark it done when no list is left to crawl."""
    c = counts(conn, run_id)
    values: dict[str, Any] = {
        "lists_total": c["total"],
        "lists_done": c["done"],
        "lists_skipped": c["skipped"],
        "lists_failed": c["failed"],
        "pages": c["pages"],
        "items": c["items"],
        "requests": sync_runs.c.requests + requests,
        "edges_removed": sync_runs.c.edges_removed + edges_removed,
    }
    if finished:
        values.update(status="done", finished_at=now)
    conn.execute(sa.update(sync_runs).where(sync_runs.c.id == run_id).values(values))
