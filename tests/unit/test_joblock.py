"""etl.store.joblock: an exclusive flock per job beside a SQLite file, refused to a second holder
with JobBusy naming the first, freed by release or by the holder's death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl.errors import JobBusy
from etl.store.joblock import JobLock, for_job, lock_path


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    """Two JobLocks on one file (two open files: flock makes them exclude each other, as two
    processes would): the second gets JobBusy naming this pid; after release it gets the lock."""
    path = lock_path(str(tmp_path / "f.db"), "nightly")
    first, second = JobLock(path, "nightly"), JobLock(path, "nightly")
    first.acquire()
    first.acquire()  # held already: a no-op
    with pytest.raises(
        JobBusy, match=rf"'nightly' is already being synced by pid {os.getpid()} on"
    ):
        second.acquire()
    assert not second.held
    first.release()
    second.acquire()
    assert second.held
    # mypy keeps `second.held` narrowed to False across acquire(), so it calls this unreachable
    second.release()  # type: ignore[unreachable]


def test_jobs_have_their_own_locks(tmp_path: Path) -> None:
    """Two jobs on one database lock two files; odd job names give safe, distinct file names."""
    database = str(tmp_path / "f.db")
    names = ["nightly", "nightly/../x", "Nightly", "a" * 300, "#\u200b"]
    paths = {lock_path(database, job) for job in names}
    assert len(paths) == len(names)
    assert all(p.parent == tmp_path and len(p.name) < 120 for p in paths)
    locks = [JobLock(lock_path(database, job), job) for job in names]
    for lock in locks:
        lock.acquire()
    for lock in locks:
        lock.release()


def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    """A process holding the lock and killed with SIGKILL leaves it free at once: the kernel
    closes its file."""
    path = lock_path(str(tmp_path / "f.db"), "j")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from etl.store.joblock import JobLock; "
         f"JobLock(Path({str(path)!r}), 'j').acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(JobBusy, match=f"pid {holder.pid}"):
            JobLock(path, "j").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    lock = JobLock(path, "j")
    lock.acquire()
    lock.release()


def test_only_a_sqlite_file_has_a_lock(tmp_path: Path) -> None:
    """PostgreSQL and in-memory SQLite hold jobs by their heartbeat rows alone."""
    on_file = for_job(sa.create_engine(f"sqlite:///{tmp_path / 'f.db'}"), "j")
    assert on_file is not None
    assert on_file.path == lock_path(str(tmp_path / "f.db"), "j")
    assert for_job(sa.create_engine("sqlite://"), "j") is None
    assert for_job(sa.create_engine("sqlite:///:memory:"), "j") is None
    assert for_job(sa.create_engine("postgresql+psycopg://u@h/d"), "j") is None
