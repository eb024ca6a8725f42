"""A deterministic synthetic follow graph: what the sandbox serves and what a crawl must find.

Users are ``user_000000`` .. ``user_{n-1}``. Internally everything is an int index so a
20,000-user graph (about 300k edges) stays near 50 MB and builds in under a second.
The shape aims at what makes a crawl hard: heavy-tailed popularity (a few accounts with
thousands of fans), heavy-tailed out-degree, a realistic share of mutual follows, profiles
that change between runs, and accounts that disappear.

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
id, so the synthetic fans are the end of the fans list in service order. They count in
``counts`` (follow_get_info), in the ground truth (``truth``, the admin truth routes) and in
``stats_summary``; ``mutate`` leaves them alone (deleting the account removes them with it).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from etl.sandbox.hostile import HOSTILE_EDGES, HOSTILE_IDS, hostile_profile

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
# Share of new follows (in mutate) that follow back a fan: about what unfollows break, so the
# mutual share holds steady across runs instead of draining.
_FOLLOW_BACK = 0.4
_VIEW_CACHE_LIMIT = 8192  # sorted lists kept; cleared wholesale past this, cheap to rebuild
_MASK = (1 << 64) - 1
BIG_FAN_PREFIX = "user_fan_"
BIG_FAN_PROFILE: tuple[int, tuple[tuple[str, str], ...]] = (1, (("Tag_Profile_IM_Nick", "fan"),))
_BIG_FAN_MAX = 9_999_999  # i in the id has seven digits: ids sort like their numbers

_NICKS = (
    "Alice", "bob", "Charlie", "dora_x", "Eve", "Frank", "gina.l", "Hiro", "Ines", "Jun",
    "小明", "王芳", "李雷", "韩梅梅", "张伟", "陈静", "🐼 panda", "Lena ✨", "Mü11er", "Zoë",
    "김민수", "さくら", "Олег", "🎧DJ", "O'Brien", "quote\"d", "back\\slash", "100%real",
)  # fmt: skip
_LOCATIONS = ("广东 深圳", "北京", "上海", "Singapore", "Seoul", "Tokyo", "Berlin", "São Paulo")
_SIGNATURES = (
    "",
    "hello",
    "生活明朗\uff0c万物可爱",
    "ping me ☕",
    "busy",
    "line\nbreak",
    "<b>hi</b>",
)
_HOBBIES = ("reading", "hiking", "吉他", "gaming", "photography", "🍜 food")
_CITIES = ("Shenzhen", "Chengdu", "Singapore", "Jakarta", "Frankfurt", "Mumbai")
_VIPS = ("0", "1", "gold", "platinum")
_GENDERS = ("Gender_Type_Unknown", "Gender_Type_Female", "Gender_Type_Male")
_ALLOW_TYPES = ("AllowType_Type_NeedConfirm", "AllowType_Type_AllowAny", "AllowType_Type_DenyAny")


@dataclass(frozen=True)
class ListView:
    """One (account, follow type) list in service order: ascending To_Account."""

    ids: list[str]
    members: list[int]
    times: list[int]
    synthetic: int = 0  # the last this many items are a big list's synthetic fans


class Graph:
    """The synthetic follow graph, with deterministic follow times, profiles and mutations."""

    def __init__(
        self,
        users: int,
        seed: int = 1,
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
        self.generation = 0
        self._n = users
        self._ids = [f"user_{i:06d}" for i in range(users)]
        self._index = {uid: i for i, uid in enumerate(self._ids)}
        self._lock = threading.RLock()
        self._views: dict[tuple[int, int], ListView] = {}
        self._deleted: set[int] = set()
        self._times: dict[int, int] = {}  # edge key -> time, for edges made by mutate
        self._max_time = TIME_END
        # One shared int object per index: edge sets then hold pointers, not 28-byte copies.
        self._ints = list(range(users))
        rng = random.Random(seed)
        self._degree = degree
        self._cum_weights = self._popularity(rng)
        self._seq = [rng.randint(1, 50) for _ in range(users)]
        self._out: list[set[int]] = [set() for _ in range(users)]
        self._in: list[set[int]] = [set() for _ in range(users)]
        self._edges = 0
        self._generate(rng)
        self._users = users  # ordinary users: indices below this are the accounts
        self._hostile: dict[int, int] = {}  # user index -> rank among hostile profiles
        if hostile > 0:
            self._add_hostile(hostile)
        # account index -> (offset of its first synthetic fan among all of them, how many)
        self._big: dict[int, tuple[int, int]] = {}
        if big_lists:
            self._add_big_lists(big_lists)

    def _popularity(self, rng: random.Random) -> list[float]:
        """Cumulative Zipf weights over a seeded permutation, so fame is not tied to low ids."""
        order = list(range(self._n))
        rng.shuffle(order)
        weights = [0.0] * self._n
        celebrities = max(1, int(self._n * _CELEBRITY_SHARE))
        for rank, user in enumerate(order, start=1):
            boost = _CELEBRITY_WEIGHT if rank <= celebrities else 0.0
            weights[user] = rank**-_ZIPF_EXPONENT + boost
        return list(itertools.accumulate(weights))

    def _draw(self, rng: random.Random, k: int) -> list[int]:
        """k popularity-weighted user indices (with repeats)."""
        cum = self._cum_weights
        total = cum[-1]
        hi = len(cum) - 1
        rand = rng.random
        ints = self._ints
        return [ints[bisect.bisect(cum, rand() * total, 0, hi)] for _ in range(k)]

    def _generate(self, rng: random.Random) -> None:
        mu = math.log(self._degree) - _DEGREE_SIGMA**2 / 2
        cap = min(self._n - 1, 1000)
        for u in range(self._n):
            degree = min(int(rng.lognormvariate(mu, _DEGREE_SIGMA)), cap)
            chosen = self._out[u]
            # Duplicates and self-draws are redrawn; the attempt cap bounds pathological tails.
            for _ in range(8):
                missing = degree - len(chosen)
                if missing <= 0:
                    break
                for v in self._draw(rng, missing + missing // 4 + 1):
                    if v != u:
                        chosen.add(v)
                        if len(chosen) == degree:
                            break
        # Snapshot in a fixed order so the reciprocation draws, and the graph, are reproducible.
        originals = [sorted(out) for out in self._out]
        for u, followees in zip(self._ints, originals, strict=True):
            for v in followees:
                self._in[v].add(u)
            self._edges += len(followees)
        for u, followees in zip(self._ints, originals, strict=True):
            for v in followees:
                if rng.random() < _RECIPROCITY and u not in self._out[v]:
                    self._add_edge(v, u)

    def _add_hostile(self, share: float) -> None:
        """Hostile profiles for a share of users; users with hostile ids, with some edges."""
        rng = random.Random(f"{self.seed}|hostile")
        n = self._n
        chosen = rng.sample(range(n), min(n, max(1, round(share * n))))
        self._hostile = {user: rank for rank, user in enumerate(chosen)}
        for offset, uid in enumerate(HOSTILE_IDS):
            self._ids.append(uid)
            self._index[uid] = n + offset
            self._ints.append(n + offset)
            self._seq.append(rng.randint(1, 50))
            self._out.append(set())
            self._in.append(set())
        # Edge keys (u * n + v) need the full count: set it before the first edge is made.
        self._n = n + len(HOSTILE_IDS)
        for offset in range(len(HOSTILE_IDS)):
            evil = n + offset
            followed = rng.sample(range(n), min(n, HOSTILE_EDGES))
            for v in followed:
                self._add_edge(evil, v)
            # Half of its fans are followed back (mutual), half are other users.
            fans = followed[: HOSTILE_EDGES // 2] + rng.sample(range(n), min(n, HOSTILE_EDGES))
            for u in dict.fromkeys(fans[:HOSTILE_EDGES]):
                if evil not in self._out[u]:
                    self._add_edge(u, evil)

    def _add_big_lists(self, sizes: Sequence[int]) -> None:
        """Synthetic fans for a seeded sample of ordinary accounts, ``sizes[k]`` for the k-th."""
        rng = random.Random(f"{self.seed}|big-lists")
        chosen = rng.sample(range(self._users), len(sizes))
        offset = 0
        for account, size in zip(chosen, sizes, strict=True):
            self._big[account] = (offset, size)
            offset += size

    def _add_edge(self, u: int, v: int) -> None:
        self._out[u].add(v)
        self._in[v].add(u)
        self._edges += 1

    def _delete(self, i: int) -> None:
        for v in list(self._out[i]):
            self._remove_edge(i, v)
        for u in list(self._in[i]):
            self._remove_edge(u, i)
        self._deleted.add(i)

    def lose_fans(self, account: str, keep: int) -> int:
        """A mass unfollow: all but the ``keep`` oldest-numbered fans of ``account`` unfollow
        it. Returns how many did."""
        with self._lock:
            i = self.index_of(account)
            if i is None:
                raise KeyError(account)
            gone = sorted(self._in[i])[keep:]
            for u in gone:
                self._remove_edge(u, i)
            self._views.clear()
            self.generation += 1
            return len(gone)

    def delete_account(self, account: str) -> None:
        """``account`` no longer exists (30003), with every edge to and from it."""
        with self._lock:
            i = self.index_of(account)
            if i is None:
                raise KeyError(account)
            self._delete(i)
            self._views.clear()
            self.generation += 1

    def _remove_edge(self, u: int, v: int) -> None:
        self._out[u].discard(v)
        self._in[v].discard(u)
        self._times.pop(u * self._n + v, None)
        self._edges -= 1

    # ---- reads ---------------------------------------------------------------------------

    @property
    def accounts(self) -> list[str]:
        """Existing account ids, sorted."""
        with self._lock:
            ids = self._ids[: self._users]
            return [uid for i, uid in enumerate(ids) if i not in self._deleted]

    @property
    def big_accounts(self) -> dict[str, int]:
        """Accounts with synthetic fans -> how many (in the order of ``big_lists``)."""
        return {self._ids[a]: size for a, (_, size) in self._big.items()}

    def big_fan(self, user: str) -> tuple[int, int] | None:
        """(account index, i) of a synthetic fan's id; None for any other id."""
        if not user.startswith(BIG_FAN_PREFIX):
            return None
        head, _, tail = user[len(BIG_FAN_PREFIX) :].partition("_")
        if len(head) < 6 or len(tail) != 7 or not (head + tail).isdigit():
            return None
        account, i = int(head), int(tail)
        big = self._big.get(account)
        return (account, i) if big is not None and i < big[1] else None

    @property
    def size(self) -> int:
        """Number of user indices, deleted accounts included."""
        return self._n

    @property
    def sequences(self) -> Sequence[int]:
        """Current profile_sequence by user index (read-only view for fast renderers)."""
        return self._seq

    def index_of(self, account: str) -> int | None:
        """The internal index of an existing account, or None."""
        i = self._index.get(account)
        if i is None or i in self._deleted:
            return None
        return i

    def exists(self, account: str) -> bool:
        """True for a known, not deleted account."""
        return self.index_of(account) is not None

    def _time(self, u: int, v: int) -> int:
        return self._edge_times([u * self._n + v])[0]

    def _edge_times(self, keys: Iterable[int]) -> list[int]:
        """Follow times of edges by key (u * n + v).

        A stable hash of the key (the splitmix64 finaliser, inlined because whole lists come
        through here) spread over 2023..2025; edges made by mutate keep the time they were given.
        """
        made = self._times
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

    def follow_time(self, follower: str, followee: str) -> int:
        """Unix seconds at which follower followed followee; KeyError if no such edge."""
        fan = self.big_fan(follower)
        if fan is not None and self._index[followee] == fan[0]:
            return self._big_fan_times(fan[0], fan[1], fan[1] + 1)[0]
        u, v = self._index[follower], self._index[followee]
        with self._lock:
            if v not in self._out[u]:
                raise KeyError(f"{follower} does not follow {followee}")
            return self._time(u, v)

    def view(self, account: str, follow_type: int) -> ListView | None:
        """The list in service order, cached until the next mutate; None if no such account."""
        if follow_type not in FOLLOW_TYPES:
            raise ValueError(f"follow_type must be 1, 2 or 3, not {follow_type!r}")
        a = self.index_of(account)
        if a is None:
            return None
        cached = self._views.get((a, follow_type))
        if cached is not None:
            return cached
        n, ids = self._n, self._ids
        with self._lock:
            if a in self._deleted:
                return None
            if follow_type == FANS:
                members = self._in[a]
            elif follow_type == FOLLOWS:
                members = self._out[a]
            else:
                members = self._in[a] & self._out[a]
            # Zero-padded ids sort like their indices, up to a million users (hostile ids do not).
            by_index = n <= 1_000_000 and n == self._users
            ordered = sorted(members) if by_index else sorted(members, key=ids.__getitem__)
            if follow_type == FANS:
                times = self._edge_times([m * n + a for m in ordered])
            elif follow_type == FOLLOWS:
                times = self._edge_times([a * n + m for m in ordered])
            else:
                fans = self._edge_times([m * n + a for m in ordered])
                times = list(map(max, fans, self._edge_times([a * n + m for m in ordered])))
            big = self._big.get(a) if follow_type == FANS else None
            if big is None:
                view = ListView(list(map(ids.__getitem__, ordered)), ordered, times)
            else:
                view = self._with_big_fans(a, big, ordered, times)
            if len(self._views) >= _VIEW_CACHE_LIMIT:
                self._views.clear()
            self._views[(a, follow_type)] = view
            return view

    def _big_fan_times(self, account: int, start: int, end: int) -> list[int]:
        """Follow times of synthetic fans ``start:end`` of an account: keys past every ordinary
        edge key (u * n + v < n * n), so they never collide with one."""
        first = self._n * self._n + self._big[account][0]
        return self._edge_times(range(first + start, first + end))

    def _with_big_fans(
        self, account: int, big: tuple[int, int], ordered: list[int], times: list[int]
    ) -> ListView:
        """A fans list with the account's synthetic fans after its own (their ids sort last)."""
        offset, size = big
        prefix = f"{BIG_FAN_PREFIX}{account:06d}_"
        fan_ids = [f"{prefix}{i:07d}" for i in range(size)]
        # Members past every user index: the renderer knows them by ``synthetic``.
        first = self._n + offset
        return ListView(
            [*map(self._ids.__getitem__, ordered), *fan_ids],
            [*ordered, *range(first, first + size)],
            [*times, *self._big_fan_times(account, 0, size)],
            synthetic=size,
        )

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
        extra = self._big.get(a, (0, 0))[1]
        with self._lock:
            fans, follows = len(self._in[a]) + extra, len(self._out[a])
            return fans, follows, len(self._in[a] & self._out[a])

    def profile(self, user: str) -> tuple[int, list[dict[str, object]]]:
        """(profile_sequence, ProfileItem tags) of a user, as of now."""
        i = self._index.get(user)
        if i is None:
            if self.big_fan(user) is None:
                raise KeyError(user)
            seq, tags = BIG_FAN_PROFILE
            return seq, [{"Tag": tag, "Value": value} for tag, value in tags]
        seq = self._seq[i]
        rank = self._hostile.get(i)
        if rank is None:
            return seq, self._tags(user, seq)
        return hostile_profile(rank, seq, self._tags(user, seq))

    @property
    def hostile_users(self) -> list[str]:
        """Accounts whose profiles carry hostile values, by rank (see ``hostile_profile``):
        the first holds the 5000-digit integer, the second the 200,000-character string."""
        return [self._ids[i] for i in self._hostile]

    def _tags(self, user: str, seq: int) -> list[dict[str, object]]:
        # Which tags a user has is fixed per user; their values follow the sequence. Seeded
        # with bytes (the same stream as the str) so that hostile ids seed too.
        key = f"{self.seed}|{user}".encode("utf-8", "surrogatepass")
        shape = random.Random(key)
        rng = random.Random(key + f"|{seq}".encode())
        nick = rng.choice(_NICKS) + (str(rng.randrange(100)) if rng.random() < 0.5 else "")
        birthday = rng.randint(1960, 2008) * 10000 + rng.randint(1, 12) * 100 + rng.randint(1, 28)
        forbid = "AdminForbid_Type_SendOut" if rng.random() < 0.03 else "AdminForbid_Type_None"
        standard: list[tuple[str, object]] = [
            ("Nick", nick),
            ("Gender", rng.choice(_GENDERS)),
            ("BirthDay", birthday),
            ("Location", rng.choice(_LOCATIONS)),
            ("SelfSignature", rng.choice(_SIGNATURES)),
            ("AllowType", rng.choice(_ALLOW_TYPES)),
            ("Language", rng.randrange(0, 4)),
            ("Image", f"https://avatars.sandbox.example/{user}/{rng.randrange(1 << 32):08x}.png"),
            ("MsgSettings", rng.randrange(0, 4)),
            ("AdminForbidType", forbid),
            ("Level", rng.randrange(0, 100)),
            ("Role", rng.randrange(0, 8)),
        ]
        tags: list[dict[str, object]] = [
            {"Tag": "Tag_Profile_IM_" + name, "Value": value}
            for name, value in standard
            if name == "Nick" or shape.random() < 0.6
        ]
        for name, pool in (("Hobby", _HOBBIES), ("City", _CITIES), ("Vip", _VIPS)):
            if shape.random() < 0.2:
                tags.append({"Tag": "Tag_Profile_Custom_" + name, "Value": rng.choice(pool)})
        return tags

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
            live = [i for i in range(self._n) if i not in self._deleted]
            mutual_edges = sum(len(self._in[i] & self._out[i]) for i in live)
            big = {a: size for a, (_, size) in self._big.items() if a not in self._deleted}
            return {
                "users": len(live),
                "edges": self._edges + sum(big.values()),
                "mutual_pairs": mutual_edges // 2,
                "max_fans": max((len(self._in[i]) + big.get(i, 0) for i in live), default=0),
            }

    # ---- changes -------------------------------------------------------------------------

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
        with self._lock:
            rng = random.Random(f"mutate|{self.seed}|{seed}")
            n = self._n
            edges = sorted(u * n + v for u in range(n) for v in self._out[u])
            gone = rng.sample(edges, min(len(edges), round(unfollow * len(edges))))
            for key in gone:
                self._remove_edge(*divmod(key, n))

            live = [i for i in range(n) if i not in self._deleted]
            wanted = round(follow * len(edges))
            added = 0
            base = self._max_time
            for _ in range(wanted * 4):  # bounded: tiny graphs may have no free pair left
                if added >= wanted or len(live) < 2:
                    break
                u = rng.choice(live)
                fans = self._in[u]
                if fans and rng.random() < _FOLLOW_BACK:
                    v = rng.choice(sorted(fans))
                else:
                    v = self._draw(rng, 1)[0]
                if u == v or v in self._deleted or v in self._out[u]:
                    continue
                self._add_edge(u, v)
                made = base + 1 + rng.randrange(86400)
                self._times[u * n + v] = made
                self._max_time = max(self._max_time, made)
                added += 1

            changed = rng.sample(live, min(len(live), round(profile * len(live))))
            for i in changed:
                self._seq[i] += rng.randint(1, 3)

            doomed = rng.sample(live, min(len(live), delete))
            for i in doomed:
                self._delete(i)

            self._views.clear()
            self.generation += 1
            return {
                "unfollowed": len(gone),
                "followed": added,
                "profiles_changed": len(changed),
                "deleted": len(doomed),
            }
