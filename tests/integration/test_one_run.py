"""One run of a job at a time, and runs of several jobs over the same lists: claims and batches
only for an open run, a closed run's processes stop, and no crawl undoes what another run
observed after it began (no false events). SQLite and PostgreSQL; threads on PostgreSQL."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from etl import results, sync, verify
from etl.crawl.known import KnownProfiles
from etl.crawl.messages import Claim, Ended, Fetched
from etl.crawl.outcome import Outcome
from etl.crawl.transform import page_rows
from etl.errors import RunIncomplete
from etl.sandbox import Graph, SandboxServer
from etl.store import cursors, leases, load, runs, workers
from etl.store.rows import ListPart, Mode
from etl.tencent.page import Page
from tests.conftest import api_settings, make_client, stored_lists
from tests.integration.test_changes import Start, diff, events
from tests.integration.test_leases import checkpoint_row, edges_of, page, register, writer

LIST = ("a", 1)
T = 1_700_000_000  # the follow time of test_leases.page's items


def open_run(engine: sa.Engine, job: str, keys: list[tuple[str, int]]) -> int:
    """A new running run of ``job`` with ``keys`` as its lists."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        run_id = runs.start_run(conn, job, {}, now)
        runs.add_lists(conn, run_id, keys, now)
    return run_id


def claim_all(engine: sa.Engine, run_id: int, owner: str) -> dict[tuple[str, int], Claim]:
    """Claim every open list of the run (their crawls start now)."""
    with engine.begin() as conn:
        states = leases.claim(conn, run_id, owner, 1000, datetime.now(UTC))
    return {s.key: Claim(s) for s in states}


def crawl(engine: sa.Engine, job: str, accounts: list[str]) -> int:
    """One run of ``job`` that lists ``accounts`` for LIST, complete: a baseline for later runs."""
    run_id = open_run(engine, job, [LIST])
    me = register(engine)
    claims = claim_all(engine, run_id, me.id)
    writer(engine, run_id, me.id, [])._commit([page(claims[LIST], accounts, "")])
    close(engine, run_id)
    return run_id


def close(engine: sa.Engine, run_id: int) -> None:
    """Close the run as its sync does at the end."""
    with engine.begin() as conn:
        runs.close_run(
            conn, run_id, finished=True, requests=0, edges_removed=0, now=datetime.now(UTC)
        )


def abandon(engine: sa.Engine, run_id: int) -> bool:
    """What `sync --restart` does to the job's unfinished run."""
    with engine.begin() as conn:
        return runs.abandon_run(conn, run_id, datetime.now(UTC))


def run_status(engine: sa.Engine, run_id: int) -> str | None:
    """The run's status."""
    with engine.connect() as conn:
        return runs.status_of(conn, run_id)


# ---- an open run only ---------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["abandoned", "done"])
def test_a_claim_on_a_closed_run_takes_nothing(engine: sa.Engine, ending: str) -> None:
    """A run abandoned by `sync --restart`, or closed, gives no list to any claim."""
    run_id = open_run(engine, "job", [LIST, ("b", 1)])
    if ending == "abandoned":
        abandon(engine, run_id)
    else:
        close(engine, run_id)
    assert run_status(engine, run_id) == ending
    assert claim_all(engine, run_id, register(engine).id) == {}


def test_a_batch_of_an_abandoned_run_writes_nothing_and_stops_the_crawl(
    engine: sa.Engine,
) -> None:
    """Pages and endings that reach a writer after their run was abandoned store nothing, and
    the crawl's stop is set: its fetchers go."""
    run_id = open_run(engine, "job", [LIST, ("b", 1)])
    me = register(engine)
    claims = claim_all(engine, run_id, me.id)
    closed: list[Ended] = []
    lane = writer(engine, run_id, me.id, closed)
    lane._commit([page(claims[LIST], ["x"], "p2")])
    abandon(engine, run_id)
    ending = Ended(claims[("b", 1)], Outcome.MISSING)
    lane._commit([page(claims[LIST], ["y"], ""), ending])
    assert stored_lists(engine) == {LIST: {"x": T}}
    row = checkpoint_row(engine, run_id, LIST)
    assert (row.status, row.cursor) == ("running", "p2")
    assert checkpoint_row(engine, run_id, ("b", 1)).status == "pending"
    assert lane.stop.is_set()
    assert claims[LIST].dropped
    assert closed == [ending]  # the coordinator still hears of it, and forgets the claim


def test_close_run_leaves_an_abandoned_run_as_it_is(engine: sa.Engine) -> None:
    """A process closing a run another abandoned stores nothing over it: not `done`, not its
    counters."""
    run_id = open_run(engine, "job", [LIST])
    abandon(engine, run_id)
    with engine.begin() as conn:
        runs.close_run(
            conn, run_id, finished=True, requests=99, edges_removed=5, now=datetime.now(UTC)
        )
    with engine.connect() as conn:
        run = runs.latest_run(conn, "job")
    assert run is not None
    assert (run.status, run.requests, run.edges_removed) == ("abandoned", 0, 0)
    assert not abandon(engine, run_id)  # nor is a run abandoned twice


def test_a_heartbeat_tells_a_process_its_run_was_abandoned(engine: sa.Engine) -> None:
    """The beat reads the run's status, so a process learns within a second that it is gone."""
    run_id = open_run(engine, "job", [LIST])
    me = register(engine)
    with engine.begin() as conn:
        workers.attach(conn, me, run_id)
        assert workers.beat(conn, me, {}).run_status == "running"
    abandon(engine, run_id)
    with engine.begin() as conn:
        assert workers.beat(conn, me, {}).run_status == "abandoned"


def test_abandoning_a_run_waits_for_its_batch_in_flight(pg_engine: sa.Engine) -> None:
    """The batch's share lock on the run holds `sync --restart` until the batch commits; every
    batch after it finds the run closed."""
    run_id = open_run(pg_engine, "job", [LIST])
    me = register(pg_engine)
    claim_all(pg_engine, run_id, me.id)
    abandoned = threading.Event()

    def abandon_and_say_so() -> None:
        if abandon(pg_engine, run_id):
            abandoned.set()

    with pg_engine.connect() as batch:
        with batch.begin():
            assert leases.hold(batch, run_id, me.id, [LIST]) == {LIST}
            thread = threading.Thread(target=abandon_and_say_so, daemon=True)
            thread.start()
            assert not abandoned.wait(0.5), "the abandon did not wait for the batch"
        thread.join(timeout=10)
        assert abandoned.is_set()
        with batch.begin():
            assert leases.hold(batch, run_id, me.id, [LIST]) is None


def test_a_worker_of_a_run_sync_restart_abandoned_stops_within_seconds(
    pg_engine: sa.Engine, running_sandbox: Start
) -> None:
    """A worker crawling a run when `sync --restart` abandons it stops within a few seconds,
    exits clean (its report has no problem), and the run stays abandoned."""
    graph = Graph(users=40, seed=5)
    server = running_sandbox(graph)
    job = "nightly"
    with pg_engine.begin() as conn:
        old = runs.start_run(conn, job, {"rate": 4, "page_size": 5, "concurrency": 2}, _now())
        runs.add_lists(conn, old, [(a, t) for a in graph.accounts for t in (1, 2, 3)], _now())
    reports: list[results.SyncReport | None] = []
    ended = threading.Event()

    def worker() -> None:
        with make_client(api_settings(server)) as client:
            reports.append(sync.work(pg_engine, client, job, db_seconds=5.0))
        ended.set()

    threading.Thread(target=worker, daemon=True).start()
    deadline = time.monotonic() + 20
    while _pages(pg_engine, old) == 0:  # the worker is crawling
        assert time.monotonic() < deadline, "the worker stored no page"
        time.sleep(0.1)
    restarted = time.monotonic()
    with make_client(api_settings(server)) as client:
        request = results.SyncRequest(job=job, accounts=graph.accounts[:2], restart=True)
        new = sync.sync(pg_engine, client, request)
    assert ended.wait(timeout=8), "the worker went on crawling the abandoned run"
    took = time.monotonic() - restarted  # from the start of `sync --restart`
    (report,) = reports
    assert report is not None
    assert report.closed_by_other == "abandoned"
    assert report.problem() is None
    assert report.outcome == "abandoned"
    assert took < 5
    assert run_status(pg_engine, old) == "abandoned"
    assert new.problem() is None
    assert run_status(pg_engine, new.run_id) == "done"


@pytest.mark.parametrize("worker", [True, False])
def test_only_a_worker_ends_clean_when_its_run_was_abandoned(worker: bool) -> None:
    """A worker whose run was abandoned has done nothing wrong (exit 0); a `sync` whose run
    was abandoned under it did not do what it was asked (exit 6)."""
    lists = {"open": 3, "total": 5, "done": 2, "skipped": 0, "failed": 0}
    report = results.SyncReport(
        run_id=1, job="j", resumed=True, lists=lists, closed_by_other="abandoned", worker=worker
    )
    problem = report.problem()
    assert report.outcome == "abandoned"
    if worker:
        assert problem is None
    else:
        assert isinstance(problem, RunIncomplete)
        assert "abandoned" in str(problem)


def _now() -> datetime:
    return datetime.now(UTC)


def _pages(engine: sa.Engine, run_id: int) -> int:
    with engine.connect() as conn:
        return runs.counts(conn, run_id)["pages"]


# ---- two runs over one list ---------------------------------------------------------------


def test_a_crawl_does_not_remove_what_another_run_added_after_it_began(
    engine: sa.Engine,
) -> None:
    """Job one's crawl began before z was followed and never listed it; job two's later crawl
    did. One's completion leaves z alone: no false `removed`."""
    crawl(engine, "one", ["x", "y"])
    first, second = open_run(engine, "one", [LIST]), open_run(engine, "two", [LIST])
    me = register(engine)
    one, two = claim_all(engine, first, me.id), claim_all(engine, second, me.id)
    lane_one = writer(engine, first, me.id, [])
    lane_one._commit([page(one[LIST], ["x"], "p2")])
    writer(engine, second, me.id, [])._commit([page(two[LIST], ["x", "y", "z"], "")])
    lane_one._commit([page(one[LIST], ["y"], "")])
    assert events(engine, first) == set()
    assert events(engine, second) == {("a", 1, "z", "added")}
    assert edges_of(engine, LIST) == {"x": True, "y": True, "z": True}


def test_a_crawl_does_not_list_again_what_another_run_removed_after_it_began(
    engine: sa.Engine,
) -> None:
    """Job one listed y before it was unfollowed; job two's later crawl found it gone. One's
    stale page does not bring y back: no false `added`."""
    crawl(engine, "one", ["x", "y"])
    first, second = open_run(engine, "one", [LIST]), open_run(engine, "two", [LIST])
    me = register(engine)
    one, two = claim_all(engine, first, me.id), claim_all(engine, second, me.id)
    lane_one = writer(engine, first, me.id, [])
    lane_one._commit([page(one[LIST], ["x"], "p2")])
    writer(engine, second, me.id, [])._commit([page(two[LIST], ["x"], "")])
    lane_one._commit([page(one[LIST], ["y"], "")])
    assert events(engine, first) == set()
    assert events(engine, second) == {("a", 1, "y", "removed")}
    assert edges_of(engine, LIST) == {"x": True, "y": False}


def test_an_edge_removed_before_a_crawl_began_is_listed_again(engine: sa.Engine) -> None:
    """The guard is about time, not about runs: y unfollowed in one run and followed again
    before the next run's crawl began comes back, with its `added` event."""
    crawl(engine, "one", ["x", "y"])
    crawl(engine, "one", ["x"])
    assert edges_of(engine, LIST) == {"x": True, "y": False}
    again = crawl(engine, "one", ["x", "y"])
    assert events(engine, again) == {("a", 1, "y", "added")}
    assert edges_of(engine, LIST) == {"x": True, "y": True}


def test_a_missing_account_does_not_remove_what_another_run_added_after_it_began(
    engine: sa.Engine,
) -> None:
    """A 30003 empties the list of what was stored before the crawl began, not of an edge
    another run listed since."""
    crawl(engine, "one", ["x"])
    first, second = open_run(engine, "one", [LIST]), open_run(engine, "two", [LIST])
    me = register(engine)
    one, two = claim_all(engine, first, me.id), claim_all(engine, second, me.id)
    writer(engine, second, me.id, [])._commit([page(two[LIST], ["x", "z"], "")])
    writer(engine, first, me.id, [])._commit([Ended(one[LIST], Outcome.MISSING)])
    assert events(engine, first) == {("a", 1, "x", "removed")}
    assert edges_of(engine, LIST) == {"x": False, "z": True}


def test_a_restarted_crawl_removes_what_its_first_attempt_stored(engine: sa.Engine) -> None:
    """A stale cursor sends a crawl back to its start, which moves its start too: what only
    the first attempt listed is removed at completion."""
    crawl(engine, "one", ["x"])
    run_id = open_run(engine, "one", [LIST])
    me = register(engine)
    claims = claim_all(engine, run_id, me.id)
    lane = writer(engine, run_id, me.id, [])
    lane._commit([page(claims[LIST], ["x", "gone"], "p2")])
    again = page(claims[LIST], ["x"], "p2'")
    again.restarted, again.started = True, datetime.now(UTC)
    lane._commit([again])
    lane._commit([page(claims[LIST], ["y"], "")])
    assert edges_of(engine, LIST) == {"x": True, "gone": False, "y": True}


def test_a_removal_committed_while_an_older_crawl_writes_the_edge_stands(
    pg_engine: sa.Engine,
) -> None:
    """Job two's batch removes z and is still open when job one's (older) crawl writes z with
    a new follow time: one's upsert waits for the row, finds it changed since its start, and
    leaves it removed (the lookup before it saw z current)."""
    crawl(pg_engine, "one", ["x", "z"])
    first, second = open_run(pg_engine, "one", [LIST]), open_run(pg_engine, "two", [LIST])
    me = register(pg_engine)
    one, two = claim_all(pg_engine, first, me.id), claim_all(pg_engine, second, me.id)
    with pg_engine.connect() as conn, conn.begin():
        held = leases.hold(conn, second, me.id, [LIST])
        assert held == {LIST}
        part = ListPart(*LIST, edges={"x": T}, pages=1, mode=Mode.FIRST_END, baseline=True)
        part.started = two[LIST].task.started
        cursors.advance(conn, second, [part], datetime.now(UTC))
        written = load.Loader("postgresql").write(conn, second, [part], [], datetime.now(UTC))
        assert written.edges_removed == 1  # z, not yet committed
        lane = writer(pg_engine, first, me.id, [])
        late = threading.Thread(target=lane._commit, args=([listing(one[LIST], {"z": T + 5})],))
        late.start()
        late.join(timeout=0.5)
        assert late.is_alive(), "job one's batch did not wait for the row"
    late.join(timeout=10)
    assert edges_of(pg_engine, LIST) == {"x": False, "z": False}  # x: one did not list it
    assert stored_lists(pg_engine) == {}
    assert ("a", 1, "z", "added") not in events(pg_engine, first)


KEYS = ("k0", "k1", "k2", "k3")  # the list's possible members; pages: k0-k1, then k2-k3
PAGES = (KEYS[:2], KEYS[2:])
_examples = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    baseline=st.sets(st.sampled_from(KEYS)),
    steps=st.lists(st.sampled_from(("A", "B", *KEYS)), max_size=14),
)
# A's first page misses k0, which is followed before B lists it: A must not remove it.
@example(baseline={"k2"}, steps=["A", "A", "k0", "B", "B", "B"])
def test_two_crawls_of_a_changing_list_record_no_false_event(
    engine: sa.Engine, baseline: set[str], steps: list[str]
) -> None:
    """Two runs (two jobs) crawl one list at once, in any interleaving, while members follow
    and unfollow between any two steps; each page lists what the graph holds when it is
    fetched. No member gets more events than the times it really changed, and its events
    alternate from the baseline (a false removal would need a false `added` to undo it)."""
    n = next(_examples)
    key = (f"h{n}", 1)
    graph = set(baseline)
    me = register(engine)
    base = open_run(engine, f"h{n}-base", [key])
    claim = claim_all(engine, base, me.id)[key]
    writer(engine, base, me.id, [])._commit([page(claim, sorted(graph), "")])
    close(engine, base)
    crawls = {name: open_run(engine, f"h{n}-{name}", [key]) for name in "AB"}
    lanes = {name: writer(engine, run, me.id, []) for name, run in crawls.items()}
    claims: dict[str, Claim] = {}
    done = dict.fromkeys("AB", 0)  # pages each crawl has fetched and written
    changes = dict.fromkeys(KEYS, 0)
    for step in [*steps, *"AABBAABB"]:  # then both crawls go to their end
        if step in KEYS:
            graph ^= {step}
            changes[step] += 1
        elif step not in claims:
            claims[step] = claim_all(engine, crawls[step], me.id)[key]
        elif done[step] < len(PAGES):
            members = sorted(graph.intersection(PAGES[done[step]]))
            done[step] += 1
            cursor = "" if done[step] == len(PAGES) else f"p{done[step]}"
            lanes[step]._commit([page(claims[step], members, cursor)])
    recorded: dict[str, list[str]] = {k: [] for k in KEYS}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT to_account, event FROM follow_edge_events "
                "WHERE run_id IN (:a, :b) ORDER BY id"
            ),
            {"a": crawls["A"], "b": crawls["B"]},
        )
        for to, event in rows:
            recorded[to].append(event)
    for member, events_of in recorded.items():
        assert len(events_of) <= changes[member], (member, events_of, changes[member])
        first = "removed" if member in baseline else "added"
        other = "added" if first == "removed" else "removed"
        assert events_of == [first, other] * (len(events_of) // 2) + [first] * (len(events_of) % 2)
    for run_id in crawls.values():
        close(engine, run_id)


# ---- verify --repair beside a running sync --------------------------------------------------


def listing(claim: Claim, items: dict[str, int]) -> Fetched:
    """The whole list as one page, with the graph's own follow times."""
    rows = [{"To_Account": to, "FollowTime": when} for to, when in items.items()]
    parsed = page_rows(Page.of(rows, ""), KnownProfiles())
    return Fetched(claim, parsed, "", restarted=False)


def test_verify_repair_beside_an_unfinished_sync_records_no_false_event(
    engine: sa.Engine, running_sandbox: Start
) -> None:
    """The graph changes; the job's next sync has begun crawling when `verify --repair`
    re-crawls the lists that now disagree. The sync's older pages then undo nothing the
    repair found: the repair records exactly the changes, the sync none, and the store ends
    as the graph is."""
    graph = Graph(users=30, seed=8)
    server: SandboxServer = running_sandbox(graph)
    accounts, types = graph.accounts, (1, 2, 3)
    before = graph.truth(accounts, types)
    with make_client(api_settings(server)) as client:
        first = sync.sync(engine, client, results.SyncRequest(job="nightly", accounts=accounts))
        assert first.problem() is None
        graph.mutate(1, unfollow=0.1, follow=0.1)
        after = graph.truth(accounts, types)
        report = verify.verify(engine, client, "nightly")
        assert report is not None
        assert report.mismatches
        # The job's next run: its crawls begin now, and what they list is the graph as it was.
        nightly = open_run(engine, "nightly", list(before))
        me = register(engine)
        claims = claim_all(engine, nightly, me.id)
        repaired = verify.repair(engine, client, report)
    assert repaired.after.mismatches == []
    writer(engine, nightly, me.id, [])._commit(
        [listing(claims[key], items) for key, items in before.items()]
    )
    assert events(engine, nightly) == set()
    # Every disagreeing list (the report shows the first few; verify_mismatches holds them all).
    disagreeing = {(a, t) for a, types in verify.disagreeing(engine, report) for t in types}
    found: set[tuple[str, int, str, str]] = set()
    for run in repaired.syncs:
        found |= events(engine, run.run_id)
    wanted = {e for e in diff(before, after) if (e[0], e[1]) in disagreeing}
    assert wanted
    assert found == wanted
    stored = stored_lists(engine)
    assert {k: stored.get(k, {}) for k in disagreeing} == {k: after[k] for k in disagreeing}


def test_a_list_taken_over_after_hold_checked_it_is_not_written(pg_engine: sa.Engine) -> None:
    """hold checks a batch's lists with pages without locking them (the cursors' update
    does): a claim that takes one over in between leaves the update nothing to move, and the
    writer nothing to write for it."""
    run_id = open_run(pg_engine, "one", [LIST])
    me, other = register(pg_engine), register(pg_engine)
    claim_all(pg_engine, run_id, me.id)
    with pg_engine.connect() as conn, conn.begin():
        assert leases.hold(conn, run_id, me.id, [LIST], advancing={LIST}) == {LIST}
        with pg_engine.begin() as claimer:  # what a claim does once it finds the lease void
            claimer.execute(
                sa.text("UPDATE sync_checkpoints SET lease_owner = :o WHERE run_id = :r"),
                {"o": other.id, "r": run_id},
            )
        part = ListPart(*LIST, edges={"x": T}, pages=1, next_cursor="n", mode=Mode.FIRST)
        now = datetime.now(UTC)
        assert cursors.advance(conn, run_id, [part], now, owner=me.id) == set()
        assert cursors.advance(conn, run_id, [part], now, owner=other.id) == {LIST}
    row = checkpoint_row(pg_engine, run_id, LIST)
    assert (row.lease_owner, row.cursor, row.status) == (other.id, "n", "running")
    with pg_engine.connect() as conn:
        assert runs.counts(conn, run_id) == runs.recount(conn, run_id)
