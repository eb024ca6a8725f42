"""The sandbox behaves like Tencent's follow API and serves a realistic, deterministic graph."""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from etl.cli import build_parser
from etl.cli.commands import _sandbox_config
from etl.errors import MalformedAnswer
from etl.sandbox import Graph, Sandbox, SandboxConfig, serve_in_thread
from etl.sandbox.admin import list_digest
from etl.sandbox.faults import DEFAULT_FAULT_KINDS, FAULT_KINDS, MALFORMED_KINDS
from etl.sandbox.graph import TIME_END, TIME_START
from etl.sandbox.hostile import HOSTILE_IDS, BigNumber
from etl.tencent import usersig
from etl.tencent.exact_json import parse_json
from etl.tencent.page import parse_page

NOW = 1_750_000_000
CONFIG = SandboxConfig()
FOLLOW_GET = "/v4/follow/follow_get"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def query(*, config: SandboxConfig = CONFIG, **overrides: str) -> dict[str, str]:
    """Valid URL parameters for config's administrator, with some replaced."""
    sig = usersig.generate(config.sdkappid, config.admin, config.secret_key, now=NOW)
    params = {
        "sdkappid": str(config.sdkappid),
        "identifier": config.admin,
        "usersig": sig,
        "random": "12345",
        "contenttype": "json",
    }
    params.update(overrides)
    return params


def call(
    sandbox: Sandbox, body: object, params: dict[str, str] | None = None, path: str = FOLLOW_GET
) -> dict[str, Any]:
    """POST body to the sandbox and decode the JSON answer."""
    response = sandbox.handle(
        "POST", path, params or query(config=sandbox.config), json.dumps(body).encode()
    )
    assert response.status == 200
    decoded: dict[str, Any] = json.loads(response.body)
    return decoded


def page_all(sandbox: Sandbox, account: str, follow_type: int, want: int) -> list[dict[str, Any]]:
    """Every item of one list, paged with the service's cursors."""
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        body = {"From_Account": account, "FollowType": follow_type, "WantNum": want}
        answer = call(sandbox, {**body, "StartCursor": cursor})
        assert answer["ErrorCode"] == 0, answer
        items.extend(answer["FollowItem"])
        cursor = answer["NextCursor"]
        if not cursor:
            return items


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph(600, seed=3)


@pytest.fixture(scope="module")
def big_graph() -> Graph:
    return Graph(20_000, seed=1)


@pytest.fixture
def sandbox(graph: Graph) -> Sandbox:
    return Sandbox(graph, CONFIG, clock=FakeClock())


def most_fans(graph: Graph) -> str:
    """The account with the longest fan list."""
    return max(graph.accounts, key=lambda a: len(graph.list_ids(a, 1)))


# ---- the graph ---------------------------------------------------------------------------


def test_same_seed_gives_same_edges_and_profiles() -> None:
    """Two graphs built from the same seed are identical, follow times and profiles included."""
    a, b = Graph(400, seed=9), Graph(400, seed=9)
    assert a.truth(a.accounts, (1, 2)) == b.truth(b.accounts, (1, 2))
    assert [a.profile(u) for u in a.accounts] == [b.profile(u) for u in b.accounts]


def test_different_seed_gives_different_graph() -> None:
    """Another seed gives other edges and other profiles."""
    a, b = Graph(400, seed=9), Graph(400, seed=10)
    assert a.truth(a.accounts, (2,)) != b.truth(b.accounts, (2,))
    assert [a.profile(u) for u in a.accounts] != [b.profile(u) for u in b.accounts]


def test_big_graph_has_heavy_tailed_fans(big_graph: Graph) -> None:
    """The most followed account of a 20,000-user graph has thousands of fans."""
    summary = big_graph.stats_summary()
    assert 2_000 <= summary["max_fans"] < 20_000
    assert 200_000 <= summary["edges"] <= 400_000


def test_top_accounts_of_big_graph_have_big_lists(big_graph: Graph) -> None:
    """The 200 accounts with most fans of a 20,000-user graph fill 1000-item pages at least
    half full on average, and even the 200th has hundreds of fans."""
    fans = sorted((big_graph.counts(a) or (0, 0, 0))[0] for a in big_graph.accounts)[-200:]
    calls = sum(-(-n // 1000) for n in fans)
    assert sum(fans) / calls >= 500
    assert fans[0] >= 300


def test_small_graph_lists_hold_tens_of_items() -> None:
    """A 2,000-user graph's lists hold about ten items on average, the small-lists case."""
    graph = Graph(2000, seed=1)
    sizes = [n for a in graph.accounts for n in graph.counts(a) or ()]
    assert 5 <= sum(sizes) / len(sizes) <= 30


def test_mutual_follows_are_a_realistic_share(big_graph: Graph) -> None:
    """Between 10% and 50% of follow edges are part of a mutual pair."""
    summary = big_graph.stats_summary()
    assert 0.10 <= 2 * summary["mutual_pairs"] / summary["edges"] <= 0.50


def test_no_self_follows_and_times_in_range(graph: Graph) -> None:
    """Nobody follows themselves and initial follow times fall in 2023..2025."""
    for account in graph.accounts:
        follows = graph.list_items(account, 2)
        assert account not in follows
        assert all(TIME_START <= t < TIME_END for t in follows.values())


def test_mutual_list_is_fans_and_follows_intersection(graph: Graph) -> None:
    """The mutual list holds exactly the users in both the fans and the follows list."""
    for account in graph.accounts[:200]:
        fans, follows = graph.list_items(account, 1), graph.list_items(account, 2)
        mutual = graph.list_items(account, 3)
        assert set(mutual) == set(fans) & set(follows)
        assert all(t == max(fans[u], follows[u]) for u, t in mutual.items())


def test_profiles_have_varied_tag_subsets(graph: Graph) -> None:
    """Users carry different subsets of standard tags, some custom tags and non-ASCII nicks."""
    tag_sets = {tuple(t["Tag"] for t in graph.profile(u)[1]) for u in graph.accounts}
    every_tag = {tag for tags in tag_sets for tag in tags}
    nicks = [
        t["Value"]
        for u in graph.accounts
        for t in graph.profile(u)[1]
        if t["Tag"] == "Tag_Profile_IM_Nick"
    ]
    assert len(tag_sets) > 20
    assert "Tag_Profile_Custom_Hobby" in every_tag
    assert any(not str(n).isascii() for n in nicks)


def test_mutate_is_deterministic_and_changes_lists_and_profiles() -> None:
    """The same mutate seed on the same graph gives the same new state, different from before."""
    a, b = Graph(400, seed=4), Graph(400, seed=4)
    before = a.truth(a.accounts, (1, 2, 3))
    sequences = [a.profile(u)[0] for u in a.accounts]
    summary = a.mutate(7, delete=3)
    assert summary == b.mutate(7, delete=3)
    assert a.truth(a.accounts, (1, 2, 3)) == b.truth(b.accounts, (1, 2, 3))
    assert [a.profile(u) for u in a.accounts] == [b.profile(u) for u in b.accounts]
    assert a.truth(a.accounts, (1, 2, 3)) != before
    assert summary["profiles_changed"] == 20
    assert sum(a.profile(u)[0] != s for u, s in zip(a.accounts, sequences, strict=False)) > 0
    assert a.generation == 1


def test_mutate_follows_are_newer_and_deleted_accounts_vanish() -> None:
    """New follows are dated after every old one; deleted accounts disappear everywhere."""
    graph = Graph(400, seed=5)
    old = graph.truth(graph.accounts, (2,))
    summary = graph.mutate(1, unfollow=0.0, follow=0.05, profile=0.0, delete=5)
    new = graph.truth(graph.accounts, (2,))
    added = [t for (a, _), items in new.items() for u, t in items.items() if u not in old[a, 2]]
    deleted = [u for u in (f"user_{i:06d}" for i in range(400)) if not graph.exists(u)]
    assert summary["deleted"] == 5
    assert len(deleted) == 5
    assert added
    assert min(added) > TIME_END
    assert not any(u in items for items in new.values() for u in deleted)
    assert all((u, 2) not in new and u not in graph.accounts for u in deleted)


# ---- follow_get --------------------------------------------------------------------------


def test_paging_returns_exactly_the_list(sandbox: Sandbox, graph: Graph) -> None:
    """Paging with a small WantNum returns every item once, in ascending To_Account order."""
    account = most_fans(graph)
    items = page_all(sandbox, account, 1, want=7)
    ids = [item["To_Account"] for item in items]
    assert ids == sorted(set(ids))
    assert {item["To_Account"]: item["FollowTime"] for item in items} == graph.list_items(
        account, 1
    )


def test_paging_survives_a_change_between_pages() -> None:
    """A cursor issued before a mutate resumes after its last id: no repeats, nothing skipped."""
    graph = Graph(300, seed=6)
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    account = most_fans(graph)
    first = call(sandbox, {"From_Account": account, "FollowType": 1, "WantNum": 5})
    last = first["FollowItem"][-1]["To_Account"]
    graph.mutate(2, unfollow=0.2, follow=0.2)
    rest: list[str] = []
    cursor = first["NextCursor"]
    while cursor:
        body = {"From_Account": account, "FollowType": 1, "WantNum": 5, "StartCursor": cursor}
        answer = call(sandbox, body)
        rest.extend(item["To_Account"] for item in answer["FollowItem"])
        cursor = answer["NextCursor"]
    assert rest == [uid for uid in graph.list_ids(account, 1) if uid > last]


def test_items_carry_current_profiles(sandbox: Sandbox, graph: Graph) -> None:
    """Each item has the To_Account's profile tags and profile_sequence."""
    item = page_all(sandbox, most_fans(graph), 1, want=1000)[0]
    sequence, tags = graph.profile(item["To_Account"])
    assert item["ProfileItem"] == tags
    assert item["profile_sequence"] == sequence


def test_answers_follow_profile_changes_after_mutate() -> None:
    """After a mutate that edits every profile, follow_get serves the new sequences and tags."""
    graph = Graph(300, seed=2)
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    account = most_fans(graph)
    before = page_all(sandbox, account, 1, want=1000)
    graph.mutate(1, unfollow=0.0, follow=0.0, profile=1.0)
    after = page_all(sandbox, account, 1, want=1000)
    assert [i["To_Account"] for i in after] == [i["To_Account"] for i in before]
    for item in after:
        assert (item["profile_sequence"], item["ProfileItem"]) == graph.profile(item["To_Account"])
    pairs = zip(after, before, strict=True)
    assert all(new["profile_sequence"] > old["profile_sequence"] for new, old in pairs)


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


# ---- authentication, rate and faults -----------------------------------------------------


def test_wrong_sdkappid_answers_60005(sandbox: Sandbox) -> None:
    """An SDKAppID other than the app's answers 60005."""
    params = query(sdkappid="1400000002")
    assert (
        call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, params)["ErrorCode"]
        == 60005
    )


@pytest.mark.parametrize("bad", ["-1", "4294967296", "x", ""])
def test_bad_random_answers_60009_without_echoing_usersig(sandbox: Sandbox, bad: str) -> None:
    """A random outside 0..4294967295 answers 60009, naming the parameter, not the UserSig."""
    params = query(random=bad)
    answer = call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, params)
    assert answer["ErrorCode"] == 60009
    assert "random" in answer["ErrorInfo"]
    assert params["usersig"] not in json.dumps(answer)


def test_missing_parameter_answers_60009(sandbox: Sandbox) -> None:
    """A URL without contenttype answers 60009."""
    params = query()
    del params["contenttype"]
    assert call(sandbox, {}, params)["ErrorCode"] == 60009


def test_usersig_with_wrong_secret_answers_70009(sandbox: Sandbox) -> None:
    """A UserSig signed with another secret key answers 70009."""
    sig = usersig.generate(CONFIG.sdkappid, CONFIG.admin, "another-secret", now=NOW)
    answer = call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, query(usersig=sig))
    assert answer["ErrorCode"] == 70009


def test_expired_usersig_answers_70001(sandbox: Sandbox) -> None:
    """A UserSig past its expiry answers 70001."""
    sig = usersig.generate(
        CONFIG.sdkappid, CONFIG.admin, CONFIG.secret_key, now=NOW - 100, expire=50
    )
    answer = call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, query(usersig=sig))
    assert answer["ErrorCode"] == 70001


def test_non_admin_identifier_answers_30004(sandbox: Sandbox) -> None:
    """A valid UserSig for an ordinary user answers 30004."""
    sig = usersig.generate(CONFIG.sdkappid, "alice", CONFIG.secret_key, now=NOW)
    params = query(identifier="alice", usersig=sig)
    assert (
        call(sandbox, {"From_Account": "user_000001", "FollowType": 1}, params)["ErrorCode"]
        == 30004
    )


def test_usersig_verified_once_still_expires(graph: Graph) -> None:
    """A UserSig accepted earlier answers 70001 once its expiry has passed."""
    clock = FakeClock()
    sandbox = Sandbox(graph, CONFIG, clock=clock)
    sig = usersig.generate(CONFIG.sdkappid, CONFIG.admin, CONFIG.secret_key, now=NOW, expire=60)
    body = {"From_Account": "user_000001", "FollowType": 2}
    assert call(sandbox, body, query(usersig=sig))["ErrorCode"] == 0
    clock.now += 61
    assert call(sandbox, body, query(usersig=sig))["ErrorCode"] == 70001


def test_verified_usersig_is_not_accepted_for_another_identifier(graph: Graph) -> None:
    """A UserSig accepted for the administrator answers 70013 when sent for another id."""
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    body = {"From_Account": "user_000001", "FollowType": 2}
    assert call(sandbox, body)["ErrorCode"] == 0
    assert call(sandbox, body, query(identifier="alice"))["ErrorCode"] == 70013


def test_rate_limit_answers_60007_within_a_second(graph: Graph) -> None:
    """Past `rate` accepted calls in one second answers 60007; rejected calls do not count."""
    clock = FakeClock()
    sandbox = Sandbox(graph, SandboxConfig(rate=3), clock=clock)
    body = {"From_Account": "user_000001", "FollowType": 2}
    codes = []
    for _ in range(5):
        codes.append(call(sandbox, body)["ErrorCode"])
        clock.now += 0.1
    assert codes == [0, 0, 0, 60007, 60007]
    clock.now += 0.6  # the first accepted call is now just over a second old
    assert call(sandbox, body)["ErrorCode"] == 0
    assert sandbox.max_calls_in_window(1.0) == 5
    assert sandbox.max_calls_in_window(1.0, accepted_only=True) == 3


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("30006", 200, 30006), ("30007", 200, 30007), ("502", 502, None), ("503", 503, None)],
)
def test_fault_kind_is_injected(graph: Graph, kind: str, status: int, code: int | None) -> None:
    """With faults=1.0 and one kind, every call fails in that way."""
    sandbox = Sandbox(graph, SandboxConfig(faults=1.0, fault_kinds=(kind,)), clock=FakeClock())
    body = json.dumps({"From_Account": "user_000001", "FollowType": 2}).encode()
    response = sandbox.handle("POST", FOLLOW_GET, query(), body)
    assert response.status == status
    if code is not None:
        assert json.loads(response.body)["ErrorCode"] == code
    assert sandbox.stats()["by_fault"] == {kind: 1}


def test_truncated_fault_cuts_the_real_answer(graph: Graph, sandbox: Sandbox) -> None:
    """A truncated answer is the first half of the real one and is flagged for the transport."""
    faulty = Sandbox(graph, SandboxConfig(faults=1.0, fault_kinds=("truncated",)), FakeClock())
    body = json.dumps({"From_Account": "user_000001", "FollowType": 2}).encode()
    real = sandbox.handle("POST", FOLLOW_GET, query(), body)
    cut = faulty.handle("POST", FOLLOW_GET, query(), body)
    assert cut.truncated
    assert cut.full_length == len(real.body)
    assert cut.body == real.body[: len(real.body) // 2]


def test_slow_fault_is_a_delay_on_the_real_answer(graph: Graph, sandbox: Sandbox) -> None:
    """A slow answer is the real answer with slow_ms of delay, not slept inside handle."""
    config = SandboxConfig(faults=1.0, fault_kinds=("slow",), slow_ms=4000)
    slow = Sandbox(graph, config, FakeClock())
    body = json.dumps({"From_Account": "user_000001", "FollowType": 2}).encode()
    response = slow.handle("POST", FOLLOW_GET, query(), body)
    assert response.delay == 4.0
    assert response.body == sandbox.handle("POST", FOLLOW_GET, query(), body).body


def test_config_repr_hides_secret_key() -> None:
    """The secret key never shows in the config's repr."""
    assert CONFIG.secret_key not in repr(SandboxConfig())


# ---- follow_get_info, admin routes, transports -------------------------------------------


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


def test_warm_sandbox_answers_like_a_cold_one(graph: Graph) -> None:
    """A sandbox whose items were rendered up front serves the same bytes as a lazy one."""
    warm = Sandbox(graph, CONFIG, clock=FakeClock())
    warm.warm()
    cold = Sandbox(graph, CONFIG, clock=FakeClock())
    body = json.dumps({"From_Account": most_fans(graph), "FollowType": 1}).encode()
    assert warm.handle("POST", FOLLOW_GET, query(), body) == cold.handle(
        "POST", FOLLOW_GET, query(), body
    )


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


def test_mock_transport_serves_an_httpx_client(sandbox: Sandbox, graph: Graph) -> None:
    """An httpx.Client on the sandbox's MockTransport gets the same answers as handle."""
    with httpx.Client(transport=sandbox.transport(), base_url="https://sandbox") as client:
        account = most_fans(graph)
        body = {"From_Account": account, "FollowType": 1, "WantNum": 3}
        answer = client.post(FOLLOW_GET, params=query(), json=body).json()
    assert [i["To_Account"] for i in answer["FollowItem"]] == graph.list_ids(account, 1)[:3]


def test_real_socket_paging_and_truncation(graph: Graph) -> None:
    """Over a real socket a list pages completely, and a truncated answer is an incomplete read."""
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    account = most_fans(graph)
    items: dict[str, int] = {}
    with serve_in_thread(sandbox) as server, httpx.Client(base_url=server.url) as client:
        cursor = ""
        while True:
            body = {"From_Account": account, "FollowType": 1, "WantNum": 50, "StartCursor": cursor}
            answer = client.post(FOLLOW_GET, params=query(), json=body).json()
            items.update((i["To_Account"], i["FollowTime"]) for i in answer["FollowItem"])
            cursor = answer["NextCursor"]
            if not cursor:
                break
    assert items == graph.list_items(account, 1)

    faulty = Sandbox(graph, SandboxConfig(faults=1.0, fault_kinds=("truncated",)), FakeClock())
    with serve_in_thread(faulty) as server, httpx.Client(base_url=server.url) as client:
        body = {"From_Account": account, "FollowType": 1}
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(FOLLOW_GET, params=query(), json=body)


def raw_exchange(server_url: str, *requests: bytes) -> bytes:
    """Send raw bytes on one connection and read until the server closes it."""
    host, port = server_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for request in requests:
            sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def api_request(sandbox: Sandbox, *, close: bool = False, expect: bool = False) -> bytes:
    """A raw HTTP/1.1 follow_get request, as a client would write it."""
    body = b'{"From_Account":"user_000001","FollowType":2}'
    target = FOLLOW_GET + "?" + urlencode(query(config=sandbox.config))
    headers = [f"POST {target} HTTP/1.1", "Host: sandbox", f"Content-Length: {len(body)}"]
    if close:
        headers.append("Connection: close")
    if expect:
        headers.append("Expect: 100-continue")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def test_server_keeps_the_connection_alive(sandbox: Sandbox) -> None:
    """Requests on one connection get one answer each; the connection closes when asked."""
    with serve_in_thread(sandbox) as server:
        raw = raw_exchange(server.url, api_request(sandbox), api_request(sandbox, close=True))
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert raw.count(b'"ErrorCode":0') == 2
    assert raw.count(b"Connection: close\r\n") == 1


def test_server_answers_expect_100_continue(sandbox: Sandbox) -> None:
    """A request announcing Expect: 100-continue gets the interim answer before its body."""
    head, _, body = api_request(sandbox, expect=True, close=True).partition(b"\r\n\r\n")
    with serve_in_thread(sandbox) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(head + b"\r\n\r\n")
            interim = sock.recv(1024)
            sock.sendall(body)
            rest = b"".join(iter(lambda: sock.recv(65536), b""))
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"ErrorCode":0' in rest


def test_server_rejects_a_malformed_request(sandbox: Sandbox) -> None:
    """A request line that is not HTTP, or a bad Content-Length, answers 400 and closes."""
    with serve_in_thread(sandbox) as server:
        garbage = raw_exchange(server.url, b"hello there\r\n\r\n")
        length = raw_exchange(server.url, b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert length.startswith(b"HTTP/1.1 400 ")


def test_server_latency_holds_up_no_other_connection(graph: Graph) -> None:
    """While one connection waits out the sandbox's latency, another is answered at once."""
    slow = Sandbox(graph, SandboxConfig(latency_ms=800), clock=FakeClock())
    with serve_in_thread(slow) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with (
            socket.create_connection((host, int(port)), timeout=5) as waiting,
            httpx.Client(base_url=server.url) as other,
        ):
            waiting.sendall(api_request(slow, close=True))
            started = time.monotonic()
            assert other.get("/sandbox/stats").status_code == 200
            quick = time.monotonic() - started
            answer = b"".join(iter(lambda: waiting.recv(65536), b""))
            slow_wait = time.monotonic() - started
    assert quick < 0.5
    assert slow_wait >= 0.7
    assert b'"ErrorCode":0' in answer


# ---- the ordinary graph is today's ---------------------------------------------------------


def fingerprint(graph: Graph) -> str:
    """A digest of every list (with follow times) and every profile of a graph."""
    digest = hashlib.sha256()
    for (account, follow_type), items in sorted(graph.truth(graph.accounts, (1, 2, 3)).items()):
        digest.update(json.dumps([account, follow_type, sorted(items.items())]).encode())
    for user in graph.accounts:
        digest.update(json.dumps(graph.profile(user), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def test_the_ordinary_graph_is_the_one_earlier_versions_served() -> None:
    """Without hostile data a graph, its mutations and its answers' bytes are what they were
    before the hostile options existed (digests taken from that version)."""
    graph = Graph(300, seed=9, hostile=0.0)
    assert fingerprint(graph) == "0e4f63bdd45f9b5f"
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    account = most_fans(graph)
    body = json.dumps({"From_Account": account, "FollowType": 1, "WantNum": 1000}).encode()
    answer = sandbox.handle("POST", FOLLOW_GET, query(), body).body
    assert hashlib.sha256(answer).hexdigest()[:16] == "ec57b812d1a3f680"
    graph.mutate(3, delete=2)
    assert fingerprint(graph) == "7d4275bf06c6c8b6"


# ---- hostile data ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile() -> Graph:
    return Graph(600, seed=3, hostile=0.02)


def profile_values(graph: Graph, users: list[str]) -> list[tuple[int, dict[str, object]]]:
    """(sequence, Tag -> Value) of each user."""
    return [
        (seq, {str(tag["Tag"]): tag["Value"] for tag in tags})
        for seq, tags in map(graph.profile, users)
    ]


def test_hostile_share_of_users_get_hostile_profiles(hostile: Graph) -> None:
    """2% of 600 users carry NUL, lone surrogates, 64-bit-plus and negative sequences, nested
    tags, integers past 2**64, one 5000-digit integer, one 200,000-character string and
    control characters."""
    users = hostile.hostile_users
    assert len(users) == 12
    profiles = profile_values(hostile, users)
    sequences = [seq for seq, _ in profiles]
    nicks = [str(values["Tag_Profile_IM_Nick"]) for _, values in profiles]
    assert sum(2**63 < seq < 2**64 for seq in sequences) >= 6
    assert any(seq > 2**64 for seq in sequences)
    assert any(seq < 0 for seq in sequences)
    assert any("\x00" in nick for nick in nicks)
    assert any("\ud83d" in nick for nick in nicks)
    assert any("\udc00" in nick for nick in nicks)
    assert all(values["Tag_Profile_IM_Level"] > 2**64 for _, values in profiles)  # type: ignore[operator]
    assert all("\x1b" in str(values["Tag_Profile_IM_SelfSignature"]) for _, values in profiles)
    first = profiles[0][1]
    assert first["Tag_Profile_Custom_Obj"] == {
        "a": [1, True, None, {"b": "c"}],
        "n": 2**70,
        "f": 0.5,
    }
    assert first["Tag_Profile_Custom_Bool"] is True
    assert first["Tag_Profile_Custom_Null"] is None
    huge = first["Tag_Profile_Custom_Huge"]
    assert isinstance(huge, BigNumber)
    assert len(huge.digits) == 5000
    assert len(str(profiles[1][1]["Tag_Profile_Custom_Long"])) == 200_000


def test_hostile_graph_is_deterministic_and_mutates() -> None:
    """The same seed gives the same hostile graph; a mutate moves hostile sequences up too."""
    a, b = Graph(300, seed=4, hostile=0.05), Graph(300, seed=4, hostile=0.05)
    assert a.hostile_users == b.hostile_users
    assert profile_values(a, a.hostile_users) == profile_values(b, b.hostile_users)
    assert a.truth(a.accounts, (1, 2, 3)) == b.truth(b.accounts, (1, 2, 3))
    before = profile_values(a, a.hostile_users)
    a.mutate(1, profile=1.0)
    after = profile_values(a, a.hostile_users)
    assert all(new[0] > old[0] for new, old in zip(after, before, strict=True))


def test_hostile_ids_are_only_in_other_users_lists(hostile: Graph) -> None:
    """Users with NUL or lone-surrogate ids are fans, follows and mutuals of ordinary users,
    never accounts, and /sandbox/accounts does not list them."""
    sandbox = Sandbox(hostile, CONFIG, clock=FakeClock())
    listed = json.loads(sandbox.handle("GET", "/sandbox/accounts", {}, b"").body)["accounts"]
    assert listed == hostile.accounts
    assert len(listed) == 600
    for evil in HOSTILE_IDS:
        assert evil not in listed
        for follow_type in (1, 2, 3):
            assert any(evil in hostile.list_ids(a, follow_type) for a in listed)


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


def plain(value: object) -> object:
    """A graph value as an exact JSON decoder gives it back (BigNumber -> its digits)."""
    if isinstance(value, BigNumber):
        return value.digits
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


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


def test_hostile_is_a_share() -> None:
    """hostile outside 0..1 is refused."""
    with pytest.raises(ValueError, match="hostile"):
        Graph(10, hostile=1.5)


# ---- malformed answers -------------------------------------------------------------------


def test_malformed_is_a_fault_kind_but_not_a_default_one() -> None:
    """faults= alone draws from today's kinds; "malformed" must be asked for."""
    assert "malformed" in FAULT_KINDS
    assert "malformed" not in DEFAULT_FAULT_KINDS
    assert SandboxConfig().fault_kinds == DEFAULT_FAULT_KINDS
    with pytest.raises(ValueError, match="malformed_kinds"):
        SandboxConfig(malformed_kinds=("nonsense",))


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_fault_is_ok_but_not_a_page(graph: Graph, kind: str) -> None:
    """Each malformed shape is HTTP 200 (ErrorCode 0 where it is JSON) and fails the page
    contract."""
    config = SandboxConfig(faults=1.0, fault_kinds=("malformed",), malformed_kinds=(kind,))
    sandbox = Sandbox(graph, config, clock=FakeClock())
    body = json.dumps({"From_Account": most_fans(graph), "FollowType": 1, "WantNum": 3})
    response = sandbox.handle("POST", FOLLOW_GET, query(), body.encode())
    assert response.status == 200
    assert sandbox.stats()["by_fault"] == {"malformed": 1}
    if kind == "html":
        assert response.content_type == "text/html"
    if kind not in ("html", "empty"):
        answer = json.loads(response.body)
        assert (answer["ActionStatus"], answer["ErrorCode"]) == ("OK", 0)
    with pytest.raises(MalformedAnswer):
        parse_page(parse_json(response.body))


def test_malformed_follow_get_info_is_bare_html_or_empty(graph: Graph) -> None:
    """follow_get_info hit by a malformed fault answers OK without FollowInfo, or not JSON."""
    config = SandboxConfig(faults=1.0, fault_kinds=("malformed",), malformed_kinds=("items-null",))
    sandbox = Sandbox(graph, config, clock=FakeClock())
    body = {"From_Account": "user_000001", "To_Account": ["user_000001"]}
    answer = call(sandbox, body, path="/v4/follow/follow_get_info")
    assert answer == {"ActionStatus": "OK", "ErrorCode": 0}


def test_malformed_faults_follow_the_fault_seed(graph: Graph) -> None:
    """Two sandboxes with the same fault_seed give the same answers, call for call."""
    config = SandboxConfig(faults=0.5, fault_kinds=("malformed", "30006"), fault_seed=7)
    a, b = Sandbox(graph, config, FakeClock()), Sandbox(graph, config, FakeClock())
    body = json.dumps({"From_Account": most_fans(graph), "FollowType": 1, "WantNum": 2}).encode()
    first = [a.handle("POST", FOLLOW_GET, query(), body).body for _ in range(40)]
    assert first == [b.handle("POST", FOLLOW_GET, query(), body).body for _ in range(40)]
    assert len(set(first)) > 3


# ---- looping cursors ---------------------------------------------------------------------


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


# ---- outage ------------------------------------------------------------------------------


def test_outage_answers_every_call_with_a_status_until_ended(sandbox: Sandbox) -> None:
    """POST /sandbox/outage {"status": 503} makes every API call a 503; null ends it."""
    get = json.dumps({"From_Account": "user_000001", "FollowType": 2}).encode()
    info = json.dumps({"From_Account": "user_000001", "To_Account": ["user_000001"]}).encode()
    started = sandbox.handle("POST", "/sandbox/outage", {}, b'{"status": 503}')
    assert json.loads(started.body) == {"outage": {"status": 503}}
    assert sandbox.handle("POST", FOLLOW_GET, query(), get).status == 503
    assert sandbox.handle("POST", "/v4/follow/follow_get_info", query(), info).status == 503
    assert sandbox.handle("GET", FOLLOW_GET, {}, b"").status == 503  # before any check
    state = json.loads(sandbox.handle("GET", "/sandbox/outage", {}, b"").body)
    assert state == {"outage": {"status": 503}}
    ended = sandbox.handle("POST", "/sandbox/outage", {}, b'{"status": null}')
    assert json.loads(ended.body) == {"outage": None}
    assert json.loads(sandbox.handle("POST", FOLLOW_GET, query(), get).body)["ErrorCode"] == 0
    assert sandbox.stats()["by_fault"] == {"outage": 3}


def test_outage_with_a_tencent_code(sandbox: Sandbox) -> None:
    """{"code": 30006} answers every authenticated call with that code; auth errors first."""
    sandbox.handle("POST", "/sandbox/outage", {}, b'{"code": 30006}')
    body = {"From_Account": "user_000001", "FollowType": 2}
    assert call(sandbox, body)["ErrorCode"] == 30006
    assert call(sandbox, body, query(sdkappid="1400000002"))["ErrorCode"] == 60005
    sandbox.handle("POST", "/sandbox/outage", {}, b"{}")
    assert call(sandbox, body)["ErrorCode"] == 0


@pytest.mark.parametrize(
    "bad", [b'{"status": 99}', b'{"status": "503"}', b'{"code": 0}', b'{"status": 503, "code": 1}',
            b'{"statis": 503}', b"[503]", b"{"],
)  # fmt: skip
def test_bad_outage_requests_answer_400(sandbox: Sandbox, bad: bytes) -> None:
    """An outage that is not one HTTP status or one error code is refused and changes nothing."""
    assert sandbox.handle("POST", "/sandbox/outage", {}, bad).status == 400
    assert sandbox.outage is None


# ---- the sandbox command's flags ---------------------------------------------------------


def sandbox_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["sandbox", *flags])


def test_sandbox_flags_reach_the_config() -> None:
    """--fault-kinds, --loop-account and --hostile are parsed and wired into the config."""
    args = sandbox_args(
        "--faults", "0.1", "--fault-kinds", "malformed, 30006", "--hostile", "0.05",
        "--loop-account", "user_000001", "--loop-account", "user_000002",
    )  # fmt: skip
    settings = SimpleNamespace(sdkappid=None, secret_key=None, admin="administrator")
    config = _sandbox_config(settings, args)  # type: ignore[arg-type]
    assert config.fault_kinds == ("malformed", "30006")
    assert config.loop_accounts == ("user_000001", "user_000002")
    assert args.hostile == 0.05
    assert _sandbox_config(settings, sandbox_args()).fault_kinds == DEFAULT_FAULT_KINDS  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "flags", [("--fault-kinds", "30006,bogus"), ("--fault-kinds", ","), ("--hostile", "2")]
)
def test_bad_sandbox_flags_are_usage_errors(
    flags: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown fault kind or a hostile share past 1 is exit 2 with the choices named."""
    with pytest.raises(SystemExit) as caught:
        sandbox_args(*flags)
    assert caught.value.code == 2
    assert f"argument {flags[0]}:" in capsys.readouterr().err


def test_degree_makes_a_sparser_graph_and_is_checked() -> None:
    """``degree`` sets the mean out-degree: 1 gives far fewer edges than the default 12, and a
    degree outside (0, 1000] is refused."""
    sparse = Graph(2000, seed=1, degree=1.0).stats_summary()
    default = Graph(2000, seed=1).stats_summary()
    assert sparse["edges"] < default["edges"] / 5
    assert sparse["edges"] > 0
    for bad in (0.0, -1.0, 1001.0):
        with pytest.raises(ValueError, match="degree"):
            Graph(10, degree=bad)


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


# ---- targeted faults ------------------------------------------------------------------------


def test_an_injected_empty_page_is_a_well_formed_last_page_once(sandbox: Sandbox) -> None:
    """POST /sandbox/inject "empty-page": the list's next call answers OK with no items and an
    empty NextCursor (indistinguishable in form from a list that emptied); the call after, and
    other lists, are answered as ever."""
    account = most_fans(sandbox.graph)
    spec = {"account": account, "type": 1, "kind": "empty-page"}
    assert sandbox.handle("POST", "/sandbox/inject", {}, json.dumps(spec).encode()).status == 200
    body = {"From_Account": account, "FollowType": 1, "WantNum": 10}
    assert call(sandbox, {"From_Account": account, "FollowType": 2})["ErrorCode"] == 0
    empty = call(sandbox, body)
    assert empty == {
        "FollowItem": [],
        "NextCursor": "",
        "ActionStatus": "OK",
        "ErrorCode": 0,
        "ErrorInfo": "",
        "ErrorDisplay": "",
    }
    assert len(call(sandbox, body)["FollowItem"]) == 10


def test_an_injected_30003_answers_as_many_calls_as_asked(sandbox: Sandbox) -> None:
    """inject(..., "30003", times=2): two calls of that list say the account does not exist."""
    account = most_fans(sandbox.graph)
    sandbox.inject(account, 1, "30003", times=2)
    body = {"From_Account": account, "FollowType": 1}
    assert [call(sandbox, body)["ErrorCode"] for _ in range(3)] == [30003, 30003, 0]


@pytest.mark.parametrize(
    "bad", [b'{"account": "a", "type": 4, "kind": "30003"}', b'{"account": "a", "type": 1}',
            b'{"account": "a", "type": 1, "kind": "503"}', b'{"account": "a", "type": 1, '
            b'"kind": "30003", "times": 0}', b"[1]", b"{"],
)  # fmt: skip
def test_bad_inject_requests_answer_400(sandbox: Sandbox, bad: bytes) -> None:
    """A targeted fault that is not one list, one known kind and a positive count is refused."""
    assert sandbox.handle("POST", "/sandbox/inject", {}, bad).status == 400
