"""Callback changes applied to the graph (etl.store.live.apply) on both databases: the edges of
kept lists, their events, the ordering rule (duplicates, reordering, stale deletes), mutual
pairs, the lists' last crawls, a crawl beside callbacks, hostile ids, and concurrent batches
on PostgreSQL."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.store.live import Applied, Change, apply
from etl.store.live_rules import LAST_TIME, MAX_TIME_MS, time_of
from etl.store.load import Loader
from etl.store.meta import Timestamp
from etl.store.rows import ListPart, Mode

T0 = 1_702_262_118_123  # an EventTime (ms)
TYPES = (1, 2, 3)
Edge = tuple[str, int, str]
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- helpers ---------------------------------------------------------------------------------


def keep(
    engine: sa.Engine,
    accounts: Iterable[str],
    types: Sequence[int] = TYPES,
    crawled_at: datetime | None = None,
) -> None:
    """Give the lists of ``accounts`` a baseline (as a complete crawl does): they are kept."""
    rows = [
        {"account": a, "follow_type": t, "crawled_at": crawled_at} for a in accounts for t in types
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO follow_lists (account, follow_type, baseline_run_id, baseline_at, "
                "crawled_at) VALUES (:account, :follow_type, 1, :now, :crawled_at)"
            ).bindparams(
                sa.bindparam("now", datetime(2020, 1, 1, tzinfo=UTC), type_=Timestamp),
                sa.bindparam("crawled_at", type_=Timestamp),
            ),
            rows,
        )


def store_edge(engine: sa.Engine, edge: Edge, *, removed: bool = False) -> None:
    """An edge as a crawl stored it: FollowTime 2020-01-01, not provisional."""
    when = datetime(2020, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO follow_edges (account, follow_type, to_account, follow_time, "
                "first_seen_at, removed_at, changed_at) VALUES (:a, :t, :b, :w, :w, :r, :w)"
            ).bindparams(sa.bindparam("w", type_=Timestamp), sa.bindparam("r", type_=Timestamp)),
            {"a": edge[0], "t": edge[1], "b": edge[2], "w": when, "r": when if removed else None},
        )


def batch(engine: sa.Engine, *changes: Change) -> Applied:
    """Apply ``changes`` in one transaction."""
    with engine.begin() as conn:
        return apply(conn, changes)


def follow(a: str, b: str, ms: int = T0) -> Change:
    """``a`` followed ``b`` at ``ms``."""
    return Change(a, b, True, ms)


def unfollow(a: str, b: str, ms: int = T0) -> Change:
    """``a`` unfollowed ``b`` at ``ms``."""
    return Change(a, b, False, ms)


def current(engine: sa.Engine) -> set[Edge]:
    """The current edges."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, to_account FROM follow_edges WHERE removed_at IS NULL"
            )
        )
        return {(a, int(t), b) for a, t, b in rows}


def edge_row(engine: sa.Engine, edge: Edge) -> dict[str, Any]:
    """One stored edge, times as aware UTC."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT follow_time, first_seen_at, removed_at, changed_at, time_provisional "
                "FROM follow_edges WHERE account = :a AND follow_type = :t AND to_account = :b"
            ).columns(
                follow_time=Timestamp,
                first_seen_at=Timestamp,
                removed_at=Timestamp,
                changed_at=Timestamp,
                time_provisional=sa.Boolean,
            ),
            {"a": edge[0], "t": edge[1], "b": edge[2]},
        ).one()
    return {k: utc(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}


def utc(value: datetime | None) -> datetime | None:
    """A stored time as aware UTC (SQLite gives naive UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def events(engine: sa.Engine) -> list[tuple[str, int, str, str]]:
    """Every event, in order; each checked to be a callback's (no run)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, to_account, event, source, run_id "
                "FROM follow_edge_events ORDER BY id"
            )
        ).all()
    assert all(r.source == "callback" and r.run_id is None for r in rows)
    return [(r.account, int(r.follow_type), r.to_account, r.event) for r in rows]


def live_from(engine: sa.Engine) -> dict[tuple[str, int], datetime | None]:
    """Each kept list's live_from."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT account, follow_type, live_from FROM follow_lists").columns(
                live_from=Timestamp
            )
        )
        return {(a, int(t)): utc(when) for a, t, when in rows}


def both(a: str, b: str, *types: int) -> set[Edge]:
    """The edges of ``types`` from ``a`` to ``b``, and their twins from ``b`` (2 <-> 1, 3)."""
    twin = {1: 2, 2: 1, 3: 3}
    return {(a, t, b) for t in types} | {(b, twin[t], a) for t in types}


# -- one change at a time --------------------------------------------------------------------


def test_a_follow_then_an_unfollow(engine: sa.Engine) -> None:
    """A follow makes A's follows edge and B's fans edge current, with an 'added' event each;
    an unfollow ends them, with a 'removed' event each; the lists are live from then on."""
    keep(engine, ["a", "b"])
    assert batch(engine, follow("a", "b")) == Applied(changes=1, applied=1, added=2)
    assert current(engine) == {("a", 2, "b"), ("b", 1, "a")}
    assert events(engine) == [("a", 2, "b", "added"), ("b", 1, "a", "added")]
    first = live_from(engine)
    assert first[("a", 2)] is not None
    assert first[("b", 1)] is not None
    assert first[("a", 1)] is None
    assert batch(engine, unfollow("a", "b", T0 + 1)) == Applied(changes=1, applied=1, removed=2)
    assert current(engine) == set()
    assert events(engine)[2:] == [("a", 2, "b", "removed"), ("b", 1, "a", "removed")]
    assert live_from(engine)[("a", 2)] == first[("a", 2)]  # set once, where it was unset
    row = edge_row(engine, ("a", 2, "b"))
    assert row["removed_at"] == row["changed_at"]
    assert row["removed_at"] is not None


def test_the_time_is_the_event_time_and_provisional(engine: sa.Engine) -> None:
    """A callback's edge holds EventTime as its follow time, provisional; first seen and
    changed now (the database's clock)."""
    keep(engine, ["a", "b"])
    before = datetime.now(UTC) - timedelta(seconds=5)
    batch(engine, follow("a", "b"))
    row = edge_row(engine, ("a", 2, "b"))
    assert row["follow_time"] == time_of(T0) == datetime(2023, 12, 11, 2, 35, 18, 123000, UTC)
    assert row["time_provisional"] is True
    assert row["first_seen_at"] == row["changed_at"]
    assert row["first_seen_at"] > before
    assert row["removed_at"] is None


def test_a_time_past_the_last_timestamp_is_stored_as_none(engine: sa.Engine) -> None:
    """An EventTime after 9999-12-30 (up to 2**63 - 1 ms) stores the edge with no time, and
    still orders the pair's changes."""
    keep(engine, ["a", "b", "c"])
    batch(engine, follow("c", "a", MAX_TIME_MS))  # the last time stored: it reads back
    assert edge_row(engine, ("c", 2, "a"))["follow_time"] == LAST_TIME == time_of(MAX_TIME_MS)
    batch(engine, follow("a", "b", MAX_TIME_MS + 1))
    assert edge_row(engine, ("a", 2, "b"))["follow_time"] is None
    assert batch(engine, unfollow("a", "b", 2**63 - 2)).applied == 1
    assert batch(engine, follow("a", "b", 2**63 - 1)).added == 2
    assert batch(engine, unfollow("a", "b", 2**63 - 2)).stale == 1
    assert current(engine) == {("a", 2, "b"), ("b", 1, "a"), ("c", 2, "a"), ("a", 1, "c")}


def test_a_removed_edge_is_revived_with_the_new_time(engine: sa.Engine) -> None:
    """A follow of an edge a crawl saw removed revives it: current again, the callback's time,
    provisional, first seen unchanged; one 'added' event each."""
    keep(engine, ["a", "b"])
    store_edge(engine, ("a", 2, "b"), removed=True)
    store_edge(engine, ("b", 1, "a"), removed=True)
    assert batch(engine, follow("a", "b")).added == 2
    row = edge_row(engine, ("a", 2, "b"))
    assert row["removed_at"] is None
    assert row["time_provisional"] is True
    assert row["follow_time"] == time_of(T0)
    assert row["first_seen_at"] == datetime(2020, 1, 1, tzinfo=UTC)
    assert events(engine) == [("a", 2, "b", "added"), ("b", 1, "a", "added")]


def test_a_follow_already_current_changes_nothing(engine: sa.Engine) -> None:
    """A follow the crawl already stored: no event, its FollowTime kept, not provisional."""
    keep(engine, ["a", "b"])
    store_edge(engine, ("a", 2, "b"))
    store_edge(engine, ("b", 1, "a"))
    assert batch(engine, follow("a", "b")) == Applied(changes=1, applied=1)
    assert events(engine) == []
    row = edge_row(engine, ("a", 2, "b"))
    assert row["follow_time"] == datetime(2020, 1, 1, tzinfo=UTC)
    assert row["time_provisional"] is False
    assert live_from(engine)[("a", 2)] is None  # nothing changed in the list


def test_untracked_lists_are_counted_not_written(engine: sa.Engine) -> None:
    """Lists with no baseline are not written, but counted; a kept one beside them is."""
    assert batch(engine, follow("a", "b")) == Applied(changes=1, applied=1, untracked=2)
    assert current(engine) == set()
    assert events(engine) == []
    keep(engine, ["b"], types=(1,))
    assert batch(engine, follow("c", "b")) == Applied(changes=1, applied=1, untracked=1, added=1)
    assert current(engine) == {("b", 1, "c")}
    # The pair's order is kept all the same: the older unfollow is stale.
    assert batch(engine, unfollow("a", "b", T0 - 1)).stale == 1


# -- beside a crawl --------------------------------------------------------------------------


def crawl_list(engine: sa.Engine, edges: dict[str, int | None], started: datetime) -> None:
    """A crawl of a's follows that began at ``started`` completes, listing ``edges``."""
    part = ListPart("a", 2, edges=edges, pages=1, mode=Mode.FIRST_END, baseline=True)
    part.started = started
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sync_runs (id, job, status, started_at, options) "
                "VALUES (1, 'j', 'running', CURRENT_TIMESTAMP, '{}')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO sync_checkpoints (run_id, account, follow_type, status, "
                "updated_at, crawl_started_at) VALUES (1, 'a', 2, 'running', :s, :s)"
            ).bindparams(sa.bindparam("s", started, type_=Timestamp))
        )
        Loader(engine.dialect.name).write(conn, 1, [part], [], datetime.now(UTC))


@pytest.mark.parametrize("began", ["before", "after"])
def test_a_crawl_undoes_a_callback_only_if_it_began_after_it(engine: sa.Engine, began: str) -> None:
    """A callback's change is stamped with the database's now: a crawl that began before it
    neither removes the edge it made current nor revives the edge it ended; one that began
    after it does both."""
    keep(engine, ["a", "b", "c"])
    batch(engine, follow("a", "b"), follow("a", "c"), unfollow("a", "c", T0 + 1))
    start = datetime.now(UTC) + timedelta(minutes=-1 if began == "before" else 1)
    crawl_list(engine, {"c": 1_700_000_000}, start)  # b gone, c listed again
    follows = {e for e in current(engine) if e[:2] == ("a", 2)}
    assert follows == ({("a", 2, "b")} if began == "before" else {("a", 2, "c")})


# -- ordering --------------------------------------------------------------------------------


def test_a_duplicate_does_nothing(engine: sa.Engine) -> None:
    """The same change twice, in one batch or two, is applied once."""
    keep(engine, ["a", "b"])
    assert batch(engine, follow("a", "b"), follow("a", "b")) == Applied(
        changes=2, applied=1, stale=1, added=2
    )
    assert batch(engine, follow("a", "b")) == Applied(changes=1, stale=1)
    assert len(events(engine)) == 2


def test_a_delete_older_than_the_stored_add_is_ignored(engine: sa.Engine) -> None:
    """An unfollow that happened before the follow applied, arriving after it, is stale."""
    keep(engine, ["a", "b"])
    batch(engine, follow("a", "b", T0))
    assert batch(engine, unfollow("a", "b", T0 - 1)) == Applied(changes=1, stale=1)
    assert current(engine) == {("a", 2, "b"), ("b", 1, "a")}


def test_an_add_older_than_the_stored_delete_is_ignored(engine: sa.Engine) -> None:
    """A follow older than the unfollow applied, arriving after it, makes nothing current."""
    keep(engine, ["a", "b"])
    batch(engine, unfollow("a", "b", T0))
    assert batch(engine, follow("a", "b", T0 - 1)) == Applied(changes=1, stale=1)
    assert current(engine) == set()
    assert events(engine) == []


@pytest.mark.parametrize("order", [1, -1])
def test_a_tie_goes_to_the_unfollow(engine: sa.Engine, order: int) -> None:
    """A follow and an unfollow with one EventTime: the unfollow wins, in either order, in one
    batch or in two."""
    keep(engine, ["a", "b"])
    pair = [follow("a", "b"), unfollow("a", "b")][::order]
    batch(engine, *pair)
    assert current(engine) == set()
    batch(engine, pair[1])
    batch(engine, pair[0])
    assert current(engine) == set()


def test_changes_of_one_pair_in_one_batch_are_applied_one_by_one(engine: sa.Engine) -> None:
    """Follow, unfollow, follow in one batch (given backwards): what three batches would give,
    the events of each step included."""
    keep(engine, ["a", "b"])
    changes = [follow("a", "b", T0 + 2), unfollow("a", "b", T0 + 1), follow("a", "b", T0)]
    assert batch(engine, *changes) == Applied(changes=3, applied=3, added=4, removed=2)
    assert current(engine) == {("a", 2, "b"), ("b", 1, "a")}
    assert [e[3] for e in events(engine) if e[:3] == ("a", 2, "b")] == [
        "added",
        "removed",
        "added",
    ]
    assert edge_row(engine, ("a", 2, "b"))["follow_time"] == time_of(T0 + 2)


def test_a_change_older_than_the_lists_last_crawl_is_stale_for_it(engine: sa.Engine) -> None:
    """A list crawled completely after a change saw the world after it: the change is not
    written there, but is in the other list, and orders the pair."""
    crawled = time_of(T0)
    assert crawled is not None
    keep(engine, ["a"], crawled_at=crawled)
    keep(engine, ["b"])
    assert batch(engine, follow("a", "b", T0 - 1)) == Applied(changes=1, applied=1, added=1)
    assert current(engine) == {("b", 1, "a")}
    assert batch(engine, unfollow("a", "b", T0 - 2)).stale == 1  # the pair remembers
    assert batch(engine, follow("a", "b", T0)).added == 1  # at the crawl's start: written
    assert current(engine) == {("b", 1, "a"), ("a", 2, "b")}
    assert batch(engine, unfollow("a", "b", T0 + 1)).removed == 2


# -- mutual pairs ----------------------------------------------------------------------------


def test_a_follow_back_makes_both_mutual(engine: sa.Engine) -> None:
    """A follows B, then B follows A: mutual (type 3) for both; the mutual time is the later
    follow's."""
    keep(engine, ["a", "b"])
    batch(engine, follow("a", "b", T0))
    assert current(engine) == both("a", "b", 2)
    assert batch(engine, follow("b", "a", T0 + 7)).added == 4
    assert current(engine) == both("a", "b", 1, 2, 3)
    assert edge_row(engine, ("a", 3, "b"))["follow_time"] == time_of(T0 + 7)


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
@pytest.mark.parametrize("one_batch", [True, False], ids=["one batch", "two batches"])
def test_the_two_follows_of_a_mutual_pair_in_any_order(
    engine: sa.Engine, reverse: bool, one_batch: bool
) -> None:
    """The two follows in one batch or two, in either arrival order: both mutual, with the
    later follow's time."""
    keep(engine, ["a", "b"])
    changes = [follow("a", "b", T0), follow("b", "a", T0 + 7)]
    if reverse:
        changes.reverse()
    if one_batch:
        assert batch(engine, *changes).added == 6
    else:
        assert sum(batch(engine, c).added for c in changes) == 6
    assert current(engine) == both("a", "b", 1, 2, 3)
    for edge in (("a", 3, "b"), ("b", 3, "a")):
        assert edge_row(engine, edge)["follow_time"] == time_of(T0 + 7)


@pytest.mark.parametrize("leaver", ["a", "b"])
def test_an_unfollow_of_either_ends_the_mutual_pair(engine: sa.Engine, leaver: str) -> None:
    """Either account's unfollow ends both mutual edges and its own direction; the other's
    follow stays."""
    keep(engine, ["a", "b"])
    batch(engine, follow("a", "b"), follow("b", "a"))
    other = "b" if leaver == "a" else "a"
    assert batch(engine, unfollow(leaver, other, T0 + 1)).removed == 4
    assert current(engine) == both(other, leaver, 2)
    assert [e for e in events(engine) if e[3] == "removed"] == sorted(
        (*edge, "removed") for edge in both(leaver, other, 2, 3)
    )


def test_a_mutual_follow_known_from_the_crawl(engine: sa.Engine) -> None:
    """B's follow of A stored by a crawl (no callback for it) makes A's follow mutual."""
    keep(engine, ["a", "b"])
    store_edge(engine, ("b", 2, "a"))
    store_edge(engine, ("a", 1, "b"))
    batch(engine, follow("a", "b"))
    assert current(engine) == both("a", "b", 1, 2, 3)


def test_a_mutual_follow_of_untracked_follows_known_from_callbacks(engine: sa.Engine) -> None:
    """Only the mutual lists are kept: whether B follows A comes from the pair's callbacks."""
    keep(engine, ["a", "b"], types=(3,))
    batch(engine, follow("b", "a", T0))
    assert current(engine) == set()
    assert batch(engine, follow("a", "b", T0 + 1)) == Applied(
        changes=1, applied=1, untracked=2, added=2
    )
    assert current(engine) == both("a", "b", 3)


# -- any order, any batches ------------------------------------------------------------------

ACCOUNTS = ["a", "b", "c", "é'\\\t\n\"%"]
LISTS = [(a, t) for a in ACCOUNTS for t in TYPES]
changes_of = st.lists(
    st.builds(
        Change,
        st.sampled_from(ACCOUNTS),
        st.sampled_from(ACCOUNTS),
        st.booleans(),
        st.integers(min_value=0, max_value=4),  # few times: ties and duplicates
    ),
    min_size=1,
    max_size=12,
)


def reset(engine: sa.Engine, kept: Iterable[tuple[str, int]]) -> None:
    """Empty the graph and keep exactly the lists ``kept``."""
    with engine.begin() as conn:
        for table in ("follow_edges", "follow_edge_events", "live_pairs", "follow_lists"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    for account, follow_type in kept:
        keep(engine, [account], types=(follow_type,))


def greatest_keys(changes: Iterable[Change], kept: set[tuple[str, int]]) -> set[Edge]:
    """The current edges the rule gives: each direction as its greatest key says, mutual where
    both follow, each in the kept lists only."""
    newest: dict[tuple[str, str], Change] = {}
    for c in changes:
        known = newest.get((c.account, c.to_account))
        if known is None or c.key > known.key:
            newest[(c.account, c.to_account)] = c
    follows = {pair for pair, c in newest.items() if c.follows}
    edges = {(a, 2, b) for a, b in follows} | {(b, 1, a) for a, b in follows}
    edges |= {(a, 3, b) for a, b in follows if (b, a) in follows}
    return {e for e in edges if e[:2] in kept}


def assert_events_are_real(engine: sa.Engine, edges: set[Edge]) -> None:
    """Each edge's events alternate from 'added' (the graph began empty), and the last says
    what it is now."""
    by_edge: dict[Edge, list[str]] = {}
    for account, follow_type, to_account, event in events(engine):
        by_edge.setdefault((account, follow_type, to_account), []).append(event)
    for key, seen in by_edge.items():
        assert seen == ["added", "removed"] * (len(seen) // 2) + ["added"] * (len(seen) % 2)
        assert (seen[-1] == "added") == (key in edges)
    assert edges <= by_edge.keys()


def split(changes: Sequence[Change], cuts: Iterable[int]) -> list[Sequence[Change]]:
    """``changes`` cut into batches at ``cuts``."""
    bounds = [0, *sorted(cuts), len(changes)]
    return [changes[i:j] for i, j in itertools.pairwise(bounds)]


@EXAMPLES
@given(data=st.data())
def test_any_order_in_any_batches_gives_the_greatest_keys(
    engine: sa.Engine, data: st.DataObject
) -> None:
    """Changes (duplicates, ties, self-follows) in any arrival order, split into any batches,
    over any kept lists: the same edges as one batch per change in key order, which are what
    each direction's greatest key says; events only for real changes, none on a replay."""
    changes = data.draw(changes_of, "changes")
    kept = data.draw(st.sets(st.sampled_from(LISTS)), "kept")
    arrival = data.draw(st.permutations(changes), "arrival")
    cuts = data.draw(st.sets(st.integers(1, max(1, len(changes) - 1))), "cuts")
    reset(engine, kept)
    for change in sorted(changes, key=lambda c: c.key):
        batch(engine, change)
    in_key_order = current(engine)
    reset(engine, kept)
    counts = [batch(engine, *part) for part in split(arrival, cuts) if part]
    assert current(engine) == in_key_order == greatest_keys(changes, kept)
    assert_events_are_real(engine, in_key_order)
    assert sum(c.added + c.removed for c in counts) == len(events(engine))
    assert sum(c.applied + c.stale for c in counts) == len(changes)
    before = len(events(engine))
    assert batch(engine, *changes) == Applied(changes=len(changes), stale=len(changes))
    assert len(events(engine)) == before


storable = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)


@EXAMPLES
@given(a=storable, b=storable, ms=st.integers(min_value=0, max_value=2**63 - 1))
def test_hostile_ids_and_times_are_stored_verbatim(
    engine: sa.Engine, a: str, b: str, ms: int
) -> None:
    """Any storable account ids (quotes, backslashes, tabs, any plane) and any EventTime: the
    mutual pair is stored under exactly those ids; a time after 9999-12-30 as none."""
    kept = {(x, t) for x in (a, b) for t in TYPES}
    reset(engine, kept)
    batch(engine, follow(a, b, ms), follow(b, a, ms))
    assert current(engine) == both(a, b, 1, 2, 3)
    assert edge_row(engine, (a, 3, b))["follow_time"] == time_of(ms)


def test_a_batch_takes_the_same_statements_whatever_its_size(engine: sa.Engine) -> None:
    """Ten changes or a thousand: one fixed handful of statements."""
    counted: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: counted.append(args[2]))

    def statements(n: int, prefix: str) -> int:
        accounts = [f"{prefix}{i}" for i in range(n)]
        keep(engine, accounts)
        batch(engine, *(follow(x, "hub", T0) for x in accounts))  # new edges
        counted.clear()
        changes = [unfollow(x, "hub", T0 + 1) for x in accounts[: n // 2]]  # stored edges
        changes += [follow("hub", x, T0 + 2) for x in accounts]  # new edges, mutual
        batch(engine, *changes)
        return len(counted)

    keep(engine, ["hub"])
    small, large = statements(10, "s"), statements(1000, "l")
    assert small == large <= 10


def test_a_self_follow_is_its_own_follow_back(engine: sa.Engine) -> None:
    """A follow of oneself (no such callback is expected, but nothing breaks): both directions
    are the one direction, so it is mutual where only the mutual list is kept."""
    keep(engine, ["a"], types=(3,))
    assert batch(engine, follow("a", "a")).added == 1
    assert current(engine) == {("a", 3, "a")}
    assert batch(engine, unfollow("a", "a", T0 + 1)).removed == 1


# -- concurrency (PostgreSQL) ----------------------------------------------------------------

RETRIED = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
N_PAIRS, CHUNK = 400, 80


def retried_batch(engine: sa.Engine, changes: Sequence[Change], hold: float = 0.0) -> int:
    """Apply ``changes`` as the listener does: one transaction, retried whole on a deadlock or
    a serialization failure; ``hold`` keeps the transaction open that long after applying.
    Returns how many attempts failed."""
    failed = 0
    while True:
        try:
            with engine.begin() as conn:
                apply(conn, changes)
                threading.Event().wait(hold)
            return failed
        except sa.exc.OperationalError as exc:
            if not isinstance(exc.orig, RETRIED) or failed >= 20:
                raise
            failed += 1


def test_concurrent_batches_over_the_same_pairs(pg_engine: sa.Engine) -> None:
    """Two connections apply batches over the same pairs at once, A->B in one and B->A in the
    other (in opposite orders), and both follow one hub: retried as the listener does, no
    batch even deadlocks, and every pair ends mutual with exactly one 'added' event per edge.
    (Pairs locked in arrival order instead deadlock here.)"""
    pairs = [(f"u{i:03}", f"v{i:03}") for i in range(N_PAIRS)]
    keep(pg_engine, [x for pair in pairs for x in pair] + ["hub"])
    chunks = [pairs[i : i + CHUNK] for i in range(0, N_PAIRS, CHUNK)]
    plans = [  # the same pairs at once, in opposite orders
        [[c for u, v in chunk for c in (follow(u, v), follow(u, "hub"))] for chunk in chunks],
        [[c for u, v in chunk[::-1] for c in (follow(v, u), follow(v, "hub"))] for chunk in chunks],
    ]
    start = threading.Barrier(2)
    failures: list[int] = []
    errors: list[BaseException] = []

    def run(batches: list[list[Change]]) -> None:
        try:
            for changes in batches:
                start.wait(timeout=30)
                failures.append(retried_batch(pg_engine, changes, hold=0.02))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=run, args=(p,)) for p in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(failures) == 2 * N_PAIRS // CHUNK
    assert sum(failures) == 0  # pairs, then lists, each locked in key order: no deadlock
    expected = {e for u, v in pairs for e in both(u, v, 1, 2, 3)}
    expected |= {e for pair in pairs for x in pair for e in both(x, "hub", 2)}
    assert current(pg_engine) == expected
    assert sorted(events(pg_engine)) == sorted((*e, "added") for e in expected)


def test_an_edge_a_crawl_inserts_meanwhile_keeps_the_crawls_row(pg_engine: sa.Engine) -> None:
    """An edge another transaction inserts between the batch's read and its write (no row
    to lock then) stays as that transaction wrote it, with no callback event for it."""
    keep(pg_engine, ["a", "b"])

    crawled: list[Edge] = []

    def crawl_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("INSERT INTO follow_edges") and not crawled:
            crawled.append(("a", 2, "b"))
            store_edge(pg_engine, crawled[0])  # another connection, committed

    with pg_engine.begin() as conn:
        sa.event.listen(conn, "before_cursor_execute", crawl_first)
        assert apply(conn, [follow("a", "b")]) == Applied(changes=1, applied=1, added=1)
    assert events(pg_engine) == [("b", 1, "a", "added")]
    assert edge_row(pg_engine, ("a", 2, "b"))["time_provisional"] is False
    assert current(pg_engine) == {("a", 2, "b"), ("b", 1, "a")}
