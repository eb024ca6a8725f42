"""The generated world: a deterministic synthetic follow graph, built from a seed.

Users are ``user_000000`` .. ``user_{n-1}``. Internally everything is an int index so a
20,000-user graph (about 300k edges) stays near 50 MB and builds in under a second.
The shape aims at what makes a crawl hard: heavy-tailed popularity (a few accounts with
thousands of fans), heavy-tailed out-degree and a realistic share of mutual follows.

Popularity is Zipf over a seeded permutation plus a celebrity tier: the top 1% of ranks get a
constant extra weight, so every one of them draws a crowd. In a 20,000-user graph the 200
accounts with most fans have about 800 fans on average (the 200th about 480, the first about
7,400): some 660 items per call at WantNum 1000, the big pages a benchmark needs. A 2,000-user
graph keeps lists of about eleven items on average. The extra weight is per celebrity, so a
small graph's shape barely moves.

Hostile data (``hostile=P``, default 0: the graph is exactly the one without the option): a
share P of users get profile values a real app's users can set or a service can send, and a
naive parse or load cannot take (see etl.sandbox.hostile), and a few extra users with
hostile ids (``HOSTILE_IDS``: NUL, lone surrogates) follow and are followed by ordinary users.
Those ids appear only inside other users' lists, never in ``accounts``. A hostile graph is a
graph of its own: its follow times differ from the same seed's ordinary graph.

Big lists (``big_lists=(200_000, 50_000)``, default none: the graph is exactly the one without
the option): that many ordinary accounts, drawn with a seed of their own, each get that many
extra synthetic fans on top of their own, so a benchmark can mix a few very long lists among
thousands of short ones. A synthetic fan is no full user: it is not an account, follows only
its account, has no lists of its own (follow_get answers 30003) and one fixed, minimal profile
(``BIG_FAN_PROFILE``), so a 200,000-fan list costs the sandbox a few tens of MB, not a user
table. Its id, ``user_fan_{account index:06d}_{i:07d}``, sorts after every ordinary and hostile
id, so the synthetic fans are the end of the fans list in service order.

Follow times are a stable hash of the edge, so they need no storage; edges made later by an
overlay (etl.sandbox.overlays) keep the time they were given in ``made_times``. The world's
edge sets are what overlays change in place, through ``add_edge`` and ``remove_edge``; while
``journal`` is a list (``Graph.change`` sets it), each of them appends (u, v, follows) to it.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Sequence

from etl.sandbox.hostile import HOSTILE_EDGES, HOSTILE_IDS

FANS, FOLLOWS, MUTUAL = 1, 2, 3
FOLLOW_TYPES = (FANS, FOLLOWS, MUTUAL)

TIME_START = 1672531200  # 2023-01-01T00:00:00Z
TIME_END = 1767225600  # 2026-01-01T00:00:00Z

MEAN_OUT_DEGREE = 12.0  # the default; ``degree`` makes a sparser (or denser) graph
_DEGREE_SIGMA = 1.2  # lognormal spread: ~7% of users follow nobody, the top few follow hundreds
_ZIPF_EXPONENT = 1.0
_CELEBRITY_SHARE = 0.01  # the top 1% of popularity ranks ...
_CELEBRITY_WEIGHT = 0.03  # ... each get this much extra weight (rank 1 has 1.0, rank 33 has 0.03)
_RECIPROCITY = 0.25
_MASK = (1 << 64) - 1
BIG_FAN_PREFIX = "user_fan_"
BIG_FAN_PROFILE: tuple[int, tuple[tuple[str, str], ...]] = (1, (("Tag_Profile_IM_Nick", "fan"),))
_BIG_FAN_MAX = 9_999_999  # i in the id has seven digits: ids sort like their numbers


class World:
    """The generated users, edge sets and profile sequences of one seed, and their follow times."""

    def __init__(
        self,
        users: int,
        seed: int,
        *,
        hostile: float = 0.0,
        big_lists: Sequence[int] = (),
        degree: float = MEAN_OUT_DEGREE,
    ) -> None:
        if users < 1:
            raise ValueError("a graph needs at least one user")
        if not 0.0 < degree <= 1000.0:
            raise ValueError("degree is the mean number of accounts a user follows, 0 < d <= 1000")
        if not 0.0 <= hostile <= 1.0:
            raise ValueError("hostile is a share between 0 and 1")
        if len(big_lists) > users or not all(1 <= n <= _BIG_FAN_MAX for n in big_lists):
            raise ValueError(f"big_lists: at most one per user, each 1..{_BIG_FAN_MAX} fans")
        self.seed = seed
        self.n = users  # user indices, hostile ids included
        self.ids = [f"user_{i:06d}" for i in range(users)]
        self.index = {uid: i for i, uid in enumerate(self.ids)}
        self.deleted: set[int] = set()
        self.made_times: dict[int, int] = {}  # edge key -> time, for edges made by an overlay
        self.max_time = TIME_END
        self.journal: list[tuple[int, int, bool]] | None = None  # see add_edge and remove_edge
        # One shared int object per index: edge sets then hold pointers, not 28-byte copies.
        self.ints = list(range(users))
        rng = random.Random(seed)
        self._degree = degree
        self._cum_weights = self._popularity(rng)
        self.seq = [rng.randint(1, 50) for _ in range(users)]  # profile_sequence by index
        self.out: list[set[int]] = [set() for _ in range(users)]
        self.fans: list[set[int]] = [set() for _ in range(users)]
        self.edges = 0
        self._generate(rng)
        self.users = users  # ordinary users: indices below this are the accounts
        self.hostile: dict[int, int] = {}  # user index -> rank among hostile profiles
        if hostile > 0:
            self._add_hostile(hostile)
        # account index -> (offset of its first synthetic fan among all of them, how many)
        self.big: dict[int, tuple[int, int]] = {}
        if big_lists:
            self._add_big_lists(big_lists)

    def _popularity(self, rng: random.Random) -> list[float]:
        """Cumulative Zipf weights over a seeded permutation, so fame is not tied to low ids."""
        order = list(range(self.n))
        rng.shuffle(order)
        weights = [0.0] * self.n
        celebrities = max(1, int(self.n * _CELEBRITY_SHARE))
        for rank, user in enumerate(order, start=1):
            boost = _CELEBRITY_WEIGHT if rank <= celebrities else 0.0
            weights[user] = rank**-_ZIPF_EXPONENT + boost
        return list(itertools.accumulate(weights))

    def draw(self, rng: random.Random, k: int) -> list[int]:
        """k popularity-weighted user indices (with repeats)."""
        cum = self._cum_weights
        total = cum[-1]
        hi = len(cum) - 1
        rand = rng.random
        ints = self.ints
        return [ints[bisect.bisect(cum, rand() * total, 0, hi)] for _ in range(k)]

    def _generate(self, rng: random.Random) -> None:
        mu = math.log(self._degree) - _DEGREE_SIGMA**2 / 2
        cap = min(self.n - 1, 1000)
        for u in range(self.n):
            degree = min(int(rng.lognormvariate(mu, _DEGREE_SIGMA)), cap)
            chosen = self.out[u]
            # Duplicates and self-draws are redrawn; the attempt cap bounds pathological tails.
            for _ in range(8):
                missing = degree - len(chosen)
                if missing <= 0:
                    break
                for v in self.draw(rng, missing + missing // 4 + 1):
                    if v != u:
                        chosen.add(v)
                        if len(chosen) == degree:
                            break
        # Snapshot in a fixed order so the reciprocation draws, and the graph, are reproducible.
        originals = [sorted(out) for out in self.out]
        for u, followees in zip(self.ints, originals, strict=True):
            for v in followees:
                self.fans[v].add(u)
            self.edges += len(followees)
        for u, followees in zip(self.ints, originals, strict=True):
            for v in followees:
                if rng.random() < _RECIPROCITY and u not in self.out[v]:
                    self.add_edge(v, u)

    def _add_hostile(self, share: float) -> None:
        """Hostile profiles for a share of users; users with hostile ids, with some edges."""
        rng = random.Random(f"{self.seed}|hostile")
        n = self.n
        chosen = rng.sample(range(n), min(n, max(1, round(share * n))))
        self.hostile = {user: rank for rank, user in enumerate(chosen)}
        for offset, uid in enumerate(HOSTILE_IDS):
            self.ids.append(uid)
            self.index[uid] = n + offset
            self.ints.append(n + offset)
            self.seq.append(rng.randint(1, 50))
            self.out.append(set())
            self.fans.append(set())
        # Edge keys (u * n + v) need the full count: set it before the first edge is made.
        self.n = n + len(HOSTILE_IDS)
        for offset in range(len(HOSTILE_IDS)):
            evil = n + offset
            followed = rng.sample(range(n), min(n, HOSTILE_EDGES))
            for v in followed:
                self.add_edge(evil, v)
            # Half of its fans are followed back (mutual), half are other users.
            fans = followed[: HOSTILE_EDGES // 2] + rng.sample(range(n), min(n, HOSTILE_EDGES))
            for u in dict.fromkeys(fans[:HOSTILE_EDGES]):
                if evil not in self.out[u]:
                    self.add_edge(u, evil)

    def _add_big_lists(self, sizes: Sequence[int]) -> None:
        """Synthetic fans for a seeded sample of ordinary accounts, ``sizes[k]`` for the k-th."""
        rng = random.Random(f"{self.seed}|big-lists")
        chosen = rng.sample(range(self.users), len(sizes))
        offset = 0
        for account, size in zip(chosen, sizes, strict=True):
            self.big[account] = (offset, size)
            offset += size

    def add_edge(self, u: int, v: int) -> None:
        """u follows v."""
        self.out[u].add(v)
        self.fans[v].add(u)
        self.edges += 1
        if self.journal is not None:
            self.journal.append((u, v, True))

    def remove_edge(self, u: int, v: int) -> None:
        """u no longer follows v (and a time an overlay gave the edge is forgotten)."""
        self.out[u].discard(v)
        self.fans[v].discard(u)
        self.made_times.pop(u * self.n + v, None)
        self.edges -= 1
        if self.journal is not None:
            self.journal.append((u, v, False))

    def edge_times(self, keys: Iterable[int]) -> list[int]:
        """Follow times of edges by key (u * n + v).

        A stable hash of the key (the splitmix64 finaliser, inlined because whole lists come
        through here) spread over 2023..2025; edges made by an overlay keep the time they were
        given.
        """
        made = self.made_times
        base = self.seed * 0x9E3779B97F4A7C15
        span = TIME_END - TIME_START
        out = []
        for key in keys:
            at = made.get(key) if made else None
            if at is None:
                x = (base + key) & _MASK
                x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
                x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
                at = TIME_START + (x ^ (x >> 31)) % span
            out.append(at)
        return out

    def big_fan_times(self, account: int, start: int, end: int) -> list[int]:
        """Follow times of synthetic fans ``start:end`` of an account: keys past every ordinary
        edge key (u * n + v < n * n), so they never collide with one."""
        first = self.n * self.n + self.big[account][0]
        return self.edge_times(range(first + start, first + end))

    def big_fan(self, user: str) -> tuple[int, int] | None:
        """(account index, i) of a synthetic fan's id; None for any other id."""
        if not user.startswith(BIG_FAN_PREFIX):
            return None
        head, _, tail = user[len(BIG_FAN_PREFIX) :].partition("_")
        if len(head) < 6 or len(tail) != 7 or not (head + tail).isdigit():
            return None
        account, i = int(head), int(tail)
        big = self.big.get(account)
        return (account, i) if big is not None and i < big[1] else None
