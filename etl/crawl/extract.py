"""Walk the pages of one (account, follow type) list to its end. No database here.

Every list ends: on a well-formed last page (NextCursor ""), or with an error. The service
documents neither cursor format nor lifetime, so three guards stand between a misbehaving
service and a crawl that never ends, each raising CursorLoop (the list fails, the run goes on):

- a NextCursor this crawl of the list has already asked with (p1 -> p2 -> p1 ...);
- more than MAX_EMPTY_PAGES pages in a row with no items that still point at a next page;
- more than MAX_PAGES pages in one crawl of one list that each point at a next page (a list
  whose last page arrives is never cut short: it has ended).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from etl.errors import CursorLoop, RequestRejected
from etl.tencent.page import Page

log = logging.getLogger(__name__)

MAX_RESTARTS = 2  # a list that rejects a fresh cursor again is not going to recover
MAX_EMPTY_PAGES = 100  # empty pages in a row that still have a next cursor
MAX_PAGES = 1_000_000  # a billion items at WantNum 1000: no real list is longer


class PageSource(Protocol):
    """What pages() needs of a client (etl.tencent.client.FollowClient)."""

    def follow_get(self, account: str, follow_type: int, cursor: str, want: int) -> Page:
        """One well-formed page of a list."""
        ...


@dataclass(frozen=True)
class Step:
    """One page of a list, and whether the list restarted from "" just before it."""

    page: Page
    restarted: bool  # True on the first page after a stale cursor made the list start over

    @property
    def next_cursor(self) -> str:
        """Where the list goes on; "" after its last page."""
        return self.page.next_cursor

    @property
    def last(self) -> bool:
        """True when the list has no page after this one."""
        return self.page.last


class _Crawl:
    """What one crawl of a list has seen: the cursors it asked with, pages, empty pages.

    Cursors are kept as 16-byte digests, so a long list costs tens of bytes per page whatever
    the service's cursors look like.
    """

    def __init__(self, cursor: str) -> None:
        self.asked = {_digest(cursor)}
        self.pages = 0
        self.empty = 0

    def seen(self, cursor: str) -> bool:
        """Remember ``cursor``; True if this crawl had asked with it before."""
        key = _digest(cursor)
        if key in self.asked:
            return True
        self.asked.add(key)
        return False


def _digest(cursor: str) -> bytes:
    return hashlib.blake2b(cursor.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def pages(
    client: PageSource,
    account: str,
    follow_type: int,
    cursor: str,
    want: int,
    *,
    max_pages: int = MAX_PAGES,
    max_empty: int = MAX_EMPTY_PAGES,
) -> Iterator[Step]:
    """Yield the pages of a list from ``cursor`` to its end; CursorLoop if it would not end.

    A 30001 answered to a non-empty cursor means the cursor went stale (the service does not
    document cursor lifetime): the list starts again from "", with a fresh memory of cursors,
    and the next step says so. A page whose NextCursor fails a guard is not yielded, so a
    caller never stores a cursor that leads into a loop.
    """
    name = f"{account}/{follow_type}"
    restarts = 0
    restarted = False
    crawl = _Crawl(cursor)
    while True:
        try:
            page = client.follow_get(account, follow_type, cursor, want)
        except RequestRejected:
            if not cursor or restarts >= MAX_RESTARTS:
                raise
            log.warning("%s: cursor rejected (30001); restarting the list", name)
            restarts += 1
            cursor, restarted = "", True
            crawl = _Crawl(cursor)
            continue
        crawl.pages += 1
        if not page.last:
            _check(crawl, page, name, max_pages, max_empty)
        yield Step(page, restarted)
        if page.last:
            return
        cursor, restarted = page.next_cursor, False


def _check(crawl: _Crawl, page: Page, name: str, max_pages: int, max_empty: int) -> None:
    """Raise CursorLoop if following ``page.next_cursor`` would not lead to the list's end."""
    after = f"after {crawl.pages} pages: the list would never end"
    if crawl.seen(page.next_cursor):
        shown = page.next_cursor[:40]
        raise CursorLoop(f"{name}: the service answered cursor {shown!r} again {after}")
    crawl.empty = 0 if page.items else crawl.empty + 1
    if crawl.empty > max_empty:
        raise CursorLoop(
            f"{name}: {crawl.empty} empty pages in a row, each with a next cursor, {after}"
        )
    if crawl.pages > max_pages:
        raise CursorLoop(f"{name}: more than {max_pages} pages {after}")
