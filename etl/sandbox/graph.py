"""The sandbox's follow graph: the generated world, the overlays applied to it, and its reads.

``Graph`` is what the sandbox serves and what a crawl must find. The world it starts from is
deterministic for its arguments (etl.sandbox.world: accounts, edges, follow times; and
etl.sandbox.profiles: profiles); overlays change it between runs (etl.sandbox.overlays:
``lose_fans``, ``delete_account``, ``mutate``; any edit through ``change``), each bumping
``generation`` and telling ``watcher`` which edges it added and removed. Reads answer in
service order (ascending To_Account) and cache each list until the next overlay.

Synthetic fans of big lists (``big_lists=``) count in ``counts`` (follow_get_info), in the
ground truth (``truth``, the admin truth routes) and in ``stats_summary``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from etl.sandbox import overlays
from etl.sandbox.hostile import hostile_profile
from etl.sandbox.profiles import profile_tags
from etl.sandbox.world import BIG_FAN_PREFIX as BIG_FAN_PREFIX
from etl.sandbox.world import BIG_FAN_PROFILE as BIG_FAN_PROFILE
from etl.sandbox.world import FANS as FANS
from etl.sandbox.world import FOLLOW_TYPES as FOLLOW_TYPES
from etl.sandbox.world import FOLLOWS as FOLLOWS
from etl.sandbox.world import MEAN_OUT_DEGREE as MEAN_OUT_DEGREE
from etl.sandbox.world import MUTUAL as MUTUAL
from etl.sandbox.world import TIME_END as TIME_END
from etl.sandbox.world import TIME_START as TIME_START
from etl.sandbox.world import World

_T = TypeVar("_T")
# What ``Graph.change`` tells its watcher: the world and its journal, (u, v, follows) in order.
Watcher = Callable[[World, list[tuple[int, int, bool]]], None]
_VIEW_CACHE_LIMIT = 8192  # sorted lists kept; cleared wholesale past this, cheap to rebuild


@dataclass(frozen=True)
class ListView:
    """One (account, follow type) list in service order: ascending To_Account."""

    ids: list[str]
    members: list[int]
    times: list[int]
    synthetic: int = 0  # the last this many items are a big list's synthetic fans


class Graph:
    """The synthetic follow graph, with deterministic follow times, profiles and overlays."""

    def __init__(
        self,
        users: int,
        seed: int = 1,
        *,
        hostile: float = 0.0,
        big_lists: Sequence[int] = (),
        degree: float = MEAN_OUT_DEGREE,
    ) -> None:
        self._world = World(users, seed, hostile=hostile, big_lists=big_lists, degree=degree)
        self.seed = seed
        self.generation = 0
        self._lock = threading.RLock()
        self._views: dict[tuple[int, int], ListView] = {}
        self.watcher: Watcher | None = None  # told of every change (etl.sandbox.changes)

    # ---- overlays ------------------------------------------------------------------------

    def lose_fans(self, account: str, keep: int) -> int:
        """A mass unfollow: all but the ``keep`` lowest-numbered fans of ``account`` unfollow it;
        how many did."""
        return self.change(lambda world: overlays.lose_fans(world, self._existing(account), keep))

    def delete_account(self, account: str) -> None:
        """``account`` no longer exists (30003), with every edge to and from it."""
        self.change(lambda world: overlays.delete_account(world, self._existing(account)))

    def mutate(
        self,
        seed: int,
        *,
        unfollow: float = 0.03,
        follow: float = 0.03,
        profile: float = 0.05,
        delete: int = 0,
    ) -> dict[str, int]:
        """Apply a deterministic change (unfollows, follows, profile edits, deletions)."""
        return self.change(
            lambda w: overlays.mutate(
                w, seed, unfollow=unfollow, follow=follow, profile=profile, delete=delete
            )
        )

    def change(self, edit: Callable[[World], _T]) -> _T:
        """Run ``edit`` on the world under the lock; then hand the edges it added and removed
        (in order) to ``watcher``, if one is set, drop the cached lists and bump ``generation``."""
        with self._lock:
            world = self._world
            world.journal = [] if self.watcher else None
            try:
                return edit(world)
            finally:
                journal, world.journal = world.journal, None
                if journal and self.watcher:
                    self.watcher(world, journal)
                self._views.clear()
                self.generation += 1

    def _existing(self, account: str) -> int:
        i = self.index_of(account)
        if i is None:
            raise KeyError(account)
        return i

    # ---- reads ---------------------------------------------------------------------------

    @property
    def accounts(self) -> list[str]:
        """Existing account ids, sorted."""
        world = self._world
        with self._lock:
            ids = world.ids[: world.users]
            return [uid for i, uid in enumerate(ids) if i not in world.deleted]

    @property
    def big_accounts(self) -> dict[str, int]:
        """Accounts with synthetic fans -> how many (in the order of ``big_lists``)."""
        return {self._world.ids[a]: size for a, (_, size) in self._world.big.items()}

    def big_fan(self, user: str) -> tuple[int, int] | None:
        """(account index, i) of a synthetic fan's id; None for any other id."""
        return self._world.big_fan(user)

    @property
    def size(self) -> int:
        """Number of user indices, deleted accounts included."""
        return self._world.n

    @property
    def sequences(self) -> Sequence[int]:
        """Current profile_sequence by user index (read-only view for fast renderers)."""
        return self._world.seq

    def index_of(self, account: str) -> int | None:
        """The internal index of an existing account, or None."""
        i = self._world.index.get(account)
        if i is None or i in self._world.deleted:
            return None
        return i

    def exists(self, account: str) -> bool:
        """True for a known, not deleted account."""
        return self.index_of(account) is not None

    def follow_time(self, follower: str, followee: str) -> int:
        """Unix seconds at which follower followed followee; KeyError if no such edge."""
        world = self._world
        fan = world.big_fan(follower)
        if fan is not None and world.index[followee] == fan[0]:
            return world.big_fan_times(fan[0], fan[1], fan[1] + 1)[0]
        u, v = world.index[follower], world.index[followee]
        with self._lock:
            if v not in world.out[u]:
                raise KeyError(f"{follower} does not follow {followee}")
            return world.edge_times([u * world.n + v])[0]

    def view(self, account: str, follow_type: int) -> ListView | None:
        """The list in service order, cached until the next overlay; None if no such account."""
        if follow_type not in FOLLOW_TYPES:
            raise ValueError(f"follow_type must be 1, 2 or 3, not {follow_type!r}")
        a = self.index_of(account)
        if a is None:
            return None
        cached = self._views.get((a, follow_type))
        if cached is not None:
            return cached
        with self._lock:
            if a in self._world.deleted:
                return None
            view = _list_view(self._world, a, follow_type)
            if len(self._views) >= _VIEW_CACHE_LIMIT:
                self._views.clear()
            self._views[(a, follow_type)] = view
            return view

    def list_ids(self, account: str, follow_type: int) -> list[str]:
        """To_Account ids of one list in service order (ascending id); [] for no account."""
        view = self.view(account, follow_type)
        return list(view.ids) if view else []

    def list_items(self, account: str, follow_type: int) -> dict[str, int]:
        """To_Account -> FollowTime of one list (mutual: the later of the two follow times)."""
        view = self.view(account, follow_type)
        return dict(zip(view.ids, view.times, strict=True)) if view else {}

    def counts(self, account: str) -> tuple[int, int, int] | None:
        """(fans, follows, mutual) list sizes, or None if the account does not exist."""
        a = self.index_of(account)
        if a is None:
            return None
        world = self._world
        extra = world.big.get(a, (0, 0))[1]
        with self._lock:
            fans, follows = len(world.fans[a]) + extra, len(world.out[a])
            return fans, follows, len(world.fans[a] & world.out[a])

    def profile(self, user: str) -> tuple[int, list[dict[str, object]]]:
        """(profile_sequence, ProfileItem tags) of a user, as of now."""
        world = self._world
        i = world.index.get(user)
        if i is None:
            if world.big_fan(user) is None:
                raise KeyError(user)
            seq, tags = BIG_FAN_PROFILE
            return seq, [{"Tag": tag, "Value": value} for tag, value in tags]
        seq = world.seq[i]
        rank = world.hostile.get(i)
        if rank is None:
            return seq, profile_tags(self.seed, user, seq)
        return hostile_profile(rank, seq, profile_tags(self.seed, user, seq))

    @property
    def hostile_users(self) -> list[str]:
        """Accounts whose profiles carry hostile values, by rank (see ``hostile_profile``):
        the first holds the 5000-digit integer, the second the 200,000-character string."""
        return [self._world.ids[i] for i in self._world.hostile]

    def truth(
        self, accounts: Iterable[str], types: Iterable[int]
    ) -> dict[tuple[str, int], dict[str, int]]:
        """What a complete crawl must store: (account, type) -> {to_account: follow_time}."""
        wanted = list(types)
        with self._lock:
            return {
                (account, t): self.list_items(account, t)
                for account in accounts
                if self.exists(account)
                for t in wanted
            }

    def stats_summary(self) -> dict[str, int]:
        """Users, edges, mutual pairs and the largest fan count."""
        with self._lock:
            return _summary(self._world)


def _summary(world: World) -> dict[str, int]:
    live = [i for i in range(world.n) if i not in world.deleted]
    mutual_edges = sum(len(world.fans[i] & world.out[i]) for i in live)
    big = {a: size for a, (_, size) in world.big.items() if a not in world.deleted}
    return {
        "users": len(live),
        "edges": world.edges + sum(big.values()),
        "mutual_pairs": mutual_edges // 2,
        "max_fans": max((len(world.fans[i]) + big.get(i, 0) for i in live), default=0),
    }


def _list_view(world: World, a: int, follow_type: int) -> ListView:
    """One list of account index ``a``, sorted by To_Account, with its follow times."""
    n, ids = world.n, world.ids
    if follow_type == FANS:
        members = world.fans[a]
    elif follow_type == FOLLOWS:
        members = world.out[a]
    else:
        members = world.fans[a] & world.out[a]
    # Zero-padded ids sort like their indices, up to a million users (hostile ids do not).
    by_index = n <= 1_000_000 and n == world.users
    ordered = sorted(members) if by_index else sorted(members, key=ids.__getitem__)
    if follow_type == FANS:
        times = world.edge_times([m * n + a for m in ordered])
    elif follow_type == FOLLOWS:
        times = world.edge_times([a * n + m for m in ordered])
    else:
        fans = world.edge_times([m * n + a for m in ordered])
        times = list(map(max, fans, world.edge_times([a * n + m for m in ordered])))
    big = world.big.get(a) if follow_type == FANS else None
    if big is None:
        return ListView(list(map(ids.__getitem__, ordered)), ordered, times)
    return _with_big_fans(world, a, big, ordered, times)


def _with_big_fans(
    world: World, account: int, big: tuple[int, int], ordered: list[int], times: list[int]
) -> ListView:
    """A fans list with the account's synthetic fans after its own (their ids sort last)."""
    offset, size = big
    prefix = f"{BIG_FAN_PREFIX}{account:06d}_"
    fan_ids = [f"{prefix}{i:07d}" for i in range(size)]
    # Members past every user index: the renderer knows them by ``synthetic``.
    first = world.n + offset
    return ListView(
        [*map(world.ids.__getitem__, ordered), *fan_ids],
        [*ordered, *range(first, first + size)],
        [*times, *world.big_fan_times(account, 0, size)],
        synthetic=size,
    )
