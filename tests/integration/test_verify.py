"""verify and repair against a real sandbox server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from etl.errors import RunIncomplete, VerifyMismatch
from etl.sandbox import Graph, SandboxServer
from etl.store import runs
from etl.store.schema import follow_edges, sync_checkpoints, verify_mismatches
from etl.sync import SyncRequest, sync
from etl.tencent.client import FollowClient
from etl.tencent.info import INFO_BATCH
from etl.verify import SHOWN, Mismatch, VerifyReport, repair, repair_job, verify
from tests.conftest import TYPES, api_settings, make_client, nonempty, stored_lists

Start = Callable[..., SandboxServer]
NOW = datetime(2026, 1, 2, tzinfo=UTC)


def crawl(
    engine: sa.Engine, client: FollowClient, accounts: list[str], types: tuple[int, ...] = TYPES
) -> None:
    """Sync ``accounts`` as job 'test', in small pages; it must finish cleanly."""
    report = sync(
        engine, client, SyncRequest(job="test", accounts=accounts, types=types, page_size=7)
    )
    assert report.problem() is None


def checked(engine: sa.Engine, client: FollowClient) -> VerifyReport:
    """verify of job 'test', which has runs."""
    report = verify(engine, client, "test")
    assert report is not None
    return report


def current_edges(engine: sa.Engine, account: str, follow_type: int) -> list[str]:
    """To_Accounts of the stored current edges of one list."""
    e = follow_edges.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(e.to_account)
                .where(e.account == account, e.follow_type == follow_type, e.removed_at.is_(None))
                .order_by(e.to_account)
            ).scalars()
        )


def all_mismatches(engine: sa.Engine, report: VerifyReport) -> set[tuple[str, int, int, int]]:
    """Every (account, follow_type, stored, api) the verification stored in verify_mismatches."""
    m = verify_mismatches.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.account, m.follow_type, m.stored, m.api).where(
                m.run_id == report.run_id, m.verified_at == report.verified_at
            )
        ).all()
    return {(a, int(t), int(n), int(api)) for a, t, n, api in rows}


def busiest(graph: Graph, follow_type: int, skip: set[str]) -> str:
    """The account with the longest list of ``follow_type``, not in ``skip``."""
    return max(
        (a for a in graph.accounts if a not in skip),
        key=lambda a: len(graph.list_ids(a, follow_type)),
    )


def test_a_clean_sync_agrees(engine: sa.Engine, running_sandbox: Start) -> None:
    """After a sync of an unchanged graph every list agrees, asked 20 accounts per call."""
    graph = Graph(users=70, seed=3)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        crawl(engine, client, graph.accounts)
        report = checked(engine, client)
    assert report.mismatches == []
    assert report.problem() is None
    assert report.accounts == 70
    assert report.lists == 3 * 70
    assert report.lists_not_checked == 0
    assert report.missing_accounts == []
    assert report.requests == -(-70 // INFO_BATCH)
    assert report.run_status == "done"


def test_damage_is_found_exactly_and_repaired(engine: sa.Engine, running_sandbox: Start) -> None:
    """Deleted, wrongly removed and bogus edges show as exactly their lists; --repair re-crawls
    just those lists as job 'test:repair', after which everything agrees and the store is
    exact again, while the job's own latest run stays the same."""
    graph = Graph(users=60, seed=4)
    server = running_sandbox(graph)
    fan_star = busiest(graph, 1, set())
    follower = busiest(graph, 2, {fan_star})
    mutual = busiest(graph, 3, {fan_star, follower})
    e = follow_edges.c
    with make_client(api_settings(server)) as client:
        crawl(engine, client, graph.accounts)
        fans = current_edges(engine, fan_star, 1)
        follows = current_edges(engine, follower, 2)
        with engine.begin() as conn:
            conn.execute(
                sa.delete(follow_edges).where(
                    e.account == fan_star, e.follow_type == 1, e.to_account.in_(fans[:2])
                )
            )
            conn.execute(
                sa.update(follow_edges)
                .where(e.account == follower, e.follow_type == 2, e.to_account == follows[0])
                .values(removed_at=NOW)
            )
            conn.execute(
                sa.insert(follow_edges).values(
                    account=mutual,
                    follow_type=3,
                    to_account="bogus_user",
                    follow_time=NOW,
                    first_seen_at=NOW,
                )
            )
        report = checked(engine, client)
        with engine.connect() as conn:
            job_run = runs.latest_run(conn, "test")
        repaired = repair(engine, client, report)
        again = checked(engine, client)
        with engine.connect() as conn:
            job_run_after = runs.latest_run(conn, "test")
            repair_run = runs.latest_run(conn, repair_job("test"))
    n_fans, n_follows = len(graph.list_ids(fan_star, 1)), len(graph.list_ids(follower, 2))
    n_mutual = len(graph.list_ids(mutual, 3))
    assert sorted(report.mismatches, key=lambda m: m.follow_type) == [
        Mismatch(fan_star, 1, n_fans - 2, n_fans),
        Mismatch(follower, 2, n_follows - 1, n_follows),
        Mismatch(mutual, 3, n_mutual + 1, n_mutual),
    ]
    assert report.lists == 3 * 60
    assert isinstance(report.problem(), VerifyMismatch)
    assert VerifyMismatch.exit_code == 9
    # One sync per set of disagreeing types: three one-list runs, nothing else re-crawled.
    assert [run.lists["total"] for run in repaired.syncs] == [1, 1, 1]
    assert {run.job for run in repaired.syncs} == {"test:repair"}
    assert repaired.after.mismatches == []
    assert repaired.after.lists == 3
    assert repaired.after.problem() is None
    assert again.mismatches == []
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))
    assert job_run is not None
    assert job_run_after is not None
    assert repair_run is not None
    assert job_run_after.id == job_run.id
    assert repair_run.id != job_run.id


def test_changed_graph_disagrees_until_repaired(engine: sa.Engine, running_sandbox: Start) -> None:
    """The API counts the live graph: after it changes (unfollows, follows, a deleted account)
    exactly the lists whose size changed disagree, the deleted account is reported as missing
    with its stored edges, and a repair re-crawls those lists to the truth."""
    graph = Graph(users=80, seed=5)
    server = running_sandbox(graph)
    accounts = graph.accounts
    with make_client(api_settings(server)) as client:
        crawl(engine, client, accounts)
        before = graph.truth(accounts, TYPES)
        graph.mutate(seed=1, delete=1)
        (deleted,) = set(accounts) - set(graph.accounts)
        report = checked(engine, client)
        repaired = repair(engine, client, report)
    expected = {
        (a, t, len(before[(a, t)]), len(graph.list_ids(a, t)))
        for a in accounts
        for t in TYPES
        if len(before[(a, t)]) != len(graph.list_ids(a, t))
    }
    assert all_mismatches(engine, report) == expected
    assert report.disagree == len(expected)
    assert len(report.mismatches) == min(len(expected), SHOWN)
    assert report.missing_accounts == [deleted]
    m = verify_mismatches.c
    with engine.connect() as conn:
        flags = conn.execute(sa.select(m.missing).where(m.account == deleted)).scalars().all()
    assert set(flags) == {True}
    assert repaired.after.mismatches == []
    assert repaired.after.missing_accounts == [deleted]
    # Sizes are what verify sees: every list has its true size again, and the re-crawled
    # lists are exact. (A list that lost one member and gained another looks unchanged.)
    stored, truth = stored_lists(engine), nonempty(graph.truth(graph.accounts, TYPES))
    assert {k: len(v) for k, v in stored.items()} == {k: len(v) for k, v in truth.items()}
    for account, follow_type, _, _ in expected:
        key = (account, follow_type)
        assert stored.get(key, {}) == truth.get(key, {})


def test_an_account_that_does_not_exist_is_reported_apart(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """An account the API does not know (30003, no stored edges) is listed as missing, and
    does not count as a disagreement."""
    graph = Graph(users=30, seed=6)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        crawl(engine, client, [*graph.accounts, "ghost_account"])
        report = checked(engine, client)
    assert report.missing_accounts == ["ghost_account"]
    assert report.mismatches == []
    assert report.problem() is None
    assert report.accounts == 31


def test_only_lists_crawled_to_the_end_are_compared(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """A run of fans only is checked for fans only; a list the run did not finish is counted
    as not checked instead of compared."""
    graph = Graph(users=40, seed=7)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        crawl(engine, client, graph.accounts, types=(1,))
        star = busiest(graph, 1, set())
        c = sync_checkpoints.c
        with engine.begin() as conn:
            conn.execute(
                sa.update(sync_checkpoints)
                .where(c.account == star, c.follow_type == 1)
                .values(status="failed")
            )
            conn.execute(
                sa.delete(follow_edges).where(follow_edges.c.account == star)
            )  # would disagree, were it compared
        report = checked(engine, client)
    assert report.mismatches == []
    assert report.lists == 39
    assert report.lists_not_checked == 1


class RefuseMissing(httpx.BaseTransport):
    """The sandbox, except that a follow_get_info call naming an account that does not exist
    is refused as a whole with 30003 (the service may well do that: it is not documented)."""

    def __init__(self, server: SandboxServer) -> None:
        self.inner = httpx.HTTPTransport()
        self.graph = server.sandbox.graph
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("follow_get_info"):
            body = json.loads(request.content)
            named = [body["From_Account"], *body["To_Account"]]
            if not all(self.graph.exists(a) for a in named):
                self.refused += 1
                error = {"ActionStatus": "FAIL", "ErrorCode": 30003, "ErrorInfo": "no account"}
                return httpx.Response(200, json=error)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_refused_batch_is_asked_one_account_at_a_time(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """When a whole call is refused with 30003, each of its accounts is asked alone: the
    missing one is reported, the others are still compared."""
    graph = Graph(users=30, seed=8)
    server = running_sandbox(graph)
    transport = RefuseMissing(server)
    with make_client(api_settings(server), transport=transport) as client:
        crawl(engine, client, ["a_ghost", *graph.accounts])
        transport.refused = 0  # the crawl sized its lists with follow_get_info too
        report = checked(engine, client)
    assert report.missing_accounts == ["a_ghost"]
    assert report.mismatches == []
    assert report.accounts == 31
    assert transport.refused == 2  # the batch with the ghost, then the ghost alone
    assert report.requests == 1 + 20 + 1  # two batches; the refused one asked again one by one


def test_an_account_without_counts_is_not_a_disagreement(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """An account the API answers with another error has no counts: it is listed with the
    error, and the verification ends in an API error (exit 6), not a mismatch."""
    graph = Graph(users=10, seed=9)
    server = running_sandbox(graph)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("follow_get_info"):
            names = json.loads(request.content)["To_Account"]
            items = [
                {"To_Account": a, "ResultCode": 30006, "ResultInfo": "busy"}
                if a == names[0]
                else {
                    "To_Account": a,
                    "ResultCode": 0,
                    "FollowerCount": len(graph.list_ids(a, 1)),
                    "FollowingCount": len(graph.list_ids(a, 2)),
                    "MutualFollowingCount": len(graph.list_ids(a, 3)),
                }
                for a in names
            ]
            return httpx.Response(200, json={"FollowInfo": items, "ActionStatus": "OK"})
        return httpx.Response(404)

    with make_client(api_settings(server)) as client:
        crawl(engine, client, graph.accounts)
    with make_client(api_settings(server), transport=httpx.MockTransport(answer)) as client:
        report = checked(engine, client)
    assert report.unchecked == [(graph.accounts[0], "follow_get_info: busy (30006)")]
    assert report.mismatches == []
    assert report.accounts == 9
    problem = report.problem()
    assert isinstance(problem, RunIncomplete)
    assert problem.exit_code == 6


def test_a_job_without_runs_has_nothing_to_verify(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """verify of a job that never ran returns None and asks the API nothing."""
    server = running_sandbox(Graph(users=5, seed=1))
    with make_client(api_settings(server)) as client:
        assert verify(engine, client, "never") is None
        assert client.calls == 0


def test_a_new_verification_replaces_the_stored_mismatches_of_the_last(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """verify_mismatches holds the latest verification of a run only, every list of it,
    while the report keeps the first SHOWN."""
    graph = Graph(users=60, seed=12)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        crawl(engine, client, graph.accounts)
        graph.mutate(seed=3, unfollow=0.5, follow=0.5)
        first = checked(engine, client)
        second = checked(engine, client)
    assert first.disagree > SHOWN
    assert len(second.mismatches) == SHOWN
    assert all_mismatches(engine, first) == set()
    assert len(all_mismatches(engine, second)) == second.disagree
