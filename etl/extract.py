"""Walk the pages of one (account, follow type) list. No database here."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from etl.client import FollowClient
from etl.errors import RequestRejected

log = logging.getLogger(__name__)

MAX_RESTARTS = 2  # a list that rejects a fresh cursor again is not going to recover


@dataclass(frozen=True)
class Page:
    """One answer of follow_get, with the cursor it was asked with."""

    body: dict[str, Any]
    next_cursor: str
    restarted: bool  # True on the first page after the list restarted from ""

    @property
    def last(self) -> bool:
        """True when the list has no page after this one."""
        return self.next_cursor == ""


def pages(
    client: FollowClient, account: str, follow_type: int, cursor: str, want: int
) -> Iterator[Page]:
    """Yield the pages of a list from ``cursor`` to its end.

    A 30001 answered to a non-empty cursor means the cursor went stale (the service does not
    document cursor lifetime): the list starts again from "" and the next page says so.
    """
    restarts = 0
    restarted = False
    while True:
        try:
            body = client.follow_get(account, follow_type, cursor, want)
        except RequestRejected:
            if not cursor or restarts >= MAX_RESTARTS:
                raise
            log.warning("%s/%d: cursor rejected (30001); restarting the list", account, follow_type)
            restarts += 1
            cursor, restarted = "", True
            continue
        next_cursor = body.get("NextCursor") or ""
        if not isinstance(next_cursor, str):
            next_cursor = ""
        yield Page(body=body, next_cursor=next_cursor, restarted=restarted)
        if not next_cursor:
            return
        if next_cursor == cursor:
            # A service answering the same cursor forever would loop us forever.
            raise RequestRejected(f"{account}/{follow_type}: the service repeated its cursor")
        cursor, restarted = next_cursor, False
