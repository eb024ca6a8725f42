"""The sandbox's follow_get and follow_get_info routes: paging, cursors, bodies, items."""

from __future__ import annotations

import json
from typing import Any

import pytest

from etl.sandbox import Graph, Sandbox, SandboxConfig
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
    query,
)


def test_paging_returns_exactly_the_list(sandbox: Sandbox, graph: Graph) -> None:
    """Paging with a small WantNum returns every item once, in ascending To_Account order."""
    account = most_fans(graph)
    items = page_all(sandbox, account, 1, want=7)
    ids = [item["To_Account"] for item in items]
    assert ids == sorted(set(ids))
    assert {item["To_Account"]: item["FollowTime"] for item in items} == graph.list_items(
        account, 1
    )


def test_items_carry_current_profiles(sandbox: Sandbox, graph: Graph) -> None:
    """Each item has the To_Account's profile tags and profile_sequence."""
    item = page_all(sandbox, most_fans(graph), 1, want=1000)[0]
    sequence, tags = graph.profile(item["To_Account"])
    assert item["ProfileItem"] == tags
    assert item["profile_sequence"] == sequence


def test_profile_sequence_key_is_configurable(graph: Graph) -> None:
    """With sequence_key="ProfileSequence" items use Tencent's web SDK spelling."""
    sandbox = Sandbox(graph, SandboxConfig(sequence_key="ProfileSequence"), clock=FakeClock())
    item = page_all(sandbox, most_fans(graph), 1, want=5)[0]
    assert "ProfileSequence" in item
    assert "profile_sequence" not in item


def test_tampered_cursor_is_rejected(sandbox: Sandbox, graph: Graph) -> None:
    """A cursor whose payload was altered answers 30001."""
    account = most_fans(graph)
    cursor = call(sandbox, {"From_Account": account, "FollowType": 1, "WantNum": 2})["NextCursor"]
    tampered = ("A" if cursor[0] != "A" else "B") + cursor[1:]
    body = {"From_Account": account, "FollowType": 1, "StartCursor": tampered}
    assert call(sandbox, body)["ErrorCode"] == 30001


def test_foreign_cursor_is_rejected(sandbox: Sandbox, graph: Graph) -> None:
    """A cursor issued for another list answers 30001."""
    account = most_fans(graph)
    cursor = call(sandbox, {"From_Account": account, "FollowType": 1, "WantNum": 2})["NextCursor"]
    assert (
        call(sandbox, {"From_Account": account, "FollowType": 2, "StartCursor": cursor})[
            "ErrorCode"
        ]
        == 30001
    )


def test_cursor_expires_after_ttl(graph: Graph) -> None:
    """With cursor_ttl set, a cursor older than the ttl answers 30001; a fresh one works."""
    clock = FakeClock()
    sandbox = Sandbox(graph, SandboxConfig(cursor_ttl=60.0), clock=clock)
    account = most_fans(graph)
    cursor = call(sandbox, {"From_Account": account, "FollowType": 1, "WantNum": 2})["NextCursor"]
    body = {"From_Account": account, "FollowType": 1, "StartCursor": cursor}
    clock.now += 30
    assert call(sandbox, body)["ErrorCode"] == 0
    clock.now += 31
    assert call(sandbox, body)["ErrorCode"] == 30001


def test_unknown_account_answers_30003(sandbox: Sandbox) -> None:
    """A From_Account that does not exist answers 30003."""
    assert call(sandbox, {"From_Account": "nobody", "FollowType": 1})["ErrorCode"] == 30003


@pytest.mark.parametrize(
    "body",
    [
        {"FollowType": 1},
        {"From_Account": "user_000001", "FollowType": 4},
        {"From_Account": "user_000001", "FollowType": 1, "WantNum": 1001},
        {"From_Account": "user_000001", "FollowType": 1, "WantNum": 0},
        {"From_Account": "user_000001", "FollowType": 1, "StartCursor": 5},
    ],
)
def test_bad_body_fields_answer_30001(sandbox: Sandbox, body: dict[str, object]) -> None:
    """A missing account, a bad FollowType, WantNum or StartCursor answers 30001."""
    assert call(sandbox, body)["ErrorCode"] == 30001


def test_malformed_json_answers_60003(sandbox: Sandbox) -> None:
    """A body that is not a JSON object answers 60003."""
    response = sandbox.handle("POST", FOLLOW_GET, query(), b'{"From_Account":"a",}')
    assert json.loads(response.body)["ErrorCode"] == 60003


def test_get_answers_60002_and_unknown_path_404(sandbox: Sandbox) -> None:
    """GET on an API route answers 60002; an unknown route is an HTTP 404."""
    assert json.loads(sandbox.handle("GET", FOLLOW_GET, query(), b"").body)["ErrorCode"] == 60002
    assert sandbox.handle("POST", "/v4/follow/nope", query(), b"{}").status == 404


def test_follow_get_info_counts_match_list_lengths(sandbox: Sandbox, graph: Graph) -> None:
    """FollowerCount, FollowingCount and MutualFollowingCount equal the three list lengths."""
    accounts = [*graph.accounts[:19], "nobody"]
    body = {"From_Account": accounts[0], "To_Account": accounts}
    results = call(sandbox, body, path="/v4/follow/follow_get_info")["FollowInfo"]
    for result in results[:-1]:
        account = result["To_Account"]
        assert result["ResultCode"] == 0
        assert result["FollowerCount"] == len(graph.list_ids(account, 1))
        assert result["FollowingCount"] == len(graph.list_ids(account, 2))
        assert result["MutualFollowingCount"] == len(graph.list_ids(account, 3))
    assert results[-1]["ResultCode"] == 30003


def test_warm_sandbox_answers_like_a_cold_one(graph: Graph) -> None:
    """A sandbox whose items were rendered up front serves the same bytes as a lazy one."""
    warm = Sandbox(graph, CONFIG, clock=FakeClock())
    warm.warm()
    cold = Sandbox(graph, CONFIG, clock=FakeClock())
    body = json.dumps({"From_Account": most_fans(graph), "FollowType": 1}).encode()
    assert warm.handle("POST", FOLLOW_GET, query(), body) == cold.handle(
        "POST", FOLLOW_GET, query(), body
    )


def test_hostile_answers_carry_escapes_and_decode_to_the_truth(hostile: Graph) -> None:
    """A page holding hostile users is UTF-8 with ``\\ud83d`` escapes; decoded exactly, its
    items are the graph's values (a 5000-digit integer as its digits)."""
    sandbox = Sandbox(hostile, CONFIG, clock=FakeClock())
    evil = set(hostile.hostile_users) | set(HOSTILE_IDS)
    account = next(a for a in hostile.accounts if evil & set(hostile.list_ids(a, 2)))
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:  # one item a page: every cursor is keyed on one (maybe hostile) id
        body = {"From_Account": account, "FollowType": 2, "WantNum": 1, "StartCursor": cursor}
        response = sandbox.handle("POST", FOLLOW_GET, query(), json.dumps(body).encode())
        assert response.body.decode("utf-8")
        answer = parse_json(response.body)
        assert answer["ErrorCode"] == 0
        items.extend(answer["FollowItem"])
        cursor = answer["NextCursor"]
        if not cursor:
            break
    assert [i["To_Account"] for i in items] == hostile.list_ids(account, 2)
    for item in items:
        if item["To_Account"] in evil:
            seq, tags = hostile.profile(item["To_Account"])
            assert item["profile_sequence"] == seq
            assert item["ProfileItem"] == plain(tags)


def test_every_user_of_a_hostile_graph_renders(hostile: Graph) -> None:
    """warm renders every user (surrogates, the 5000-digit integer): the bytes match a cold
    sandbox's, and the body carries the surrogate as an escape."""
    warm, cold = Sandbox(hostile, CONFIG, FakeClock()), Sandbox(hostile, CONFIG, FakeClock())
    warm.warm()
    bodies = []
    for evil in [*hostile.hostile_users[:4], *HOSTILE_IDS]:
        account = next(a for a in hostile.accounts if evil in hostile.list_ids(a, 1))
        body = json.dumps({"From_Account": account, "FollowType": 1, "WantNum": 1000}).encode()
        answer = warm.handle("POST", FOLLOW_GET, query(), body)
        assert answer == cold.handle("POST", FOLLOW_GET, query(), body)
        bodies.append(answer.body)
    assert all(body.decode("utf-8") for body in bodies)
    assert any(b"\\ud83d" in body for body in bodies)
    assert any(b"\\u0000" in body for body in bodies)


def cursors(sandbox: Sandbox, account: str, want: int, calls: int) -> list[str]:
    """The NextCursor of each of ``calls`` follow_get calls, following the cursors."""
    seen, cursor = [], ""
    for _ in range(calls):
        body = {"From_Account": account, "FollowType": 1, "WantNum": want, "StartCursor": cursor}
        cursor = call(sandbox, body)["NextCursor"]
        seen.append(cursor)
        if not cursor:
            break
    return seen


@pytest.mark.parametrize("pages", [2, 3, 5])
def test_loop_account_lists_point_back_at_their_second_page(graph: Graph, pages: int) -> None:
    """A loop account's last page answers the first page's NextCursor, the same string."""
    account = most_fans(graph)
    size = len(graph.list_ids(account, 1))
    want = -(-size // pages)
    sandbox = Sandbox(graph, SandboxConfig(loop_accounts=(account,)), clock=FakeClock())
    seen = cursors(sandbox, account, want, 3 * pages)
    assert len(seen) == 3 * pages
    assert seen[pages - 1] == seen[0]
    assert seen == [seen[i % (pages - 1)] for i in range(len(seen))]
    assert len(set(seen)) == pages - 1


def test_loop_accounts_leave_one_page_lists_and_other_accounts_alone(graph: Graph) -> None:
    """A one-page list of a loop account ends; other accounts' lists end."""
    account = most_fans(graph)
    sandbox = Sandbox(graph, SandboxConfig(loop_accounts=(account,)), clock=FakeClock())
    assert cursors(sandbox, account, 1000, 5) == [""]
    other = graph.accounts[0]
    assert cursors(sandbox, other, 2, 1000)[-1] == ""
