"""What the parts of a crawl hand each other: claims, pages, endings, and the tally."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from etl.crawl.outcome import Outcome
from etl.store.rows import Key, ListState
from etl.tencent import info
from etl.tencent.rows import PageRows


@dataclass
class Claim:
    """One list this process leased, from the claim until its Ended is committed."""

    task: ListState
    dropped: bool = False  # the writer found the lease gone: the fetcher stops at once
    # A confirming crawl's follow_get_info answer, asked as the list ends (etl.holds).
    info: info.Answer | None = None

    @property
    def key(self) -> Key:
        """(account, follow_type)."""
        return self.task.key


@dataclass
class Fetched:
    """One page of a list, parsed."""

    claim: Claim
    rows: PageRows
    next_cursor: str
    restarted: bool
    # A restarted list's new start: the crawl's clock just before the calls that restarted it
    # (never later than they were made). None: not restarted, or not known (the batch's time).
    started: datetime | None = None


@dataclass
class Ended:
    """The end of this process's work on a list: always the last item a fetcher sends for it."""

    claim: Claim
    outcome: Outcome
    error: str = ""
    exc: BaseException | None = None


EXAMPLES = 10  # examples a Sample keeps: the full sets are in the database


@dataclass
class Sample:
    """How many of something there were, and the first few (memory flat in their number:
    the checkpoints hold them all, with their last_error; `status` shows them)."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, example: str, *, distinct: bool = False) -> None:
        """Count one; keep it if there is room (``distinct``: unless already kept)."""
        self.count += 1
        if len(self.first) < EXAMPLES and not (distinct and example in self.first):
            self.first.append(example)


@dataclass
class Tally:
    """What this process did, for the report and the progress display (under ``lock``)."""

    pages: int = 0
    items: int = 0
    edges_removed: int = 0
    events: int = 0
    settled: int = 0
    quarantined: int = 0
    conflicts: int = 0
    profiles: int = 0  # profile versions stored for the first time
    missing: Sample = field(default_factory=Sample)  # lists of accounts that do not exist
    failures: Sample = field(default_factory=Sample)  # lists given up or failed, with why
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class Rate:
    """Calls per second over the last few seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.window = window

    def add(self, now: float, calls: int) -> float:
        """Record the call count at ``now``; return the recent rate."""
        self.samples.append((now, calls))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        then, before = self.samples[0]
        return (calls - before) / (now - then) if now > then else 0.0
