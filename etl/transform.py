"""API payload -> typed rows for the edge and profile tables. Pure: no I/O, no clock."""

from __future__ import annotations

import json
import logging
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from etl.errors import MalformedAnswer

log = logging.getLogger(__name__)

FANS, FOLLOWS, MUTUAL = 1, 2, 3
TYPE_NAMES = {FANS: "fans", FOLLOWS: "follows", MUTUAL: "mutual"}

_INT, _STR = int, str
# Standard profile tag -> (column, python type of the column).
STANDARD_TAGS: dict[str, tuple[str, type]] = {
    "Tag_Profile_IM_Nick": ("nick", _STR),
    "Tag_Profile_IM_Gender": ("gender", _STR),
    "Tag_Profile_IM_BirthDay": ("birthday", _INT),
    "Tag_Profile_IM_Location": ("location", _STR),
    "Tag_Profile_IM_SelfSignature": ("self_signature", _STR),
    "Tag_Profile_IM_AllowType": ("allow_type", _STR),
    "Tag_Profile_IM_Language": ("language", _INT),
    "Tag_Profile_IM_Image": ("image", _STR),
    "Tag_Profile_IM_MsgSettings": ("msg_settings", _INT),
    "Tag_Profile_IM_AdminForbidType": ("admin_forbid_type", _STR),
    "Tag_Profile_IM_Level": ("level", _INT),
    "Tag_Profile_IM_Role": ("role", _INT),
}
PROFILE_COLUMNS = tuple(column for column, _ in STANDARD_TAGS.values())
_INT64_MAX = 2**63 - 1


# A profile row, in the column order of PROFILE_ROW: user_id, profile_sequence, the standard
# columns, then every tag (custom ones too) as JSON text.
ProfileRow = tuple[Any, ...]
PROFILE_ROW = ("user_id", "profile_sequence", *PROFILE_COLUMNS, "tags")
_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z


@dataclass
class PageRows:
    """The rows one page of a follow list yields, each key at most once.

    Edges are ``(to_account, follow_time)`` pairs (Unix seconds or None): the page's account and
    follow type are the same for all of them. Profiles the caller already stored are left out.
    """

    edges: list[tuple[str, int | None]] = field(default_factory=list)
    profiles: list[ProfileRow] = field(default_factory=list)
    skipped_items: int = 0

    @property
    def to_accounts(self) -> list[str]:
        """The To_Account of every edge, in page order."""
        return [to_account for to_account, _ in self.edges]


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
    for number, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("To_Account"), str):
            raise MalformedAnswer(f"FollowItem[{number}] has no string To_Account")
    return Page(items, cursor)


def _kind(value: Any) -> str:
    return "missing or null" if value is None else type(value).__name__


def follow_time(value: Any) -> int | None:
    """FollowTime as whole Unix seconds; None when absent or nonsense."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or not 0 <= value <= _MAX_EPOCH:  # NaN, negative, past year 9999
        return None
    return int(value)


def as_datetime(epoch: int | None) -> datetime | None:
    """Unix seconds as an aware UTC datetime."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _sequence(item: dict[str, Any]) -> int | None:
    # The reference spells it profile_sequence; Tencent's own web SDK reads ProfileSequence.
    for key in ("profile_sequence", "ProfileSequence"):
        value = item.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def _column_value(value: Any, kind: type) -> Any:
    if kind is _STR:
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= _INT64_MAX:
        return value
    return None


def profile_tags(items: Any) -> dict[str, Any]:
    """ProfileItem as Tag -> Value (custom tags too); malformed pairs are dropped."""
    tags: dict[str, Any] = {}
    if isinstance(items, list):
        for pair in items:
            if isinstance(pair, dict) and isinstance(pair.get("Tag"), str):
                tags[pair["Tag"]] = pair.get("Value")
    return tags


def profile_row(user_id: str, sequence: int, items: Any) -> ProfileRow:
    """One profile snapshot in PROFILE_ROW order: standard tags in their columns, all in tags."""
    tags = profile_tags(items)
    columns = [_column_value(tags.get(tag), kind) for tag, (_, kind) in STANDARD_TAGS.items()]
    return (user_id, sequence, *columns, _dumps(tags))


def _dumps(tags: dict[str, Any]) -> str:
    try:
        return orjson.dumps(tags).decode()
    except TypeError:  # an integer beyond 64 bits: only json writes it
        return json.dumps(tags, ensure_ascii=False)


def page_rows(
    body: dict[str, Any],
    account: str,
    follow_type: int,
    known_profiles: Container[tuple[str, int]] = (),
) -> PageRows:
    """Turn one follow_get answer into edge and profile rows, dropping malformed items.

    ``known_profiles`` holds (user, sequence) keys already stored: no row is built for them.
    """
    rows = PageRows()
    seen_edges: set[str] = set()
    seen_profiles: set[tuple[str, int]] = set()
    items = body.get("FollowItem") or []
    if not isinstance(items, list):
        items = []
    for item in items:
        to_account = item.get("To_Account") if isinstance(item, dict) else None
        if not isinstance(to_account, str) or not to_account:
            rows.skipped_items += 1
            continue
        # A list that changes between pages can repeat an account; one row per key per batch.
        if to_account not in seen_edges:
            seen_edges.add(to_account)
            rows.edges.append((to_account, follow_time(item.get("FollowTime"))))
        sequence = _sequence(item)
        if sequence is None:
            continue
        key = (to_account, sequence)
        if key not in seen_profiles and key not in known_profiles:
            seen_profiles.add(key)
            rows.profiles.append(profile_row(to_account, sequence, item.get("ProfileItem")))
    if rows.skipped_items:
        log.warning("%s/%s: dropped %d malformed items", account, follow_type, rows.skipped_items)
    return rows
