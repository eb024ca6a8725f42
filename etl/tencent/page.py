"""The page contract: a follow_get answer is a ``Page`` or it is a MalformedAnswer. Pure.

Everything downstream takes a Page, never the answer's dict: a Page exists only if the body
was well-formed (README, "Hostile values"). What its items carry is read item by item later
(etl.crawl.transform), where one bad item is quarantined instead of failing the page.

Two ways lead to a Page, with one result. ``decode_page`` reads the common answer straight from
its bytes (msgspec, typed): each item's ProfileItem stays the answer's own bytes, so a profile
version already known costs a hash of those bytes, not a parse. Whatever it does not take for
certain (an error code, a surprise of type, a number beyond a double, an encoded surrogate) it
leaves to the exact path: ``parse_json`` (etl.tencent.exact_json), the code check, then
``parse_page``, which also builds the Pages of parsed JSON the tests hand in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import msgspec

from etl.errors import MalformedAnswer
from etl.tencent.exact_json import parse_json
from etl.tencent.profile import Snapshot, item_bytes, snapshot_and_plain, snapshot_of_tags
from etl.tencent.text import needs_replacing

# The three lists of an account (follow_get's FollowType).
FANS, FOLLOWS, MUTUAL = 1, 2, 3
TYPE_NAMES = {FANS: "fans", FOLLOWS: "follows", MUTUAL: "mutual"}

MAX_CURSOR_CHARS = 65_536  # Tencent's cursors are short tokens; the sandbox's are ~100


class FollowItem(msgspec.Struct, gc=False):
    """One FollowItem of a page with a string To_Account, its ProfileItem as parsed JSON."""

    # Whether equal profile_bytes always mean equal content (else only for a plain snapshot).
    wire: ClassVar[bool] = False
    To_Account: str
    FollowTime: Any = None
    ProfileItem: Any = None
    profile_sequence: Any = None
    ProfileSequence: Any = None

    def profile_bytes(self) -> bytes | None:
        """Bytes of the ProfileItem that one content always has (orjson's; None if it cannot
        write it): equal bytes, equal content when the snapshot says it is ``plain``."""
        return item_bytes(self.ProfileItem)

    def profile(self) -> Any:
        """The ProfileItem as parsed JSON (None when absent)."""
        return self.ProfileItem

    def snapshot(self) -> Snapshot:
        """The ProfileItem as stored (etl.tencent.profile.snapshot_and_plain)."""
        return snapshot_and_plain(self.ProfileItem)


class WireItem(FollowItem, gc=False):
    """A FollowItem decoded from the answer's bytes: its ProfileItem is those bytes."""

    wire: ClassVar[bool] = True
    ProfileItem: msgspec.Raw = msgspec.Raw(b"null")

    def profile_bytes(self) -> bytes:
        """The ProfileItem as the answer carried it: equal bytes always mean equal content."""
        return bytes(self.ProfileItem)

    def profile(self) -> Any:
        """The ProfileItem parsed exactly (etl.tencent.exact_json)."""
        return parse_json(bytes(self.ProfileItem))

    def snapshot(self) -> Snapshot:
        """The ProfileItem as stored: read typed when it is plain pairs of a string Tag and a
        Value, each tag once, no other key (the common profile); the exact way otherwise."""
        try:
            pairs = _PAIRS(self.ProfileItem)
        except msgspec.MsgspecError:
            return snapshot_and_plain(self.profile())
        tags = {pair.Tag: pair.Value for pair in pairs}
        if len(tags) != len(pairs) or _NO_VALUE in tags.values():
            return snapshot_and_plain(self.profile())
        return snapshot_of_tags(tags, False, self.profile, True)


class _Pair(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One {"Tag": ..., "Value": ...} of a ProfileItem; no other key."""

    Tag: str
    Value: Any = msgspec.UNSET


_NO_VALUE = msgspec.UNSET
_PAIRS = msgspec.json.Decoder(list[_Pair]).decode


@dataclass(frozen=True)
class Page:
    """One well-formed follow_get answer: it exists only if the body was a page.

    ``items`` are its FollowItems, each with a string ``To_Account``; ``next_cursor`` is "" on
    the list's last page. ``source`` is what they were read from (the answer's bytes, or the
    parsed items): ``original`` gives an item back whole, for a quarantine record.
    """

    items: list[FollowItem]
    next_cursor: str
    source: bytes | list[Any] = field(default=b"", compare=False, repr=False)

    @classmethod
    def of(cls, items: list[Any], next_cursor: str) -> Page:
        """The Page of items as parsed JSON (dicts with a string To_Account)."""
        return cls([_item(item) for item in items], next_cursor, items)

    @property
    def last(self) -> bool:
        """True when the list has no page after this one."""
        return self.next_cursor == ""

    def original(self, index: int) -> Any:
        """The ``index``-th FollowItem as parsed JSON, all of it (unknown fields too)."""
        return self._originals[index]

    @cached_property
    def _originals(self) -> list[Any]:
        if isinstance(self.source, list):
            return self.source
        originals: list[Any] = parse_json(self.source)["FollowItem"]
        return originals


def _item(item: Any) -> FollowItem:
    # Not a dict, or no string To_Account: only a hand-built Page has one (quarantined later).
    account: Any = item.get("To_Account") if isinstance(item, dict) else None
    if not isinstance(item, dict):
        return FollowItem(To_Account=account)
    return FollowItem(
        To_Account=account,
        FollowTime=item.get("FollowTime"),
        ProfileItem=item.get("ProfileItem"),
        profile_sequence=item.get("profile_sequence"),
        ProfileSequence=item.get("ProfileSequence"),
    )


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
    if not storable_cursor(cursor):
        raise MalformedAnswer(
            f"NextCursor cannot be stored ({len(cursor)} characters, NUL or lone surrogates)"
        )
    for number, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("To_Account"), str):
            raise MalformedAnswer(f"FollowItem[{number}] has no string To_Account")
    return Page.of(items, cursor)


def storable_cursor(cursor: str) -> bool:
    """The cursor is stored (sync_checkpoints.cursor) and sent back as it is: it must survive
    both, so NUL, a lone surrogate or a giant string make the answer malformed, not a crash."""
    return len(cursor) <= MAX_CURSOR_CHARS and not needs_replacing(cursor)


class _Answer(msgspec.Struct, gc=False):
    """The common follow_get answer: OK, a page."""

    ActionStatus: str
    FollowItem: list[WireItem]
    NextCursor: str
    ErrorCode: int = 0


_DECODE = msgspec.json.Decoder(_Answer).decode
# UTF-8 of a surrogate (ED A0-BF ..): exact_json reads such text differently depending on what
# else the body holds, so the whole body goes that way. 0xED alone is also Korean (ED 80-9F).
_ENCODED_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


def decode_page(content: bytes) -> Page | None:
    """The Page of an answer's bytes when it is the common one, an OK page; None when the exact
    path must decide (an error code, an answer that is no page, or text or numbers it reads
    its own way): the exact path then gives the same Page, or the error."""
    if content.find(b"\xed") >= 0 and _ENCODED_SURROGATE.search(content):
        return None
    try:
        answer = _DECODE(content)
    except msgspec.MsgspecError:
        return None
    ok = answer.ActionStatus == "OK" and answer.ErrorCode == 0
    if not ok or not storable_cursor(answer.NextCursor):
        return None
    items: list[FollowItem] = list(answer.FollowItem)
    return Page(items, answer.NextCursor, content)


def _kind(value: Any) -> str:
    return "missing or null" if value is None else type(value).__name__
