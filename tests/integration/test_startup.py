"""The start of a run streams and stops: lists go in sized, committed chunks alongside the
crawl, a stop keeps them, the next sync finishes the listing; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from etl.crawl.lister import Lister
from etl.crawl.messages import EXAMPLES, Sample
from etl.errors import UsageError
from etl.sandbox import Graph, SandboxServer
from etl.store import runs, workers
from etl.sync import SyncReport, SyncRequest, sync, work
from tests.conftest import TYPES, api_settings, make_client, nonempty, stored_lists

Start = Callable[..., SandboxServer]
NOW = datetime(2026, 1, 2, tzinfo=UTC)


def gated(accounts: list[str], first: int, gate: threading.Event) -> Iterator[str]:
    """The accounts, stopping after the ``first`` ones until ``gate`` is set."""
    for i, account in enumerate(accounts):
        if i == first:
            assert gate.wait(30), "the test never opened the gate"
        yield account


def checkpoints(engine: sa.Engine, run_id: int) -> int:
    """Lists the run has."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM sync_checkpoints WHERE run_id = :r"), {"r": run_id}
            ).scalar_one()
        )


def until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    """Wait for ``condition``; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition never came true")
        time.sleep(0.02)


def listed(engine: sa.Engine, run_id: int) -> bool:
    """The run's stored listed flag."""
    with engine.connect() as conn:
        return runs.is_listed(conn, run_id)


def test_lists_go_in_committed_chunks_and_a_stop_keeps_them(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """While the accounts stream is still open, the chunks read so far are committed; a stop
    ends the lister between chunks, keeps them, and leaves the run not listed."""
    graph = Graph(users=30, seed=41)
    server = running_sandbox(graph)
    with engine.begin() as conn:
        run_id = runs.start_run(conn, "chunks", {}, NOW)
    gate, stop = threading.Event(), threading.Event()
    lists = ((a, t) for a in gated(graph.accounts, 10, gate) for t in TYPES)
    with make_client(api_settings(server)) as client:
        lister = Lister(engine, client, run_id, lists, clock=lambda: NOW, stop=stop, chunk=6)
        lister.start()
        until(lambda: checkpoints(engine, run_id) == 30)  # 10 accounts: five chunks of six
        stop.set()
        gate.set()
        lister.join(10)
    assert lister.done.is_set()
    assert lister.error is None
    assert not lister.listed
    assert not listed(engine, run_id)
    assert checkpoints(engine, run_id) == 30
    with engine.connect() as conn:
        assert runs.counts(conn, run_id) == runs.recount(conn, run_id)


def test_lists_are_sized_a_chunk_at_a_time_before_they_are_claimable(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """Each chunk holds at most ``chunk`` lists and asks follow_get_info for its own accounts
    only; every list goes in with its size."""
    graph = Graph(users=45, seed=42)
    server = running_sandbox(graph)
    with engine.begin() as conn:
        run_id = runs.start_run(conn, "sizes", {}, NOW)
    lists = [(a, t) for a in graph.accounts for t in TYPES]
    with make_client(api_settings(server)) as client:
        lister = Lister(
            engine, client, run_id, iter(lists), clock=lambda: NOW, stop=threading.Event(), chunk=9
        )
        lister.run()
    assert lister.listed
    assert listed(engine, run_id)
    assert lister.chunks == len(lists) // 9
    assert lister.largest == 9
    assert lister.asked == lister.chunks  # three accounts a chunk: one call each
    truth = graph.truth(graph.accounts, TYPES)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT account, follow_type, expected_items FROM sync_checkpoints")
        ).all()
    assert {(a, t): n for a, t, n in rows} == {key: len(truth.get(key, {})) for key in lists}


def test_a_resumed_listing_reads_past_what_the_run_has(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """Listing the same accounts again adds nothing, writes nothing and asks nothing."""
    graph = Graph(users=20, seed=43)
    server = running_sandbox(graph)
    with engine.begin() as conn:
        run_id = runs.start_run(conn, "again", {}, NOW)
    lists = [(a, t) for a in graph.accounts for t in TYPES]
    with make_client(api_settings(server)) as client:
        for _ in range(2):
            lister = Lister(
                engine, client, run_id, iter(lists), clock=lambda: NOW, stop=threading.Event()
            )
            lister.run()
    assert (lister.added, lister.asked, lister.listed) == (0, 0, True)
    assert checkpoints(engine, run_id) == 60


def test_the_crawl_starts_before_the_listing_ends_and_waits_for_it(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """With the accounts stream held open, the lists already in are crawled to their end and
    the sync goes on waiting; once the stream ends, the rest are added and crawled, exactly."""
    graph = Graph(users=24, seed=44)
    server = running_sandbox(graph)
    gate = threading.Event()
    request = SyncRequest(
        job="early", accounts=gated(graph.accounts, 4, gate), page_size=20, list_chunk=3
    )
    done: list[SyncReport] = []
    with make_client(api_settings(server)) as client:
        syncing = threading.Thread(target=lambda: done.append(sync(engine, client, request)))
        syncing.start()
        try:

            def first_lists_settled() -> bool:
                with engine.connect() as conn:
                    run = runs.latest_run(conn, "early")
                    if run is None:
                        return False
                    counts = runs.counts(conn, run.id)
                return counts["total"] == 12 and counts["open"] == 0

            until(first_lists_settled)
            time.sleep(0.5)
            assert syncing.is_alive()  # four accounts crawled, the rest not yet listed
        finally:
            gate.set()
            syncing.join(60)
    (report,) = done
    assert report.finished
    assert report.listed
    assert report.lists["total"] == 3 * 24
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))


def stopping_after(accounts: list[str], first: int, stop: threading.Event) -> Iterator[str]:
    """The accounts; after the ``first`` ones it asks the sync to stop, then goes on slowly."""
    for i, account in enumerate(accounts):
        if i == first:
            stop.set()
            time.sleep(1.0)  # the stop reaches the lister (relayed within 0.2 s) meanwhile
        yield account


def test_a_sync_stopped_while_listing_resumes_and_ends_exact(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """A stop while the lists go in keeps the chunks committed and the run open and not
    listed; the next sync resumes the run, adds the rest and stores exactly the graph."""
    graph = Graph(users=30, seed=45)
    server = running_sandbox(graph)
    stop = threading.Event()
    first = SyncRequest(
        job="resume",
        accounts=stopping_after(graph.accounts, 8, stop),
        page_size=20,
        list_chunk=6,
    )
    with make_client(api_settings(server)) as client:
        stopped = sync(engine, client, first, stop=stop)
        assert stopped.interrupted
        assert not stopped.listed
        assert not stopped.finished
        assert not listed(engine, stopped.run_id)
        assert 0 < checkpoints(engine, stopped.run_id) < 90
        again = sync(
            engine,
            client,
            SyncRequest(job="resume", accounts=graph.accounts, page_size=20, list_chunk=6),
        )
    assert again.run_id == stopped.run_id
    assert again.resumed
    assert again.finished
    assert again.problem() is None
    assert listed(engine, again.run_id)
    assert again.lists["total"] == 90
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))


def test_missing_accounts_are_counted_with_the_first_few_shown(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """Hundreds of accounts the service does not have are counted, list by list; the report
    keeps only the first few of them, each once."""
    graph = Graph(users=5, seed=46)
    server = running_sandbox(graph)
    ghosts = [f"ghost_{i:04d}" for i in range(500)]
    request = SyncRequest(job="ghosts", accounts=[*graph.accounts, *ghosts], types=(1, 2))
    with make_client(api_settings(server)) as client:
        report = sync(engine, client, request)
    assert report.finished
    assert report.missing_lists == 2 * 500
    assert len(report.missing_accounts) == EXAMPLES
    assert len(set(report.missing_accounts)) == EXAMPLES
    assert set(report.missing_accounts) <= set(ghosts)
    assert report.counts()["missing_lists"] == 1000


def test_a_sample_counts_everything_and_keeps_the_first_few() -> None:
    """A Sample of many counts them all and holds EXAMPLES, repeats dropped when distinct."""
    sample = Sample()
    for i in range(1000):
        sample.add(f"a{i // 3}", distinct=True)
    assert sample.count == 1000
    assert sample.first == [f"a{i}" for i in range(EXAMPLES)]


def test_a_worker_on_a_run_not_listed_waits_for_its_sync_and_ends_without_one(
    pg_engine: sa.Engine, running_sandbox: Start
) -> None:
    """A worker that has crawled every list of a run still being listed goes on while the
    job's sync lives; once none holds the job it ends, the run open and resumable."""
    graph = Graph(users=6, seed=47)
    server = running_sandbox(graph)
    with pg_engine.begin() as conn:
        run_id = runs.start_run(conn, "half", {"page_size": 50}, NOW)
        runs.add_lists(conn, run_id, [(a, 1) for a in graph.accounts[:3]], NOW)
        holder = workers.register(conn, "half", "sync", workers.DbClock(conn))
    beat = workers.Heartbeat(pg_engine, holder)  # the job's sync, alive, adding nothing
    beat.start()
    done: list[SyncReport | None] = []
    with make_client(api_settings(server)) as client:
        working = threading.Thread(target=lambda: done.append(work(pg_engine, client, "half")))
        working.start()
        try:

            def lists_settled() -> bool:
                with pg_engine.connect() as conn:
                    return runs.counts(conn, run_id)["open"] == 0

            until(lists_settled)
            time.sleep(1.0)
            assert working.is_alive()
        finally:
            beat.stop()
            with pg_engine.begin() as conn:
                workers.leave(conn, holder)
            working.join(30)
    assert not working.is_alive()
    (report,) = done
    assert report is not None
    assert not report.listed
    assert not report.finished
    with pg_engine.connect() as conn:
        run = runs.latest_run(conn, "half")
    assert run is not None
    assert run.status == "running"


def failing_after(accounts: list[str], first: int) -> Iterator[str]:
    """The first accounts, then the error a file that cannot be read any more raises."""
    yield from accounts[:first]
    raise UsageError("cannot read accounts file accounts.txt: gone")


def test_an_error_while_listing_ends_the_sync_with_that_error(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """The lister's error stops the crawl and is what the sync raises; the run stays open,
    not listed, with the chunks committed before it."""
    graph = Graph(users=12, seed=48)
    server = running_sandbox(graph)
    request = SyncRequest(
        job="broken", accounts=failing_after(graph.accounts, 6), page_size=20, list_chunk=6
    )
    with make_client(api_settings(server)) as client, pytest.raises(UsageError, match="gone"):
        sync(engine, client, request)
    with engine.connect() as conn:
        run = runs.latest_run(conn, "broken")
    assert run is not None
    assert run.status == "running"
    assert not run.listed
    assert checkpoints(engine, run.id) == 18
