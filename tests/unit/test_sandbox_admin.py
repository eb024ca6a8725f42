"""The sandbox's admin routes: truth, accounts, stats, counts, mutate, outage and inject."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from etl.sandbox import Graph, Sandbox
from etl.sandbox.admin import list_digest
from etl.sandbox.hostile import HOSTILE_IDS
from etl.tencent.exact_json import parse_json
from tests.unit.sandbox_helpers import (
    CONFIG,
    FOLLOW_GET,
    FakeClock,
    call,
    most_fans,
    page_all,
    plain,
)


def test_admin_truth_and_stats(sandbox: Sandbox, graph: Graph) -> None:
    """/sandbox/truth returns a list with profiles; /sandbox/stats counts served items."""
    account = most_fans(graph)
    page_all(sandbox, account, 1, want=1000)
    truth = json.loads(
        sandbox.handle("GET", "/sandbox/truth", {"account": account, "type": "1"}, b"").body
    )
    stats = json.loads(sandbox.handle("GET", "/sandbox/stats", {}, b"").body)
    assert truth["items"] == graph.list_items(account, 1)
    assert stats["items_served"] == len(truth["items"])
    assert stats["follow_get_ok"] == {f"{account}/1": 1}
    assert sandbox.handle("GET", "/sandbox/truth", {"account": "x", "type": "1"}, b"").status == 404


def test_admin_accounts_top_by_fans(sandbox: Sandbox, graph: Graph) -> None:
    """/sandbox/accounts?top=N&by=fans lists the N accounts with most fans, most first."""
    answer = json.loads(
        sandbox.handle("GET", "/sandbox/accounts", {"top": "10", "by": "fans"}, b"").body
    )
    fans = {a: len(graph.list_ids(a, 1)) for a in graph.accounts}
    assert answer["accounts"] == sorted(fans, key=lambda a: (-fans[a], a))[:10]
    assert answer["counts"] == [fans[a] for a in answer["accounts"]]
    assert sandbox.handle("GET", "/sandbox/accounts", {"by": "likes"}, b"").status == 400


def test_admin_truth_digest_matches_the_lists(sandbox: Sandbox, graph: Graph) -> None:
    """/sandbox/truth-digest gives each list's size and the digest of its pairs."""
    accounts = [*graph.accounts[:5], "nobody"]
    body = json.dumps({"accounts": accounts, "types": [1, 3]}).encode()
    answer = json.loads(sandbox.handle("POST", "/sandbox/truth-digest", {}, body).body)
    assert answer["missing"] == ["nobody"]
    for account in accounts[:5]:
        for follow_type in (1, 3):
            items = graph.list_items(account, follow_type)
            assert answer["lists"][f"{account}/{follow_type}"] == {
                "count": len(items),
                "digest": list_digest(items.items()),
            }
    assert list_digest([("b", 2), ("a", 1)]) == list_digest([("a", 1), ("b", 2)])
    assert list_digest([("a", 1)]) != list_digest([("a", 2)])
    bad = sandbox.handle("POST", "/sandbox/truth-digest", {}, b'{"accounts": "x"}')
    assert bad.status == 400


def test_admin_mutate_applies_a_change() -> None:
    """POST /sandbox/mutate mutates the graph and returns the summary; a bad body is a 400."""
    own = Graph(200, seed=8)
    sandbox = Sandbox(own, CONFIG, clock=FakeClock())
    response = sandbox.handle("POST", "/sandbox/mutate", {}, b'{"seed": 3, "delete": 1}')
    assert response.status == 200
    assert json.loads(response.body)["deleted"] == 1
    assert own.generation == 1
    assert sandbox.handle("POST", "/sandbox/mutate", {}, b'{"seed": "x"}').status == 400
    assert sandbox.handle("GET", "/sandbox/mutate", {}, b"").status == 405


def test_truth_routes_serve_hostile_values_as_ascii_json(hostile: Graph) -> None:
    """/sandbox/truth is ASCII JSON holding the raw values; truth-digest takes hostile ids."""
    sandbox = Sandbox(hostile, CONFIG, clock=FakeClock())
    evil = HOSTILE_IDS[1]
    account = next(a for a in hostile.accounts if evil in hostile.list_ids(a, 1))
    response = sandbox.handle("GET", "/sandbox/truth", {"account": account, "type": "1"}, b"")
    assert response.status == 200
    assert response.body.isascii()
    truth = parse_json(response.body)
    assert truth["items"] == hostile.list_items(account, 1)
    assert truth["profiles"][evil] == list(hostile.profile(evil))
    digest = sandbox.handle(
        "POST", "/sandbox/truth-digest", {}, json.dumps({"accounts": [account]}).encode()
    )
    assert digest.status == 200
    items = hostile.list_items(account, 1)
    assert parse_json(digest.body)["lists"][f"{account}/1"]["digest"] == list_digest(items.items())
    huge = hostile.hostile_users[0]  # the 5000-digit integer
    holder = next(a for a in hostile.accounts if huge in hostile.list_ids(a, 1))
    response = sandbox.handle("GET", "/sandbox/truth", {"account": holder, "type": "1"}, b"")
    assert parse_json(response.body)["profiles"][huge] == plain(list(hostile.profile(huge)))


@pytest.mark.parametrize(
    "bad", [b'{"status": 99}', b'{"status": "503"}', b'{"code": 0}', b'{"status": 503, "code": 1}',
            b'{"statis": 503}', b"[503]", b"{"],
)  # fmt: skip
def test_bad_outage_requests_answer_400(sandbox: Sandbox, bad: bytes) -> None:
    """An outage that is not one HTTP status or one error code is refused and changes nothing."""
    assert sandbox.handle("POST", "/sandbox/outage", {}, bad).status == 400
    assert sandbox.outage is None


def test_counts_route_gives_cheap_counters_and_the_first_call(sandbox: Sandbox) -> None:
    """``GET /sandbox/counts`` says how many calls came and when the first follow_get did (None
    before it, and again after a reset), without the per-list map of ``stats``."""

    def counts() -> dict[str, Any]:
        response = sandbox.handle("GET", "/sandbox/counts", {}, b"")
        assert response.status == 200
        decoded: dict[str, Any] = json.loads(response.body)
        return decoded

    sandbox.reset_stats()
    assert counts()["first_follow_get"] is None
    before = time.time()
    call(sandbox, {"From_Account": "user_000001", "FollowType": 1})
    found = counts()
    assert found["by_route"] == {FOLLOW_GET: 1}
    assert before - 1 <= found["first_follow_get"] <= time.time() + 1
    assert "follow_get_ok" not in found
    sandbox.reset_stats()
    assert counts()["first_follow_get"] is None


@pytest.mark.parametrize(
    "bad", [b'{"account": "a", "type": 4, "kind": "30003"}', b'{"account": "a", "type": 1}',
            b'{"account": "a", "type": 1, "kind": "503"}', b'{"account": "a", "type": 1, '
            b'"kind": "30003", "times": 0}', b"[1]", b"{"],
)  # fmt: skip
def test_bad_inject_requests_answer_400(sandbox: Sandbox, bad: bytes) -> None:
    """A targeted fault that is not one list, one known kind and a positive count is refused."""
    assert sandbox.handle("POST", "/sandbox/inject", {}, bad).status == 400
