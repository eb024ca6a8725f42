"""A process's presence on a job, from its registration to its leaving: the one context that
``sync`` and ``work`` share.

On entry the process registers in sync_workers (as the job's ``sync``, the overlap guard, or
as a ``worker``) and its heartbeat starts at once, so that a run that takes minutes to open
keeps the job. On exit the heartbeat stops and the process leaves: its leases and its row go
(one short transaction, retried briefly), then the job's flock on a SQLite file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.errors import JobBusy, Stopped
from etl.store import db, joblock, leases, workers

log = logging.getLogger(__name__)

STOPPING_DB_SECONDS = 3.0  # a stopping process gives a lost database this long, not minutes


@contextmanager
def present(
    engine: Engine,
    job: str,
    role: str,
    clock: workers.DbClock,
    *,
    stop: threading.Event,
    wait: bool = False,
    every: float | None = workers.HEARTBEAT,
) -> Iterator[workers.Heartbeat]:
    """Be on the job as ``role`` ("sync" or "worker") for the block: registered, the heartbeat
    (started) yielded, its ``me`` the Presence; leases and the hold on the job given back after.

    A ``sync`` raises JobBusy while another live ``sync`` holds the job, unless ``wait``: then
    it waits for the holder to go (Stopped if ``stop`` is set first). The heartbeat beats
    ``every`` seconds (None: never)."""
    me = _register(engine, job, role, clock, wait=wait, stop=stop)
    heartbeat = workers.Heartbeat(engine, me, every=every)
    try:
        heartbeat.start()
        yield heartbeat
    finally:
        if heartbeat.ident is not None:  # started
            heartbeat.stop()
        _leave(engine, me)


def _register(
    engine: Engine,
    job: str,
    role: str,
    clock: workers.DbClock,
    *,
    wait: bool,
    stop: threading.Event,
) -> workers.Presence:
    """Register on the job; a ``sync`` with ``wait``, until the holder is gone (Stopped if
    ``stop`` is set first). On a SQLite file a ``sync`` takes the job's flock first and keeps
    it in the Presence until ``_leave`` (etl.store.joblock): a live holder is never taken for dead
    there."""
    lock = joblock.for_job(engine, job) if role == "sync" else None
    announced = False
    try:
        while True:
            try:
                if lock is not None:
                    lock.acquire()
                with engine.begin() as conn:
                    me = workers.register(conn, job, role, clock)
                me.lock = lock
                return me
            except JobBusy as busy:
                if not wait:
                    raise
                if not announced:
                    log.info("%s; waiting", str(busy).split(";")[0])
                    announced = True
            if stop.wait(workers.HEARTBEAT):
                raise Stopped(f"stopped while waiting for job {job!r}")
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _leave(engine: Engine, me: workers.Presence) -> None:
    """Give back this process's leases and its hold on the job."""

    def leave(conn: sa.Connection) -> None:
        if me.run_id is not None:
            leases.release(conn, me.run_id, me.id)
        workers.leave(conn, me)

    try:
        db.retrying(engine, leave, what="releasing leases", seconds=STOPPING_DB_SECONDS)
    except Exception as exc:
        if not db.is_database_error(exc):
            raise
        log.error(
            "could not release this process's leases: %s (they expire in %.0f s)",
            db.first_line(exc),
            workers.TTL,
        )
    finally:
        if me.lock is not None:  # last: the row is gone before the next holder may start
            me.lock.release()
