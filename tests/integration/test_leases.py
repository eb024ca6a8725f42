"""Leases, claims and the writer's batch under lease loss, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from etl.crawl import EFFECTS, Outcome
from etl.crawl.known import KnownProfiles
from etl.crawl.messages import Claim, Ended, Fetched, Tally
from etl.crawl.transform import page_rows
from etl.crawl.writer import Writer
from etl.store import leases, runs, workers
from etl.store.rows import ListState
from etl.store.schema import sync_checkpoints, sync_workers
from etl.tencent.page import Page
from tests.conftest import stored_lists

JOB = "leases"


@pytest.fixture
def run_id(engine: sa.Engine) -> int:
    """A run of three lists: (a, 1), (b, 1), (c, 1)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        run = runs.start_run(conn, JOB, {}, now)
        runs.add_lists(conn, run, [("a", 1), ("b", 1), ("c", 1)], now)
    return run


def register(engine: sa.Engine, role: str = "worker") -> workers.Presence:
    """A live process row for this job."""
    with engine.begin() as conn:
        return workers.register(conn, JOB, role, workers.DbClock(conn))


def lease(engine: sa.Engine, run_id: int, key: tuple[str, int], owner: str | None) -> None:
    """Hand one list's lease to ``owner`` directly."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(sync_checkpoints)
            .where(
                sync_checkpoints.c.run_id == run_id,
                sync_checkpoints.c.account == key[0],
                sync_checkpoints.c.follow_type == key[1],
            )
            .values(lease_owner=owner)
        )


def checkpoint_row(
    engine: sa.Engine, run_id: int, key: tuple[str, int]
) -> sa.Row[*tuple[Any, ...]]:
    """The checkpoint row of one list."""
    c = sync_checkpoints.c
    with engine.connect() as conn:
        return conn.execute(
            sa.select(c.status, c.cursor, c.failures, c.lease_owner, c.last_error).where(
                c.run_id == run_id, c.account == key[0], c.follow_type == key[1]
            )
        ).one()


def writer(engine: sa.Engine, run_id: int, owner: str, closed: list[Ended]) -> Writer:
    """A writer lane driven synchronously (its thread is never started)."""
    return Writer(
        0,
        engine,
        run_id,
        owner,
        clock=lambda: datetime.now(UTC),
        queue_size=10,
        known=KnownProfiles(),
        tally=Tally(),
        on_batch=lambda tally: None,
        on_closed=closed.append,
        stop=threading.Event(),
        abort=threading.Event(),
        db_seconds=5.0,
    )


def page(claim: Claim, accounts: list[str], cursor: str) -> Fetched:
    """A parsed page of ``claim``'s list listing ``accounts``."""
    items = [{"To_Account": account, "FollowTime": 1_700_000_000} for account in accounts]
    rows = page_rows(Page.of(items, cursor), KnownProfiles())
    return Fetched(claim, rows, cursor, restarted=False)


def test_every_outcome_has_one_effect() -> None:
    """The transition table covers every Outcome, and only the ends that settle give up."""
    assert set(EFFECTS) == set(Outcome)
    assert {o for o, e in EFFECTS.items() if e.failures == "give_up"} == {Outcome.REJECTED}
    assert {o for o, e in EFFECTS.items() if e.stops_crawl} == {Outcome.FATAL, Outcome.CRASH}


def test_claim_takes_free_and_dead_leases_never_live_or_own_ones(
    engine: sa.Engine, run_id: int
) -> None:
    """A claim takes a free list and a dead process's, never a live peer's nor its own."""
    me, peer = register(engine), register(engine)
    lease(engine, run_id, ("a", 1), peer.id)
    lease(engine, run_id, ("b", 1), me.id)
    lease(engine, run_id, ("c", 1), "gone-host:1:dead")
    with engine.begin() as conn:
        taken = leases.claim(conn, run_id, me.id, 10, datetime.now(UTC))
    assert {t.key for t in taken} == {("c", 1)}


def test_a_failed_list_is_left_to_the_next_sync_and_free_for_it(
    engine: sa.Engine, run_id: int
) -> None:
    """A list this crawl failed is released, not re-claimed by this crawl, claimed by the next."""
    me = register(engine)
    started = datetime.now(UTC) - timedelta(seconds=1)
    with engine.begin() as conn:
        (task,) = leases.claim(conn, run_id, me.id, 1, started)
    closed: list[Ended] = []
    writer(engine, run_id, me.id, closed)._commit([Ended(Claim(task), Outcome.FAILED, "boom")])
    row = checkpoint_row(engine, run_id, task.key)
    assert (row.status, row.failures, row.lease_owner, row.last_error) == (
        "failed",
        1,
        None,
        "boom",
    )
    with engine.begin() as conn:
        again = leases.claim(conn, run_id, me.id, 10, started)
    assert task.key not in {t.key for t in again}
    with engine.begin() as conn:
        later = leases.claim(conn, run_id, "next-sync", 10, datetime.now(UTC))
    assert task.key in {t.key for t in later}


def test_a_batch_writes_nothing_for_a_list_another_process_took_over(
    engine: sa.Engine, run_id: int
) -> None:
    """Pages and endings of a list whose lease moved on change nothing; its fetcher is told."""
    me, peer = register(engine), register(engine)
    lease(engine, run_id, ("a", 1), me.id)
    lease(engine, run_id, ("b", 1), peer.id)
    mine, theirs = Claim(ListState("a", 1, "")), Claim(ListState("b", 1, ""))
    closed: list[Ended] = []
    batch: list[Fetched | Ended] = [
        page(mine, ["x", "y"], "next-a"),
        page(theirs, ["z"], "next-b"),
        Ended(theirs, Outcome.MISSING),
    ]
    writer(engine, run_id, me.id, closed)._commit(batch)
    assert stored_lists(engine) == {("a", 1): {"x": 1_700_000_000, "y": 1_700_000_000}}
    assert checkpoint_row(engine, run_id, ("a", 1)).cursor == "next-a"
    row = checkpoint_row(engine, run_id, ("b", 1))
    assert (row.status, row.cursor, row.lease_owner, row.failures) == ("pending", "", peer.id, 0)
    assert theirs.dropped
    assert not mine.dropped
    assert [end.claim for end in closed] == [theirs]


def test_an_ending_of_a_list_taken_over_does_not_fail_or_empty_it(
    engine: sa.Engine, run_id: int
) -> None:
    """A partitioned worker cannot turn another's list back into failed, nor mark it removed."""
    me, peer = register(engine), register(engine)
    lease(engine, run_id, ("a", 1), me.id)
    claim = Claim(ListState("a", 1, ""))
    closed: list[Ended] = []
    lane = writer(engine, run_id, me.id, closed)
    lane._commit([page(claim, ["x"], "")])  # complete: done, lease given back
    lease(engine, run_id, ("a", 1), peer.id)  # a peer re-crawls it (say, after a restart)
    for outcome in (Outcome.FAILED, Outcome.MISSING, Outcome.REJECTED, Outcome.FATAL):
        lane._commit([Ended(claim, outcome, "stale ending")])
    row = checkpoint_row(engine, run_id, ("a", 1))
    assert (row.status, row.failures, row.last_error) == ("done", 0, None)
    assert stored_lists(engine) == {("a", 1): {"x": 1_700_000_000}}


def test_a_stopped_list_is_free_at_once(engine: sa.Engine, run_id: int) -> None:
    """A list given back on a stop keeps its cursor and can be claimed again right away."""
    me = register(engine)
    with engine.begin() as conn:
        (task,) = leases.claim(conn, run_id, me.id, 1, datetime.now(UTC))
    claim = Claim(task)
    closed: list[Ended] = []
    writer(engine, run_id, me.id, closed)._commit(
        [page(claim, ["x"], "page-2"), Ended(claim, Outcome.STOPPED)]
    )
    row = checkpoint_row(engine, run_id, task.key)
    assert (row.status, row.cursor, row.lease_owner, row.failures) == ("running", "page-2", None, 0)
    with engine.begin() as conn:
        again = leases.claim(conn, run_id, me.id, 10, datetime.now(UTC))
    assert task.key in {t.key for t in again}


def test_liveness_is_stamped_by_the_database_clock_whatever_this_machine_says(
    engine: sa.Engine,
) -> None:
    """A process whose own clock is an hour off still writes expiry times in the server's time."""
    me = register(engine)
    me.clock.offset = timedelta(hours=1)  # what a badly skewed estimate would give
    with engine.begin() as conn:
        workers.beat(conn, me, {})
    with engine.connect() as conn:
        expires = conn.execute(
            sa.select(sync_workers.c.expires_at).where(sync_workers.c.id == me.id)
        ).scalar_one()
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    assert abs((expires - datetime.now(UTC)).total_seconds() - workers.TTL) < 3


def edges_of(engine: sa.Engine, key: tuple[str, int]) -> dict[str, bool]:
    """to_account -> still listed (removed_at IS NULL), for one list."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT to_account, removed_at IS NULL FROM follow_edges "
                "WHERE account = :a AND follow_type = :t"
            ),
            {"a": key[0], "t": key[1]},
        )
        return {to: bool(listed) for to, listed in rows}


def claim_one(engine: sa.Engine, run_id: int, owner: str, key: tuple[str, int]) -> Claim:
    """Claim every open list and return the claim of ``key``."""
    with engine.begin() as conn:
        states = leases.claim(conn, run_id, owner, 10, datetime.now(UTC))
    return Claim(next(s for s in states if s.key == key))


def test_a_list_is_fresh_only_at_its_start_with_nothing_listed_stored(
    engine: sa.Engine, run_id: int
) -> None:
    """Fresh: claimed at cursor "" while no current edge of the list is stored. A list with
    edges stored, or one resumed mid-way, is not."""
    me = register(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO follow_edges (account, follow_type, to_account, first_seen_at, "
                "removed_at) VALUES ('a', 1, 'x', :now, NULL), ('c', 1, 'y', :now, :now)"
            ),
            {"now": datetime.now(UTC)},
        )
        conn.execute(sa.text("UPDATE sync_checkpoints SET cursor = 'p2' WHERE account = 'b'"))
    with engine.begin() as conn:
        states = leases.claim(conn, run_id, me.id, 10, datetime.now(UTC))
    # a has a listed edge; b resumes mid-way; c has only a removed edge: fresh
    assert {s.account: s.fresh for s in states} == {"a": False, "b": False, "c": True}


def test_a_fresh_list_revives_removed_edges_and_marks_nothing_removed(
    engine: sa.Engine, run_id: int
) -> None:
    """A fresh crawl lists an edge removed earlier again: removed_at is cleared; the edge it
    does not list stays removed, and nothing listed is marked removed."""
    me = register(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO follow_edges (account, follow_type, to_account, first_seen_at, "
                "removed_at) VALUES ('a', 1, 'x', :now, :now), ('a', 1, 'gone', :now, :now)"
            ),
            {"now": now},
        )
    claim = claim_one(engine, run_id, me.id, ("a", 1))
    assert claim.task.fresh
    lane = writer(engine, run_id, me.id, [])
    lane._commit([page(claim, ["x", "new"], "p2")])
    lane._commit([page(claim, ["x", "later"], "")])  # the API repeats x on the next page
    assert edges_of(engine, ("a", 1)) == {"x": True, "new": True, "later": True, "gone": False}
    assert checkpoint_row(engine, run_id, ("a", 1)).status == "done"


def test_a_fresh_list_that_restarts_still_searches_for_removed_edges(
    engine: sa.Engine, run_id: int
) -> None:
    """A restart within a fresh crawl (its cursor went stale) ends freshness: what the first
    attempt stored and the new one does not list is marked removed at completion."""
    me = register(engine)
    claim = claim_one(engine, run_id, me.id, ("a", 1))
    assert claim.task.fresh
    lane = writer(engine, run_id, me.id, [])
    lane._commit([page(claim, ["x", "dropped"], "p2")])
    again = page(claim, ["x"], "p2'")
    again.restarted = True
    lane._commit([again])
    lane._commit([page(claim, ["y"], "")])
    assert not claim.task.fresh
    # mypy keeps `fresh` narrowed to True across _commit (which clears it): "unreachable"
    assert edges_of(engine, ("a", 1)) == {"x": True, "y": True, "dropped": False}  # type: ignore[unreachable]


def seen_rows(engine: sa.Engine) -> int:
    """Rows in sync_seen."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM sync_seen")).scalar_one())


def test_a_fresh_list_keeps_no_seen_rows_and_stays_fresh_when_resumed_elsewhere(
    engine: sa.Engine, run_id: int
) -> None:
    """A fresh list that spans batches writes nothing to sync_seen; a process that resumes it
    mid-way (the first one died) knows it is fresh from its checkpoint, and completes it."""
    first = register(engine)
    claim = claim_one(engine, run_id, first.id, ("a", 1))
    writer(engine, run_id, first.id, [])._commit([page(claim, ["x", "y"], "p2")])
    assert seen_rows(engine) == 0
    lease(engine, run_id, ("a", 1), "gone-host:1:dead")  # the first process died
    second = register(engine)
    resumed = claim_one(engine, run_id, second.id, ("a", 1))
    assert (resumed.task.cursor, resumed.task.fresh) == ("p2", True)
    writer(engine, run_id, second.id, [])._commit([page(resumed, ["z"], "")])
    assert edges_of(engine, ("a", 1)) == {"x": True, "y": True, "z": True}
    assert checkpoint_row(engine, run_id, ("a", 1)).status == "done"


def test_a_restart_ends_freshness_in_the_checkpoint_too(engine: sa.Engine, run_id: int) -> None:
    """After a restart the crawl keeps sync_seen rows again, and a process resuming it is
    told it is not fresh: the first attempt's edges may be gone from the list."""
    me = register(engine)
    claim = claim_one(engine, run_id, me.id, ("a", 1))
    lane = writer(engine, run_id, me.id, [])
    lane._commit([page(claim, ["x", "dropped"], "p2")])
    again = page(claim, ["x"], "p2'")
    again.restarted = True
    lane._commit([again])
    assert seen_rows(engine) == 1
    lease(engine, run_id, ("a", 1), "gone-host:1:dead")
    resumed = claim_one(engine, run_id, register(engine).id, ("a", 1))
    assert not resumed.task.fresh
