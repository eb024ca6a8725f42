"""On SQLite a second process can never crawl a run that a live sync holds, even when the
holder's heartbeat row looks dead (SQLite's one writer keeps it from renewing during a long
batch): the job's flock (etl.joblock) decides, and the kernel frees it with its holder."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl.config import database_url
from etl.errors import JobBusy, Stopped
from etl.results import SyncRequest
from etl.sandbox import Graph, SandboxServer
from etl.store import db, workers
from etl.store.schema import sync_workers
from etl.sync import sync
from tests.conftest import api_settings, make_client, nonempty, stored_lists

Start = Callable[..., SandboxServer]


def test_a_holder_whose_heartbeat_looks_dead_keeps_the_job(
    tmp_path: Path, running_sandbox: Start
) -> None:
    """While sync A holds the job and its row has expired (no heartbeat, as during a batch
    longer than the TTL), sync B through another engine gets JobBusy naming A, and B with
    --wait waits (until stopped) instead of taking the job; A then finishes its run exactly."""
    graph = Graph(users=12, seed=7)
    server = running_sandbox(graph)
    url = database_url(f"sqlite:///{tmp_path / 'follow.db'}")
    first, second = db.make_engine(url), db.make_engine(url)
    db.upgrade(first)
    seen: dict[str, object] = {}

    def meanwhile(run_id: int) -> None:
        with second.begin() as conn:
            conn.execute(sa.update(sync_workers).values(expires_at=workers.db_now(conn)))
        with make_client(api_settings(server)) as client:
            with pytest.raises(JobBusy, match=f"pid {os.getpid()} on") as busy:
                sync(second, client, SyncRequest(job="j", accounts=["x"]))
            seen["busy"] = str(busy.value)
            stop = threading.Event()
            threading.Timer(1.5, stop.set).start()
            with pytest.raises(Stopped):
                sync(second, client, SyncRequest(job="j", accounts=["x"], wait=True), stop=stop)
        with second.connect() as conn:
            seen["rows"] = conn.execute(sa.select(sync_workers.c.pid)).scalars().all()

    try:
        with make_client(api_settings(server)) as client:
            report = sync(
                first, client, SyncRequest(job="j", accounts=graph.accounts, page_size=5),
                on_run=meanwhile, heartbeat_every=None,  # A's row never renews
            )  # fmt: skip
        assert seen["rows"] == [os.getpid()]  # B never registered
        assert report.finished
        assert stored_lists(first) == nonempty(graph.truth(graph.accounts, (1, 2, 3)))
        assert [p.name[:16] for p in tmp_path.glob("*.lock")] == ["follow.db.job-j-"]
    finally:
        first.dispose()
        second.dispose()


def test_the_lock_is_given_back_when_the_sync_ends(tmp_path: Path, running_sandbox: Start) -> None:
    """After a sync ends, the next sync of the job on the same file takes the job at once."""
    graph = Graph(users=4, seed=8)
    server = running_sandbox(graph)
    url = database_url(f"sqlite:///{tmp_path / 'follow.db'}")
    engine = db.make_engine(url)
    db.upgrade(engine)
    try:
        with make_client(api_settings(server)) as client:
            for _ in range(2):
                request = SyncRequest(job="j", accounts=graph.accounts)
                assert sync(engine, client, request).finished
    finally:
        engine.dispose()
