"""Whatever order the webhook's faults deliver callbacks in, and however often, each
direction's newest callback (greatest EventTime, an unfollow winning a tie) is the graph's
state: the ordering rule a receiver applies ends where the sandbox's graph is."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.sandbox import Graph, changes
from etl.sandbox.changes import Announcer, EventClock
from etl.sandbox.webhook import Webhook, WebhookConfig
from tests.unit.sandbox_helpers import FakeClock

ACCOUNTS = 3  # few accounts: the same directions change again and again
# (follower, followee, follows?) by index, a run of changes
STEPS = st.lists(
    st.tuples(st.integers(0, ACCOUNTS - 1), st.integers(0, ACCOUNTS - 1), st.booleans()),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, seed=st.integers(0, 1000), same_ms=st.booleans())
def test_newest_callback_of_each_direction_is_the_graph(
    steps: list[tuple[int, int, bool]], seed: int, same_ms: bool
) -> None:
    """Follows and unfollows (mutual pairs among them) posted with reordering and duplicates
    rebuild the graph's follows when each direction keeps its newest callback; a clock that
    does not move (same_ms) still gives each change a later EventTime."""
    graph = Graph(ACCOUNTS, seed=1, degree=1.0)
    ids = graph.accounts
    before = {(a, b) for a in ids for b in graph.list_ids(a, 2)}
    bodies: list[dict[str, Any]] = []

    def receive(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""})

    clock = FakeClock(1_800_000_000)
    config = WebhookConfig(url="http://receiver.test/", reorder=4, duplicates=0.3, seed=seed)
    webhook = Webhook(config, 1400000001, clock=clock, transport=httpx.MockTransport(receive))
    graph.watcher = Announcer(webhook.post, EventClock(clock))
    try:
        for u, v, follows in steps:
            if not same_ms:
                clock.now += 0.001
            changes.follow(graph, ids[u], [ids[v]], follows=follows, at=int(clock()))
        assert webhook.drain(10)
    finally:
        webhook.close()
    newest: dict[tuple[str, str], tuple[int, int]] = {}  # direction -> (EventTime, rank)
    for body in bodies:
        adds = body.get("FollowList")
        targets = body["To_Account"] if adds is None else [f["To_Account"] for f in adds]
        key = (body["EventTime"], 1 if adds is None else 0)
        for target in targets:
            direction = (body["From_Account"], target)
            newest[direction] = max(newest.get(direction, key), key)
    unfollowed = {d for d, (_, rank) in newest.items() if rank}
    after = {(a, b) for a in ids for b in graph.list_ids(a, 2)}
    assert (before - unfollowed) | (newest.keys() - unfollowed) == after
