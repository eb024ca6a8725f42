"""SIGTERM in the phases before the crawl, end to end on PostgreSQL: a `sync` adding its run's
lists and a `migrate` waiting for a lock end within seconds with 143, keeping what they
committed (the listed chunks) or nothing (the migration)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxServer
from etl.store import db
from tests.e2e.conftest import cli_env, migrate, write_accounts
from tests.e2e.test_operate import engine_for, finish, start

Start = Callable[..., SandboxServer]
STOP_BOUND = 10.0  # seconds a SIGTERM may take in any phase


def scalar(engine: sa.Engine, sql: str) -> int:
    """One number from the database."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar() or 0)


def until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    """Wait for ``condition``; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition never came true")
        time.sleep(0.05)


@pytest.mark.postgres
def test_sigterm_while_the_lists_go_in_ends_with_143_and_the_next_sync_resumes(
    pg_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """A sync of 40,000 accounts (at 50 calls/s, adding its lists takes a minute) stopped
    after its first chunks ends within 10 s with 143, the chunks kept and the run not listed;
    the next sync resumes that run and goes on adding."""
    graph = Graph(users=20, seed=51)
    server = running_sandbox(graph)
    env = cli_env(pg_url, server)
    migrate(env, tmp_path)
    names = [*graph.accounts, *(f"gone_{i:06d}" for i in range(40_000))]
    accounts = write_accounts(tmp_path / "accounts.txt", names)
    args = ("sync", "--accounts", str(accounts), "--rate", "50")
    reader = engine_for(pg_url)
    lists = "SELECT count(*) FROM sync_checkpoints"
    try:
        log = tmp_path / "first.log"
        first = start(env, tmp_path, *args, log=log)
        until(lambda: scalar(reader, lists) > 0)
        began = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert finish(first, log, timeout=30) == 143, log.read_text()
        assert time.monotonic() - began < STOP_BOUND
        assert "Traceback" not in log.read_text()
        kept = scalar(reader, lists)
        assert 0 < kept < 3 * len(names)
        assert scalar(reader, "SELECT count(*) FROM sync_runs WHERE NOT listed") == 1

        log = tmp_path / "again.log"
        again = start(env, tmp_path, *args, log=log)
        until(lambda: scalar(reader, lists) > kept)
        again.send_signal(signal.SIGTERM)
        assert finish(again, log, timeout=30) == 143, log.read_text()
        assert "resumed" in log.read_text()
        assert scalar(reader, "SELECT count(*) FROM sync_runs") == 1
    finally:
        reader.dispose()


@pytest.mark.postgres
def test_sigterm_during_migrate_ends_with_143_and_leaves_the_previous_revision(
    pg_url: URL, tmp_path: Path
) -> None:
    """A migrate waiting for a lock another session holds ends within 10 s of a SIGTERM with
    143, and the database stays at the revision it had."""
    engine = db.make_engine(pg_url)
    try:
        db.upgrade(engine, "0006")
        with engine.connect() as holder:
            holder.execute(sa.text("LOCK TABLE sync_runs IN ACCESS EXCLUSIVE MODE"))
            log = tmp_path / "migrate.log"
            proc = start(cli_env(pg_url), tmp_path, "migrate", log=log)
            until(
                lambda: (
                    scalar(
                        engine,
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()",
                    )
                    > 0
                )
            )
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert finish(proc, log, timeout=30) == 143, log.read_text()
            assert time.monotonic() - began < STOP_BOUND
            holder.rollback()
        assert "Traceback" not in log.read_text()
        assert db.current_revision(engine) == "0006"
    finally:
        engine.dispose()
