"""The typed rows a batch carries from the crawl to the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

Key = tuple[str, int]  # (account, follow_type): one list


@dataclass
class ListPart:
    """What one batch holds for one list: its newest pages, in order."""

    account: str
    follow_type: int
    edges: dict[str, int | None] = field(default_factory=dict)  # to_account -> follow_time
    pages: int = 0
    next_cursor: str = ""
    complete: bool = False  # the list's last page is in this batch
    restarted: bool = False  # the list began again from "" within this batch
    baseline: bool = False  # the list was crawled completely in an earlier run
    had_seen: bool = False  # earlier batches of this crawl left rows in sync_seen
    fresh: bool = False  # every current edge of the list is one this crawl listed (ListState)
    confirming: bool = False  # the crawl confirms an earlier one's hold (etl.holds)
    info_count: int | None = None  # follow_get_info's count for the list, asked at its end
    # When the list's crawl began (ListState.started): it removes no edge changed since, and
    # lists again no edge removed since. None: unknown, the batch's own time stands in.
    started: datetime | None = None

    @property
    def key(self) -> Key:
        """(account, follow_type)."""
        return (self.account, self.follow_type)
