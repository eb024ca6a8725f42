"""A list's cursor within a run (sync_checkpoints): advance, recrawl, settle, put on hold.

Functions take a connection and never commit: the writer's batch transaction (etl.crawl.writer)
holds them, after ``etl.store.leases.hold`` has locked the lists they change. Each changes the
run's counters (etl.store.runs.count_changes) in the same transaction as the checkpoints it
changes, from each list's standing before and after.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.holds import Hold
from etl.store import runs, seen
from etl.store.dialect import dialect_of
from etl.store.rows import Key, ListPart
from etl.store.schema import MAX_FAILURES, sync_checkpoints

ck = sync_checkpoints.c


def _advanced(before: runs.Standing, p: ListPart) -> runs.Standing:
    """A checkpoint's standing once ``p`` is applied to it (as the dialect's advance does)."""
    restarted = p.mode.restarted
    pages = p.pages if restarted else before.pages + p.pages
    items = len(p.edges) if restarted else before.items + len(p.edges)
    return runs.Standing("done" if p.mode.ends else "running", before.failures, pages, items)


def advance(
    conn: sa.Connection,
    run_id: int,
    parts: Sequence[ListPart],
    now: datetime,
    *,
    owner: str | None = None,
) -> set[Key]:
    """Move the cursors of a batch's lists on (lists the batch holds: see
    etl.store.leases.hold; with ``owner``, only those it still leases, which the update
    locks), and the run's counters with them. The lists moved."""
    if not parts:
        return set()
    changes = runs.Changes()
    d = dialect_of(conn)
    if owner is None:
        rows = d.advance(conn, run_id, parts, now)
    else:
        rows = d.advance_leased(conn, run_id, parts, now, owner)
    before = {(r.account, r.follow_type): runs.standing(r) for r in rows}
    for p in parts:
        old = before.get((p.account, p.follow_type))
        if old is not None:  # a list the run no longer has (pruned) changes nothing
            changes.move(old, _advanced(old, p))
    runs.count_changes(conn, run_id, changes, now if before else None)
    return set(before)


def recrawl(conn: sa.Connection, run_id: int, keys: Sequence[Key], now: datetime) -> None:
    """Send lists back to their start: what this crawl saw of them was lost."""
    changes = runs.Changes()
    before = runs.standings(conn, run_id, keys)
    for account, follow_type in keys:
        conn.execute(
            sa.update(sync_checkpoints)
            .where(*_where(run_id, account, follow_type))
            .values(
                cursor="",
                status="pending",
                seen=0,
                fresh=False,
                restarts=ck.restarts + 1,
                lease_owner=None,
                last_error="sync_seen lost (server crash?): the list is crawled again",
                updated_at=now,
            )
        )
        old = before.get((account, follow_type))
        if old is not None:
            changes.move(old, dataclasses.replace(old, status="pending"))
    runs.count_changes(conn, run_id, changes, now if before else None)
    seen.forget(conn, run_id, keys)


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
    ``error`` None leaves last_error as it is. The run's counters follow.
    """
    old = runs.standings(conn, run_id, [key]).get(key)
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
    if old is None:
        return
    new_failures = {"add": old.failures + 1, "give_up": MAX_FAILURES}.get(failures, old.failures)
    changes = runs.Changes()
    changes.move(old, dataclasses.replace(old, status=status or old.status, failures=new_failures))
    runs.count_changes(conn, run_id, changes, now)


def put_on_hold(conn: sa.Connection, run_id: int, holds: Sequence[Hold], now: datetime) -> None:
    """Hold lists whose crawl would be a mass removal (etl.holds): status ``held`` with what
    was seen, back to their start with nothing counted, lease given back; a confirming crawl's
    hold is given up for this run (failures = MAX_FAILURES). The run's counters follow. The
    caller drops their sync_seen rows."""
    if not holds:
        return
    before = runs.standings(conn, run_id, [h.key for h in holds])
    changes = runs.Changes()
    for h in holds:
        values: dict[str, Any] = {
            "status": "held",
            "cursor": "",
            "pages": 0,
            "items": 0,
            "seen": 0,
            "fresh": False,
            "lease_owner": None,
            "last_error": h.message(),
            "held_removed": h.removed,
            "held_current": h.current,
            "held_ending": h.ending,
            "held_at": now,
            "updated_at": now,
        }
        if h.confirming:
            values["failures"] = MAX_FAILURES
        conn.execute(sa.update(sync_checkpoints).where(*_where(run_id, *h.key)).values(values))
        old = before.get(h.key)
        if old is not None:
            failures = MAX_FAILURES if h.confirming else old.failures
            changes.move(old, runs.Standing("held", failures, 0, 0))
    runs.count_changes(conn, run_id, changes, now if before else None)
