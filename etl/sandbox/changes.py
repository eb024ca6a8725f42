"""The graph's changes as Tencent's follow callbacks announce them (``Graph.watcher``).

Every edit of the sandbox's graph (``Graph.change``: the overlays, and the admin routes
``/sandbox/follow`` and ``/sandbox/unfollow``, see ``follow``) journals the edges it added and
removed, in order. ``Announcer`` turns one journal into callbacks, the way Chat announces the
follow_add and follow_delete calls that made it:

- one callback per From_Account and kind (``Follow.CallbackAfterFollowAdd`` or
  ``Follow.CallbackAfterFollowDelete``), at most ``MAX_TO_ACCOUNTS`` To_Accounts each (what one
  follow_add or follow_delete call takes), in the order the edits were made. An edge edited
  twice in one change (mutate can drop an edge and make it again) starts a new round of
  callbacks, so that a round never says two things of one direction;
- EventTime from ``EventClock``: Unix milliseconds of the sandbox's clock, strictly increasing
  from one round to the next, so that the ordering rule (the greatest EventTime of a direction
  wins) always ends at the graph's state, whatever order the callbacks arrive in. An edge the
  change made gets EventTime // 1000 as its follow time: the FollowTime follow_get serves from
  then on. A mutate's new follows too, while a watcher is set (their generated times lie in the
  past, before the crawl that would then count them as missed);
- edges to or from an account the change deleted are not announced: Chat documents no follow
  callback for a deleted account. They are counted (``silent``); the next crawl finds them.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from etl.sandbox import overlays
from etl.sandbox.graph import Graph
from etl.sandbox.world import World

ADD = "Follow.CallbackAfterFollowAdd"
DELETE = "Follow.CallbackAfterFollowDelete"
MAX_TO_ACCOUNTS = 20  # accounts one follow_add or follow_delete call takes


@dataclass(frozen=True, slots=True)
class Change:
    """One direction of one callback: ``account`` followed (or unfollowed) ``to_account``."""

    account: str
    to_account: str
    follows: bool
    event_ms: int

    def as_json(self) -> dict[str, object]:
        """The change as the admin route ``GET /sandbox/webhook`` lists it."""
        return {
            "account": self.account,
            "to_account": self.to_account,
            "follows": self.follows,
            "event_ms": self.event_ms,
        }


@dataclass(frozen=True, slots=True)
class Callback:
    """One callback: ``account`` followed (or unfollowed) each of ``to_accounts`` at
    ``event_ms``."""

    seq: int  # the sandbox's number for it, from 1 in the order the graph changed
    account: str  # From_Account
    to_accounts: tuple[str, ...]
    follows: bool
    event_ms: int  # EventTime

    @property
    def command(self) -> str:
        """Its CallbackCommand."""
        return ADD if self.follows else DELETE

    @property
    def changes(self) -> list[Change]:
        """One change per To_Account."""
        return [Change(self.account, to, self.follows, self.event_ms) for to in self.to_accounts]

    def body(self) -> bytes:
        """The JSON body Chat posts: FollowList objects for an add, a flat array for a delete."""
        doc: dict[str, object] = {"CallbackCommand": self.command, "From_Account": self.account}
        if self.follows:
            doc["FollowList"] = [{"To_Account": to} for to in self.to_accounts]
        else:
            doc["To_Account"] = list(self.to_accounts)
        doc["EventTime"] = self.event_ms
        return json.dumps(doc, separators=(",", ":")).encode()


class EventClock:
    """Unix milliseconds from ``clock`` (seconds), strictly increasing from call to call."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        """The next EventTime: now, or one past the last one when the clock has not moved on."""
        with self._lock:
            self._last = max(int(self._clock() * 1000), self._last + 1)
            return self._last


Post = Callable[[list[Callback], int], None]  # (callbacks, silent changes) -> None


class Announcer:
    """A Graph's watcher: each change's journal as callbacks, handed to ``post`` in order."""

    def __init__(self, post: Post, clock: EventClock) -> None:
        self._post = post
        self._clock = clock
        self._seq = itertools.count(1)

    def __call__(self, world: World, journal: list[tuple[int, int, bool]]) -> None:
        """Announce one change (called by ``Graph.change``, under the graph's lock)."""
        callbacks: list[Callback] = []
        silent = 0
        groups: dict[tuple[int, bool], list[int]] = {}
        seen: set[tuple[int, int]] = set()
        for u, v, follows in journal:
            if u in world.deleted or v in world.deleted:
                silent += 1
                continue
            if (u, v) in seen:  # this direction again: what came before is a round of its own
                callbacks += self._round(world, groups)
                seen.clear()
            seen.add((u, v))
            groups.setdefault((u, follows), []).append(v)
        callbacks += self._round(world, groups)
        if callbacks or silent:
            self._post(callbacks, silent)

    def _round(self, world: World, groups: dict[tuple[int, bool], list[int]]) -> list[Callback]:
        """The callbacks of one round, stamped with one EventTime; its follows get that time."""
        if not groups:
            return []
        event_ms = self._clock.next()
        at, ids, n = event_ms // 1000, world.ids, world.n
        made: list[Callback] = []
        for (u, follows), targets in groups.items():
            if follows:
                world.made_times.update((u * n + v, at) for v in targets)
                world.max_time = max(world.max_time, at)
            for start in range(0, len(targets), MAX_TO_ACCOUNTS):
                chunk = tuple(ids[v] for v in targets[start : start + MAX_TO_ACCOUNTS])
                made.append(Callback(next(self._seq), ids[u], chunk, follows, event_ms))
        groups.clear()
        return made


def follow(
    graph: Graph, account: str, targets: Iterable[str], *, follows: bool, at: int
) -> tuple[list[str], list[str]]:
    """``account`` follows (or unfollows) each of ``targets``, the follows at Unix second ``at``:
    (the targets that changed, those that did not: followed already, or not followed, or
    ``account`` itself). KeyError names an account that does not exist; nothing changed then."""
    wanted = list(dict.fromkeys(targets))
    found = {a: graph.index_of(a) for a in (account, *wanted)}
    index = {a: i for a, i in found.items() if i is not None}
    missing = [a for a in found if a not in index]
    if missing:
        raise KeyError(missing[0])
    u, vs = index[account], [index[a] for a in wanted]
    changed = set(
        graph.change(
            lambda world: (
                overlays.follow(world, u, vs, at) if follows else overlays.unfollow(world, u, vs)
            )
        )
    )
    done = [a for a in wanted if index[a] in changed]
    return done, [a for a in wanted if index[a] not in changed]
