"""Run and list state in the destination database: claim a run, advance cursors, finish.

Functions take a connection and never commit; etl.sync commits each list's cursor together
with the rows it covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl import load, workers
from etl.load import Key, ListPart
from etl.schema import follow_lists, sync_checkpoints, sync_runs, sync_seen

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


@dataclass
class ListState:
    """Where one (account, follow type) list of a run stands, as claimed by this process."""

    account: str
    follow_type: int
    cursor: str
    seen: int = 0  # rows this crawl has in sync_seen
    baseline: bool = False  # crawled completely in an earlier run

    @property
    def key(self) -> Key:
        """(account, follow_type)."""
        return (self.account, self.follow_type)


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
    conn.execute(sa.delete(sync_seen).where(sync_seen.c.run_id == run_id))


# One statement: pick free lists without waiting for other claimers, lease them, and say which
# have a baseline. Liveness by the server's clock. Fixed text, so psycopg prepares it once.
_CLAIM_PG = sa.text(f"""
UPDATE sync_checkpoints c SET lease_owner = :owner
FROM (
    SELECT account, follow_type FROM sync_checkpoints
    WHERE run_id = :run_id
      AND (status IN ('pending', 'running')
           OR (status = 'failed' AND failures < {MAX_FAILURES} AND updated_at < :failed_before))
      AND (lease_owner IS NULL
           OR (lease_owner <> :owner
               AND lease_owner NOT IN (SELECT id FROM sync_workers
                                       WHERE expires_at > statement_timestamp())))
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
) AS free
WHERE c.run_id = :run_id AND c.account = free.account AND c.follow_type = free.follow_type
RETURNING c.account, c.follow_type, c.cursor, c.seen,
    EXISTS (SELECT 1 FROM follow_lists l
            WHERE l.account = c.account AND l.follow_type = c.follow_type) AS baseline
""").bindparams(sa.bindparam("failed_before", type_=sync_checkpoints.c.updated_at.type))


def claim(
    conn: sa.Connection, run_id: int, owner: str, limit: int, failed_before: datetime
) -> list[ListState]:
    """Lease up to ``limit`` open lists nobody live holds to ``owner``. Never its own: a
    process that was taken for dead must not take its own lists twice.

    A list that failed is claimed only if it failed before ``failed_before`` (when this process
    began crawling): the process that failed a list leaves it to the next sync.
    On PostgreSQL, FOR UPDATE SKIP LOCKED lets workers claim at the same time without waiting
    for each other or taking the same list; a lease is void once its owner stops heartbeating.
    """
    if conn.dialect.name == "postgresql":
        params = {"run_id": run_id, "owner": owner, "limit": limit, "failed_before": failed_before}
        rows = conn.execute(_CLAIM_PG, params).all()
        return [
            ListState(r.account, r.follow_type, r.cursor, int(r.seen), bool(r.baseline))
            for r in rows
        ]
    free = (
        sa.select(ck.account, ck.follow_type)
        .where(
            ck.run_id == run_id,
            _open(failed_before),
            sa.or_(
                ck.lease_owner.is_(None),
                sa.and_(ck.lease_owner != owner, ck.lease_owner.not_in(workers.live_ids(conn))),
            ),
        )
        .limit(limit)
    )
    rows = conn.execute(
        sa.update(sync_checkpoints)
        .where(ck.run_id == run_id, sa.tuple_(ck.account, ck.follow_type).in_(free))
        .values(lease_owner=owner)
        .returning(ck.account, ck.follow_type, ck.cursor, ck.seen)
    ).all()
    states = [ListState(r.account, r.follow_type, r.cursor, int(r.seen)) for r in rows]
    if states:
        f = follow_lists.c
        keys = [s.key for s in states]
        known = {
            (row.account, row.follow_type)
            for row in conn.execute(
                sa.select(f.account, f.follow_type).where(
                    sa.tuple_(f.account, f.follow_type).in_(keys)
                )
            )
        }
        for state in states:
            state.baseline = state.key in known
    return states


def open_elsewhere(conn: sa.Connection, run_id: int, owner: str) -> int:
    """Open lists of the run leased by another live process (which may yet die and free them)."""
    others = workers.live_ids(conn).where(workers.w.id != owner)
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(sync_checkpoints)
            .where(ck.run_id == run_id, _open(), ck.lease_owner.in_(others))
        ).scalar_one()
    )


def hold(conn: sa.Connection, run_id: int, owner: str, keys: Iterable[Key]) -> set[Key]:
    """The lists among ``keys`` that ``owner`` still holds, locked until the transaction ends.

    The one lease check: a batch calls it first and writes only the lists it returns. The row
    locks keep any claimer (SKIP LOCKED) off them until the batch commits, so a lease cannot
    lapse between this check and the writes it guards.
    """
    wanted = list(keys)
    if not wanted:
        return set()
    rows = conn.execute(
        sa.select(ck.account, ck.follow_type)
        .where(
            ck.run_id == run_id,
            ck.lease_owner == owner,
            sa.tuple_(ck.account, ck.follow_type).in_(wanted),
        )
        .with_for_update()
    )
    return {(account, follow_type) for account, follow_type in rows}


def release(conn: sa.Connection, run_id: int, owner: str) -> None:
    """Give back every lease ``owner`` holds in the run."""
    conn.execute(
        sa.update(sync_checkpoints)
        .where(ck.run_id == run_id, ck.lease_owner == owner)
        .values(lease_owner=None)
    )


_ADVANCE_PG = sa.text("""
UPDATE sync_checkpoints c SET
    cursor = v.cursor,
    status = CASE WHEN v.complete THEN 'done' ELSE 'running' END,
    pages = CASE WHEN v.restarted THEN v.pages ELSE c.pages + v.pages END,
    items = CASE WHEN v.restarted THEN v.items ELSE c.items + v.items END,
    restarts = c.restarts + CASE WHEN v.restarted THEN 1 ELSE 0 END,
    seen = CASE WHEN v.restarted THEN 0 ELSE c.seen END,
    lease_owner = CASE WHEN v.complete THEN NULL ELSE c.lease_owner END,
    last_error = NULL,
    updated_at = :now
FROM unnest(CAST(:accounts AS text[]), CAST(:types AS smallint[]), CAST(:cursors AS text[]),
            CAST(:pages AS int[]), CAST(:items AS bigint[]), CAST(:complete AS bool[]),
            CAST(:restarted AS bool[]))
     AS v(account, follow_type, cursor, pages, items, complete, restarted)
WHERE c.run_id = :run_id AND c.account = v.account AND c.follow_type = v.follow_type
""").bindparams(sa.bindparam("now", type_=sync_checkpoints.c.updated_at.type))


def advance(conn: sa.Connection, run_id: int, parts: Sequence[ListPart], now: datetime) -> None:
    """Move the cursors of a batch's lists on (lists the batch holds: see ``hold``)."""
    if not parts:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(
            _ADVANCE_PG,
            {
                "run_id": run_id,
                "now": now,
                "accounts": [p.account for p in parts],
                "types": [p.follow_type for p in parts],
                "cursors": [p.next_cursor for p in parts],
                "pages": [p.pages for p in parts],
                "items": [len(p.edges) for p in parts],
                "complete": [p.complete for p in parts],
                "restarted": [p.restarted for p in parts],
            },
        )
        return
    for p in parts:
        values: dict[str, Any] = {
            "cursor": p.next_cursor,
            "status": "done" if p.complete else "running",
            "pages": ck.pages + p.pages,
            "items": ck["items"] + len(p.edges),
            "last_error": None,
            "updated_at": now,
        }
        if p.complete:
            values["lease_owner"] = None
        if p.restarted:
            # The list began again from "": what was counted before no longer describes it.
            values.update(pages=p.pages, items=len(p.edges), restarts=ck.restarts + 1, seen=0)
        conn.execute(
            sa.update(sync_checkpoints)
            .where(*_where(run_id, p.account, p.follow_type))
            .values(values)
        )


def recrawl(conn: sa.Connection, run_id: int, keys: Sequence[Key], now: datetime) -> None:
    """Send lists back to their start: what this crawl saw of them was lost."""
    for account, follow_type in keys:
        conn.execute(
            sa.update(sync_checkpoints)
            .where(*_where(run_id, account, follow_type))
            .values(
                cursor="",
                status="pending",
                seen=0,
                restarts=ck.restarts + 1,
                lease_owner=None,
                last_error="sync_seen lost (server crash?): the list is crawled again",
                updated_at=now,
            )
        )
        conn.execute(
            sa.delete(sync_seen).where(
                sync_seen.c.run_id == run_id,
                sync_seen.c.account == account,
                sync_seen.c.follow_type == follow_type,
            )
        )


def _open(failed_before: datetime | None = None) -> sa.ColumnElement[bool]:
    """Lists a run still has to crawl: not started, half done, or failed fewer than 3 times
    (and, with ``failed_before``, before that time)."""
    failed = sa.and_(ck.status == "failed", ck.failures < MAX_FAILURES)
    if failed_before is not None:
        failed = sa.and_(failed, ck.updated_at < failed_before)
    return sa.or_(ck.status.in_(("pending", "running")), failed)


def _where(run_id: int, account: str, follow_type: int) -> Sequence[sa.ColumnElement[bool]]:
    return (ck.run_id == run_id, ck.account == account, ck.follow_type == follow_type)


def settle(
    conn: sa.Connection,
    run_id: int,
    key: Key,
    *,
    status: str | None,
    failures: str,
    error: str | None,
    now: datetime,
) -> None:
    """End this process's work on a list and give its lease back (see etl.crawl.outcome).

    ``status`` None leaves it as it is; ``failures`` is "keep", "add" (the next sync tries it
    again, until MAX_FAILURES) or "give_up" (the same request would get the same answer).
    ``error`` None leaves last_error as it is.
    """
    values: dict[str, Any] = {"lease_owner": None, "updated_at": now}
    if status is not None:
        values["status"] = status
    if error is not None:
        values["last_error"] = error
    if failures == "add":
        values["failures"] = ck.failures + 1
    elif failures == "give_up":
        values["failures"] = MAX_FAILURES
    conn.execute(sa.update(sync_checkpoints).where(*_where(run_id, *key)).values(values))


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
    live = [
        {
            "id": w["id"],
            "role": w["role"],
            "host": w["host"],
            "pid": w["pid"],
            "started_at": _iso(w["started_at"]),
            "heartbeat_at": _iso(w["heartbeat_at"]),
            "calls": int(w["calls"]),
            "items": int(w["items"]),
        }
        for w in workers.live(conn, run.id)
    ]
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
            "quarantined": load.quarantine_summary(conn, run.id),
            "workers": live,
        },
    }
