"""Operating sync end to end: the overlap guard, graceful SIGTERM, workers that share a run and
its budget (one of them SIGKILLed), status from another process, and JSON logs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxServer
from etl.store import db
from tests.conftest import TYPES, minimum_requests, nonempty, stored_lists
from tests.e2e.conftest import (
    assert_one_error_line,
    cli_env,
    etl,
    migrate,
    requests_seen,
    status_json,
    wait_for_requests,
    write_accounts,
)

Start = Callable[..., SandboxServer]


def start(env: dict[str, str], cwd: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m etl ARGS`` in the background, its output going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "etl", *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> int:
    """Wait for the process; return its exit code (the log says why on failure)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args!r} did not finish: {log.read_text()[-2000:]}")


def engine_for(db_url: URL) -> sa.Engine:
    """An engine to read back what the processes stored."""
    return db.make_engine(db_url)


def test_second_sync_exits_7_and_wait_queues_behind(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """While a sync runs, another sync of the job exits 7 at once with one line; with --wait
    it starts when the first has finished, and both runs end complete."""
    graph = Graph(users=60, seed=31)
    server = running_sandbox(graph, latency_ms=15)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    args = ("sync", "--accounts", str(accounts), "--page-size", "5", "--concurrency", "2")
    first = start(env, tmp_path, *args, log=tmp_path / "first.log")
    wait_for_requests(server, first, 10)
    began = time.monotonic()
    busy = etl(env, tmp_path, *args)
    assert busy.returncode == 7, busy.stderr
    assert "already being synced" in assert_one_error_line(busy)
    assert time.monotonic() - began < 10
    waiting = start(env, tmp_path, *args, "--wait", log=tmp_path / "waiting.log")
    assert finish(first, tmp_path / "first.log") == 0, (tmp_path / "first.log").read_text()
    assert finish(waiting, tmp_path / "waiting.log") == 0, (tmp_path / "waiting.log").read_text()
    run = status_json(env, tmp_path)["run"]
    assert (run["id"], run["status"]) == (2, "done")


def test_sigterm_stops_cleanly_and_the_run_resumes_exactly(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """SIGTERM ends sync with exit 143 and a resumable run; the next sync ends at the ground
    truth, having refetched no more than the pages in flight."""
    graph = Graph(users=80, seed=32)
    server = running_sandbox(graph, latency_ms=5)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    args = ("sync", "--accounts", str(accounts), "--page-size", "5", "--concurrency", "4")
    truth = graph.truth(graph.accounts, TYPES)
    minimum = minimum_requests(truth, graph.accounts, 5)
    log = tmp_path / "first.log"
    proc = start(env, tmp_path, *args, log=log)
    wait_for_requests(server, proc, minimum // 3)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc, log, timeout=30) == 143, log.read_text()
    output = log.read_text()
    assert "SIGTERM" in output
    assert "resumable" in output
    assert "Traceback" not in output
    run = status_json(env, tmp_path)["run"]
    assert run["status"] == "running"
    assert run["lists"]["open"] > 0
    assert run["workers"] == []  # the stopped process let go of its leases and the job
    again = etl(env, tmp_path, *args, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stdout
    reader = engine_for(db_url)
    try:
        assert stored_lists(reader) == nonempty(truth)
    finally:
        reader.dispose()
    # A graceful stop stores what it fetched: only the calls cut short are repeated.
    assert requests_seen(server) <= minimum + 4


@pytest.mark.postgres
@pytest.mark.slow
def test_workers_share_the_run_and_its_budget_and_survive_a_kill(
    pg_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """A sync and two workers crawl one run together at the run's budget; a worker SIGKILLed
    mid-run loses its lists to the others within seconds, and the run ends at the ground
    truth with every list crawled once (plus what the killed worker had in flight)."""
    graph = Graph(users=150, seed=33)
    server = running_sandbox(graph, latency_ms=20)
    env = cli_env(pg_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    rate = 60
    truth = graph.truth(graph.accounts, TYPES)
    minimum = minimum_requests(truth, graph.accounts, 5)
    sync_log = tmp_path / "sync.log"
    coordinator = start(
        env,
        tmp_path,
        *("sync", "--accounts", str(accounts), "--page-size", "5"),
        *("--rate", str(rate), "--concurrency", "4"),
        log=sync_log,
    )
    wait_for_requests(server, coordinator, 5)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    helpers = [start(env, tmp_path, "worker", log=log) for log in logs]
    wait_for_requests(server, coordinator, minimum // 2)
    doc = status_json(env, tmp_path)["run"]
    assert len(doc["workers"]) == 3
    assert {w["role"] for w in doc["workers"]} == {"sync", "worker"}
    helpers[0].send_signal(signal.SIGKILL)
    assert helpers[0].wait(timeout=10) == -signal.SIGKILL
    assert finish(coordinator, sync_log, timeout=120) == 0, sync_log.read_text()
    assert finish(helpers[1], logs[1], timeout=30) == 0, logs[1].read_text()
    reader = engine_for(pg_url)
    try:
        assert stored_lists(reader) == nonempty(truth)
    finally:
        reader.dispose()
    run = status_json(env, tmp_path)["run"]
    assert (run["id"], run["status"], run["lists"]["open"]) == (1, "done", 0)
    # Per-worker pacing adds up to the run's budget, not to three times it.
    assert server.sandbox.max_calls_in_window(1.0) <= rate * 1.15 + 3
    assert requests_seen(server) <= minimum + 60


@pytest.mark.postgres
def test_worker_without_a_run_and_on_sqlite(
    pg_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """A worker with nothing to join exits 0 at once with a message; on SQLite it refuses in
    one line (exit 2): SQLite serves one process."""
    server = running_sandbox(Graph(users=5, seed=1))
    env = cli_env(pg_url, server)
    migrate(env, tmp_path)
    idle = etl(env, tmp_path, "worker", "--job", "nightly")
    assert idle.returncode == 0, idle.stderr
    assert "no unfinished run" in idle.stdout
    lite = cli_env(f"sqlite:///{tmp_path / 'x.db'}", server)
    migrate(lite, tmp_path)
    refused = etl(lite, tmp_path, "worker")
    assert refused.returncode == 2
    assert "PostgreSQL" in assert_one_error_line(refused)


def test_status_from_another_process_and_json_logs(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """During a run, `status --json` in another process shows it running with its live
    process; the sync's --log-format json stderr is one JSON object per line, progress
    included."""
    graph = Graph(users=60, seed=34)
    server = running_sandbox(graph, latency_ms=10)
    env = cli_env(db_url, server)
    migrate(env, tmp_path)
    accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
    log = tmp_path / "sync.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "etl", "--log-format", "json", "sync"),
                *("--accounts", str(accounts), "--page-size", "3", "--concurrency", "2"),
                *("--rate", "80"),
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    wait_for_requests(server, proc, 30)
    run = status_json(env, tmp_path)["run"]
    assert run["status"] == "running"
    assert [w["role"] for w in run["workers"]] == ["sync"]
    assert 0 <= run["lists"]["done"] < run["lists"]["total"]
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log.read_text()
    assert b"finished" in stdout
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert records
    assert all({"ts", "level", "message"} <= r.keys() for r in records)
    progress = [r for r in records if r.get("event") == "progress"]
    assert progress
    assert progress[-1]["final"] is True
    assert progress[-1]["lists_settled"] == progress[-1]["lists_total"] == 180
