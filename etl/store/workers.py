"""Processes working on a job, seen from the database: a heartbeat row each in sync_workers.

- The overlap guard: at most one live ``sync`` per job (a partial unique index says so).
- Leases (sync_checkpoints.lease_owner) are void once their owner's row has expired, so a
  killed process frees its lists within TTL seconds, and at once for a dead pid on this host.
- The calls-per-second budget of a run is shared: each live process takes rate / processes.

One clock decides who is alive: the database's. On PostgreSQL every heartbeat, expiry and
liveness test is computed inside the statement with ``statement_timestamp()``, never from a
machine's own clock, so machines whose clocks disagree still agree on who is alive (the
pattern of Postgres-backed job queues). ``DbClock`` (the server's time estimated from this
machine's, re-measured at every heartbeat) only stamps data rows. SQLite serves one process,
whose clock is the only one there is.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.errors import JobBusy
from etl.store.dialect import dialect_of
from etl.store.dialect.base import Clock, machine_now
from etl.store.joblock import JobLock
from etl.store.schema import sync_runs, sync_workers

log = logging.getLogger(__name__)

HEARTBEAT = 1.0  # seconds between heartbeats
# While the run's processes change (one joins or leaves), beats come this often for a while, so
# that the budget is shared again within a fraction of a second (etl.crawl.session): a joining
# worker starts calling once its peers have counted it, and the peers of a process gone take
# its share at once.
FAST_HEARTBEAT = 0.2
FAST_FOR = 3.0  # seconds of fast beats after the number of live processes changed
TTL = 6.0  # a process silent this long is dead: its leases and its hold on the job go
w = sync_workers.c


def db_now(conn: sa.Connection, *, local: Clock = machine_now) -> sa.ColumnElement[datetime]:
    """The database's clock, inside the statement (SQLite: ``local``, this machine's, the only
    one)."""
    return dialect_of(conn).now(local)


def _expiry(conn: sa.Connection) -> sa.ColumnElement[datetime]:
    return dialect_of(conn).expiry(TTL)


def pid_namespace() -> str | None:
    """Which pids this process can see: boot id and pid namespace. Two containers on one host
    may share a hostname and pid numbers; only a process that sees the same pids can tell
    whether a pid is alive. None where /proc does not say (then no pid is judged)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def new_id() -> str:
    """host:pid:random, unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class DbClock:
    """The database server's time estimated from this machine's clock and an offset, for the
    timestamps of data rows. The offset is measured at start and again at every heartbeat, so
    a clock that steps during a run is followed within a second. Liveness never uses it."""

    def __init__(self, conn: sa.Connection | None = None, *, local: Clock = machine_now) -> None:
        self.offset = timedelta(0)
        self.local = local  # this machine's clock
        if conn is not None:
            self.measure(conn)

    def measure(self, conn: sa.Connection) -> None:
        """Set the offset from one round trip to the server (where it has a clock: PostgreSQL)."""
        before = self.local()
        server = dialect_of(conn).server_time(conn)
        if server is None:
            return
        after = self.local()
        self.offset = server - (before + (after - before) / 2)

    def __call__(self) -> datetime:
        return self.local() + self.offset


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(conn: sa.Connection, job: str) -> None:
    """Delete the job's rows of dead processes: expired by the database's clock, or a gone pid
    in this process's own pid namespace."""
    conn.execute(sa.delete(sync_workers).where(w.job == job, w.expires_at <= db_now(conn)))
    namespace = pid_namespace()
    if namespace is None:
        return
    mine = sa.select(w.id, w.pid).where(
        w.job == job, w.host == socket.gethostname(), w.pid_ns == namespace
    )
    for row in conn.execute(mine).all():
        if row.pid != os.getpid() and not _pid_alive(row.pid):
            conn.execute(sa.delete(sync_workers).where(w.id == row.id))


def live_ids(conn: sa.Connection) -> sa.Select[tuple[str]]:
    """The ids of every live process (a subquery for lease checks)."""
    return dialect_of(conn).live_ids()


def holder(conn: sa.Connection, job: str) -> dict[str, Any] | None:
    """The live ``sync`` process holding the job, if any."""
    row = conn.execute(
        sa.select(w.host, w.pid, w.run_id, w.started_at).where(
            w.job == job, w.role == "sync", w.expires_at > db_now(conn)
        )
    ).first()
    return dict(row._mapping) if row else None


def live(conn: sa.Connection, run_id: int) -> list[dict[str, Any]]:
    """The live processes on a run, oldest first (for `status`)."""
    rows = conn.execute(
        sa.select(w.id, w.role, w.host, w.pid, w.started_at, w.heartbeat_at, w.calls, w["items"])
        .where(w.run_id == run_id, w.expires_at > db_now(conn))
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
    lock: JobLock | None = None  # a `sync` on a SQLite file: the job's flock (etl.store.joblock)


def register(conn: sa.Connection, job: str, role: str, clock: DbClock) -> Presence:
    """Announce this process on the job; a second live ``sync`` of the job raises JobBusy
    (the unique index on a job's ``sync`` row settles a race of two)."""
    me = Presence(new_id(), job, role, clock)
    _reap(conn, job)
    other = holder(conn, job) if role == "sync" else None
    if other is None:
        try:
            conn.execute(sa.insert(sync_workers).values(_row(conn, me, role)))
            return me
        except sa.exc.IntegrityError:
            pass  # another sync registered between the look and the insert
    where = f"pid {other['pid']} on {other['host']}" if other else "another process"
    raise JobBusy(
        f"job {job!r} is already being synced by {where}; wait for it (`sync --wait`), "
        f"or add a worker with `worker --job {job}`"
    )


def _row(conn: sa.Connection, me: Presence, role: str) -> dict[str, Any]:
    now = db_now(conn)
    return {
        "id": me.id,
        "job": me.job,
        "run_id": me.run_id,
        "role": role,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_ns": pid_namespace(),
        "started_at": now,
        "heartbeat_at": now,
        "expires_at": _expiry(conn),
    }


def attach(conn: sa.Connection, me: Presence, run_id: int) -> int:
    """Record the run this process works on; returns how many live processes share it."""
    me.run_id = run_id
    conn.execute(sa.update(sync_workers).where(w.id == me.id).values(run_id=run_id))
    return _count(conn, run_id)


def _count(conn: sa.Connection, run_id: int) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(sync_workers)
            .where(w.run_id == run_id, w.expires_at > db_now(conn))
        ).scalar_one()
    )


class Beat(NamedTuple):
    """What one heartbeat learned."""

    peers: int  # live processes on the run, this one included
    run_status: str | None  # the run's status (None: no run yet); not "running": it is closed


def beat(conn: sa.Connection, me: Presence, counters: dict[str, int]) -> Beat:
    """Renew this process's row (re-creating it if a peer reaped it); say how many live
    processes share the run and whether it is still running."""
    values = {"heartbeat_at": db_now(conn), "expires_at": _expiry(conn), **counters}
    if not conn.execute(sa.update(sync_workers).where(w.id == me.id).values(values)).rowcount:
        log.warning("this process was taken for dead; its lists may have moved on")
        # A reaped `sync` no longer holds the job: it goes on as a worker.
        conn.execute(sa.insert(sync_workers).values({**_row(conn, me, "worker"), **counters}))
    me.clock.measure(conn)
    if me.run_id is None:
        return Beat(1, None)
    status = conn.execute(sa.select(sync_runs.c.status).where(sync_runs.c.id == me.run_id))
    return Beat(_count(conn, me.run_id), status.scalar_one_or_none())


def joined_at(conn: sa.Connection, me: Presence) -> datetime:
    """When this process's row was last renewed, by the database's clock."""
    value: datetime = conn.execute(sa.select(w.heartbeat_at).where(w.id == me.id)).scalar_one()
    return value


def peers_caught_up(conn: sa.Connection, me: Presence, since: datetime) -> bool:
    """True once every live peer on the run has heartbeat after ``since`` (a database time):
    each has counted this process and lowered its share of the budget."""
    behind = conn.execute(
        sa.select(sa.func.count())
        .select_from(sync_workers)
        .where(
            w.run_id == me.run_id,
            w.id != me.id,
            w.expires_at > db_now(conn),
            w.heartbeat_at <= since,
        )
    ).scalar_one()
    return int(behind) == 0


def leave(conn: sa.Connection, me: Presence) -> None:
    """Delete this process's row: its leases are free at once."""
    conn.execute(sa.delete(sync_workers).where(w.id == me.id))


class Heartbeat(threading.Thread):
    """Beats every HEARTBEAT seconds and reports the number of live processes on the run; each
    beat is one short transaction of this thread's own. Once the run is no longer running
    (another process abandoned it with ``sync --restart``, or closed it), ``on_closed`` hears
    its status, at every beat until the thread stops: the crawl stops within a second or two.

    ``counters``, ``on_share`` and ``on_closed`` may be set once the crawl exists; until then
    the beat only keeps this process alive (while a run with many lists is being created, say).
    ``every``: seconds between beats (None: never, the row is not renewed: for tests of a
    holder that looks dead). For FAST_FOR seconds after the number of live processes changed,
    or after ``hurry``, beats come every FAST_HEARTBEAT seconds instead (if that is sooner).
    """

    def __init__(
        self,
        engine: Engine,
        me: Presence,
        counters: Callable[[], dict[str, int]] = dict,
        on_share: Callable[[int], None] = lambda peers: None,
        on_closed: Callable[[str], None] = lambda status: None,
        *,
        every: float | None = HEARTBEAT,
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.every = every
        self.engine, self.me, self.counters, self.on_share = engine, me, counters, on_share
        self.on_closed = on_closed
        self.stopped = threading.Event()
        self._nudged = threading.Event()  # wakes the wait between beats (``hurry``, ``stop``)
        self._fast_until = 0.0  # time.monotonic() until which beats come fast
        self._peers: int | None = None  # the live processes the last beat counted

    def hurry(self) -> None:
        """Beat now, then fast for a while: the run's processes are changing (this one
        joins)."""
        self._fast_until = time.monotonic() + FAST_FOR
        self._nudged.set()

    def _sleep(self) -> bool:
        """Wait for the next beat; True once stopped."""
        self._nudged.wait(self._pause())
        self._nudged.clear()
        return self.stopped.is_set()

    def _pause(self) -> float | None:
        if self.every is None or time.monotonic() >= self._fast_until:
            return self.every
        return min(self.every, FAST_HEARTBEAT)

    def run(self) -> None:
        failing = False
        while not self._sleep():
            try:
                with self.engine.begin() as conn:
                    peers, status = beat(conn, self.me, self.counters())
                if peers != self._peers:
                    if self._peers is not None:
                        self._fast_until = time.monotonic() + FAST_FOR
                    self._peers = peers
                self.on_share(peers)
                if status is not None and status != "running":
                    self.on_closed(status)
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                if not isinstance(exc, sa.exc.SQLAlchemyError | OSError) and not failing:
                    log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)
                elif not failing:
                    log.warning("heartbeat failed (%s); retrying every second", type(exc).__name__)
                failing = True
            else:
                if failing:
                    log.info("heartbeat restored")
                failing = False

    def stop(self) -> None:
        """End the thread (the row stays until ``leave``)."""
        self.stopped.set()
        self._nudged.set()
        self.join(timeout=HEARTBEAT * 3)
