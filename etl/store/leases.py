"""A list's lease and cursor within a run (sync_checkpoints): claim, hold, advance, settle.

A process leases the lists it crawls; a lease is void once its owner stops heartbeating
(etl.workers), judged by the database's clock inside each statement. ``hold`` is the one lease
check: every batch transaction (etl.crawl.writer) starts with it and writes only the lists it
returns. Functions take a connection and never commit; the writer's batch transaction and the
coordinator's claim transactions are the callers. Where the dialects differ, the PostgreSQL
statement sits next to the portable one it replaces.

``advance``, ``settle``, ``recrawl`` and ``put_on_hold`` change the run's counters
(etl.runs.count_changes) in the same transaction as the checkpoints they change, from each
list's standing before and after; claims and releases move only leases, which the counters do
not count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.holds import Hold
from etl.store import load, runs, workers
from etl.store.rows import Key, ListPart
from etl.store.runs import MAX_FAILURES, is_open
from etl.store.schema import OPEN_STATUSES, follow_edges, follow_lists, sync_checkpoints, sync_runs

ck = sync_checkpoints.c  # note: ck.items is a method of the collection; use ck["items"]


@dataclass
class ListState:
    """Where one (account, follow type) list of a run stands, as claimed by this process."""

    account: str
    follow_type: int
    cursor: str
    seen: int = 0  # rows this crawl has in sync_seen
    baseline: bool = False  # crawled completely in an earlier run
    expected: int = 0  # its size when the run began (expected_items)
    # The crawl began at the list's start with no current edge stored for it: every current
    # edge it ends with is one it listed, so it keeps no sync_seen rows and completing it
    # needs no search for removed edges. Kept in sync_checkpoints.fresh for a process that
    # resumes the list; a restart ends it (etl.crawl.writer, advance).
    fresh: bool = False
    # An earlier crawl of this run was held for a mass removal: this crawl confirms it or not
    # (etl.holds), and its fetcher asks follow_get_info for the list's count at its end.
    confirming: bool = False
    # When this crawl of the list began, by the database's clock: set by the claim that starts
    # it at its first page, kept in sync_checkpoints.crawl_started_at for a process that
    # resumes it. Another run may crawl the same list meanwhile (a job whose accounts overlap,
    # `verify --repair`): what it changed after this start is not this crawl's to undo.
    started: datetime | None = None

    @property
    def key(self) -> Key:
        """(account, follow_type)."""
        return (self.account, self.follow_type)


# One statement: pick free lists of an open run without waiting for other claimers, lease
# them, stamp the start of each crawl that begins at its first page, and say which have a
# baseline. Liveness and starts by the server's clock. A checkpoint resumed from before
# revision 0008 has no start: its run's start is earlier still, the safe side.
# Fixed text, so psycopg prepares it once.
# The picked rows are found once (a MATERIALIZED CTE) and updated by their ctid, which they
# keep while locked: whatever the planner believes of a run too new for its statistics, it
# cannot re-run the pick per row of the run (it did: 360 ms a claim beside 9 million older
# checkpoints).
_CLAIM_PG = """
WITH free AS MATERIALIZED (
    SELECT ctid FROM sync_checkpoints
    WHERE run_id = :run_id AND {open_statuses}
      AND EXISTS (SELECT 1 FROM sync_runs WHERE id = :run_id AND status = 'running')
      AND ({pick})
      AND (lease_owner IS NULL
           OR (lease_owner <> :owner
               AND lease_owner NOT IN (SELECT id FROM sync_workers
                                       WHERE expires_at > statement_timestamp())))
    ORDER BY expected_items DESC
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE sync_checkpoints c SET lease_owner = :owner,
    crawl_started_at = CASE WHEN c.cursor = '' THEN statement_timestamp()
        ELSE coalesce(c.crawl_started_at,
                      (SELECT started_at FROM sync_runs WHERE id = :run_id)) END
FROM free
WHERE c.ctid = free.ctid
RETURNING c.account, c.follow_type, c.cursor, c.seen, c.expected_items, c.crawl_started_at,
    EXISTS (SELECT 1 FROM follow_lists l
            WHERE l.account = c.account AND l.follow_type = c.follow_type) AS baseline,
    CASE WHEN c.cursor = '' THEN NOT EXISTS (
        SELECT 1 FROM follow_edges e
        WHERE e.account = c.account AND e.follow_type = c.follow_type AND e.removed_at IS NULL
    ) ELSE c.fresh END AS fresh,
    c.held_at IS NOT NULL AS confirming
"""
_PICK_PG = f"""status IN ('pending', 'running')
           OR (status = 'failed' AND failures < {MAX_FAILURES} AND updated_at < :failed_before)"""
# Held lists come after every other open list of the run (a second claim, when the first finds
# fewer than it wants): their confirming crawl is the last thing a run does, not the first.
_HELD_PG = f"status = 'held' AND failures < {MAX_FAILURES}"
_CLAIMS_PG = {
    False: sa.text(_CLAIM_PG.format(open_statuses=OPEN_STATUSES, pick=_PICK_PG)).bindparams(
        sa.bindparam("failed_before", type_=sync_checkpoints.c.updated_at.type)
    ),
    True: sa.text(_CLAIM_PG.format(open_statuses=OPEN_STATUSES, pick=_HELD_PG)),
}


def claim(
    conn: sa.Connection, run_id: int, owner: str, limit: int, failed_before: datetime
) -> list[ListState]:
    """Lease up to ``limit`` open lists nobody live holds to ``owner``. Never its own: a
    process that was taken for dead must not take its own lists twice.

    The biggest lists (``expected_items``, see etl.sizes) go first, so the longest crawls
    start early and the run's tail is short; the index of open lists serves the order.
    A list that failed is claimed only if it failed before ``failed_before`` (when this process
    began crawling): the process that failed a list leaves it to the next sync. A run that is
    no longer open (done, or abandoned by ``sync --restart``) gives nothing.
    On PostgreSQL, FOR UPDATE SKIP LOCKED lets workers claim at the same time without waiting
    for each other or taking the same list; a lease is void once its owner stops heartbeating.
    Held lists (etl.holds) are claimed only when no other open list is free.
    """
    states = _claim(conn, run_id, owner, limit, failed_before, held=False)
    if len(states) < limit:
        states += _claim(conn, run_id, owner, limit - len(states), failed_before, held=True)
    return states


def _claim(
    conn: sa.Connection,
    run_id: int,
    owner: str,
    limit: int,
    failed_before: datetime,
    *,
    held: bool,
) -> list[ListState]:
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {"run_id": run_id, "owner": owner, "limit": limit}
        if not held:
            params["failed_before"] = failed_before
        rows = conn.execute(_CLAIMS_PG[held], params).all()
        return _biggest_first(
            ListState(
                r.account,
                r.follow_type,
                r.cursor,
                int(r.seen),
                bool(r.baseline),
                r.expected_items,
                bool(r.fresh),
                confirming=bool(r.confirming),
                started=r.crawl_started_at,
            )
            for r in rows
        )
    pick = (
        sa.and_(ck.status == "held", ck.failures < MAX_FAILURES)
        if held
        else sa.and_(ck.status != "held", is_open(failed_before))
    )
    free = (
        sa.select(ck.account, ck.follow_type)
        .where(
            ck.run_id == run_id,
            sa.exists().where(sync_runs.c.id == run_id, sync_runs.c.status == "running"),
            sa.text(OPEN_STATUSES),
            pick,
            sa.or_(
                ck.lease_owner.is_(None),
                sa.and_(ck.lease_owner != owner, ck.lease_owner.not_in(workers.live_ids(conn))),
            ),
        )
        .order_by(ck.expected_items.desc())
        .limit(limit)
    )
    rows = conn.execute(
        sa.update(sync_checkpoints)
        .where(ck.run_id == run_id, sa.tuple_(ck.account, ck.follow_type).in_(free))
        .values(
            lease_owner=owner,
            crawl_started_at=sa.case(
                (ck.cursor == "", workers.db_now(conn)),
                else_=sa.func.coalesce(
                    ck.crawl_started_at,
                    sa.select(sync_runs.c.started_at)
                    .where(sync_runs.c.id == run_id)
                    .scalar_subquery(),
                ),
            ),
        )
        .returning(
            ck.account,
            ck.follow_type,
            ck.cursor,
            ck.seen,
            ck.expected_items,
            ck.fresh,
            # the column, not "held_at IS NOT NULL": SQLite 3.40's RETURNING answers 1 for it
            ck.held_at,
            ck.crawl_started_at,
        )
    ).all()
    states = _biggest_first(
        ListState(
            r.account,
            r.follow_type,
            r.cursor,
            int(r.seen),
            expected=r.expected_items,
            fresh=bool(r.fresh),  # a crawl under way; one at its start is decided below
            confirming=r.held_at is not None,
            started=r.crawl_started_at,
        )
        for r in rows
    )
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
        fe = follow_edges.c
        starting = [s.key for s in states if s.cursor == ""]
        stored = (
            {
                (row.account, row.follow_type)
                for row in conn.execute(
                    sa.select(fe.account, fe.follow_type)
                    .distinct()
                    .where(
                        sa.tuple_(fe.account, fe.follow_type).in_(starting), fe.removed_at.is_(None)
                    )
                )
            }
            if starting
            else set()
        )
        for state in states:
            state.baseline = state.key in known
            if state.cursor == "":
                state.fresh = state.key not in stored
    return states


def _biggest_first(states: Iterable[ListState]) -> list[ListState]:
    # RETURNING keeps no order: the coordinator dispatches in this one.
    return sorted(states, key=lambda s: -int(s.expected))


def open_elsewhere(conn: sa.Connection, run_id: int, owner: str) -> int:
    """Open lists of the run leased by another live process (which may yet die and free them)."""
    others = workers.live_ids(conn).where(workers.w.id != owner)
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(sync_checkpoints)
            .where(
                ck.run_id == run_id,
                sa.text(OPEN_STATUSES),  # the index of open lists: never the lists done
                is_open(),
                ck.lease_owner.in_(others),
            )
        ).scalar_one()
    )


def hold(conn: sa.Connection, run_id: int, owner: str, keys: Iterable[Key]) -> set[Key] | None:
    """The lists among ``keys`` that ``owner`` still holds, locked until the transaction ends;
    None when the run is no longer open (done, or abandoned): the batch writes nothing at all.

    The one lease check: a batch calls it first and writes only the lists it returns. The row
    locks keep any claimer (SKIP LOCKED) off them until the batch commits, so a lease cannot
    lapse between this check and the writes it guards. On PostgreSQL it first takes a share
    lock on the run's row, before any other lock of the batch: ``runs.abandon_run`` and
    ``runs.close_run`` (which update that row) wait for the batches in flight, and every batch
    after them finds the run closed. (FOR KEY SHARE would not do: it lets an UPDATE of the
    row's other columns through; the counters' foreign key takes that one anyway.)
    """
    wanted = list(keys)
    if not wanted:
        return set()
    if conn.dialect.name == "postgresql":
        if conn.execute(_RUN_OPEN_PG, {"run_id": run_id}).first() is None:
            return None
        params = {
            "run_id": run_id,
            "owner": owner,
            "accounts": [account for account, _ in wanted],
            "types": [follow_type for _, follow_type in wanted],
        }
        return {(r.account, r.follow_type) for r in conn.execute(_HOLD_PG, params)}
    if runs.status_of(conn, run_id) != "running":
        return None
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


_RUN_OPEN_PG = sa.text(
    "SELECT 1 FROM sync_runs WHERE id = :run_id AND status = 'running' FOR SHARE"
)


# The batch's keys as two arrays: one fixed text whatever the batch's size (prepared once, and
# planned as one join on the primary key, not as hundreds of OR-ed index conditions).
_HOLD_PG = sa.text("""
SELECT c.account, c.follow_type
FROM unnest(CAST(:accounts AS text[]), CAST(:types AS smallint[])) AS v(account, follow_type)
JOIN sync_checkpoints c
  ON c.run_id = :run_id AND c.account = v.account AND c.follow_type = v.follow_type
WHERE c.lease_owner = :owner
FOR UPDATE OF c
""")


def release(conn: sa.Connection, run_id: int, owner: str) -> None:
    """Give back every lease ``owner`` holds in the run."""
    conn.execute(
        sa.update(sync_checkpoints)
        .where(ck.run_id == run_id, ck.lease_owner == owner)
        .values(lease_owner=None)
    )


# One statement: the old standing of each list (for the run's counters; the CTEs see the rows
# as they were before the UPDATE, which hold has locked), and the update itself.
_ADVANCE_PG = sa.text("""
WITH v AS (
    SELECT * FROM unnest(CAST(:accounts AS text[]), CAST(:types AS smallint[]),
                         CAST(:cursors AS text[]), CAST(:pages AS int[]),
                         CAST(:items AS bigint[]), CAST(:complete AS bool[]),
                         CAST(:restarted AS bool[]), CAST(:fresh AS bool[]),
                         CAST(:started AS timestamptz[]))
         AS v(account, follow_type, cursor, pages, items, complete, restarted, fresh, started)
), old AS (
    SELECT c.account, c.follow_type, c.status, c.failures, c.pages, c.items
    FROM sync_checkpoints c JOIN v ON c.account = v.account AND c.follow_type = v.follow_type
    WHERE c.run_id = :run_id
), moved AS (
    UPDATE sync_checkpoints c SET
        cursor = v.cursor,
        status = CASE WHEN v.complete THEN 'done' ELSE 'running' END,
        pages = CASE WHEN v.restarted THEN v.pages ELSE c.pages + v.pages END,
        items = CASE WHEN v.restarted THEN v.items ELSE c.items + v.items END,
        restarts = c.restarts + CASE WHEN v.restarted THEN 1 ELSE 0 END,
        seen = CASE WHEN v.restarted THEN 0 ELSE c.seen END,
        fresh = v.fresh,
        crawl_started_at = CASE WHEN v.restarted THEN v.started ELSE c.crawl_started_at END,
        lease_owner = CASE WHEN v.complete THEN NULL ELSE c.lease_owner END,
        last_error = NULL,
        updated_at = :now
    FROM v
    WHERE c.run_id = :run_id AND c.account = v.account AND c.follow_type = v.follow_type
)
SELECT account, follow_type, status, failures, pages, items FROM old
""").bindparams(sa.bindparam("now", type_=sync_checkpoints.c.updated_at.type))


def _advanced(before: runs.Standing, p: ListPart) -> runs.Standing:
    """A checkpoint's standing once ``p`` is applied to it (as the UPDATEs below do)."""
    pages = p.pages if p.restarted else before.pages + p.pages
    items = len(p.edges) if p.restarted else before.items + len(p.edges)
    return runs.Standing("done" if p.complete else "running", before.failures, pages, items)


def advance(conn: sa.Connection, run_id: int, parts: Sequence[ListPart], now: datetime) -> None:
    """Move the cursors of a batch's lists on (lists the batch holds: see ``hold``), and the
    run's counters with them."""
    if not parts:
        return
    changes = runs.Changes()
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
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
                "fresh": [p.fresh for p in parts],
                "started": [p.started or now if p.restarted else None for p in parts],
            },
        )
        before = {(r.account, r.follow_type): runs.standing(r) for r in rows}
    else:
        before = runs.standings(conn, run_id, [(p.account, p.follow_type) for p in parts])
        for p in parts:
            values: dict[str, Any] = {
                "cursor": p.next_cursor,
                "status": "done" if p.complete else "running",
                "pages": ck.pages + p.pages,
                "items": ck["items"] + len(p.edges),
                "last_error": None,
                "updated_at": now,
                "fresh": p.fresh,
            }
            if p.complete:
                values["lease_owner"] = None
            if p.restarted:
                # The list began again from "": what was counted before no longer describes it.
                values.update(pages=p.pages, items=len(p.edges), restarts=ck.restarts + 1, seen=0)
                values["crawl_started_at"] = p.started or now  # what the crawl may now undo
            conn.execute(
                sa.update(sync_checkpoints)
                .where(*_where(run_id, p.account, p.follow_type))
                .values(values)
            )
    for p in parts:
        old = before.get((p.account, p.follow_type))
        if old is not None:  # a list the run no longer has (pruned) changes nothing
            changes.move(old, _advanced(old, p))
    runs.count_changes(conn, run_id, changes, now if before else None)


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
    load.forget_seen(conn, run_id, keys)


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
