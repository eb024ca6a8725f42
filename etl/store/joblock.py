"""One crawler per job on SQLite, enforced by the kernel: an ``flock`` on a file beside the
database.

On PostgreSQL the heartbeat row in sync_workers says who holds a job (etl.store.workers). On SQLite
that is not enough: SQLite has one writer, so while the holder's batch transaction runs, its
heartbeat cannot renew; a batch longer than the TTL makes a live holder look dead, and a
second ``sync --wait`` would take the job and crawl the same run at once. So on SQLite the
holder also keeps an exclusive ``flock`` on ``<database>.job-<job>-<digest>.lock``, one file
per job (two jobs may share one database file, as on PostgreSQL). The kernel frees the lock
when the process ends, however it ends (SIGKILL included), so a killed holder never blocks the
next sync. The lock file holds the holder's pid and host, for the JobBusy message; it is left
in place (deleting it could let two processes lock two different files).

flock works between processes of one machine on a local filesystem, which is where an embedded
SQLite file belongs (SQLite's own locking is not reliable over NFS either).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
from pathlib import Path

from sqlalchemy.engine import Engine

from etl.errors import DatabaseError, JobBusy


class JobLock:
    """An exclusive, non-blocking flock on one job's lock file, held until ``release``."""

    def __init__(self, path: Path, job: str) -> None:
        self.path, self.job = path, job
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (a no-op if held); JobBusy naming the holder if another process has
        it; DatabaseError if the lock file cannot be opened."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DatabaseError(
                f"cannot open the job's lock file {self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise JobBusy(
                f"job {self.job!r} is already being synced by {holder or 'another process'} "
                f"(it holds {self.path.name}); wait for it (`sync --wait`)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back (closing the file frees it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def lock_path(database: str, job: str) -> Path:
    """The lock file of ``job`` beside the SQLite file ``database``: a readable part of the
    job's name and a digest of all of it (a name may hold any character)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", job)[:40]
    digest = hashlib.sha256(job.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return Path(f"{database}.job-{readable}-{digest}.lock")


def for_job(engine: Engine, job: str) -> JobLock | None:
    """The job's lock on a SQLite file database; None on PostgreSQL and in-memory SQLite
    (where the heartbeat row alone holds the job)."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode"):
        return None
    return JobLock(lock_path(os.path.abspath(database), job), job)
