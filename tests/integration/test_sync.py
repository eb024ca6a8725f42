"""The pipeline against a real sandbox server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa

from etl.errors import FatalApiError, RunIncomplete
from etl.sandbox import Graph, SandboxServer
from etl.tencent.client import FollowClient
from tests.conftest import (
    TYPES,
    api_settings,
    expected_profiles,
    make_client,
    minimum_requests,
    nonempty,
    stored_lists,
    stored_profiles,
    sync_with,
)

Start = Callable[..., SandboxServer]


def test_full_sync_equals_ground_truth(engine: sa.Engine, running_sandbox: Start) -> None:
    """A cold sync stores exactly the sandbox's lists, follow times and profile versions."""
    graph = Graph(users=120, seed=3)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        report = sync_with(engine, client, graph.accounts)
    truth = graph.truth(graph.accounts, TYPES)
    assert stored_lists(engine) == nonempty(truth)
    assert stored_profiles(engine) == expected_profiles(graph, truth)
    assert report.finished
    assert report.lists["done"] == 3 * len(graph.accounts)
    assert report.requests == minimum_requests(truth, graph.accounts, 7)


def test_transient_faults_leave_the_result_exact(engine: sa.Engine, running_sandbox: Start) -> None:
    """With 10% injected transient faults (errors, 5xx, truncated, slow) the result is exact."""
    graph = Graph(users=80, seed=5)
    server = running_sandbox(graph, faults=0.1, slow_ms=1200, fault_seed=7)
    with make_client(api_settings(server, timeout=0.5)) as client:
        report = sync_with(engine, client, graph.accounts)
    truth = graph.truth(graph.accounts, TYPES)
    assert stored_lists(engine) == nonempty(truth)
    assert stored_profiles(engine) == expected_profiles(graph, truth)
    faults = server.sandbox.stats()["by_fault"]
    assert isinstance(faults, dict)
    assert sum(faults.values()) > 10
    assert report.retries == sum(faults.values())


def test_second_run_records_what_changed(engine: sa.Engine, running_sandbox: Start) -> None:
    """After the graph changes, removed edges get removed_at, new ones appear, new profile
    versions sit beside the old, and deleted accounts are skipped with their edges removed."""
    graph = Graph(users=100, seed=11)
    server = running_sandbox(graph)
    accounts = graph.accounts
    with make_client(api_settings(server)) as client:
        sync_with(engine, client, accounts)
        before = graph.truth(accounts, TYPES)
        profiles_before = expected_profiles(graph, before)
        summary = graph.mutate(seed=1, delete=2)
        assert summary["unfollowed"]
        assert summary["followed"]
        assert summary["profiles_changed"]
        report = sync_with(engine, client, accounts)
    after = graph.truth(accounts, TYPES)
    assert stored_lists(engine) == nonempty(after)
    assert stored_profiles(engine) == {**profiles_before, **expected_profiles(graph, after)}
    removed = {
        (a, t, to)
        for (a, t), items in before.items()
        for to in items
        if to not in after.get((a, t), {})
    }
    with engine.connect() as conn:
        marked = set(
            conn.execute(
                sa.text(
                    "SELECT account, follow_type, to_account FROM follow_edges "
                    "WHERE removed_at IS NOT NULL"
                )
            ).all()
        )
    assert marked == removed
    assert report.edges_removed == len(removed)
    assert len(report.missing_accounts) == 2
    assert report.lists["skipped"] == 6


def test_an_edge_that_comes_back_is_listed_again(engine: sa.Engine, running_sandbox: Start) -> None:
    """An edge removed in one run and listed again later has removed_at cleared."""
    graph = Graph(users=60, seed=2)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        sync_with(engine, client, graph.accounts)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE follow_edges SET removed_at = first_seen_at"))
        sync_with(engine, client, graph.accounts)
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))


def test_unchanged_resync_rewrites_nothing(engine: sa.Engine, running_sandbox: Start) -> None:
    """A second sync of unchanged data keeps every edge's first_seen_at and adds no snapshot."""
    graph = Graph(users=60, seed=4)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        sync_with(engine, client, graph.accounts)
        with engine.connect() as conn:
            before = conn.execute(sa.text("SELECT * FROM follow_edges ORDER BY 1, 2, 3")).all()
            snapshots = conn.execute(sa.text("SELECT count(*) FROM profile_snapshots")).scalar()
        report = sync_with(engine, client, graph.accounts)
        with engine.connect() as conn:
            after = conn.execute(sa.text("SELECT * FROM follow_edges ORDER BY 1, 2, 3")).all()
            assert conn.execute(sa.text("SELECT count(*) FROM profile_snapshots")).scalar() == (
                snapshots
            )
    assert after == before
    assert report.run_id == 2
    assert not report.resumed


class StopAfter(httpx.BaseTransport):
    """Delegates to a real transport, then raises KeyboardInterrupt once ``calls`` are made
    (with ``mid_list``: at the first later request that carries a cursor)."""

    def __init__(self, calls: int, mid_list: bool) -> None:
        self.inner = httpx.HTTPTransport()
        self.left = calls
        self.mid_list = mid_list

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.left <= 0 and (not self.mid_list or json.loads(request.content)["StartCursor"]):
            raise KeyboardInterrupt
        self.left -= 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def interrupted_client(server: SandboxServer, calls: int, mid_list: bool = False) -> FollowClient:
    """A client whose process 'dies' (KeyboardInterrupt) after ``calls`` requests."""
    return make_client(api_settings(server), transport=StopAfter(calls, mid_list))


def test_interrupted_run_resumes_from_its_cursors(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """A run stopped mid-list resumes it: nothing lost, nothing fetched twice."""
    graph = Graph(users=80, seed=6)
    server = running_sandbox(graph)
    for calls, mid_list in ((5, False), (40, True), (90, True)):
        with (
            interrupted_client(server, calls, mid_list) as client,
            pytest.raises(KeyboardInterrupt),
        ):
            sync_with(engine, client, graph.accounts)
    with make_client(api_settings(server)) as client:
        report = sync_with(engine, client, graph.accounts)
    truth = graph.truth(graph.accounts, TYPES)
    assert report.resumed
    assert report.run_id == 1
    assert stored_lists(engine) == nonempty(truth)
    total = server.sandbox.stats()["requests"]
    assert total == minimum_requests(truth, graph.accounts, 7)


def test_stale_cursor_restarts_the_list(engine: sa.Engine, running_sandbox: Start) -> None:
    """A stored cursor the service rejects (30001) restarts that list from the beginning."""
    graph = Graph(users=80, seed=8)
    server = running_sandbox(graph)
    with interrupted_client(server, 30, mid_list=True) as client, pytest.raises(KeyboardInterrupt):
        sync_with(engine, client, graph.accounts)
    with engine.begin() as conn:
        stale = conn.execute(
            sa.text("UPDATE sync_checkpoints SET cursor = 'not-a-cursor' WHERE cursor <> ''")
        ).rowcount
    assert stale >= 1
    with make_client(api_settings(server)) as client:
        sync_with(engine, client, graph.accounts)
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))
    with engine.connect() as conn:
        restarts = conn.execute(sa.text("SELECT sum(restarts) FROM sync_checkpoints")).scalar()
        leftovers = conn.execute(sa.text("SELECT count(*) FROM sync_seen")).scalar()
    assert restarts == stale
    assert leftovers == 0


def test_restart_abandons_the_unfinished_run(engine: sa.Engine, running_sandbox: Start) -> None:
    """--restart leaves the unfinished run abandoned and crawls everything in a new one."""
    graph = Graph(users=40, seed=9)
    server = running_sandbox(graph)
    with interrupted_client(server, 10) as client, pytest.raises(KeyboardInterrupt):
        sync_with(engine, client, graph.accounts)
    with make_client(api_settings(server)) as client:
        report = sync_with(engine, client, graph.accounts, restart=True)
    assert report.run_id == 2
    assert not report.resumed
    with engine.connect() as conn:
        statuses = conn.execute(sa.text("SELECT id, status FROM sync_runs ORDER BY id")).all()
    assert [tuple(row) for row in statuses] == [(1, "abandoned"), (2, "done")]
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))


def test_wrong_credentials_stop_the_run_and_keep_it(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """A wrong secret key is fatal at once; the run stays resumable and nothing is stored."""
    from etl.config import Secret

    graph = Graph(users=20, seed=1)
    server = running_sandbox(graph)
    with (
        make_client(api_settings(server, secret_key=Secret("wrong"))) as client,
        pytest.raises(FatalApiError, match="70009"),
    ):
        sync_with(engine, client, graph.accounts)
    # One follow_get_info call (sizing the lists: etl.sizes), then the crawl's first call,
    # alone: a wrong key costs two requests, not one per list.
    assert server.sandbox.stats()["requests"] == 2
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM sync_runs")).scalar() == "running"
        assert conn.execute(sa.text("SELECT count(*) FROM follow_edges")).scalar() == 0
    with engine.connect() as conn:
        first = conn.execute(
            sa.text(
                "SELECT status, failures, last_error FROM sync_checkpoints "
                "WHERE last_error IS NOT NULL"
            )
        ).one()
    assert first.status == "pending"
    assert first.failures == 0
    assert "70009" in first.last_error
    with make_client(api_settings(server)) as client:
        report = sync_with(engine, client, graph.accounts)
    assert report.resumed
    assert report.problem() is None


def test_an_api_that_keeps_failing_stops_the_run(engine: sa.Engine, running_sandbox: Start) -> None:
    """When lists fail in a row after their retries, the run stops early and stays resumable."""
    from etl.config import RetryPolicy

    graph = Graph(users=20, seed=1)
    server = running_sandbox(graph, faults=1.0, fault_kinds=("30006",))
    retry = RetryPolicy(attempts=2, max_seconds=5, initial_wait=0, max_wait=0)
    with make_client(api_settings(server, retry=retry)) as client:
        report = sync_with(engine, client, graph.accounts)
    assert not report.finished
    assert isinstance(report.problem(), RunIncomplete)
    # 3 lists x 2 attempts, then stop; until a call succeeds one list is tried at a time, and a
    # fourth may be under way when the third fails.
    requests = server.sandbox.stats()["requests"]
    assert isinstance(requests, int)
    assert 6 <= requests <= 8
    with engine.connect() as conn:
        failed = conn.execute(
            sa.text("SELECT count(*) FROM sync_checkpoints WHERE status = 'failed'")
        ).scalar()
    assert failed == 3


def test_a_list_that_keeps_failing_is_given_up(engine: sa.Engine, running_sandbox: Start) -> None:
    """A list that fails in three syncs is given up, so it cannot hold its run open forever."""
    from etl.config import RetryPolicy

    graph = Graph(users=20, seed=1)
    server = running_sandbox(graph, faults=1.0, fault_kinds=("30006",))
    retry = RetryPolicy(attempts=1, max_seconds=5, initial_wait=0, max_wait=0)
    account = graph.accounts[0]
    with make_client(api_settings(server, retry=retry)) as client:
        reports = [sync_with(engine, client, [account], types=(1,)) for _ in range(4)]
    assert [r.run_id for r in reports] == [1, 1, 1, 2]
    assert [r.finished for r in reports] == [False, False, True, False]
    assert "given up" in str(reports[2].problem())


def test_a_rejected_list_is_given_up_at_once(engine: sa.Engine, running_sandbox: Start) -> None:
    """A list whose first request is rejected (30001) is given up; the others are crawled."""
    graph = Graph(users=30, seed=1)
    server = running_sandbox(graph)
    accounts = ["", *graph.accounts]  # the CLI refuses it; the service answers 30001
    with make_client(api_settings(server)) as client:
        report = sync_with(engine, client, accounts)
    assert report.finished
    assert report.lists["failed"] == 3
    assert "given up" in str(report.problem())
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))
    with make_client(api_settings(server)) as client:
        assert sync_with(engine, client, graph.accounts).problem() is None
