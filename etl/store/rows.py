"""The typed rows a crawl carries: a claimed list's state, and a batch's part of a list."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

Key = tuple[str, int]  # (account, follow_type): one list


@dataclass
class ListState:
    """Where one (account, follow type) list of a run stands, as claimed by this process."""

    account: str
    follow_type: int
    cursor: str
    seen: int = 0  # rows this crawl has in sync_seen
    baseline: bool = False  # crawled completely in an earlier run
    expected: int = 0  # its size when the run began (expected_items)
    # The crawl began at the list's start with no current edge stored for it: every current
    # edge it ends with is one it listed, so it keeps no sync_seen rows and completing it
    # needs no search for removed edges. Kept in sync_checkpoints.fresh for a process that
    # resumes the list; a restart ends it (etl.crawl.writer, etl.store.cursors.advance).
    fresh: bool = False
    # An earlier crawl of this run was held for a mass removal: this crawl confirms it or not
    # (etl.holds), and its fetcher asks follow_get_info for the list's count at its end.
    confirming: bool = False
    # When this crawl of the list began, by the database's clock: set by the claim that starts
    # it at its first page, kept in sync_checkpoints.crawl_started_at for a process that
    # resumes it. Another run may crawl the same list meanwhile (a job whose accounts overlap,
    # `verify --repair`): what it changed after this start is not this crawl's to undo.
    started: datetime | None = None
    # Callbacks changed the list since its last complete crawl when the run listed it with
    # --changed-first (sync_checkpoints.touched): it is claimed before the others.
    touched: bool = False

    @property
    def key(self) -> Key:
        """(account, follow_type)."""
        return (self.account, self.follow_type)


class Mode(enum.Enum):
    """How a batch's part of a list stands: how its crawl finds removed edges (fresh, first,
    seen or restarted), and whether the list's last page is in this batch (``_END``).

    - FRESH: the crawl began at the list's start with no current edge stored (ListState.fresh):
      it keeps no sync_seen rows, and its end searches for no removed edge.
    - FIRST: a searched crawl with no sync_seen rows yet (no earlier batch of it).
    - SEEN: a searched crawl whose earlier batches left rows in sync_seen.
    - RESTARTED: the list began again from "" within this batch: what earlier batches left in
      sync_seen is dropped first, and the crawl is searched (no longer fresh).
    """

    FRESH = ("fresh", False)
    FRESH_END = ("fresh", True)
    FIRST = ("first", False)
    FIRST_END = ("first", True)
    SEEN = ("seen", False)
    SEEN_END = ("seen", True)
    RESTARTED = ("restarted", False)
    RESTARTED_END = ("restarted", True)

    @classmethod
    def of(cls, state: ListState) -> Mode:
        """The mode of a claimed list's next batch, before its pages are read."""
        if state.fresh:
            return cls.FRESH
        return cls.SEEN if state.seen > 0 else cls.FIRST

    def ending(self, ends: bool) -> Mode:
        """This mode, with the list's last page in the batch or not."""
        return Mode((self.value[0], ends))

    @property
    def _kind(self) -> str:
        return str(self.value[0])

    @property
    def ends(self) -> bool:
        """The list's last page is in this batch: it completes."""
        return bool(self.value[1])

    @property
    def fresh(self) -> bool:
        """No sync_seen rows and no removal search (see FRESH)."""
        return self._kind == "fresh"

    @property
    def restarted(self) -> bool:
        """The list began again from "" within this batch."""
        return self._kind == "restarted"

    @property
    def had_seen(self) -> bool:
        """Earlier batches of this crawl left rows in sync_seen, still there to check."""
        return self._kind == "seen"

    @property
    def keeps_seen(self) -> bool:
        """Its edges go to sync_seen: the list goes on after this batch, and its end will
        search for removed edges."""
        return not self.ends and not self.fresh

    @property
    def searches(self) -> bool:
        """It completes here, and its completion searches for the edges it no longer lists."""
        return self.ends and not self.fresh


@dataclass
class ListPart:
    """What one batch holds for one list: its newest pages, in order."""

    account: str
    follow_type: int
    edges: dict[str, int | None] = field(default_factory=dict)  # to_account -> follow_time
    pages: int = 0
    next_cursor: str = ""
    mode: Mode = Mode.FIRST
    baseline: bool = False  # the list was crawled completely in an earlier run: events
    confirming: bool = False  # the crawl confirms an earlier one's hold (etl.holds)
    info_count: int | None = None  # follow_get_info's count for the list, asked at its end
    # When the list's crawl began (ListState.started): it removes no edge changed since, and
    # lists again no edge removed since. None: unknown, the batch's own time stands in.
    started: datetime | None = None

    @property
    def key(self) -> Key:
        """(account, follow_type)."""
        return (self.account, self.follow_type)
