"""The sandbox's generated world: a realistic, deterministic graph, profiles, hostile data."""

from __future__ import annotations

import hashlib
import json

import pytest

from etl.sandbox import Graph, Sandbox
from etl.sandbox.graph import TIME_END, TIME_START
from etl.sandbox.hostile import HOSTILE_IDS, BigNumber
from tests.unit.sandbox_helpers import (
    CONFIG,
    FOLLOW_GET,
    FakeClock,
    most_fans,
    profile_values,
    query,
)


@pytest.fixture(scope="module")
def big_graph() -> Graph:
    return Graph(20_000, seed=1)


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


def test_hostile_is_a_share() -> None:
    """hostile outside 0..1 is refused."""
    with pytest.raises(ValueError, match="hostile"):
        Graph(10, hostile=1.5)


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
