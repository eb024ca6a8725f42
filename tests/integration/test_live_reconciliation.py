"""Live end to end: the sandbox posts its follows and unfollows (mutual pairs among them) to a
real listener, with drops, duplicates and reordering; the next sync's reconciliation then finds
exactly the changes the dropped callbacks carried, list by list, and no drift at all when none
was dropped. On SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from etl import api
from etl.config import Secret
from etl.sandbox import Graph, SandboxConfig, SandboxServer
from etl.sandbox.webhook import WebhookConfig
from etl.store.schema import list_reconciliation
from tests.conftest import run

Start = Callable[..., SandboxServer]

Relation = set[tuple[str, str]]  # (follower, followee)
ListKey = tuple[str, int]  # (account, follow type)


def relation(lists: Mapping[ListKey, Iterable[str]]) -> Relation:
    """Who follows whom, from follows lists (type 2)."""
    return {(a, b) for (a, t), items in lists.items() if t == 2 for b in items}


def lists_of(follows: Relation, accounts: Iterable[str]) -> dict[ListKey, set[str]]:
    """The fans, follows and mutual lists of ``accounts`` under ``follows``."""
    result: dict[ListKey, set[str]] = {}
    for account in accounts:
        out = {b for a, b in follows if a == account}
        fans = {a for a, b in follows if b == account}
        result |= {(account, 1): fans, (account, 2): out, (account, 3): out & fans}
    return result


def told(before: Relation, events: list[dict[str, Any]]) -> Relation:
    """What the delivered callbacks say, over ``before``: each direction's newest delivered
    change (greatest EventTime, an unfollow winning a tie) decides it."""
    newest: dict[tuple[str, str], tuple[int, int]] = {}
    for event in events:
        if event["outcome"] != "delivered":
            continue
        key = (event["event_ms"], 0 if event["command"].endswith("Add") else 1)
        for to in event["to_accounts"]:
            direction = (event["account"], to)
            newest[direction] = max(newest.get(direction, key), key)
    gone = {d for d, (_, rank) in newest.items() if rank}
    return (before - gone) | (newest.keys() - gone)


def drift(
    believed: Relation, truth: Relation, accounts: Iterable[str]
) -> dict[ListKey, tuple[int, int]]:
    """Per list of ``accounts``, (added, removed): what a crawl must change in the lists the
    callbacks made (``believed``) to reach ``truth``; lists with nothing to change left out."""
    have, want = lists_of(believed, accounts), lists_of(truth, accounts)
    found = {}
    for key, items in want.items():
        added, removed = len(items - have[key]), len(have[key] - items)
        if added or removed:
            found[key] = (added, removed)
    return found


def series(
    accounts: list[str], follows: Relation, seed: int, steps: int
) -> list[tuple[str, str, bool]]:
    """``steps`` follows and unfollows among ``accounts``: new follows, follow-backs (mutual
    pairs), unfollows of mutual and one-way follows; each one a real change."""
    rng = random.Random(seed)
    state = set(follows)
    done: list[tuple[str, str, bool]] = []
    while len(done) < steps:
        roll = rng.random()
        if roll < 0.3 and state:
            a, b = rng.choice(sorted(state))
            done.append((a, b, False))
            state.discard((a, b))
            continue
        if roll < 0.6:
            one_way = sorted((b, a) for a, b in state if (b, a) not in state)
            if one_way:
                a, b = rng.choice(one_way)
                done.append((a, b, True))
                state.add((a, b))
                continue
        a, b = rng.sample(accounts, 2)
        if (a, b) not in state:
            done.append((a, b, True))
            state.add((a, b))
    return done


TOKEN = "live-reconciliation-token"


@contextmanager
def listening(url: URL) -> Iterator[str]:
    """``etl.api.listen`` on a free loopback port, in a thread, for the ``with`` block; its URL."""
    env = {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "IM_SDKAPPID": str(SandboxConfig().sdkappid),
        "IM_CALLBACK_TOKEN": TOKEN,
    }
    stop, ready = threading.Event(), threading.Event()
    found: list[str] = []

    def on_ready(address: str) -> None:
        found.append(address)
        ready.set()

    thread = threading.Thread(
        target=api.listen, kwargs={"port": 0, "env": env, "stop": stop, "ready": on_ready}
    )
    thread.start()
    try:
        assert ready.wait(30), "the listener did not start"
        yield found[0]
    finally:
        stop.set()
        thread.join()


def reconciled(engine: sa.Engine, run_id: int) -> dict[ListKey, tuple[int, int, int]]:
    """The run's list_reconciliation rows: (account, type) -> (live, added, removed)."""
    r = list_reconciliation.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(r.account, r.follow_type, r.live, r.added, r.removed).where(
                r.run_id == run_id
            )
        ).all()
    return {(a, int(t)): (int(live), int(add), int(rem)) for a, t, live, add, rem in rows}


@pytest.mark.parametrize(("drops", "seed"), [(0.3, 3), (0.0, 4)], ids=["drops", "no-drops"])
def test_the_next_sync_finds_exactly_what_the_dropped_callbacks_carried(
    engine: sa.Engine, db_url: URL, running_sandbox: Start, drops: float, seed: int
) -> None:
    """Follows and unfollows (mutual pairs made and ended) posted with duplicates, reordering
    and (or not) drops: per list, the next sync adds and removes exactly what the callbacks
    the listener got did not say (nothing when none was dropped), and counts the rest live."""
    graph = Graph(24, seed=seed)
    accounts = graph.accounts
    with listening(db_url) as url:
        hook = WebhookConfig(
            url=url, token=Secret(TOKEN), drops=drops, duplicates=0.3, reorder=4, seed=seed
        )
        server = running_sandbox(graph, webhook=hook)
        run(engine, server, accounts, job="live")  # the baseline: every list kept from now on
        before = relation(graph.truth(accounts, [2]))
        for a, b, follows in series(accounts, before, seed, steps=40):
            server.sandbox.follow(a, [b], follows=follows)
        webhook = server.sandbox.webhook
        assert webhook is not None
        assert webhook.drain(20)
        record = webhook.report(events=True)
        report = run(engine, server, accounts, job="live")
    truth = relation(graph.truth(accounts, [2]))
    expected = drift(told(before, record["events"]), truth, accounts)  # type: ignore[arg-type]
    found = reconciled(engine, report.run_id)
    assert {key: (add, rem) for key, (_, add, rem) in found.items() if add or rem} == expected
    assert sum(live for live, _, _ in found.values()) > 0
    counts: dict[str, int] = record["counts"]  # type: ignore[assignment]
    assert counts["failed"] == 0
    if drops:
        assert counts["dropped"] > 0
        assert expected
    else:
        assert expected == {}
