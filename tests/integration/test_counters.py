"""The run counters (sync_run_counters) always say what a recount of the checkpoints says, on
SQLite and PostgreSQL: after real syncs with failures, skips, stale-cursor restarts and
recrawls, and after any sequence of the statements that move checkpoints."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl import holds
from etl.config import RetryPolicy
from etl.results import SyncRequest
from etl.sandbox import Graph, SandboxServer
from etl.store import cursors, runs
from etl.store.rows import ListPart, Mode
from etl.store.schema import sync_checkpoints
from etl.sync import sync
from tests.conftest import api_settings, make_client, sync_with
from tests.integration.test_sync import interrupted_client

Start = Callable[..., SandboxServer]
ck = sync_checkpoints.c


def assert_counted(engine: sa.Engine, run_id: int) -> None:
    """The counters of the run equal a recount of its checkpoints, last activity included."""
    with engine.connect() as conn:
        assert runs.counts(conn, run_id) == runs.recount(conn, run_id)
        moved = conn.execute(sa.select(sa.func.max(ck.updated_at)).where(ck.run_id == run_id))
        assert runs.last_activity(conn, run_id) == moved.scalar()


def every_run(engine: sa.Engine) -> list[int]:
    """The ids of every run in the database."""
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT id FROM sync_runs ORDER BY id")).scalars())


def test_counters_follow_syncs_with_failures_skips_restarts_and_recrawls(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """Interrupted, resumed, failing, rejected, missing, stale-cursor and recrawled lists:
    after each sync, every run's counters equal a recount."""
    graph = Graph(users=40, seed=11)
    server = running_sandbox(graph)
    # Interrupted mid-list twice (running lists, partial pages and items), then resumed.
    for calls in (15, 40):
        with (
            interrupted_client(server, calls, mid_list=True) as client,
            pytest.raises(KeyboardInterrupt),
        ):
            sync_with(engine, client, graph.accounts)
        assert_counted(engine, 1)
    # Stale cursors restart their lists: their pages and items start again.
    with engine.begin() as conn:
        stale = conn.execute(
            sa.text("UPDATE sync_checkpoints SET cursor = 'not-a-cursor' WHERE cursor <> ''")
        ).rowcount
    assert stale >= 1
    # Lost removal-check state: the lists mid-crawl are sent back to their start (recrawl).
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM sync_seen"))
    # The resumed run gets new lists too: "" is rejected (30001, given up), one account missing.
    accounts = ["", *graph.accounts, "nobody_at_all"]
    with make_client(api_settings(server)) as client:
        report = sync_with(engine, client, accounts)
    assert report.finished
    assert report.lists["failed"] == 3
    assert report.lists["skipped"] == 3
    for run_id in every_run(engine):
        assert_counted(engine, run_id)
    with engine.connect() as conn:
        restarts = conn.execute(sa.text("SELECT sum(restarts) FROM sync_checkpoints")).scalar_one()
    assert restarts >= stale


def test_counters_follow_lists_that_fail_until_given_up(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """A list failing in sync after sync is open (retryable) until given up at MAX_FAILURES."""
    graph = Graph(users=20, seed=1)
    server = running_sandbox(graph, faults=1.0, fault_kinds=("30006",))
    retry = RetryPolicy(attempts=1, max_seconds=5, initial_wait=0, max_wait=0)
    opened = []
    with make_client(api_settings(server, retry=retry)) as client:
        for _ in range(runs.MAX_FAILURES):
            report = sync_with(engine, client, graph.accounts[:2], types=(1,))
            assert_counted(engine, report.run_id)
            opened.append(report.lists["open"])
    assert opened[0] > 0
    assert opened[-1] == 0
    assert report.lists["failed"] == 2


def test_a_restarted_run_keeps_the_counters_of_the_abandoned_one(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """``--restart`` abandons the run with its counters stored; the new run counts anew."""
    graph = Graph(users=30, seed=9)
    server = running_sandbox(graph)
    with interrupted_client(server, 10) as client, pytest.raises(KeyboardInterrupt):
        sync_with(engine, client, graph.accounts)
    with make_client(api_settings(server)) as client:
        report = sync(
            engine,
            client,
            SyncRequest(job="test", accounts=graph.accounts, page_size=7, restart=True),
            stop=threading.Event(),
        )
    assert report.run_id == 2
    for run_id in (1, 2):
        assert_counted(engine, run_id)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT lists_total FROM sync_runs WHERE id = 1")).scalar()
        seen = conn.execute(sa.text("SELECT count(*) FROM sync_seen")).scalar()
    assert stored == 3 * len(graph.accounts)
    assert seen == 0  # an abandoned run's and a finished run's sync_seen rows are gone


# ---- any sequence of the statements that move checkpoints ------------------------------------

LISTS = [(f"a{i}", t) for i in range(3) for t in (1, 2)]
keys = st.sampled_from(LISTS)
advances = st.builds(
    lambda key, pages, items, complete, restarted: (
        "advance",
        key,
        pages,
        items,
        complete,
        restarted,
    ),
    keys,
    st.integers(0, 3),
    st.integers(0, 5),
    st.booleans(),
    st.booleans(),
)
settles = st.builds(
    lambda key, status, failures: ("settle", key, status, failures),
    keys,
    st.sampled_from([None, "skipped", "failed", "pending", "held"]),
    st.sampled_from(["keep", "add", "give_up"]),
)
recrawls = st.builds(lambda key: ("recrawl", key), keys)
adds = st.builds(lambda n: ("add", n), st.integers(1, 4))
puts_on_hold = st.builds(lambda key, confirming: ("hold", key, confirming), keys, st.booleans())
operations = st.lists(st.one_of(advances, settles, recrawls, adds, puts_on_hold), max_size=25)


def apply(conn: sa.Connection, run_id: int, op: tuple[Any, ...], now: datetime) -> None:
    """One operation, as a writer's batch (or a resumed run) does it."""
    kind = op[0]
    if kind == "advance":
        _, (account, follow_type), pages, items, complete, restarted = op
        part = ListPart(
            account,
            follow_type,
            edges={f"u{i}": None for i in range(items)},
            pages=pages,
            next_cursor="" if complete else "next",
            mode=(Mode.RESTARTED if restarted else Mode.FIRST).ending(complete),
        )
        cursors.advance(conn, run_id, [part], now)
    elif kind == "settle":
        _, key, status, failures = op
        cursors.settle(conn, run_id, key, status=status, failures=failures, error="e", now=now)
    elif kind == "recrawl":
        cursors.recrawl(conn, run_id, [op[1]], now)
    elif kind == "hold":
        hold = holds.Hold(op[1], 30, 40, holds.LAST_PAGE, confirming=op[2])
        cursors.put_on_hold(conn, run_id, [hold], now)
    else:
        more = [(f"b{i}", 1) for i in range(op[1])]
        runs.add_lists(conn, run_id, [*LISTS[:2], *more], now)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations, batched=st.booleans())
def test_any_sequence_of_moves_keeps_the_counters_exact(
    engine: sa.Engine, ops: list[tuple[Any, ...]], batched: bool
) -> None:
    """Advance, settle, recrawl, hold and add, in any order, one transaction each or all in one:
    the counters equal a recount (a fresh run per example)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        run_id = runs.start_run(conn, f"j{now.timestamp()}-{id(ops)}", {}, now)
        runs.add_lists(conn, run_id, LISTS, now)
    if batched:
        with engine.begin() as conn:
            for i, op in enumerate(ops):
                apply(conn, run_id, op, now + timedelta(seconds=i))
    else:
        for i, op in enumerate(ops):
            with engine.begin() as conn:
                apply(conn, run_id, op, now + timedelta(seconds=i))
    assert_counted(engine, run_id)
    with engine.begin() as conn:  # runs of other examples stay in the database: close this one
        conn.execute(sa.text("UPDATE sync_runs SET status = 'done' WHERE id = :id"), {"id": run_id})


def test_concurrent_batches_never_share_a_counter_row(pg_engine: sa.Engine) -> None:
    """Two transactions moving lists of one run at once write different counter rows: the
    second commits while the first is still open (no wait on a shared counter row)."""
    now = datetime.now(UTC)
    with pg_engine.begin() as conn:
        run_id = runs.start_run(conn, "hot", {}, now)
        runs.add_lists(conn, run_id, [("a", 1), ("b", 1)], now)
    first = pg_engine.connect()
    try:
        first.begin()
        first.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
        cursors.advance(first, run_id, [ListPart("a", 1, pages=1, next_cursor="n")], now)
        with pg_engine.begin() as second:
            second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            cursors.advance(second, run_id, [ListPart("b", 1, pages=1, mode=Mode.FIRST_END)], now)
        first.commit()
    finally:
        first.close()
    with pg_engine.connect() as conn:
        shards = conn.execute(
            sa.text("SELECT count(*) FROM sync_run_counters WHERE run_id = :id"), {"id": run_id}
        ).scalar_one()
    assert shards >= 2
    assert_counted(pg_engine, run_id)
