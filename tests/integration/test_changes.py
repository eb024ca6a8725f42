"""What sync writes beyond the edges: change events, the analyst views, and nothing at all for
data that did not change."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from etl.crawl.messages import Ended
from etl.crawl.writer import Writer
from etl.results import SyncReport, SyncRequest
from etl.sandbox import Graph, SandboxServer
from etl.sync import sync
from etl.tencent.page import Page
from tests.conftest import TYPES, api_settings, make_client, nonempty, stored_lists

Start = Callable[..., SandboxServer]


def run(
    engine: sa.Engine,
    server: SandboxServer,
    accounts: list[str],
    writer: type[Writer] = Writer,
    **kw: Any,
) -> SyncReport:
    """A sync of ``accounts`` against ``server`` with a fresh client (and ``writer`` lanes)."""
    with make_client(api_settings(server)) as client:
        request = SyncRequest(job="nightly", accounts=accounts, **kw)
        return sync(engine, client, request, writer=writer)


def events(engine: sa.Engine, run_id: int) -> set[tuple[str, int, str, str]]:
    """(account, type, to_account, event) of one run."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, to_account, event FROM follow_edge_events "
                "WHERE run_id = :r"
            ),
            {"r": run_id},
        )
        return {(a, t, to, e) for a, t, to, e in rows}


def diff(
    before: dict[tuple[str, int], dict[str, int]], after: dict[tuple[str, int], dict[str, int]]
) -> set[tuple[str, int, str, str]]:
    """The events a crawl of ``after`` must record, given a stored ``before``."""
    result = set()
    for key in before.keys() | after.keys():
        old, new = set(before.get(key, {})), set(after.get(key, {}))
        result |= {(*key, to, "added") for to in new - old}
        result |= {(*key, to, "removed") for to in old - new}
    return result


def test_events_and_views_follow_the_sandbox_changes(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """Run 1 is a baseline (no events); run 2 records exactly the sandbox's changes, and the
    views agree with the graph as it now is."""
    graph = Graph(users=120, seed=21)
    server = running_sandbox(graph)
    accounts = graph.accounts
    before = graph.truth(accounts, TYPES)
    first = run(engine, server, accounts)
    assert first.problem() is None
    assert events(engine, first.run_id) == set()

    graph.mutate(1, unfollow=0.1, follow=0.1)
    after = graph.truth(accounts, TYPES)
    second = run(engine, server, accounts)
    assert second.problem() is None
    expected = diff(before, after)
    assert expected, "the mutation changed nothing: the test would prove nothing"
    assert events(engine, second.run_id) == expected
    assert stored_lists(engine) == nonempty(after)

    with engine.connect() as conn:
        counts = {
            a: (fans, follows, mutual)
            for a, fans, follows, mutual in conn.execute(
                sa.text("SELECT account, fans, follows, mutual FROM account_follow_counts")
            )
        }
        follows = {
            tuple(r) for r in conn.execute(sa.text("SELECT follower, followee FROM follows"))
        }
        daily = {
            (a, t): (gained, lost)
            for a, t, _, gained, lost in conn.execute(sa.text("SELECT * FROM daily_follow_changes"))
        }
    assert counts == {a: tuple(len(after.get((a, t), {})) for t in TYPES) for a in accounts}
    said = {(to, a) for (a, t), items in after.items() if t == 1 for to in items}
    said |= {(a, to) for (a, t), items in after.items() if t == 2 for to in items}
    assert follows == said
    per_list: dict[tuple[str, int], list[int]] = {}
    for a, t, _, event in expected:
        per_list.setdefault((a, t), [0, 0])[event == "removed"] += 1
    assert daily == {key: (g, lost) for key, (g, lost) in per_list.items()}


def test_an_account_that_disappears_records_removals(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """A deleted account (30003) has its listed edges removed, each as a 'removed' event."""
    graph = Graph(users=60, seed=22)
    server = running_sandbox(graph)
    accounts = graph.accounts
    run(engine, server, accounts)
    before = graph.truth(accounts, TYPES)
    graph.mutate(2, unfollow=0, follow=0, profile=0, delete=3)
    second = run(engine, server, accounts)
    missing = set(second.missing_accounts)
    assert missing == set(accounts) - set(graph.accounts)
    recorded = events(engine, second.run_id)
    for account in missing:
        for t in TYPES:
            for to in before.get((account, t), {}):
                assert (account, t, to, "removed") in recorded


def xmins(engine: sa.Engine, table: str) -> dict[Any, str]:
    """Each row's xmin (the transaction that wrote its current version) on PostgreSQL."""
    key = (
        "account, follow_type, to_account"
        if table == "follow_edges"
        else "user_id, profile_sequence"
    )
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {key}, xmin::text FROM {table}"))
        return {tuple(row[:-1]): row[-1] for row in rows}


def test_an_unchanged_resync_rewrites_no_row(pg_engine: sa.Engine, running_sandbox: Start) -> None:
    """Syncing an unchanged graph again leaves every edge and profile row version as it was."""
    graph = Graph(users=150, seed=23)
    server = running_sandbox(graph)
    first = run(pg_engine, server, graph.accounts, page_size=7)
    edges, profiles = xmins(pg_engine, "follow_edges"), xmins(pg_engine, "profile_snapshots")
    assert edges
    assert profiles
    assert first.profiles == len(profiles)  # each version counted once, however often seen
    second = run(pg_engine, server, graph.accounts, page_size=7)
    assert second.problem() is None
    assert second.profiles == 0
    assert second.run_id == 2
    assert xmins(pg_engine, "follow_edges") == edges
    assert xmins(pg_engine, "profile_snapshots") == profiles
    assert events(pg_engine, second.run_id) == set()


@pytest.mark.parametrize("report_delay", [0.0, 1.0], ids=["prompt", "slow-report"])
def test_a_lost_seen_set_recrawls_the_list_instead_of_removing(
    engine: sa.Engine, running_sandbox: Start, report_delay: float
) -> None:
    """If sync_seen loses a list's rows mid-crawl (an UNLOGGED table after a server crash), the
    list is crawled again from the start and no edge is wrongly marked removed.

    "slow-report": the writer reports the sent-back list's ending to the coordinator only after
    the coordinator has claimed the list again (a busy machine); the new claim must still run."""
    writer = slow_to_report(report_delay) if report_delay else Writer
    graph = Graph(users=80, seed=24)
    server = running_sandbox(graph)
    accounts = graph.accounts
    run(engine, server, accounts, writer)  # baseline
    # Second run, stopped after a few pages, then the "crash" empties sync_seen.
    stop = threading.Event()
    calls = {"n": 0}
    with make_client(api_settings(server)) as client:
        request = SyncRequest(job="nightly", accounts=accounts, page_size=3, concurrency=2)
        original = client.follow_get

        def follow_get(*args: Any, **kwargs: Any) -> Page:
            calls["n"] += 1
            page = original(*args, **kwargs)
            if calls["n"] >= 20 and page.next_cursor:
                stop.set()  # this list is mid-crawl: its pages so far are in sync_seen
            return page

        client.follow_get = follow_get  # type: ignore[method-assign]
        report = sync(engine, client, request, stop=stop, writer=writer)
    assert report.interrupted
    assert not report.finished
    with engine.begin() as conn:
        seen = conn.execute(sa.text("SELECT count(*) FROM sync_seen")).scalar_one()
        assert seen > 0, "no list was mid-crawl: the test would prove nothing"
        conn.execute(sa.text("DELETE FROM sync_seen"))
    final = run(engine, server, accounts, writer, page_size=3)
    assert final.problem() is None
    assert final.edges_removed == 0
    assert stored_lists(engine) == nonempty(graph.truth(accounts, TYPES))


def slow_to_report(delay: float) -> type[Writer]:
    """Writers that hold back the Ended of a list sent back to its start by ``delay`` seconds."""
    sent_back: set[tuple[str, int]] = set()

    class SlowToReport(Writer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            report = self.on_closed

            def slowly(end: Ended) -> None:
                if end.claim.key in sent_back:
                    sent_back.discard(end.claim.key)
                    time.sleep(delay)
                report(end)

            self.on_closed = slowly

        def _write(self, conn: sa.Connection, batch: list[Any]) -> Any:
            result = super()._write(conn, batch)
            sent_back.update(result.written.recrawl)  # the lists leases.recrawl sent back
            return result

    return SlowToReport


def test_awkward_account_ids_are_stored_exactly(engine: sa.Engine) -> None:
    """UserIDs with tabs, backslashes, line breaks or quotes survive the staging (COPY) path."""
    from datetime import UTC, datetime

    from etl.store.load import Loader
    from etl.store.rows import ListPart, Mode

    odd = ["tab\there", "back\\slash", "line\nbreak", "cr\rx", "quote'\"", "N\\N", "plain"]
    part = ListPart(
        "acc\\\t1", 1, edges=dict.fromkeys(odd, 1_700_000_000), pages=1, mode=Mode.FIRST_END
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sync_runs (id, job, status, started_at, options) "
                "VALUES (1, 'j', 'running', CURRENT_TIMESTAMP, '{}')"
            )
        )
        Loader(engine.dialect.name).write(conn, 1, [part], [], datetime.now(UTC))
    assert stored_lists(engine) == {("acc\\\t1", 1): dict.fromkeys(odd, 1_700_000_000)}
