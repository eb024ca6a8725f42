"""Mass-removal holds (etl.holds): an empty last page or a 30003 for a list with many stored
edges removes nothing until a second crawl and follow_get_info confirm it; a true mass unfollow
is confirmed and applied; small lists are applied as before. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import metrics
from etl.errors import RunIncomplete
from etl.holds import Thresholds
from etl.results import SyncReport
from etl.sandbox import Graph, SandboxServer
from etl.store import leases, runs, status
from etl.store.load import Loader
from etl.store.rows import ListPart, Mode
from etl.store.schema import sync_checkpoints
from tests.conftest import TYPES, nonempty, stored_lists
from tests.integration.test_changes import diff, events, run
from tests.integration.test_counters import assert_counted

Start = Callable[..., SandboxServer]
ck = sync_checkpoints.c
SEED = 31  # Graph(users=60, seed=31): user_000047 has 42 fans, user_000053 has 14
BIG, SMALL = "user_000047", "user_000053"


def baseline(engine: sa.Engine, running_sandbox: Start) -> tuple[Graph, SandboxServer]:
    """A graph of 60 accounts, synced once (run 1, the baseline)."""
    graph = Graph(users=60, seed=SEED)
    server = running_sandbox(graph)
    assert (graph.counts(BIG) or (0,))[0] == 42
    assert run(engine, server, graph.accounts, page_size=10).problem() is None
    return graph, server


def checkpoint(engine: sa.Engine, run_id: int, account: str, follow_type: int = 1) -> Any:
    """The list's checkpoint row in the run."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sync_checkpoints).where(
                ck.run_id == run_id, ck.account == account, ck.follow_type == follow_type
            )
        ).one()


def assert_unchanged(engine: sa.Engine, graph: Graph, report: SyncReport) -> None:
    """The store equals the sandbox's truth, and the run recorded no event."""
    assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))
    assert events(engine, report.run_id) == set()
    assert_counted(engine, report.run_id)


def test_an_empty_first_page_is_held_and_the_confirming_crawl_applies_nothing(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """A well-formed empty last page for a list of 42 stored fans holds it; the second crawl
    lists them all again: nothing removed, no event, exit 0."""
    graph, server = baseline(engine, running_sandbox)
    server.sandbox.inject(BIG, 1, "empty-page")
    report = run(engine, server, graph.accounts, page_size=10)
    assert report.problem() is None
    assert report.edges_removed == 0
    assert_unchanged(engine, graph, report)
    row = checkpoint(engine, report.run_id, BIG)
    assert (row.status, row.held_removed, row.held_current, row.held_ending) == (
        "done",
        42,
        42,
        "last_page",
    )
    assert row.held_at is not None
    assert row.items == 42  # the confirming crawl's, not both crawls' together


def test_a_30003_for_an_account_with_stored_edges_is_held_then_resolved(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """One 30003 for an account with 42 stored fans: held, not emptied, and the second crawl
    finds the account and its fans: nothing removed, no event."""
    graph, server = baseline(engine, running_sandbox)
    server.sandbox.inject(BIG, 1, "30003")
    report = run(engine, server, graph.accounts, page_size=10)
    assert report.problem() is None
    assert report.missing_accounts == []
    assert_unchanged(engine, graph, report)
    row = checkpoint(engine, report.run_id, BIG)
    assert (row.status, row.held_removed, row.held_ending) == ("done", 42, "missing")


def test_a_persistent_empty_page_stays_held_and_the_run_exits_6(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """Both crawls answer an empty page but follow_get_info counts 42: not confirmed. The list
    stays held (nothing removed, no event), status and the report say so, exit 6; the next run
    crawls it afresh."""
    graph, server = baseline(engine, running_sandbox)
    server.sandbox.inject(BIG, 1, "empty-page", times=2)
    report = run(engine, server, graph.accounts, page_size=10)
    problem = report.problem()
    assert isinstance(problem, RunIncomplete)
    assert "1 lists held for a mass removal" in str(problem)
    assert report.finished  # held and not confirmed: nothing left to crawl in this run
    assert report.lists["held"] == 1
    assert report.counts()["lists_held"] == 1
    assert report.edges_removed == 0
    assert_unchanged(engine, graph, report)
    row = checkpoint(engine, report.run_id, BIG)
    assert (row.status, row.failures, row.cursor) == ("held", runs.MAX_FAILURES, "")
    assert "follow_get_info says 42" in row.last_error
    with engine.connect() as conn:
        doc = status.status_document(conn, "nightly")
    held = doc["run"]["held"]
    assert doc["run"]["lists"]["held"] == 1
    assert held["count"] == 1
    assert held["lists"] == [
        {
            "account": BIG,
            "follow_type": 1,
            "removed": 42,
            "current": 42,
            "ending": "last_page",
            "held_at": held["lists"][0]["held_at"],
            "confirming": False,
        }
    ]
    again = run(engine, server, graph.accounts, page_size=10)
    assert again.problem() is None
    assert_unchanged(engine, graph, again)


def test_a_true_mass_unfollow_is_confirmed_and_applied(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """39 of 42 fans unfollow between two syncs: held, confirmed by the second crawl and
    follow_get_info, then applied with exactly their 'removed' events."""
    graph, server = baseline(engine, running_sandbox)
    before = graph.truth(graph.accounts, TYPES)
    assert graph.lose_fans(BIG, keep=3) == 39
    after = graph.truth(graph.accounts, TYPES)
    report = run(engine, server, graph.accounts, page_size=10)
    assert report.problem() is None
    assert events(engine, report.run_id) == diff(before, after)
    assert stored_lists(engine) == nonempty(after)
    row = checkpoint(engine, report.run_id, BIG)
    assert (row.status, row.held_removed, row.held_current) == ("done", 39, 42)
    assert_counted(engine, report.run_id)


def test_a_deleted_account_with_many_fans_is_confirmed_by_follow_get_info(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """An account that really is gone: 30003 twice and follow_get_info says it does not exist,
    so its lists are emptied with a 'removed' event per edge and skipped."""
    graph, server = baseline(engine, running_sandbox)
    before = graph.truth(graph.accounts, TYPES)
    graph.delete_account(BIG)
    report = run(engine, server, [*graph.accounts, BIG], page_size=10)
    assert report.problem() is None
    assert report.missing_accounts == [BIG]
    removed = {(BIG, 1, to, "removed") for to in before[(BIG, 1)]}
    assert removed <= events(engine, report.run_id)
    assert checkpoint(engine, report.run_id, BIG).status == "skipped"
    assert_counted(engine, report.run_id)


def test_a_small_list_is_applied_at_once(engine: sa.Engine, running_sandbox: Start) -> None:
    """Below the minimum (14 fans < 20) an empty page is applied as before: its fans are
    removed with events, and come back as 'added' the next run."""
    graph, server = baseline(engine, running_sandbox)
    fans = set(graph.truth([SMALL], (1,))[(SMALL, 1)])
    assert len(fans) == 14
    server.sandbox.inject(SMALL, 1, "empty-page")
    report = run(engine, server, graph.accounts, page_size=10)
    assert report.problem() is None
    assert events(engine, report.run_id) == {(SMALL, 1, to, "removed") for to in fans}
    assert checkpoint(engine, report.run_id, SMALL).held_at is None
    again = run(engine, server, graph.accounts, page_size=10)
    assert events(engine, again.run_id) == {(SMALL, 1, to, "added") for to in fans}


def test_the_thresholds_are_the_requests(engine: sa.Engine, running_sandbox: Start) -> None:
    """With --hold-min-edges 50 the 42-fan list is below the minimum: applied at once."""
    graph, server = baseline(engine, running_sandbox)
    server.sandbox.inject(BIG, 1, "empty-page")
    report = run(engine, server, graph.accounts, page_size=10, holds=Thresholds(50, 0.5))
    assert report.edges_removed == 42
    with engine.connect() as conn:
        options = runs.latest_run(conn, "nightly").options  # type: ignore[union-attr]
    assert (options["hold_min_edges"], options["hold_share"]) == (50, 0.5)


def test_held_lists_are_claimed_after_every_other_open_list(engine: sa.Engine) -> None:
    """A held list awaiting confirmation, however big, is claimed only once no other open
    list is free; one whose confirmation failed is not claimed at all."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        run_id = runs.start_run(conn, "j", {}, now)
        runs.add_lists(conn, run_id, [("big", 1), ("small", 1), ("done", 1)], now)
        conn.execute(
            sa.update(sync_checkpoints)
            .where(ck.account == "big")
            .values(status="held", expected_items=1000, held_at=now)
        )
        conn.execute(
            sa.update(sync_checkpoints)
            .where(ck.account == "done")
            .values(status="held", failures=runs.MAX_FAILURES, held_at=now)
        )
    with engine.begin() as conn:
        first = leases.claim(conn, run_id, "me", 1, now)
        rest = leases.claim(conn, run_id, "me", 5, now)
    assert [(s.account, s.confirming) for s in first] == [("small", False)]
    assert [(s.account, s.confirming) for s in rest] == [("big", True)]


def test_metrics_count_held_lists(engine: sa.Engine, running_sandbox: Start) -> None:
    """The lists gauge has a 'held' status with the run's held lists."""
    graph, server = baseline(engine, running_sandbox)
    server.sandbox.inject(BIG, 1, "empty-page", times=2)
    report = run(engine, server, graph.accounts, page_size=10)
    gauges = metrics.Metrics(engine, "nightly")
    gauges.lists = report.lists
    families = {f.name: f for f in gauges.registry.collect()}
    held = [s for s in families["follow_etl_lists"].samples if s.labels["status"] == "held"]
    assert [s.value for s in held] == [1.0]


@pytest.mark.parametrize("follow_type", [2, 3])
def test_other_follow_types_are_held_too(
    engine: sa.Engine, running_sandbox: Start, follow_type: int
) -> None:
    """Follows and mutual lists follow the same rule (when big enough)."""
    graph, server = baseline(engine, running_sandbox)
    size, account = max(
        (len(graph.truth([a], (follow_type,)).get((a, follow_type), {})), a) for a in graph.accounts
    )
    if size < 20:
        pytest.skip(f"no list of type {follow_type} with 20 edges in this graph")
    server.sandbox.inject(account, follow_type, "empty-page")
    report = run(engine, server, graph.accounts, page_size=10)
    assert report.problem() is None
    assert_unchanged(engine, graph, report)
    assert checkpoint(engine, report.run_id, account, follow_type).held_removed == size


_examples = itertools.count()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    current=st.integers(0, 50),
    min_edges=st.integers(1, 30),
    share=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
    data=st.data(),
)
def test_the_loader_holds_exactly_what_the_rule_says(
    engine: sa.Engine, current: int, min_edges: int, share: float, data: st.DataObject
) -> None:
    """A completed crawl that lists S - R of a list's S stored edges (in one batch, or over an
    earlier batch and a short last page) is held (nothing removed, no event) exactly when
    R >= min and R > share x S, counted in SQL; otherwise its R removals are applied with R
    events."""
    near = [min_edges - 1, min_edges, int(share * current), int(share * current) + 1]
    edges = [r for r in near if 0 <= r <= current] or [0]
    removed = data.draw(st.one_of(st.sampled_from(edges), st.integers(0, current)))
    mass = removed >= min_edges and removed > Fraction(share) * current
    account, now = f"acct{next(_examples)}", datetime(2026, 1, 1, tzinfo=UTC)
    stored = {f"u{i:03d}": 1_700_000_000 for i in range(current)}
    loader = Loader(engine.dialect.name, Thresholds(min_edges, share))
    with engine.begin() as conn:
        run_id = runs.start_run(conn, account, {}, now)
        first = ListPart(account, 1, edges=dict(stored), pages=1, mode=Mode.FRESH_END)
        loader.write(conn, run_id, [first], [], now)
    listed = list(stored.items())[removed:]
    # The second crawl began after the first stored its edges (it removes only edges unchanged
    # since it began): its earlier pages in an earlier batch (kept in sync_seen), then its
    # short last page.
    later = now + timedelta(seconds=1)
    split = data.draw(st.integers(0, len(listed)))
    if split:
        earlier = ListPart(
            account, 1, edges=dict(listed[:split]), pages=1, next_cursor="c", started=later
        )
        with engine.begin() as conn:
            loader.write(conn, run_id, [earlier], [], later)
    last = ListPart(
        account,
        1,
        edges=dict(listed[split:]),
        pages=1,
        mode=Mode.SEEN_END if split > 0 else Mode.FIRST_END,
        baseline=True,
        started=later,
    )
    with engine.begin() as conn:
        written = loader.write(conn, run_id, [last], [], later)
        events = conn.execute(
            sa.text("SELECT count(*) FROM follow_edge_events WHERE account = :a"), {"a": account}
        ).scalar_one()
        seen = conn.execute(
            sa.text("SELECT count(*) FROM sync_seen WHERE account = :a"), {"a": account}
        ).scalar_one()
    assert seen == 0  # held or applied, the crawl's working set is gone
    assert [h.key for h in written.held] == ([(account, 1)] if mass else [])
    assert (written.edges_removed, events) == ((0, 0) if mass else (removed, removed))
    if mass:
        assert (written.held[0].removed, written.held[0].current) == (removed, current)
