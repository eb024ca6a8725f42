"""Biggest lists first: sizes from the last complete crawl or follow_get_info, and claims that
take them in that order, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from etl.sandbox import Graph, SandboxServer
from etl.store import leases, runs, workers
from etl.sync import SyncRequest, sync
from etl.tencent import sizes as sizes_module
from tests.conftest import TYPES, api_settings, make_client, nonempty, stored_lists

Start = Callable[..., SandboxServer]


def expected(engine: sa.Engine, run_id: int) -> dict[tuple[str, int], int]:
    """expected_items of each list of the run."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, expected_items FROM sync_checkpoints "
                "WHERE run_id = :run_id"
            ),
            {"run_id": run_id},
        )
        return {(a, t): int(n) for a, t, n in rows}


def info_calls_of(server: SandboxServer) -> int:
    """follow_get_info calls the sandbox answered."""
    routes = server.sandbox.stats()["by_route"]
    assert isinstance(routes, dict)
    return sum(n for route, n in routes.items() if route.endswith("follow_get_info"))


def test_claims_take_the_biggest_open_lists_first(engine: sa.Engine) -> None:
    """A claim leases the biggest open lists and hands them over biggest first; lists already
    done are never among them."""
    now = datetime.now(UTC)
    sizes = {"a": 5, "b": 900, "c": 0, "d": 40, "e": 7000, "f": 12}
    with engine.begin() as conn:
        run_id = runs.start_run(conn, "sizes", {}, now)
        runs.add_lists(conn, run_id, [(account, 1) for account in sizes], now)
        for account, n in sizes.items():
            conn.execute(
                sa.text(
                    "UPDATE sync_checkpoints SET expected_items = :n, "
                    "status = CASE WHEN :account = 'e' THEN 'done' ELSE status END "
                    "WHERE run_id = :run_id AND account = :account"
                ),
                {"n": n, "account": account, "run_id": run_id},
            )
        me = workers.register(conn, "sizes", "sync", workers.DbClock(conn))
    claimed: list[str] = []
    while True:
        with engine.begin() as conn:
            got = leases.claim(conn, run_id, me.id, 2, now)
        if not got:
            break
        claimed += [state.account for state in got]
    assert claimed == ["b", "d", "f", "a", "c"]  # e is done


def test_a_cold_run_is_sized_by_follow_get_info_and_the_next_by_its_crawl(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """The first run asks follow_get_info (20 accounts a call) for every list's size; the
    next run takes each list's size from the crawl that completed it, and asks nothing."""
    graph = Graph(users=45, seed=4)
    server = running_sandbox(graph)
    request = SyncRequest(job="sizes", accounts=graph.accounts, page_size=50)
    with make_client(api_settings(server)) as client:
        first = sync(engine, client, request)
    truth = graph.truth(graph.accounts, TYPES)
    sizes = {key: len(truth.get(key, {})) for key in expected(engine, first.run_id)}
    assert expected(engine, first.run_id) == sizes
    info_calls = info_calls_of(server)
    assert info_calls == -(-len(graph.accounts) // 20)
    with engine.connect() as conn:
        stored = {
            (a, t): int(n)
            for a, t, n in conn.execute(
                sa.text("SELECT account, follow_type, items FROM follow_lists")
            )
        }
    assert stored == sizes

    graph.mutate(9, unfollow=0.2, follow=0.2)  # lists change: the next run knows only the old sizes
    with make_client(api_settings(server)) as client:
        second = sync(engine, client, request)
    assert expected(engine, second.run_id) == sizes
    assert info_calls_of(server) == info_calls
    with engine.connect() as conn:
        items = {
            (a, t): int(n)
            for a, t, n in conn.execute(
                sa.text(
                    "SELECT l.account, l.follow_type, l.items FROM follow_lists l "
                    "ORDER BY l.account, l.follow_type"
                )
            )
        }
    new_truth = graph.truth(graph.accounts, TYPES)
    assert items == {key: len(new_truth.get(key, {})) for key in sizes}


class RefuseInfo(httpx.BaseTransport):
    """The sandbox, except that every follow_get_info call is refused (30001)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("follow_get_info"):
            self.refused += 1
            error = {"ActionStatus": "FAIL", "ErrorCode": 30001, "ErrorInfo": "refused"}
            return httpx.Response(200, json=error)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_sizing_that_cannot_be_done_leaves_lists_unsized_and_the_crawl_exact(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """follow_get_info refusing every call costs the order of the work, not a row."""
    graph = Graph(users=25, seed=2)
    server = running_sandbox(graph)
    transport = RefuseInfo()
    with make_client(api_settings(server), transport=transport) as client:
        report = sync(engine, client, SyncRequest(job="sizes", accounts=graph.accounts))
    assert report.finished
    assert transport.refused > 0
    assert set(expected(engine, report.run_id).values()) == {0}
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))


class HugeCounts(RefuseInfo):
    """The sandbox, except that follow_get_info counts every list as 10**30 items."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("follow_get_info"):
            named = json.loads(request.content)["To_Account"]
            info = [
                {
                    "To_Account": account,
                    "FollowerCount": 10**30,
                    "FollowingCount": 2**63,
                    "MutualFollowingCount": 3,
                }
                for account in named
            ]
            return httpx.Response(
                200, json={"ActionStatus": "OK", "ErrorCode": 0, "FollowInfo": info}
            )
        return self.inner.handle_request(request)


def test_counts_past_64_bits_order_the_work_and_stop_nothing(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """follow_get_info may answer any number: one that cannot be stored is kept as the biggest
    size there is, and the crawl is exact."""
    graph = Graph(users=12, seed=3)
    server = running_sandbox(graph)
    with make_client(api_settings(server), transport=HugeCounts()) as client:
        report = sync(engine, client, SyncRequest(job="sizes", accounts=graph.accounts))
    assert report.finished
    sizes = expected(engine, report.run_id)
    assert {sizes[(a, 1)] for a in graph.accounts} == {sizes_module.MAX_EXPECTED}
    assert {sizes[(a, 3)] for a in graph.accounts} == {3}
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))
