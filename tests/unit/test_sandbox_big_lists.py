"""``Graph(big_lists=...)`` / ``sandbox --big-lists``: a few very long fans lists of synthetic
fans among the ordinary lists, served, counted and checked like every other list."""

from __future__ import annotations

import json

import pytest

from etl.cli import build_parser
from etl.sandbox import Graph, Sandbox, SandboxConfig
from etl.sandbox.admin import list_digest
from etl.sandbox.graph import BIG_FAN_PREFIX
from tests.unit.sandbox_helpers import FakeClock, call, page_all

CONFIG = SandboxConfig()
FOLLOW_GET_INFO = "/v4/follow/follow_get_info"
SIZES = (2500, 1200)


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph(400, seed=5, big_lists=SIZES)


def test_big_accounts_get_that_many_extra_fans(graph: Graph) -> None:
    """Each chosen account's fans list is its own fans plus N synthetic ones, ids sorted last."""
    plain = Graph(400, seed=5)
    assert list(graph.big_accounts.values()) == list(SIZES)
    for account, size in graph.big_accounts.items():
        ids = graph.list_ids(account, 1)
        own = plain.list_ids(account, 1)
        assert ids[: len(own)] == own
        assert len(ids) == len(own) + size
        assert ids == sorted(ids)
        assert all(uid.startswith(BIG_FAN_PREFIX) for uid in ids[len(own) :])
        assert graph.counts(account) == (len(ids), *(plain.counts(account) or (0, 0, 0))[1:])
        assert graph.list_ids(account, 3) == plain.list_ids(account, 3)


def test_every_other_list_is_the_ordinary_graphs(graph: Graph) -> None:
    """The option changes only the big accounts' fans lists: other lists, follow times and
    profiles are those of the graph without it."""
    plain = Graph(400, seed=5)
    big = set(graph.big_accounts)
    for account in plain.accounts:
        for follow_type in (1, 2, 3):
            if follow_type == 1 and account in big:
                continue
            assert graph.list_items(account, follow_type) == plain.list_items(account, follow_type)
    assert graph.profile(plain.accounts[7]) == plain.profile(plain.accounts[7])


def test_paging_serves_the_whole_big_list_and_the_truth_matches(graph: Graph) -> None:
    """Paged with the service's cursors (pages straddling the ordinary/synthetic boundary),
    the big list comes back exactly; follow_get_info and the truth digest agree with it."""
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    account = next(iter(graph.big_accounts))
    items = page_all(sandbox, account, 1, want=333)
    pairs = {item["To_Account"]: item["FollowTime"] for item in items}
    assert len(pairs) == len(items) == len(graph.list_ids(account, 1))
    assert pairs == graph.list_items(account, 1)
    fan = items[-1]
    assert fan["ProfileItem"] == [{"Tag": "Tag_Profile_IM_Nick", "Value": "fan"}]
    assert fan["profile_sequence"] == 1
    assert graph.follow_time(fan["To_Account"], account) == fan["FollowTime"]

    info = call(sandbox, {"From_Account": account, "To_Account": [account]}, path=FOLLOW_GET_INFO)
    assert info["FollowInfo"][0]["FollowerCount"] == len(items)
    digest = json.loads(
        sandbox.handle(
            "POST", "/sandbox/truth-digest", {}, json.dumps({"accounts": [account]}).encode()
        ).body
    )["lists"][f"{account}/1"]
    assert digest == {"count": len(items), "digest": list_digest(pairs.items())}
    top = json.loads(sandbox.handle("GET", "/sandbox/accounts", {"top": "2"}, b"").body)
    assert top["accounts"] == list(graph.big_accounts)


def test_synthetic_fans_are_not_accounts(graph: Graph) -> None:
    """A synthetic fan has no lists (30003) and is not among the accounts."""
    sandbox = Sandbox(graph, CONFIG, clock=FakeClock())
    fan = graph.list_ids(next(iter(graph.big_accounts)), 1)[-1]
    answer = call(sandbox, {"From_Account": fan, "FollowType": 2})
    assert answer["ErrorCode"] == 30003
    assert fan not in graph.accounts
    assert graph.stats_summary()["edges"] == Graph(400, seed=5).stats_summary()["edges"] + sum(
        SIZES
    )


def test_mutate_keeps_synthetic_fans_and_delete_removes_them() -> None:
    """mutate leaves synthetic fans alone; deleting their account takes them with it."""
    graph = Graph(300, seed=2, big_lists=(500,))
    account = next(iter(graph.big_accounts))
    fans = graph.list_ids(account, 1)[-500:]
    graph.mutate(1)
    assert graph.list_ids(account, 1)[-500:] == fans
    while graph.exists(account):
        graph.mutate(2, delete=50)
    assert graph.view(account, 1) is None
    assert graph.stats_summary()["max_fans"] < 500


def test_cli_option() -> None:
    """--big-lists takes comma-separated counts; bad ones are usage errors."""
    parser = build_parser()
    args = parser.parse_args(["sandbox", "--big-lists", "200000, 50_000"])
    assert args.big_lists == (200_000, 50_000)
    assert parser.parse_args(["sandbox"]).big_lists == ()
    for bad in ("", "0", "x", "10000000"):
        with pytest.raises(SystemExit):
            parser.parse_args(["sandbox", "--big-lists", bad])
    with pytest.raises(ValueError, match="big_lists"):
        Graph(2, big_lists=(1, 1, 1))
