"""A stop request ends every phase between two chunks or calls, keeping what it committed:
the accounts check, prune, verify and its repair; on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl import accounts, api
from etl.errors import Stopped
from etl.sandbox import Graph, SandboxServer
from etl.store import retention as prune
from etl.verify import repair, verify
from tests.conftest import api_settings, make_client
from tests.integration.test_api import environment
from tests.integration.test_prune import NOW, make_run, rows_by_run
from tests.integration.test_verify import crawl

Start = Callable[..., SandboxServer]


class StopAfter(threading.Event):
    """A stop request that comes after ``looks`` looks at it (between chunks or calls)."""

    def __init__(self, looks: int) -> None:
        super().__init__()
        self.looks = looks

    def is_set(self) -> bool:
        self.looks -= 1
        if self.looks < 0:
            self.set()
        return super().is_set()


def sigterm() -> api.StopRequest:
    """A stop request as SIGTERM makes it."""
    stop = api.StopRequest()
    stop.request(signal.SIGTERM)
    return stop


def test_a_stop_ends_the_accounts_check(tmp_path: Path) -> None:
    """Checking a long accounts file ends at the next look at the stop request, not at the
    end of the file."""
    path = tmp_path / "accounts.txt"
    path.write_text("".join(f"user_{i}\n" for i in range(3 * accounts.STOP_EVERY)))
    stop = StopAfter(1)
    with pytest.raises(Stopped, match=f"line {2 * accounts.STOP_EVERY}"):
        accounts.Accounts(str(path), [], stop=stop)


def test_a_sync_stopped_in_its_accounts_check_is_interrupted_and_stores_nothing(
    db_url: URL, running_sandbox: Start, tmp_path: Path
) -> None:
    """api.sync stopped while it checks the accounts raises Interrupted (143) and no run is
    created."""
    env = environment(db_url, running_sandbox(Graph(users=3, seed=1)))
    api.migrate(env=env)
    path = tmp_path / "accounts.txt"
    path.write_text("".join(f"user_{i}\n" for i in range(2 * accounts.STOP_EVERY)))
    with pytest.raises(api.Interrupted) as stopped:
        api.sync(accounts_file=path, env=env, stop=sigterm())
    assert stopped.value.exit_code == 143
    assert api.status(env=env)["run"] is None


def test_a_stopped_prune_keeps_the_chunks_it_deleted(engine: sa.Engine) -> None:
    """prune stopped between chunks raises Stopped; the chunks deleted stay deleted, the run
    being pruned is not marked pruned, and a prune after it finishes the work."""
    with engine.begin() as conn:
        old = make_run(conn, "nightly", 10, "done")
        make_run(conn, "nightly", 3, "done")
    with pytest.raises(Stopped):
        prune.prune(engine, "nightly", 1, NOW, chunk=3, stop=StopAfter(3))
    left = rows_by_run(engine, "sync_checkpoints")[old]
    assert 0 < left < 10
    with engine.connect() as conn:
        pruned = conn.execute(sa.text("SELECT pruned_at FROM sync_runs WHERE id = :r"), {"r": old})
        assert pruned.scalar() is None
    assert prune.prune(engine, "nightly", 1, NOW, chunk=3).checkpoints == left


def test_a_stop_ends_verify_between_calls_and_repair_between_runs(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """verify stops at its next follow_get_info call, and repair before its next re-crawl:
    Stopped both times, and the job's lists are as the crawl left them."""
    graph = Graph(users=50, seed=9)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        crawl(engine, client, graph.accounts)
        graph.mutate(seed=2)
        before = client.calls
        with pytest.raises(Stopped):
            verify(engine, client, "test", stop=StopAfter(1))
        calls = client.calls - before
        report = verify(engine, client, "test")
        assert report is not None
        assert report.disagree > 0
        with pytest.raises(Stopped):
            repair(engine, client, report, stop=StopAfter(0))
    assert calls == 1  # of the three 50 accounts take
    with engine.connect() as conn:
        jobs = conn.execute(sa.text("SELECT DISTINCT job FROM sync_runs")).scalars().all()
    assert jobs == ["test"]  # no repair run was started


def test_verify_with_repair_stopped_raises_interrupted(db_url: URL, running_sandbox: Start) -> None:
    """api.verify(repair=True) after a SIGTERM-like stop request raises Interrupted (143)."""
    graph = Graph(users=10, seed=10)
    env = environment(db_url, running_sandbox(graph))
    api.migrate(env=env)
    api.sync(graph.accounts, job="test", env=env)
    with pytest.raises(api.Interrupted) as stopped:
        api.verify("test", repair=True, env=env, stop=sigterm())
    assert stopped.value.exit_code == 143
