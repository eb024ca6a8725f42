"""Processes working on a job, seen from the database: a heartbeat row each in sync_workers.

- The overlap guard: at most one live ``sync`` per job (a partial unique index says so).
- Leases (sync_checkpoints.lease_owner) are void once their owner's row has expired, so a
  killed process frees its lists within TTL seconds, and at once for a dead pid on this host.
- The calls-per-second budget of a run is shared: each live process takes rate / processes.

Expiry times come from the database's clock (an offset measured once), so machines whose
clocks disagree still agree on who is alive.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.errors import JobBusy
from etl.schema import sync_workers

log = logging.getLogger(__name__)

HEARTBEAT = 1.0  # seconds between heartbeats
TTL = 6.0  # a process silent this long is dead: its leases and its hold on the job go
w = sync_workers.c


def new_id() -> str:
    """host:pid:random, unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class DbClock:
    """The database server's time, from the local clock and an offset measured once."""

    def __init__(self, engine: Engine) -> None:
        self.offset = timedelta(0)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                before = datetime.now(UTC)
                server: datetime = conn.execute(sa.text("SELECT now()")).scalar_one()
                after = datetime.now(UTC)
            self.offset = server - (before + (after - before) / 2)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(conn: sa.Connection, job: str, now: datetime) -> None:
    """Delete the job's rows of dead processes: expired, or a gone pid on this host."""
    conn.execute(sa.delete(sync_workers).where(w.job == job, w.expires_at <= now))
    host = socket.gethostname()
    for row in conn.execute(sa.select(w.id, w.pid).where(w.job == job, w.host == host)).all():
        if row.pid != os.getpid() and not _pid_alive(row.pid):
            conn.execute(sa.delete(sync_workers).where(w.id == row.id))


def holder(conn: sa.Connection, job: str, now: datetime) -> dict[str, Any] | None:
    """The live ``sync`` process holding the job, if any."""
    row = conn.execute(
        sa.select(w.host, w.pid, w.run_id, w.started_at).where(
            w.job == job, w.role == "sync", w.expires_at > now
        )
    ).first()
    return dict(row._mapping) if row else None


def live(conn: sa.Connection, run_id: int, now: datetime) -> list[dict[str, Any]]:
    """The live processes on a run, oldest first (for `status`)."""
    rows = conn.execute(
        sa.select(w.id, w.role, w.host, w.pid, w.started_at, w.heartbeat_at, w.calls, w["items"])
        .where(w.run_id == run_id, w.expires_at > now)
        .order_by(w.started_at)
    ).all()
    return [dict(r._mapping) for r in rows]


@dataclass
class Presence:
    """This process's row in sync_workers."""

    id: str
    job: str
    role: str
    clock: DbClock
    run_id: int | None = None


def register(engine: Engine, job: str, role: str, clock: DbClock) -> Presence:
    """Announce this process on the job; a second live ``sync`` of the job raises JobBusy."""
    me = Presence(new_id(), job, role, clock)
    now = clock()
    try:
        with engine.begin() as conn:
            _reap(conn, job, now)
            conn.execute(
                sa.insert(sync_workers).values(
                    id=me.id,
                    job=job,
                    role=role,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                    expires_at=now + timedelta(seconds=TTL),
                )
            )
    except sa.exc.IntegrityError:
        with engine.connect() as conn:
            other = holder(conn, job, clock())
        where = f"pid {other['pid']} on {other['host']}" if other else "another process"
        raise JobBusy(
            f"job {job!r} is already being synced by {where}; wait for it (`sync --wait`), "
            f"or add a worker with `worker --job {job}`"
        ) from None
    return me


def attach(engine: Engine, me: Presence, run_id: int) -> int:
    """Record the run this process works on; returns how many live processes share it."""
    me.run_id = run_id
    with engine.begin() as conn:
        conn.execute(sa.update(sync_workers).where(w.id == me.id).values(run_id=run_id))
        return _count(conn, run_id, me.clock())


def _count(conn: sa.Connection, run_id: int, now: datetime) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(sync_workers)
            .where(w.run_id == run_id, w.expires_at > now)
        ).scalar_one()
    )


def beat(engine: Engine, me: Presence, counters: dict[str, int]) -> int:
    """Renew this process's row (re-creating it if a peer reaped it); return live peers + 1."""
    now = me.clock()
    values = {"heartbeat_at": now, "expires_at": now + timedelta(seconds=TTL), **counters}
    with engine.begin() as conn:
        if not conn.execute(sa.update(sync_workers).where(w.id == me.id).values(values)).rowcount:
            log.warning("this process was taken for dead; its lists may have moved on")
            conn.execute(
                sa.insert(sync_workers).values(
                    id=me.id,
                    job=me.job,
                    run_id=me.run_id,
                    role="worker",  # a reaped `sync` no longer holds the job
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=now,
                    **values,
                )
            )
        return _count(conn, me.run_id, now) if me.run_id is not None else 1


def peers_caught_up(engine: Engine, me: Presence, since: datetime) -> bool:
    """True once every live peer on the run has heartbeat after ``since``: each has counted
    this process and lowered its share of the budget."""
    with engine.connect() as conn:
        behind = conn.execute(
            sa.select(sa.func.count())
            .select_from(sync_workers)
            .where(
                w.run_id == me.run_id,
                w.id != me.id,
                w.expires_at > me.clock(),
                w.heartbeat_at <= since,
            )
        ).scalar_one()
    return int(behind) == 0


def leave(engine: Engine, me: Presence) -> None:
    """Delete this process's row: its leases are free at once."""
    with engine.begin() as conn:
        conn.execute(sa.delete(sync_workers).where(w.id == me.id))


class Heartbeat(threading.Thread):
    """Beats every HEARTBEAT seconds and reports the number of live processes on the run."""

    def __init__(
        self,
        engine: Engine,
        me: Presence,
        counters: Callable[[], dict[str, int]],
        on_share: Callable[[int], None],
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.engine, self.me, self.counters, self.on_share = engine, me, counters, on_share
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT):
            try:
                self.on_share(beat(self.engine, self.me, self.counters()))
            except sa.exc.SQLAlchemyError as exc:
                log.warning("heartbeat failed (%s); retrying", type(exc).__name__)

    def stop(self) -> None:
        """End the thread (the row stays until ``leave``)."""
        self.stopped.set()
        self.join(timeout=HEARTBEAT * 3)
