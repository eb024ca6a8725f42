"""What a page yields, as the tables store it: edges, profile versions, quarantine records.

The value types the crawl hands the store (``PageRows``, ``Profile``, ``Quarantined``) and the
pure readers they are built with; etl.crawl.transform fills them page by page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from etl.tencent.page import Page
from etl.tencent.profile import ProfileKey, ProfileRow
from etl.tencent.text import raw_json, storable_text

ITEM_TEXT_LIMIT = 64 * 1024  # quarantined_items.item is cut here
LABEL_LIMIT = 256  # quarantined_items.to_account is cut here
UNSTORABLE, CONFLICT = "unstorable", "conflict"
_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True, slots=True)
class Profile:
    """A profile version to store, the page and place of the FollowItem it came from (for a
    conflict record), and its KnownProfiles mark (etl.crawl.known: for the writer to remember
    once it is stored)."""

    row: ProfileRow
    page: Page
    index: int
    mark: int

    @property
    def item(self) -> Any:
        """The FollowItem it came from, as parsed JSON."""
        return self.page.original(self.index)

    @property
    def key(self) -> ProfileKey:
        """(user, profile_sequence)."""
        return (self.row[0], self.row[1])

    @property
    def digest(self) -> str:
        """The content digest: two sightings with the same one store the same thing."""
        digest: str = self.row[-1]
        return digest


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An item, or its profile, kept out of the tables: what quarantined_items records."""

    kind: str  # UNSTORABLE or CONFLICT
    reason: str  # the field, and what is wrong with it
    to_account: str | None  # storable text, cut at LABEL_LIMIT characters
    item: str  # the FollowItem as ASCII JSON, cut at ITEM_TEXT_LIMIT
    item_digest: str  # of the whole item JSON: one record per run, list and item


@dataclass
class PageRows:
    """The rows one page of a follow list yields.

    Edges are ``(to_account, follow_time)`` pairs (Unix seconds or None), each To_Account once:
    the page's account and follow type are the same for all of them. ``profiles`` are the
    versions ``known`` did not hold with this content; ``quarantined`` the items (or profiles)
    that cannot be stored.
    """

    edges: list[tuple[str, int | None]] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def to_accounts(self) -> list[str]:
        """The To_Account of every edge, in page order."""
        return [to_account for to_account, _ in self.edges]


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


def quarantine(item: Any, kind: str, reason: str) -> Quarantined:
    """The quarantined_items record of ``item``; never raises."""
    to_account = item.get("To_Account") if isinstance(item, dict) else None
    label = storable_text(to_account)[:LABEL_LIMIT] if isinstance(to_account, str) else None
    try:
        text = raw_json(item)
    except (RecursionError, ValueError, TypeError) as exc:
        text = raw_json({"To_Account": label, "unprintable": type(exc).__name__})
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    if len(text) > ITEM_TEXT_LIMIT:
        marker = f"...[cut: {len(text)} characters in all]"
        text = text[: ITEM_TEXT_LIMIT - len(marker)] + marker
    return Quarantined(kind, reason, label, text, digest)


def conflict(profile: Profile) -> Quarantined:
    """The record of a profile version seen with content other than the one stored first."""
    spelled = profile.item.get("profile_sequence") is not None  # as profile_sequence reads it
    field_name = "profile_sequence" if spelled else "ProfileSequence"
    return quarantine(profile.item, CONFLICT, f"{field_name}: stored with other content")
