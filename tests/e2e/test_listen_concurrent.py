"""Listeners among other writers: two listener processes on one PostgreSQL database, given
interleaved callbacks (A->B on one while B->A goes to the other), end with exactly the right
edges, mutual ones included; a listener beside a running `sync` of the same lists loses no
update and invents no event."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl.sandbox import Graph, SandboxServer
from etl.store import db
from etl.store.live import Change
from tests.conftest import run, sandbox_env, stored_lists
from tests.e2e.conftest import write_accounts
from tests.e2e.test_listen import Callback, Spawn, callback, listen_env, start_listener
from tests.integration.test_listen import now_ms

Start = Callable[..., SandboxServer]
Follows = dict[str, set[str]]  # account -> the accounts it follows
T = TypeVar("T")


def follows_of(graph: Graph) -> Follows:
    """Who follows whom in the sandbox now."""
    truth = graph.truth(graph.accounts, (2,))
    return {a: set(truth.get((a, 2), {})) for a in graph.accounts}


def lists_of(follows: Follows) -> dict[tuple[str, int], set[str]]:
    """Every non-empty fans (1), follows (2) and mutual (3) list of a follow relation."""
    fans: Follows = {a: set() for a in follows}
    for a, outs in follows.items():
        for b in outs:
            fans.setdefault(b, set()).add(a)
    lists: dict[tuple[str, int], set[str]] = {}
    for a in follows:
        for kind, members in ((1, fans[a]), (2, follows[a]), (3, fans[a] & follows[a])):
            if members:
                lists[(a, kind)] = set(members)
    return lists


def stored_sets(engine: sa.Engine) -> dict[tuple[str, int], set[str]]:
    return {key: set(items) for key, items in stored_lists(engine).items() if items}


def newest(changes: list[Change], follows: Follows) -> Follows:
    """``follows`` after ``changes``, in any order: per direction the greatest
    (EventTime, unfollow after follow) decides (the documented rule)."""
    result = {a: set(outs) for a, outs in follows.items()}
    best: dict[tuple[str, str], Change] = {}
    for c in changes:
        held = best.get((c.account, c.to_account))
        if held is None or (c.event_ms, not c.follows) > (held.event_ms, not held.follows):
            best[(c.account, c.to_account)] = c
    for (a, b), c in best.items():
        (result[a].add if c.follows else result[a].discard)(b)
    return result


def scenario(follows: Follows, start_ms: int, seed: int) -> tuple[list[Callback], list[Callback]]:
    """Callbacks for two listeners: pairs where A->B goes to the first while B->A goes to the
    second at the same time (mutual follows and unfollows made at once), and other pairs with
    several changes per direction, each sent to either, all in a shuffled order."""
    rng = random.Random(seed)
    accounts = sorted(follows)
    pairs = [(a, b) for a in accounts for b in accounts if a < b]
    rng.shuffle(pairs)
    first: list[Callback] = []
    second: list[Callback] = []
    at = start_ms
    for a, b in pairs[:30]:  # at once, from both sides
        mutual = b not in follows[a] or a not in follows[b]  # follow back, or both end it
        first.append(callback(a, b, mutual, at))
        second.append(callback(b, a, mutual, at))
        at += 1
    for a, b in pairs[30:90]:  # several changes of each direction, any listener
        for source, target in ((a, b), (b, a)):
            for _ in range(rng.randint(1, 3)):
                at += rng.choice((0, 1, 5))  # ties included: the unfollow wins a tie
                (first if rng.random() < 0.5 else second).append(
                    callback(source, target, rng.random() < 0.5, at)
                )
    rng.shuffle(first)
    rng.shuffle(second)
    return first, second


def alternate(first: list[T], second: list[T]) -> Iterator[T]:
    """One of the first, one of the second, ..., then the rest of the longer."""
    for pair in zip(first, second, strict=False):
        yield from pair
    yield from first[len(second) :]
    yield from second[len(first) :]


@pytest.mark.postgres
def test_two_listeners_on_one_database_end_with_exactly_the_right_edges(
    pg_engine: sa.Engine, pg_url: URL, spawn: Spawn, running_sandbox: Start
) -> None:
    """Two listener processes, one PostgreSQL: interleaved, shuffled, duplicated-direction
    callbacks (A->B on one while B->A arrives on the other) end as the newest change of each
    direction says, with the mutual lists of both sides right."""
    graph = Graph(users=24, seed=17)
    run(pg_engine, running_sandbox(graph), graph.accounts)  # every list kept
    before = follows_of(graph)
    env = listen_env(pg_url)
    one, url_one = start_listener(spawn, env, "listener-1")
    two, url_two = start_listener(spawn, env, "listener-2")
    first, second = scenario(before, now_ms() + 1000, seed=3)
    # Clients alternate between the listeners; the callbacks alternate between the lists.
    routed = alternate([(*c, url_one) for c in first], [(*c, url_two) for c in second])
    sent = send_each_to_its_listener(routed, clients=8)
    assert sent == len(first) + len(second)
    want = newest([c for _, _, c in first + second], before)
    assert stored_sets(pg_engine) == lists_of(want)
    for proc in (one, two):
        proc.proc.terminate()
        assert proc.wait(timeout=15) == 0, proc.logs()


def send_each_to_its_listener(
    routed: Iterator[tuple[str, bytes, Change, str]], clients: int
) -> int:
    """Post each callback to the listener it names, from ``clients`` threads; all must be
    acknowledged. How many were."""
    lock = threading.Lock()
    done: list[int] = []
    failures: list[int] = []

    def client() -> None:
        with httpx.Client(timeout=20) as http:
            while True:
                with lock:
                    item = next(routed, None)
                if item is None:
                    return
                query, body, _, url = item
                answer = http.post(f"{url}?{query}", content=body)
                with lock:
                    (done if answer.status_code == 200 else failures).append(answer.status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    return len(done)


def changes_between(old: Follows, new: Follows, at: int) -> list[Callback]:
    """The callbacks Tencent would send for the change from ``old`` to ``new``."""
    found: list[Callback] = []
    for a in sorted(new):
        for b in sorted(new[a] - old.get(a, set())):
            found.append(callback(a, b, True, at + len(found)))
        for b in sorted(old.get(a, set()) - new[a]):
            found.append(callback(a, b, False, at + len(found)))
    return found


def test_a_listener_beside_a_sync_of_the_same_lists_loses_no_update_and_invents_no_event(
    db_url: URL, spawn: Spawn, running_sandbox: Start, tmp_path: Path
) -> None:
    """While a `sync` re-crawls every list, the graph changes in rounds and each change is
    posted as its callback: at the end the tables are the graph, and each edge's events
    alternate added/removed from its state before to its state after (nothing invented)."""
    graph = Graph(users=40, seed=23)
    server = running_sandbox(graph, latency_ms=15)
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    try:
        run(engine, server, graph.accounts, job="nightly")  # the baseline: every list kept
        baseline = stored_sets(engine)
        last_event = max_event_id(engine)
        env = listen_env(db_url, **sandbox_env(server))  # the sandbox's app is the listener's
        _, url = start_listener(spawn, env)
        accounts = write_accounts(tmp_path / "accounts.txt", graph.accounts)
        crawl = spawn(env, "sync", "--accounts", str(accounts), "--job", "nightly",
                      "--page-size", "3", name="sync")  # fmt: skip
        rounds = 0
        with httpx.Client(timeout=20) as http:
            while crawl.running() and rounds < 40:
                old, at = follows_of(graph), now_ms()
                graph.mutate(rounds, unfollow=0.02, follow=0.02, profile=0.0)
                for query, body, _ in changes_between(old, follows_of(graph), at):
                    assert http.post(f"{url}?{query}", content=body).status_code == 200
                rounds += 1
                time.sleep(0.1)
        assert crawl.wait(timeout=120) == 0, crawl.logs()
        assert rounds >= 3, "the sync ended before the graph changed a few times"
        assert stored_sets(engine) == lists_of(follows_of(graph))
        assert_events_alternate(engine, last_event, baseline, stored_sets(engine))
    finally:
        engine.dispose()


def max_event_id(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT coalesce(max(id), 0) FROM follow_edge_events")
            ).scalar_one()
        )


def assert_events_alternate(
    engine: sa.Engine,
    after_id: int,
    before: dict[tuple[str, int], set[str]],
    now: dict[tuple[str, int], set[str]],
) -> None:
    """Each edge's events since ``after_id`` go added, removed, added, ... from its state in
    ``before`` to its state in ``now``: no event repeats the state the edge is already in.
    A crawl and a callback adding one edge at the same moment record one 'added' between them
    (on PostgreSQL the crawl's events come from the statement that writes its edges)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, to_account, event, source FROM follow_edge_events "
                "WHERE id > :after ORDER BY id"
            ),
            {"after": after_id},
        ).all()
    state: dict[tuple[str, int, str], tuple[bool, str]] = {}
    for account, kind, to, event, source in rows:
        key = (account, int(kind), to)
        present, by = state.get(key, (to in before.get((account, int(kind)), set()), "before"))
        if present == (event == "added"):  # a repeat: an invented event
            history = [r[3:] for r in rows if (r[0], int(r[1]), r[2]) == key]
            raise AssertionError(f"{key} was already {event} (by {by}): {history}")
        state[key] = (event == "added", source)
    for (account, kind, to), (present, _) in state.items():
        assert present == (to in now.get((account, kind), set())), (account, kind, to)
