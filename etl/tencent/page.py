"""The page contract: a follow_get answer is a ``Page`` or it is a MalformedAnswer. Pure.

Everything downstream takes a Page, never the answer's dict: a Page exists only if the body
was well-formed (README, "Hostile values"). What its items carry is read item by item later
(etl.crawl.transform), where one bad item is quarantined instead of failing the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etl.errors import MalformedAnswer
from etl.tencent.text import needs_replacing

# The three lists of an account (follow_get's FollowType).
FANS, FOLLOWS, MUTUAL = 1, 2, 3
TYPE_NAMES = {FANS: "fans", FOLLOWS: "follows", MUTUAL: "mutual"}

MAX_CURSOR_CHARS = 65_536  # Tencent's cursors are short tokens; the sandbox's are ~100


@dataclass(frozen=True)
class Page:
    """One well-formed follow_get answer: it exists only if the body was a page.

    ``items`` are the FollowItem objects, each a dict with a string ``To_Account``;
    ``next_cursor`` is "" on the list's last page.
    """

    items: list[dict[str, Any]]
    next_cursor: str

    @property
    def last(self) -> bool:
        """True when the list has no page after this one."""
        return self.next_cursor == ""


def parse_page(body: Any) -> Page:
    """The page contract: ``FollowItem`` an array of objects with a string ``To_Account``,
    ``NextCursor`` a string. Anything else raises MalformedAnswer (retried like 30006)."""
    if not isinstance(body, dict):
        raise MalformedAnswer("the answer is not a JSON object")
    items = body.get("FollowItem")
    if not isinstance(items, list):
        raise MalformedAnswer(f"FollowItem is {_kind(items)}, not an array")
    cursor = body.get("NextCursor")
    if not isinstance(cursor, str):
        raise MalformedAnswer(f"NextCursor is {_kind(cursor)}, not a string")
    # The cursor is stored (sync_checkpoints.cursor) and sent back as it is: it must survive
    # both, so NUL, a lone surrogate or a giant string make the answer malformed, not a crash.
    if len(cursor) > MAX_CURSOR_CHARS or needs_replacing(cursor):
        raise MalformedAnswer(
            f"NextCursor cannot be stored ({len(cursor)} characters, NUL or lone surrogates)"
        )
    for number, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("To_Account"), str):
            raise MalformedAnswer(f"FollowItem[{number}] has no string To_Account")
    return Page(items, cursor)


def _kind(value: Any) -> str:
    return "missing or null" if value is None else type(value).__name__
