"""Overlays: the changes applied on top of a generated world, between two crawls.

Each is deterministic for its arguments and edits the world's edge sets, deleted accounts and
profile sequences in place: a mass unfollow (``lose_fans``), a deleted account
(``delete_account``), a seeded mix of unfollows, new follows, profile edits and deletions
(``mutate``), and one account following or unfollowing others (``follow``, ``unfollow``: the
admin routes ``/sandbox/follow`` and ``/sandbox/unfollow``). Synthetic fans of big lists are left
alone (deleting their account removes them with it). The caller (``Graph.change``) holds the
lock and drops its cached lists afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from etl.sandbox.world import World

# Share of new follows (in mutate) that follow back a fan: about what unfollows break, so the
# mutual share holds steady across runs instead of draining.
_FOLLOW_BACK = 0.4


def delete_account(world: World, i: int) -> None:
    """User ``i`` no longer exists, with every edge to and from it."""
    for v in list(world.out[i]):
        world.remove_edge(i, v)
    for u in list(world.fans[i]):
        world.remove_edge(u, i)
    world.deleted.add(i)


def follow(world: World, u: int, targets: Iterable[int], at: int) -> list[int]:
    """User ``u`` follows each of ``targets`` it does not follow yet (itself excepted), at Unix
    second ``at``; the ones it did, in order."""
    made = [v for v in dict.fromkeys(targets) if v != u and v not in world.out[u]]
    for v in made:
        world.add_edge(u, v)
        world.made_times[u * world.n + v] = at
    if made:
        world.max_time = max(world.max_time, at)
    return made


def unfollow(world: World, u: int, targets: Iterable[int]) -> list[int]:
    """User ``u`` unfollows each of ``targets`` it follows; the ones it did, in order."""
    gone = [v for v in dict.fromkeys(targets) if v in world.out[u]]
    for v in gone:
        world.remove_edge(u, v)
    return gone


def lose_fans(world: World, i: int, keep: int) -> int:
    """All but the ``keep`` lowest-numbered fans of user ``i`` unfollow it; how many did."""
    gone = sorted(world.fans[i])[keep:]
    for u in gone:
        world.remove_edge(u, i)
    return len(gone)


def mutate(
    world: World, seed: int, *, unfollow: float, follow: float, profile: float, delete: int
) -> dict[str, int]:
    """Unfollow, follow, edit profiles and delete accounts, drawn from ``seed``; the counts."""
    rng = random.Random(f"mutate|{world.seed}|{seed}")
    n = world.n
    edges = sorted(u * n + v for u in range(n) for v in world.out[u])
    gone = rng.sample(edges, min(len(edges), round(unfollow * len(edges))))
    for key in gone:
        world.remove_edge(*divmod(key, n))

    live = [i for i in range(n) if i not in world.deleted]
    added = _follow(world, rng, live, round(follow * len(edges)))

    changed = rng.sample(live, min(len(live), round(profile * len(live))))
    for i in changed:
        world.seq[i] += rng.randint(1, 3)

    doomed = rng.sample(live, min(len(live), delete))
    for i in doomed:
        delete_account(world, i)
    return {
        "unfollowed": len(gone),
        "followed": added,
        "profiles_changed": len(changed),
        "deleted": len(doomed),
    }


def _follow(world: World, rng: random.Random, live: list[int], wanted: int) -> int:
    """Up to ``wanted`` new follows among ``live`` users, each newer than any before it."""
    n = world.n
    added = 0
    base = world.max_time
    for _ in range(wanted * 4):  # bounded: tiny graphs may have no free pair left
        if added >= wanted or len(live) < 2:
            break
        u = rng.choice(live)
        fans = world.fans[u]
        if fans and rng.random() < _FOLLOW_BACK:
            v = rng.choice(sorted(fans))
        else:
            v = world.draw(rng, 1)[0]
        if u == v or v in world.deleted or v in world.out[u]:
            continue
        world.add_edge(u, v)
        made = base + 1 + rng.randrange(86400)
        world.made_times[u * n + v] = made
        world.max_time = max(world.max_time, made)
        added += 1
    return added
