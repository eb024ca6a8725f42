"""Two real `sync` processes on one SQLite file: the second is refused (exit 7, naming the
holder) or, with --wait, waits on the job's lock, which the kernel frees when the holder is
killed; the run then ends exactly."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl.config import database_url
from etl.sandbox import Graph, SandboxServer
from etl.store import db, workers
from tests.conftest import nonempty, stored_lists
from tests.e2e.conftest import (
    CliProcess,
    assert_one_error_line,
    cli_env,
    etl,
    migrate,
    write_accounts,
)
from tests.e2e.test_hostile_ops import sync_args, wait_until

pytestmark = pytest.mark.slow
Start = Callable[..., SandboxServer]
Spawn = Callable[..., CliProcess]


def holders(engine: sa.Engine) -> list[int]:
    """The pids of the processes registered on a job."""
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT pid FROM sync_workers")).scalars())


def test_a_second_sync_on_sqlite_is_refused_or_waits_for_the_lock(
    running_sandbox: Start, spawn: Spawn, tmp_path: Path
) -> None:
    """While sync A crawls, even frozen past the heartbeat TTL (SIGSTOP: its row expires, as
    when a long SQLite batch keeps its heartbeat from renewing): sync B exits 7 naming A's
    pid; sync C --wait waits, and once A is killed (SIGKILL: nothing released by A itself) C
    takes the job and finishes the run."""
    graph = Graph(users=40, seed=61)
    server = running_sandbox(graph)
    url = database_url(f"sqlite:///{tmp_path / 'follow.db'}")
    env = cli_env(url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    reader = db.make_engine(url)
    try:
        first = spawn(env, *sync_args(accounts, "--rate", "10"), name="first")
        wait_until(lambda: bool(holders(reader)), "the first sync holds the job", 30, first)
        first.signal(signal.SIGSTOP)
        time.sleep(workers.TTL + 0.5)  # A looks dead by its heartbeat row
        refused = etl(env, tmp_path, *sync_args(accounts), timeout=20)
        first.signal(signal.SIGCONT)
        assert refused.returncode == 7, refused.stderr
        assert f"pid {first.proc.pid} on" in assert_one_error_line(refused)
        waiting = spawn(env, *sync_args(accounts, "--wait", "--rate", "1000"), name="waiting")
        wait_until(lambda: "waiting" in waiting.err(), "the --wait sync waits", 30, waiting)
        assert f"pid {first.proc.pid} on" in waiting.err()
        assert holders(reader) == [first.proc.pid]
        first.kill()
        assert waiting.wait(timeout=60) == 0, waiting.logs()
        assert stored_lists(reader) == nonempty(graph.truth(graph.accounts, (1, 2, 3)))
    finally:
        reader.dispose()
