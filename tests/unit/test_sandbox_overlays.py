"""The sandbox's overlays: changes applied on top of the generated graph, and their answers."""

from __future__ import annotations

from etl.sandbox import Graph, Sandbox
from etl.sandbox.graph import TIME_END
from tests.unit.sandbox_helpers import CONFIG, FakeClock, call, most_fans, page_all, profile_values


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
