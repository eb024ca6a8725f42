"""Run and list state in the destination database: claim a run, advance cursors, finish.

Functions take a connection and never commit; etl.sync commits each list's cursor together
with the rows it covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.schema import sync_checkpoints, sync_runs, sync_seen

STATUSES = ("pending", "running", "done", "skipped", "failed")
MAX_FAILURES = 3  # a list that failed in this many syncs of its run is given up
CHUNK = 1000  # lists fetched per query while walking a run: memory stays flat

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


@dataclass(frozen=True)
class ListState:
    """Where one (account, follow type) list of a run stands."""

    account: str
    follow_type: int
    cursor: str


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


def add_lists(
    conn: sa.Connection, run_id: int, lists: Iterable[tuple[str, int]], now: datetime
) -> int:
    """Add pending lists to a run (those it already has are kept as they are)."""
    existing = {
        (row.account, row.follow_type)
        for row in conn.execute(sa.select(ck.account, ck.follow_type).where(ck.run_id == run_id))
    }
    new = [
        {"run_id": run_id, "account": a, "follow_type": t, "status": "pending", "updated_at": now}
        for a, t in dict.fromkeys(lists)
        if (a, t) not in existing
    ]
    for start in range(0, len(new), 5000):
        conn.execute(sa.insert(sync_checkpoints), new[start : start + 5000])
    return len(new)


def abandon_run(conn: sa.Connection, run_id: int, now: datetime) -> None:
    """Give up an unfinished run (``sync --restart``); its scratch rows go with it."""
    conn.execute(
        sa.update(sync_runs)
        .where(sync_runs.c.id == run_id)
        .values(status="abandoned", finished_at=now)
    )
    conn.execute(sa.delete(sync_seen).where(sync_seen.c.run_id == run_id))


def open_lists(engine: Engine, run_id: int) -> Iterator[ListState]:
    """The lists a run still has to crawl, in a stable order, a chunk per short query."""
    after: tuple[str, int] = ("", 0)
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(ck.account, ck.follow_type, ck.cursor)
                .where(
                    ck.run_id == run_id,
                    _open(),
                    sa.tuple_(ck.account, ck.follow_type) > sa.tuple_(*after),
                )
                .order_by(ck.account, ck.follow_type)
                .limit(CHUNK)
            ).all()
        if not rows:
            return
        for row in rows:
            yield ListState(row.account, row.follow_type, row.cursor)
        after = (rows[-1].account, rows[-1].follow_type)


def _open() -> sa.ColumnElement[bool]:
    """Lists a run still has to crawl: not started, half done, or failed fewer than 3 times."""
    return sa.or_(
        ck.status.in_(("pending", "running")),
        sa.and_(ck.status == "failed", ck.failures < MAX_FAILURES),
    )


def _where(run_id: int, account: str, follow_type: int) -> Sequence[sa.ColumnElement[bool]]:
    return (ck.run_id == run_id, ck.account == account, ck.follow_type == follow_type)


def advance(
    conn: sa.Connection,
    run_id: int,
    account: str,
    follow_type: int,
    *,
    next_cursor: str,
    items: int,
    restarted: bool,
    now: datetime,
) -> None:
    """One more page of the list is stored: move its cursor on (done when the cursor is "")."""
    values: dict[str, Any] = {
        "cursor": next_cursor,
        "status": "done" if next_cursor == "" else "running",
        "pages": ck.pages + 1,
        "items": ck["items"] + items,
        "last_error": None,
        "updated_at": now,
    }
    if restarted:
        # The list began again from "": what was counted before no longer describes it.
        values.update(pages=1, items=items, restarts=ck.restarts + 1)
    conn.execute(
        sa.update(sync_checkpoints).where(*_where(run_id, account, follow_type)).values(values)
    )


def settle(
    conn: sa.Connection,
    run_id: int,
    account: str,
    follow_type: int,
    *,
    status: str,
    error: str | None,
    now: datetime,
    give_up: bool = False,
) -> None:
    """End a list without a last page: ``skipped`` (no such account) or ``failed``.

    A failed list is tried again by the next sync of the run, unless ``give_up`` (the same
    request would get the same answer) or it has now failed MAX_FAILURES times.
    """
    values: dict[str, Any] = {"status": status, "last_error": error, "updated_at": now}
    if status == "failed":
        values["failures"] = MAX_FAILURES if give_up else ck.failures + 1
    conn.execute(
        sa.update(sync_checkpoints).where(*_where(run_id, account, follow_type)).values(values)
    )


def note_error(
    conn: sa.Connection, run_id: int, account: str, follow_type: int, error: str
) -> None:
    """Record an error that stopped the run on this list, leaving its status as it is."""
    conn.execute(
        sa.update(sync_checkpoints)
        .where(*_where(run_id, account, follow_type))
        .values(last_error=error)
    )


def counts(conn: sa.Connection, run_id: int) -> dict[str, int]:
    """Lists by status, and pages and items, computed from the checkpoints."""
    result = dict.fromkeys(STATUSES, 0)
    is_open = sa.case((_open(), 1), else_=0)
    rows = conn.execute(
        sa.select(
            ck.status,
            sa.func.count(),
            sa.func.sum(is_open),
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


def errors(conn: sa.Connection, run_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """Lists of the run that carry an error (failed, or skipped because the account is gone)."""
    rows = conn.execute(
        sa.select(ck.account, ck.follow_type, ck.status, ck.last_error)
        .where(ck.run_id == run_id, ck.last_error.is_not(None))
        .order_by(ck.account, ck.follow_type)
        .limit(limit)
    ).all()
    return [
        {
            "account": r.account,
            "follow_type": r.follow_type,
            "status": r.status,
            "error": r.last_error,
        }
        for r in rows
    ]


def last_activity(conn: sa.Connection, run_id: int) -> datetime | None:
    """When any list of the run last moved."""
    value: datetime | None = conn.execute(
        sa.select(sa.func.max(ck.updated_at)).where(ck.run_id == run_id)
    ).scalar()
    return value


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


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no zone; follow-etl always writes UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def status_document(conn: sa.Connection, job: str) -> dict[str, Any]:
    """The ``status --json`` document of the job's latest run (shape documented in the README)."""
    run = latest_run(conn, job)
    if run is None:
        return {"job": job, "run": None}
    lists = counts(conn, run.id)
    return {
        "job": job,
        "run": {
            "id": run.id,
            "status": run.status,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "last_activity": _iso(last_activity(conn, run.id)),
            "options": run.options,
            "lists": {
                k: lists[k]
                for k in ("total", "done", "skipped", "failed", "running", "pending", "open")
            },
            "pages": lists["pages"],
            "items": lists["items"],
            "requests": run.requests,
            "edges_removed": run.edges_removed,
            "errors": errors(conn, run.id),
        },
    }
