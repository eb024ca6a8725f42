"""What a batch of callback changes does, decided in memory from the state it read (pure; the
reads and writes are etl.store.live's): the ordering rule, the kept lists, the edges and
their events.

- Ordering: per direction A->B a change's key is (event_ms, rank), rank 0 for a follow and 1
  for an unfollow (a tie goes to the unfollow). A change is applied iff its key is greater than
  the newest applied for its direction (live_pairs); else it is stale (a duplicate, or older
  than one applied: a delete older than the stored add is ignored). The changes of a batch are
  applied in key order, each seeing the edges as the ones before it left them, so a batch gives
  what one batch per change would: the final state of a direction is its greatest key.
- Kept lists: those with a follow_lists row (a baseline). An applied change writes only kept
  lists where it is not older than the list's last complete crawl (crawled_at): the crawl saw
  the world after it. The direct lists it would have written but are not kept are counted
  (Applied.untracked).
- A follow A->B makes (A,2,B) and (B,1,A) current, and (A,3,B), (B,3,A) too when B follows A:
  (B,2,A) current if (B,2) is kept, else (A,1,B) current if (A,1) is kept, else B->A's newest
  applied change followed. A mutual edge's time is the later of the two follows' times when
  both came by callback (whichever arrived first), else the change's own. (A follow of
  oneself is its own follow back.)
- An unfollow ends all four where current. Making a current edge current, or ending an ended
  one, is nothing: no event, the time unchanged.
- A follow_time is EventTime as a timestamp (millisecond precision), provisional until a crawl
  stores FollowTime; an EventTime after 9999-12-30 (up to 2**63 - 1 ms: past what a timestamp
  holds, or reads back, in every time zone) stores no time (NULL) rather than fail; it still
  orders its direction's changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

FANS, FOLLOWS, MUTUAL = 1, 2, 3
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last EventTime stored as a time: a day before Python's last datetime, so that a session
# in any time zone (UTC-12 to UTC+14) still reads the stored time back.
LAST_TIME = datetime(9999, 12, 30, tzinfo=UTC)
MAX_TIME_MS = (LAST_TIME - EPOCH) // timedelta(milliseconds=1)

Pair = tuple[str, str]  # (low, high): the lesser account id first (code point order)
ListKey = tuple[str, int]  # (account, follow_type)
EdgeKey = tuple[str, int, str]  # (account, follow_type, to_account)
Key = tuple[int, int]  # (event_ms, rank): rank 0 follow, 1 unfollow


@dataclass(frozen=True, slots=True)
class Change:
    """One direction of one callback: ``account`` followed (or unfollowed) ``to_account``."""

    account: str  # From_Account
    to_account: str  # one To_Account of the callback
    follows: bool  # True: Follow.CallbackAfterFollowAdd; False: Follow.CallbackAfterFollowDelete
    event_ms: int  # EventTime, Unix milliseconds, 0 <= event_ms < 2**63

    @property
    def key(self) -> Key:
        """Its place in its direction's order: a tie of times goes to the unfollow."""
        return (self.event_ms, 0 if self.follows else 1)

    @property
    def pair(self) -> Pair:
        """The unordered pair of its two accounts, lesser first."""
        a, b = self.account, self.to_account
        return (a, b) if a <= b else (b, a)


@dataclass
class Applied:
    """What a batch of changes did."""

    changes: int = 0  # changes given
    applied: int = 0  # newer than any applied before for their direction: they decided it
    stale: int = 0  # duplicates, and changes older than the newest applied for the direction
    untracked: int = 0  # of applied changes, the follows/fans lists not kept (no baseline)
    added: int = 0  # edges made current
    removed: int = 0  # edges ended


@dataclass
class PairState:
    """A live_pairs row: the key of the newest change applied in each direction."""

    low: Key | None = None  # low -> high
    high: Key | None = None  # high -> low
    changed: bool = False  # a change of this batch was applied: the row is written back

    def get(self, low_to_high: bool) -> Key | None:
        """The newest key applied in one direction (None: none yet)."""
        return self.low if low_to_high else self.high

    def set(self, low_to_high: bool, key: Key) -> None:
        """``key`` was applied in that direction."""
        if low_to_high:
            self.low = key
        else:
            self.high = key
        self.changed = True


@dataclass
class EdgeState:
    """An edge of a kept list, as stored when read and as this batch leaves it."""

    stored: bool  # a row exists
    current: bool  # not removed
    made_current_ms: int | None = None  # set when this batch made it current: its time
    events: list[str] = field(default_factory=list)  # 'added' / 'removed', in order


@dataclass
class Plan:
    """A batch decided: the pairs and edges to write back, and the counts."""

    applied: Applied
    pairs: dict[Pair, PairState]
    edges: dict[EdgeKey, EdgeState]

    def changed_edges(self) -> list[tuple[EdgeKey, EdgeState]]:
        """The edges with a real change, in key order (only those are sorted)."""
        return sorted(((k, e) for k, e in self.edges.items() if e.events), key=lambda ke: ke[0])

    def drop(self, lost: set[EdgeKey]) -> None:
        """Forget the changes of edges another writer inserted first (etl.store.live)."""
        for key in lost:
            edge = self.edges.pop(key)
            self.applied.added -= edge.events.count("added")
            self.applied.removed -= edge.events.count("removed")


def time_of(event_ms: int) -> datetime | None:
    """EventTime as a timestamp; None after LAST_TIME."""
    return EPOCH + timedelta(milliseconds=event_ms) if event_ms <= MAX_TIME_MS else None


def micros(value: datetime) -> int:
    """A stored time as Unix microseconds (SQLite gives naive UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // timedelta(microseconds=1)


class _Batch:
    """The state a batch read, changed one applied change at a time."""

    def __init__(
        self,
        pairs: dict[Pair, PairState],
        lists: Mapping[ListKey, int | None],
        edges: dict[EdgeKey, EdgeState],
    ) -> None:
        self.pairs = pairs
        self.lists = lists  # kept lists: crawled_at as Unix microseconds (None: not yet)
        self.edges = edges
        self.counts = Applied()

    def writes(self, key: ListKey, event_ms: int) -> bool:
        """The change may write list ``key``: it is kept, and the change is not older than
        its last complete crawl."""
        if key not in self.lists:
            return False
        crawled = self.lists[key]
        return crawled is None or event_ms * 1000 >= crawled

    def apply(self, change: Change) -> None:
        """Apply ``change`` if it is newer than its direction's newest; else count it stale."""
        state = self.pairs.setdefault(change.pair, PairState())
        low_to_high = change.account == change.pair[0]
        stored = state.get(low_to_high)
        if stored is not None and change.key <= stored:
            self.counts.stale += 1
            return
        state.set(low_to_high, change.key)
        self.counts.applied += 1
        a, b, ms = change.account, change.to_account, change.event_ms
        self.counts.untracked += ((a, FOLLOWS) not in self.lists) + ((b, FANS) not in self.lists)
        direct = [(a, FOLLOWS, b), (b, FANS, a)]
        mutual = [(a, MUTUAL, b), (b, MUTUAL, a)]
        if not change.follows:
            for edge in direct + mutual:
                self.end(edge, ms)
            return
        for edge in direct:
            self.make_current(edge, ms, ms)
        other = state.get(low_to_high == (a == b))  # B->A's newest (A->A: itself)
        if self.follows(b, a, other):
            since = max(ms, other[0]) if other is not None and other[1] == 0 else ms
            for edge in mutual:
                self.make_current(edge, ms, since)

    def follows(self, a: str, b: str, newest: Key | None) -> bool:
        """Whether ``a`` follows ``b`` now: its follows list if kept, else ``b``'s fans list
        if kept, else the newest change applied from ``a`` to ``b`` (``newest``)."""
        for edge in ((a, FOLLOWS, b), (b, FANS, a)):
            if edge[:2] in self.lists:
                state = self.edges.get(edge)
                return state is not None and state.current
        return newest is not None and newest[1] == 0

    def make_current(self, edge: EdgeKey, event_ms: int, since_ms: int) -> None:
        """Insert or revive ``edge`` with the time ``since_ms``, where ``event_ms`` may write."""
        if not self.writes(edge[:2], event_ms):
            return
        state = self.edges.setdefault(edge, EdgeState(stored=False, current=False))
        if state.current:
            return
        state.current, state.made_current_ms = True, since_ms
        state.events.append("added")
        self.counts.added += 1

    def end(self, edge: EdgeKey, event_ms: int) -> None:
        """Remove ``edge`` if it is current, where ``event_ms`` may write."""
        state = self.edges.get(edge)
        if state is None or not state.current or not self.writes(edge[:2], event_ms):
            return
        state.current = False
        state.events.append("removed")
        self.counts.removed += 1


def plan(
    changes: Sequence[Change],
    pairs: dict[Pair, PairState],
    lists: Mapping[ListKey, int | None],
    edges: dict[EdgeKey, EdgeState],
) -> Plan:
    """Apply ``changes`` in key order to the state read: ``pairs`` (locked), the kept ``lists``
    of their accounts (crawled_at in Unix microseconds), the stored ``edges`` of those lists
    between them. The states given are changed in place."""
    batch = _Batch(pairs, lists, edges)
    for change in sorted(changes, key=lambda c: (c.key, c.account, c.to_account)):
        batch.apply(change)
    batch.counts.changes = len(changes)
    return Plan(batch.counts, pairs, edges)
