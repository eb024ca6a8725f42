"""Retention (etl.prune) on SQLite and PostgreSQL: the checkpoints of a job's last runs stay,
the unfinished run is never touched, run totals survive, a sync after a prune behaves, and
prune_events deletes exactly the events before its date."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from etl.sandbox import Graph, SandboxServer
from etl.store import retention as prune
from etl.store import runs
from tests.conftest import TYPES, api_settings, make_client, nonempty, stored_lists, sync_with
from tests.integration.test_sync import interrupted_client

Start = Callable[..., SandboxServer]
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def make_run(conn: sa.Connection, job: str, lists: int, status: str) -> int:
    """A run of ``lists`` lists, half done, with a sync_seen leftover; ``status`` as given."""
    run_id = runs.start_run(conn, job, {}, NOW)
    runs.add_lists(conn, run_id, [(f"acc{i}", 1) for i in range(lists)], NOW)
    conn.execute(
        sa.text(
            "UPDATE sync_checkpoints SET status = 'done', pages = 2, items = 5 WHERE run_id = :r"
        ),
        {"r": run_id},
    )
    runs.count_changes(conn, run_id, _all_done(lists), NOW)
    conn.execute(
        sa.text("INSERT INTO sync_seen VALUES (:r, 'acc0', 1, 'x'), (:r, 'acc1', 1, 'y')"),
        {"r": run_id},
    )
    if status != "running":
        conn.execute(
            sa.text("UPDATE sync_runs SET status = :s WHERE id = :r"), {"s": status, "r": run_id}
        )
    return run_id


def _all_done(lists: int) -> runs.Changes:
    changes = runs.Changes()
    changes.counts.update(pending=-lists, done=lists, pages=2 * lists, items=5 * lists)
    return changes


def rows_by_run(engine: sa.Engine, table: str) -> dict[int, int]:
    """How many rows of ``table`` each run has."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT run_id, count(*) FROM {table} GROUP BY run_id"))
        return {int(run_id): int(n) for run_id, n in rows}


def test_prune_keeps_the_last_runs_and_never_the_unfinished_one(engine: sa.Engine) -> None:
    """keep_runs=2 of six runs (the newest unfinished): the four oldest ended runs lose their
    checkpoints and sync_seen rows, in chunks; their rows and counters stay; the other job and
    the unfinished run are untouched; a second prune deletes nothing."""
    with engine.begin() as conn:
        old = [make_run(conn, "nightly", 7, s) for s in ("done", "abandoned", "done", "done")]
        other = make_run(conn, "other", 4, "done")
        kept = make_run(conn, "nightly", 5, "done")
        unfinished = make_run(conn, "nightly", 6, "running")
        before = {r: runs.counts(conn, r) for r in [*old, kept, unfinished]}
    done = prune.prune(engine, "nightly", 2, NOW, chunk=3)
    assert done.runs == old
    assert done.checkpoints == 4 * 7
    assert done.seen == 2 * 5  # every ended run of the job: the four old ones and the kept one
    assert rows_by_run(engine, "sync_checkpoints") == {other: 4, kept: 5, unfinished: 6}
    assert rows_by_run(engine, "sync_seen") == {other: 2, unfinished: 2}
    with engine.connect() as conn:
        assert {r: runs.counts(conn, r) for r in before} == before  # totals stay
        pruned = conn.execute(
            sa.text("SELECT id FROM sync_runs WHERE pruned_at IS NOT NULL ORDER BY id")
        ).scalars()
        assert list(pruned) == old
        assert conn.execute(sa.text("SELECT count(*) FROM sync_runs")).scalar() == 7
    assert prune.prune(engine, "nightly", 2, NOW) == prune.Pruned()
    # keep_runs=1 with an unfinished newest run: the latest finished run goes, never that one.
    again = prune.prune(engine, "nightly", 1, NOW)
    assert again.runs == [kept]
    assert rows_by_run(engine, "sync_checkpoints") == {other: 4, unfinished: 6}


def test_a_sync_after_prune_resumes_and_sync_prunes_by_itself(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """Three finished runs, an interrupted fourth; prune to 1 run; the sync resumes the
    fourth exactly; then each clean finish keeps the job's last ``keep_runs`` runs."""
    graph = Graph(users=20, seed=3)
    server = running_sandbox(graph)
    with make_client(api_settings(server)) as client:
        for _ in range(3):
            assert sync_with(engine, client, graph.accounts, keep_runs=0).problem() is None
    assert sorted(rows_by_run(engine, "sync_checkpoints")) == [1, 2, 3]
    with interrupted_client(server, 20, mid_list=True) as client, pytest.raises(KeyboardInterrupt):
        sync_with(engine, client, graph.accounts)
    done = prune.prune(engine, "test", 1, NOW)
    assert done.runs == [1, 2, 3]
    assert sorted(rows_by_run(engine, "sync_checkpoints")) == [4]
    with make_client(api_settings(server)) as client:
        report = sync_with(engine, client, graph.accounts, keep_runs=2)
        assert report.resumed
        assert report.run_id == 4
        assert report.problem() is None
        assert stored_lists(engine) == nonempty(graph.truth(graph.accounts, TYPES))
        with engine.connect() as conn:
            assert runs.counts(conn, 4) == runs.recount(conn, 4)
        for expected in ([4, 5], [5, 6]):
            assert sync_with(engine, client, graph.accounts, keep_runs=2).problem() is None
            assert sorted(rows_by_run(engine, "sync_checkpoints")) == expected
    with engine.connect() as conn:
        totals = conn.execute(sa.text("SELECT id, lists_done FROM sync_runs ORDER BY id")).all()
    assert [tuple(t) for t in totals] == [(i, 60) for i in range(1, 7)]


def test_prune_events_deletes_exactly_the_events_before_the_date(engine: sa.Engine) -> None:
    """Events observed before the date go (in chunks), the rest stay; the count is returned."""
    times = [NOW - timedelta(days=d, seconds=s) for d in (40, 31, 30, 1) for s in (0, 1)]
    times.append(NOW - timedelta(days=30) + timedelta(microseconds=1))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO follow_edge_events (account, follow_type, to_account, event, "
                "observed_at, run_id) VALUES ('a', 1, :to, 'added', :at, 1)"
            ).bindparams(sa.bindparam("at", type_=sa.DateTime(timezone=True))),
            [{"to": f"u{i}", "at": at} for i, at in enumerate(times)],
        )
    cutoff = NOW - timedelta(days=30)
    assert prune.prune_events(engine, cutoff, chunk=2) == 5  # 40 and 31 days, 30 days + 1 s
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT to_account FROM follow_edge_events ORDER BY id"))
        assert list(left.scalars()) == ["u4", "u6", "u7", "u8"]
    assert prune.prune_events(engine, cutoff) == 0


def test_prune_deletes_the_stored_mismatches_of_the_runs_it_prunes(engine: sa.Engine) -> None:
    """A pruned run's verify_mismatches go with its checkpoints; a kept run's stay."""
    with engine.begin() as conn:
        old = make_run(conn, "nightly", 2, "done")
        kept = make_run(conn, "nightly", 2, "done")
        for run_id in (old, kept):
            conn.execute(
                sa.text(
                    "INSERT INTO verify_mismatches (run_id, verified_at, account, follow_type, "
                    "stored, api, missing) VALUES (:r, :t, 'acc0', 1, 1, 2, false)"
                ),
                {"r": run_id, "t": NOW},
            )
    prune.prune(engine, "nightly", 1, NOW)
    assert rows_by_run(engine, "verify_mismatches") == {kept: 1}


def test_prune_deletes_the_reconciliation_of_the_runs_it_prunes(engine: sa.Engine) -> None:
    """A pruned run's list_reconciliation rows go with its checkpoints, a kept run's stay; a
    run deleted by hand takes its rows with it (ON DELETE CASCADE, SQLite included)."""
    with engine.begin() as conn:
        old = make_run(conn, "nightly", 2, "done")
        kept = make_run(conn, "nightly", 2, "done")
        for run_id in (old, kept):
            conn.execute(
                sa.text(
                    "INSERT INTO list_reconciliation (run_id, account, follow_type, live, added, "
                    "removed, reconciled_at) VALUES (:r, 'acc0', 1, 3, 1, 0, :t), "
                    "(:r, 'acc1', 1, 0, 0, 2, :t)"
                ),
                {"r": run_id, "t": NOW},
            )
    prune.prune(engine, "nightly", 1, NOW, chunk=1)
    assert rows_by_run(engine, "list_reconciliation") == {kept: 2}
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM sync_runs WHERE id = :r"), {"r": kept})
    assert rows_by_run(engine, "list_reconciliation") == {}
