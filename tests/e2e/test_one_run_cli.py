"""`sync --restart` beside a worker of the run it abandons, as an operator meets it: separate
processes on PostgreSQL."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from etl.sandbox import Graph
from etl.store import db, runs
from tests.e2e.conftest import cli_env, migrate, status_json, wait_for_requests, write_accounts
from tests.e2e.test_operate import Start, finish, start


@pytest.mark.postgres
def test_a_worker_stops_when_sync_restart_abandons_its_run(
    pg_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """The sync leading a run is killed while its worker crawls on; `sync --restart` abandons
    the run. The worker stops within seconds with one clear line and exit 0, the abandoned run
    stays abandoned (not flipped to done) and the new run finishes."""
    graph = Graph(users=60, seed=41)
    server = running_sandbox(graph, latency_ms=5)
    env = cli_env(pg_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    rate = 20
    common = ("--accounts", str(accounts), "--page-size", "5", "--rate", str(rate))
    leader = start(env, tmp_path, "sync", *common, "--concurrency", "2", log=tmp_path / "s.log")
    wait_for_requests(server, leader, 5)
    worker_log = tmp_path / "w.log"
    worker = start(env, tmp_path, "worker", log=worker_log)
    deadline = time.monotonic() + 30
    while len(status_json(env, tmp_path)["run"]["workers"]) < 2:
        assert time.monotonic() < deadline, "the worker did not join"
        time.sleep(0.2)
    leader.send_signal(signal.SIGKILL)
    leader.wait(timeout=10)
    began = time.monotonic()
    restart = start(env, tmp_path, "sync", *common, "--restart", log=tmp_path / "r.log")
    assert finish(worker, worker_log, timeout=15) == 0, worker_log.read_text()
    stopped_after = time.monotonic() - began
    assert finish(restart, tmp_path / "r.log") == 0, (tmp_path / "r.log").read_text()
    output = worker_log.read_text()
    assert "abandoned" in output
    assert "Traceback" not in output
    # From the start of the `sync --restart` process (Python's start-up included): 2.6 s here.
    assert stopped_after < 10
    reader = db.make_engine(pg_url)
    try:
        with reader.connect() as conn:
            assert runs.status_of(conn, 1) == "abandoned"
            assert runs.status_of(conn, 2) == "done"
    finally:
        reader.dispose()
