"""The status document (``status --json``, etl.api.status, the metrics): what the latest run
of a job stands at, read in one connection. Nothing here writes, and nothing here walks the
run's checkpoints: the counts come from the run's counters (etl.store.runs.counts), the errors from
a partial index of the lists that have one, the reconciliation with the callbacks from the
run's rows of list_reconciliation and the partial index of follow_lists.live_from
(etl.store.reconcile).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl.store import reconcile, runs, workers
from etl.store.schema import quarantined_items, sync_checkpoints
from etl.tencent.rows import CONFLICT, UNSTORABLE

ck = sync_checkpoints.c


def errors(conn: sa.Connection, run_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """Lists of the run that carry an error (failed, or skipped because the account is gone):
    the partial index ix_sync_checkpoints_errors holds just those."""
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


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no zone; follow-etl always writes UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def status_document(conn: sa.Connection, job: str) -> dict[str, Any]:
    """The ``status --json`` document of the job's latest run (shape documented in the README)."""
    run = runs.latest_run(conn, job)
    if run is None:
        return {"job": job, "run": None}
    lists = runs.counts(conn, run.id)
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
            "listed": run.listed,  # every list of the run is in (a sync adds them in chunks)
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "last_activity": _iso(runs.last_activity(conn, run.id)),
            "options": run.options,
            "lists": {
                k: lists[k]
                for k in (
                    "total",
                    "done",
                    "skipped",
                    "failed",
                    "held",
                    "running",
                    "pending",
                    "open",
                )
            },
            "pages": lists["pages"],
            "items": lists["items"],
            "requests": run.requests,
            "edges_removed": run.edges_removed,
            "errors": errors(conn, run.id),
            "quarantined": quarantine_summary(conn, run.id),
            "held": held_summary(conn, run.id, lists["held"]),
            "reconciliation": reconcile.summary(conn, run.id),
            "workers": live,
        },
    }


def held_summary(conn: sa.Connection, run_id: int, count: int, samples: int = 5) -> dict[str, Any]:
    """The run's lists held for a mass removal (etl.holds): how many, and the first few with
    what their crawl saw (R of S stored edges, how it ended, when), through the partial index
    of lists with an error (a held list always carries one)."""
    rows = (
        conn.execute(
            sa.select(
                ck.account,
                ck.follow_type,
                ck.failures,
                ck.held_removed,
                ck.held_current,
                ck.held_ending,
                ck.held_at,
            )
            .where(ck.run_id == run_id, ck.last_error.is_not(None), ck.status == "held")
            .order_by(ck.account, ck.follow_type)
            .limit(samples)
        ).all()
        if count
        else []
    )
    return {
        "count": count,
        "lists": [
            {
                "account": r.account,
                "follow_type": int(r.follow_type),
                "removed": int(r.held_removed or 0),
                "current": int(r.held_current or 0),
                "ending": r.held_ending,
                "held_at": _iso(r.held_at),
                # Still to be crawled once more in this run; else not confirmed, left to the next.
                "confirming": int(r.failures) < runs.MAX_FAILURES,
            }
            for r in rows
        ],
    }


def quarantine_summary(conn: sa.Connection, run_id: int, samples: int = 5) -> dict[str, Any]:
    """What a run quarantined: counts by kind and by reason, and the newest few records
    (without their item: ``SELECT item FROM quarantined_items WHERE id = ...`` has it)."""
    q = quarantined_items.c
    count = sa.func.count().label("count")
    reasons = conn.execute(
        sa.select(q.kind, q.reason, count)
        .where(q.run_id == run_id)
        .group_by(q.kind, q.reason)
        .order_by(count.desc(), q.kind, q.reason)
    ).all()
    newest = conn.execute(
        sa.select(q.id, q.account, q.follow_type, q.to_account, q.kind, q.reason, q.observed_at)
        .where(q.run_id == run_id)
        .order_by(q.id.desc())
        .limit(samples)
    ).all()
    by_kind = {UNSTORABLE: 0, CONFLICT: 0}
    for kind, _, n in reasons:
        by_kind[kind] = by_kind.get(kind, 0) + int(n)
    return {
        "total": sum(by_kind.values()),
        "by_kind": by_kind,
        "by_reason": [{"kind": k, "reason": r, "count": int(n)} for k, r, n in reasons],
        "samples": [
            {
                "id": int(row.id),
                "account": row.account,
                "follow_type": int(row.follow_type),
                "to_account": row.to_account,
                "kind": row.kind,
                "reason": row.reason,
                "observed_at": _iso(row.observed_at),
            }
            for row in newest
        ],
    }
