"""The sandbox posts its graph's changes as Tencent's follow callbacks: the request (query,
signature, body), EventTime against the graph's follow time, and each fault (drops, duplicates,
reordering, delays) as the sandbox records it, against a tiny loopback receiver."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from etl.config import Secret
from etl.sandbox import Graph, Sandbox, SandboxConfig
from etl.sandbox.webhook import WebhookConfig
from tests.unit.sandbox_helpers import FakeClock

pytestmark = pytest.mark.slow  # a receiver thread server in every test
TOKEN = "callback-token-for-tests"
OK = b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    query: dict[str, str]
    body: dict[str, Any]
    at: float  # time.monotonic()


@dataclass
class Receiver:
    """A loopback HTTP server that keeps every POST and answers ``status``."""

    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The requests, once there are ``count`` of them (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver on a free loopback port, for the test."""
    got = Receiver("")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            path, _, query = self.path.partition("?")
            got.requests.append(
                Received(
                    path, dict(urllib.parse.parse_qsl(query)), json.loads(body), time.monotonic()
                )
            )
            head = f"HTTP/1.1 {got.status} X\r\nContent-Length: {len(OK)}\r\n\r\n"
            self.wfile.write(head.encode() + OK)  # one write: no delayed-ACK stall

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/callback"
    try:
        yield got
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def graph() -> Graph:
    """A small graph of the test's own (the tests change it)."""
    return Graph(200, seed=4)


def posting(graph: Graph, url: str, clock: FakeClock | None = None, **faults: Any) -> Sandbox:
    """A sandbox over ``graph`` posting to ``url`` with the test token and these faults."""
    hook = WebhookConfig(url=url, token=Secret(TOKEN), **faults)
    return Sandbox(graph, SandboxConfig(webhook=hook), clock=clock or time.time)


def admin(sandbox: Sandbox, path: str, body: object = None) -> tuple[int, Any]:
    """An admin request: (status, decoded answer)."""
    method = "GET" if body is None else "POST"
    answer = sandbox.handle(method, path, {}, b"" if body is None else json.dumps(body).encode())
    return answer.status, json.loads(answer.body)


def follows(sandbox: Sandbox, account: str, *targets: str, unfollow: bool = False) -> Any:
    """POST /sandbox/follow (or unfollow); the answer."""
    route = "/sandbox/unfollow" if unfollow else "/sandbox/follow"
    status, answer = admin(sandbox, route, {"from": account, "to": list(targets)})
    assert status == 200, answer
    return answer


def report(sandbox: Sandbox) -> dict[str, Any]:
    """The webhook's record, once every callback is answered."""
    assert sandbox.webhook is not None
    assert sandbox.webhook.drain(10)
    answer: dict[str, Any] = sandbox.webhook_report(events=True)
    return answer


def free_pair(graph: Graph) -> tuple[str, str]:
    """Two accounts that follow each other in neither direction."""
    accounts = graph.accounts
    for a in accounts:
        for b in accounts:
            if a != b and b not in graph.list_ids(a, 2) and a not in graph.list_ids(b, 2):
                return a, b
    raise AssertionError("no free pair")


def test_a_callback_is_signed_and_shaped_as_chat_sends_it(graph: Graph, receiver: Receiver) -> None:
    """The query has SdkAppid, CallbackCommand, contenttype, ClientIP, OptPlatform,
    RequestTime and Sign = sha256(token + RequestTime); the bodies are Chat's, and EventTime
    is the new edge's follow time in ms."""
    a, b = free_pair(graph)
    clock = FakeClock(1_800_000_000.25)
    sandbox = posting(graph, receiver.url, clock)
    try:
        assert follows(sandbox, a, b) == {"changed": [b], "unchanged": []}
        clock.now += 5
        assert follows(sandbox, a, b, unfollow=True) == {"changed": [b], "unchanged": []}
        added, deleted = receiver.wait_for(2)
    finally:
        sandbox.close()
    assert added.path == "/callback"
    assert added.query == {
        "SdkAppid": "1400000001",
        "CallbackCommand": "Follow.CallbackAfterFollowAdd",
        "contenttype": "json",
        "ClientIP": "127.0.0.1",
        "OptPlatform": "RESTAPI",
        "RequestTime": "1800000005",  # when it was sent: the clock had moved on
        "Sign": hashlib.sha256(f"{TOKEN}1800000005".encode()).hexdigest(),
    }
    assert added.body == {
        "CallbackCommand": "Follow.CallbackAfterFollowAdd",
        "From_Account": a,
        "FollowList": [{"To_Account": b}],
        "EventTime": 1_800_000_000_250,
    }
    assert deleted.query["CallbackCommand"] == "Follow.CallbackAfterFollowDelete"
    assert deleted.body == {
        "CallbackCommand": "Follow.CallbackAfterFollowDelete",
        "From_Account": a,
        "To_Account": [b],
        "EventTime": 1_800_000_005_250,
    }


def test_follow_get_serves_the_change_with_the_callbacks_time(
    graph: Graph, receiver: Receiver
) -> None:
    """After /sandbox/follow the lists hold the edge (mutual when followed back), its
    FollowTime EventTime // 1000; after /sandbox/unfollow they do not."""
    a, b = free_pair(graph)
    sandbox = posting(graph, receiver.url)
    try:
        follows(sandbox, a, b)
        follows(sandbox, b, a)
        first, second = (r.body["EventTime"] for r in receiver.wait_for(2))
        assert graph.follow_time(a, b) == first // 1000
        assert graph.list_items(a, 3)[b] == max(first, second) // 1000  # mutual: the later
        assert second > first
        follows(sandbox, a, b, unfollow=True)
        assert b not in graph.list_ids(a, 2)
        assert b not in graph.list_ids(a, 3)
        assert a in graph.list_ids(b, 2)
    finally:
        sandbox.close()


def test_one_callback_per_account_and_kind_at_most_twenty_accounts(
    graph: Graph, receiver: Receiver
) -> None:
    """Following 45 accounts is three callbacks (20, 20, 5) with one EventTime; one already
    followed, and the account itself, are unchanged and not announced."""
    account = graph.accounts[0]
    already = graph.list_ids(account, 2)[0]
    targets = [t for t in graph.accounts[1:] if t not in graph.list_ids(account, 2)][:45]
    sandbox = posting(graph, receiver.url)
    try:
        answer = follows(sandbox, account, *targets, already, account)
        got = receiver.wait_for(3)
    finally:
        sandbox.close()
    assert answer == {"changed": targets, "unchanged": [already, account]}
    assert [len(r.body["FollowList"]) for r in got] == [20, 20, 5]
    assert [f["To_Account"] for r in got for f in r.body["FollowList"]] == targets
    assert len({r.body["EventTime"] for r in got}) == 1


def test_drops_are_recorded_with_their_changes(graph: Graph, receiver: Receiver) -> None:
    """With drops, the receiver gets exactly the callbacks not dropped, and the record lists
    every change of the dropped ones; the same seed drops the same ones."""
    account = graph.accounts[0]
    targets = [t for t in graph.accounts[1:] if t not in graph.list_ids(account, 2)][:40]
    sandbox = posting(graph, receiver.url, drops=0.4, seed=7)
    try:
        for target in targets:
            follows(sandbox, account, target)
        record = report(sandbox)
    finally:
        sandbox.close()
    counts = record["counts"]
    received = {r.body["FollowList"][0]["To_Account"] for r in receiver.requests}
    dropped = {c["to_account"] for c in record["dropped"]}
    assert 0 < len(dropped) < len(targets)
    assert received | dropped == set(targets)
    assert not received & dropped
    assert counts["delivered"] == len(received)
    assert counts["dropped"] == len(dropped)
    assert counts["callbacks"] == counts["changes"] == len(targets)
    assert all(c["account"] == account and c["follows"] for c in record["dropped"])
    assert record["failed"] == []
    assert counts["pending"] == 0
    assert [e["outcome"] for e in record["events"]].count("dropped") == len(dropped)


def test_duplicates_are_sent_twice(graph: Graph, receiver: Receiver) -> None:
    """duplicates=1 sends every callback twice, the same body each time."""
    a, b = free_pair(graph)
    sandbox = posting(graph, receiver.url, duplicates=1.0)
    try:
        follows(sandbox, a, b)
        follows(sandbox, a, b, unfollow=True)
        record = report(sandbox)
    finally:
        sandbox.close()
    bodies = [json.dumps(r.body, sort_keys=True) for r in receiver.requests]
    assert len(bodies) == 4
    assert len(set(bodies)) == 2
    counts = record["counts"]
    assert (counts["callbacks"], counts["duplicated"], counts["posts"]) == (2, 2, 4)
    assert counts["delivered"] == 2
    assert [e["answers"] for e in record["events"]] == [["200", "200"], ["200", "200"]]


def test_reordering_shuffles_within_the_window(graph: Graph, receiver: Receiver) -> None:
    """reorder=8 sends the callbacks out of order, none lost, none more than a window late."""
    account = graph.accounts[0]
    targets = [t for t in graph.accounts[1:] if t not in graph.list_ids(account, 2)][:32]
    sandbox = posting(graph, receiver.url, reorder=8, seed=3)
    try:
        for target in targets:
            follows(sandbox, account, target)
        report(sandbox)
    finally:
        sandbox.close()
    got = [r.body["FollowList"][0]["To_Account"] for r in receiver.requests]
    assert sorted(got) == sorted(targets)
    assert got != targets
    assert all(abs(got.index(t) - i) < 8 for i, t in enumerate(targets))


def test_delays_hold_each_post_back(graph: Graph, receiver: Receiver) -> None:
    """delay_ms=(80, 120): no callback arrives sooner than 80 ms after the change."""
    a, b = free_pair(graph)
    sandbox = posting(graph, receiver.url, delay_ms=(80.0, 120.0))
    try:
        changed = time.monotonic()
        follows(sandbox, a, b)
        (got,) = receiver.wait_for(1)
    finally:
        sandbox.close()
    assert 0.08 <= got.at - changed < 2.0


def test_an_answer_other_than_200_fails_the_callback(graph: Graph, receiver: Receiver) -> None:
    """A 503 is a failed callback, listed with its changes; it is not retried."""
    receiver.status = 503
    a, b = free_pair(graph)
    sandbox = posting(graph, receiver.url)
    try:
        follows(sandbox, a, b)
        record = report(sandbox)
    finally:
        sandbox.close()
    assert len(receiver.requests) == 1
    assert record["counts"]["failed"] == 1
    assert record["counts"]["delivered"] == 0
    assert [(c["account"], c["to_account"]) for c in record["failed"]] == [(a, b)]
    assert record["events"][0]["answers"] == ["HTTP 503"]


def test_no_receiver_fails_the_callback(graph: Graph, receiver: Receiver) -> None:
    """Nobody listening on the port: the callback fails (a connection error), nothing hangs."""
    a, b = free_pair(graph)
    sandbox = posting(graph, "http://127.0.0.1:9/callback")  # discard: nobody answers
    try:
        follows(sandbox, a, b)
        record = report(sandbox)
    finally:
        sandbox.close()
    assert record["counts"]["failed"] == 1
    assert record["events"][0]["answers"][0].endswith("Error")


def test_a_deleted_account_is_not_announced(graph: Graph, receiver: Receiver) -> None:
    """Deleting an account posts nothing and counts its edges as silent."""
    account = graph.accounts[5]
    edges = len(graph.list_ids(account, 1)) + len(graph.list_ids(account, 2))
    sandbox = posting(graph, receiver.url)
    try:
        graph.delete_account(account)
        record = report(sandbox)
    finally:
        sandbox.close()
    assert receiver.requests == []
    assert record["counts"]["silent"] == edges
    assert record["counts"]["callbacks"] == 0


def test_mutate_announces_its_changes_and_they_rebuild_the_graph(
    graph: Graph, receiver: Receiver
) -> None:
    """Each direction's newest callback (greatest EventTime, unfollow on a tie) gives the
    graph's state after a mutate, and each new edge's follow time is its EventTime's second."""
    before = {(a, b) for a in graph.accounts for b in graph.list_ids(a, 2)}
    sandbox = posting(graph, receiver.url, reorder=5, duplicates=0.2, seed=2)
    try:
        summary = graph.mutate(11, unfollow=0.05, follow=0.05, profile=0)
        record = report(sandbox)
    finally:
        sandbox.close()
    newest: dict[tuple[str, str], tuple[int, int]] = {}  # direction -> (EventTime, rank)
    for r in receiver.requests:
        adds = r.body.get("FollowList")
        targets = r.body["To_Account"] if adds is None else [f["To_Account"] for f in adds]
        key = (r.body["EventTime"], 1 if adds is None else 0)
        for target in targets:
            direction = (r.body["From_Account"], target)
            newest[direction] = max(newest.get(direction, key), key)
    after = {(a, b) for a in graph.accounts for b in graph.list_ids(a, 2)}
    unfollowed = {d for d, (_, rank) in newest.items() if rank}
    rebuilt = (before - unfollowed) | (newest.keys() - unfollowed)
    assert rebuilt == after
    assert record["counts"]["changes"] == summary["unfollowed"] + summary["followed"]
    for (a, b), (event_ms, rank) in newest.items():
        if not rank:
            assert graph.follow_time(a, b) == event_ms // 1000


def test_quiet_sandbox_posts_nothing(graph: Graph) -> None:
    """Without a URL nothing watches the graph, the follow routes still change it, and
    /sandbox/webhook says there is no webhook."""
    a, b = free_pair(graph)
    sandbox = Sandbox(graph, SandboxConfig(), clock=FakeClock(1_800_000_000))
    assert graph.watcher is None
    assert sandbox.webhook is None
    follows(sandbox, a, b)
    assert graph.follow_time(a, b) == 1_800_000_000
    assert admin(sandbox, "/sandbox/webhook") == (200, {"url": None})


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"from": "user_000001"}, 400),
        ({"from": "user_000001", "to": "user_000002"}, 400),
        ({"from": 1, "to": ["user_000002"]}, 400),
        ({"from": "user_000001", "to": [2]}, 400),
        ({"from": "nobody", "to": ["user_000002"]}, 404),
        ({"from": "user_000001", "to": ["user_000002", "nobody"]}, 404),
    ],
)
def test_bad_follow_requests_change_nothing(graph: Graph, body: object, status: int) -> None:
    """A malformed body is 400, an unknown account 404; the graph is left as it was."""
    sandbox = Sandbox(graph, SandboxConfig())
    generation = graph.generation
    assert admin(sandbox, "/sandbox/follow", body)[0] == status
    assert graph.generation == generation
