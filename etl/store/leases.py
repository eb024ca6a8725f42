"""A list's lease within a run (sync_checkpoints.lease_owner): claim, hold, release.

A process leases the lists it crawls; a lease is void once its owner stops heartbeating
(etl.store.workers), judged by the database's clock inside each statement. ``hold`` is the one
lease check: every batch transaction (etl.crawl.writer) starts with it and writes only the
lists it returns. Functions take a connection and never commit; the writer's batch transaction
and the coordinator's claim transactions are the callers. Where the backends differ, the
dialect object (etl.store.dialect) holds both statements. Claims and releases move only
leases, which the run's counters do not count; cursors move in etl.store.cursors.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

import sqlalchemy as sa

from etl.store import workers
from etl.store.dialect import dialect_of
from etl.store.rows import Key, ListState
from etl.store.schema import OPEN_STATUSES, is_open, sync_checkpoints

ck = sync_checkpoints.c  # note: ck.items is a method of the collection; use ck["items"]


def claim(
    conn: sa.Connection, run_id: int, owner: str, limit: int, failed_before: datetime
) -> list[ListState]:
    """Lease up to ``limit`` open lists nobody live holds to ``owner``. Never its own: a
    process that was taken for dead must not take its own lists twice.

    The biggest lists (``expected_items``, see etl.tencent.sizes) go first, so the longest crawls
    start early and the run's tail is short; lists the run marked touched (``sync
    --changed-first``: callbacks changed them since their last complete crawl) go before all
    others, biggest first among them. The index of open lists serves the order.
    A list that failed is claimed only if it failed before ``failed_before`` (when this process
    began crawling): the process that failed a list leaves it to the next sync. A run that is
    no longer open (done, or abandoned by ``sync --restart``) gives nothing.
    On PostgreSQL, FOR UPDATE SKIP LOCKED lets workers claim at the same time without waiting
    for each other or taking the same list; a lease is void once its owner stops heartbeating.
    Held lists (etl.holds) are claimed only when no other open list is free.
    """
    d = dialect_of(conn)
    states = _biggest_first(d.claim(conn, run_id, owner, limit, failed_before, held=False))
    if len(states) < limit:
        more = d.claim(conn, run_id, owner, limit - len(states), failed_before, held=True)
        states += _biggest_first(more)
    return states


def _biggest_first(states: Iterable[ListState]) -> list[ListState]:
    # RETURNING keeps no order: the coordinator dispatches in this one (the claim's).
    return sorted(states, key=lambda s: (not s.touched, -int(s.expected)))


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


def hold(
    conn: sa.Connection,
    run_id: int,
    owner: str,
    keys: Iterable[Key],
    *,
    advancing: Collection[Key] = (),
) -> set[Key] | None:
    """The lists among ``keys`` that ``owner`` still holds, locked until the transaction ends;
    None when the run is no longer open (done, or abandoned): the batch writes nothing at all.

    The one lease check: a batch calls it first and writes only the lists it returns. The row
    locks keep any claimer (SKIP LOCKED) off them until the batch commits, so a lease cannot
    lapse between this check and the writes it guards. On PostgreSQL it first takes a share
    lock on the run's row, before any other lock of the batch: ``runs.abandon_run`` and
    ``runs.close_run`` (which update that row) wait for the batches in flight, and every batch
    after them finds the run closed. (FOR KEY SHARE would not do: it lets an UPDATE of the
    row's other columns through; the counters' foreign key takes that one anyway.)
    Lists in ``advancing`` (the batch's pages move their cursors: etl.store.cursors.advance,
    with the owner, the batch's next statement) are checked here but locked by that update,
    which leaves out any a claim took over in between: the batch then writes nothing for it.
    """
    wanted = list(keys)
    if not wanted:
        return set()
    d = dialect_of(conn)
    held = d.hold(conn, run_id, owner, [k for k in wanted if k not in advancing])
    checked = [k for k in wanted if k in advancing]
    if held is None or not checked:
        return held
    return held | d.leased(conn, run_id, owner, checked)


def release(conn: sa.Connection, run_id: int, owner: str) -> None:
    """Give back every lease ``owner`` holds in the run."""
    conn.execute(
        sa.update(sync_checkpoints)
        .where(ck.run_id == run_id, ck.lease_owner == owner)
        .values(lease_owner=None)
    )
