"""API payload -> typed rows for the edge and profile tables. Pure: no I/O, no clock.

The page contract (``parse_page``): a page is well-formed or it is a MalformedAnswer. What a
well-formed page carries is then stored, or stored in the documented form (README, "Hostile
values"), or quarantined with its reason; ``page_rows`` never raises:

- text: NUL and lone surrogates, which PostgreSQL text and jsonb cannot hold, become U+FFFD in
  the columns and everywhere inside ``tags``; non-finite floats become "NaN", "Infinity" and
  "-Infinity". Whenever a profile had to change to be stored, its exact ProfileItem is kept
  too, as ASCII JSON in ``tags_raw``;
- a To_Account that cannot be a key (empty, NUL, lone surrogate, over 255 UTF-8 bytes): the
  whole item is quarantined;
- a profile_sequence outside 0 .. 2**64-1 or not an integer: the profile is quarantined, the
  edge is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
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
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
SEQUENCE_MAX = 2**64 - 1
MAX_KEY_BYTES = 255  # a To_Account longer than this is no key (Tencent documents 32 bytes)
MAX_NESTING = 500  # arrays/objects inside a tag value; deeper, the profile is quarantined
ITEM_TEXT_LIMIT = 64 * 1024  # quarantined_items.item is cut here
LABEL_LIMIT = 256  # quarantined_items.to_account is cut here
UNSTORABLE, CONFLICT = "unstorable", "conflict"

# A profile row, in the column order of PROFILE_ROW: user_id, profile_sequence, the standard
# columns, every tag (custom ones too) as JSON text, the exact ProfileItem when anything had to
# change (else None), and the digest of that content.
ProfileRow = tuple[Any, ...]
PROFILE_ROW = (
    "user_id",
    "profile_sequence",
    *PROFILE_COLUMNS,
    "tags",
    "tags_raw",
    "content_digest",
)
ProfileKey = tuple[str, int]  # (user, profile_sequence): one profile version
_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True, slots=True)
class Profile:
    """A profile version to store, the FollowItem it came from (for a conflict record), and
    its KnownProfiles mark (for the writer to remember once it is stored)."""

    row: ProfileRow
    item: dict[str, Any]
    mark: int

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


class KnownProfiles:
    """Profile versions this process knows are stored, or about to be: key -> a mark of their
    content, ``hash()`` of the ProfileItem as orjson writes it (so an identical answer costs
    one dump and a lookup) or of the content digest. In-process only, like ``hash()``.

    Shared by the fetcher threads and the writers without a lock: each call is one or two dict
    operations, atomic under the GIL. A race between two fetchers builds one version's row
    twice; the writer keeps the first. Bounded: past ``limit`` entries it starts again empty,
    which costs rows staged again, nothing more.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._marks: dict[ProfileKey, int] = {}

    def __len__(self) -> int:
        return len(self._marks)

    def mark(self, key: ProfileKey) -> int | None:
        """The mark known for ``key``, if any."""
        return self._marks.get(key)

    def remember(self, key: ProfileKey, mark: int) -> None:
        """``key`` is stored (or about to be) with the content ``mark`` stands for."""
        marks = self._marks
        if len(marks) >= self.limit and key not in marks:
            marks = self._marks = {}  # fetchers still holding the old dict are harmless
        marks[key] = mark

    def settle(self, key: ProfileKey, digest: str | None) -> None:
        """The database holds ``key`` with the content of ``digest`` (None: not known)."""
        if digest is None:
            self._marks.pop(key, None)
        else:
            self.remember(key, digest_mark(digest))


def digest_mark(digest: str) -> int:
    """The KnownProfiles mark of a content digest."""
    return hash(digest)


def _item_bytes(profile_item: Any) -> bytes | None:
    try:
        return orjson.dumps(profile_item)
    except TypeError:  # a lone surrogate, an integer past 64 bits, deep nesting
        return None


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
    if len(cursor) > MAX_CURSOR_CHARS or _needs_replacing(cursor):
        raise MalformedAnswer(
            f"NextCursor cannot be stored ({len(cursor)} characters, NUL or lone surrogates)"
        )
    for number, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("To_Account"), str):
            raise MalformedAnswer(f"FollowItem[{number}] has no string To_Account")
    return Page(items, cursor)


MAX_CURSOR_CHARS = 65_536  # Tencent's cursors are short tokens; the sandbox's are ~100


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


# -- text ------------------------------------------------------------------------------------

# PostgreSQL text and jsonb cannot hold NUL; UTF-8 (so neither database driver) cannot encode a
# surrogate, and JSON's \ud83d without its low half decodes to exactly that.
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD."""
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    return _UNSTORABLE_CHARS.sub("\ufffd", text)


def _needs_replacing(text: str) -> bool:
    return "\x00" in text or (not text.isascii() and _UNSTORABLE_CHARS.search(text) is not None)


def key_problem(to_account: Any) -> str | None:
    """Why ``to_account`` cannot be a key in the tables, or None when it can."""
    if not isinstance(to_account, str):
        return "To_Account: not a string"
    if not to_account:
        return "To_Account: empty"
    if "\x00" in to_account:
        return "To_Account: contains NUL"
    if to_account.isascii():
        size = len(to_account)
    else:
        try:
            size = len(to_account.encode())
        except UnicodeEncodeError:
            return "To_Account: contains a lone surrogate"
    if size > MAX_KEY_BYTES:
        return f"To_Account: over {MAX_KEY_BYTES} bytes"
    return None


# -- profiles ----------------------------------------------------------------------------------


class _Unstorable(Exception):
    """A profile that cannot be stored in any documented form; the message is the reason."""


def _sequence(item: dict[str, Any]) -> int | None:
    """The item's profile_sequence; None when it has none. _Unstorable when it has one that is
    not an integer in 0 .. 2**64-1."""
    # The reference spells it profile_sequence; Tencent's own web SDK reads ProfileSequence.
    name, value = "profile_sequence", item.get("profile_sequence")
    if value is None:
        name, value = "ProfileSequence", item.get("ProfileSequence")
        if value is None:
            return None
    if type(value) is int and 0 <= value <= SEQUENCE_MAX:
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] == "-" else text
        if not (digits.isascii() and digits.isdigit()):
            raise _Unstorable(f"{name}: not an integer")
        # Checked before int(): 5,000 digits would raise, and a billion would take seconds.
        if len(digits.lstrip("0")) > 20:
            raise _Unstorable(f"{name}: out of range")
        value = -int(digits) if text[:1] == "-" else int(digits)  # "-0" is 0
    elif isinstance(value, bool) or not isinstance(value, int):
        raise _Unstorable(f"{name}: not an integer")
    if not 0 <= value <= SEQUENCE_MAX:
        raise _Unstorable(f"{name}: out of range")
    return value


def _column_value(value: Any, kind: type) -> Any:
    if kind is _STR:
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] == "-" else text
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
            return None
        value = int(text)
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return None  # the value is still in tags


_COLUMN_TAGS = tuple((tag, kind is _STR) for tag, (_, kind) in STANDARD_TAGS.items())


def _columns(tags: dict[str, Any]) -> list[Any]:
    """The standard columns' values, in PROFILE_COLUMNS order (a hot loop: plain cases first)."""
    get = tags.get
    values: list[Any] = []
    for tag, text in _COLUMN_TAGS:
        value = get(tag)
        if value is None:
            values.append(None)
        elif text:
            values.append(value if isinstance(value, str) else None)
        elif type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
            values.append(value)
        else:
            values.append(_column_value(value, _INT))
    return values


def profile_tags(items: Any) -> tuple[dict[str, Any], bool]:
    """ProfileItem as Tag -> Value (custom tags too), and whether anything was left out or
    merged: a pair that is not {"Tag": <string>, "Value": ...}, a repeated Tag, a ProfileItem
    that is not an array (absent or null is an empty profile, not a change)."""
    tags: dict[str, Any] = {}
    if type(items) is not list:
        return tags, items is not None
    altered = False
    for pair in items:
        if type(pair) is dict:
            tag = pair.get("Tag")
            if type(tag) is str:
                tags[tag] = pair.get("Value")
                if len(pair) != 2 or "Value" not in pair:
                    altered = True
                continue
        altered = True
    return tags, altered or len(tags) != len(items)


_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _storable(value: Any, depth: int) -> tuple[Any, bool]:
    """A JSON value as the tables can hold it, and whether anything had to change."""
    if isinstance(value, str):
        return (storable_text(value), True) if _needs_replacing(value) else (value, False)
    if isinstance(value, float):
        if math.isfinite(value):
            return value, False
        return ("NaN" if value != value else _NON_FINITE[value]), True
    if value is None or isinstance(value, int):  # bool is an int; integers of any size are fine
        return value, False
    if depth > MAX_NESTING:
        raise _Unstorable("ProfileItem: nested too deeply")
    changed = False
    if isinstance(value, list):
        out: list[Any] = []
        for element in value:
            clean, change = _storable(element, depth + 1)
            out.append(clean)
            changed = changed or change
        return out, changed
    if isinstance(value, dict):
        obj: dict[str, Any] = {}
        for key, element in value.items():
            clean, change = _storable(element, depth + 1)
            if not isinstance(key, str):
                raise _Unstorable(f"ProfileItem: a {type(key).__name__} key")
            if _needs_replacing(key):
                key, change = storable_text(key), True  # a key it now equals: the last wins
            obj[key] = clean
            changed = changed or change
        return obj, changed
    raise _Unstorable(f"ProfileItem: a {type(value).__name__} value")


def _dump_sorted(tags: dict[str, Any]) -> bytes:
    return json.dumps(
        tags, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()


def _raw_json(value: Any) -> str:
    """Exact ASCII JSON: \\u0000, lone \\ud83d, NaN, integers of any size, as they were."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def snapshot(profile_item: Any) -> tuple[dict[str, Any], str, str | None, str]:
    """(tags, tags as JSON text, tags_raw, content digest) of one ProfileItem, as stored.

    _Unstorable when no documented form holds it (nested deeper than MAX_NESTING).
    """
    return _snapshot(profile_item)[:4]


def _snapshot(profile_item: Any) -> tuple[dict[str, Any], str, str | None, str, bool]:
    """snapshot(), and whether orjson's bytes of the ProfileItem stand for its content: an
    array, nothing changed, and no null (orjson writes NaN and Infinity so too)."""
    tags, altered = profile_tags(profile_item)
    # Sorted keys: the text is also what the digest reads, so tag order is not content.
    try:
        text: bytes | None = orjson.dumps(tags, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a lone surrogate, an integer past 64 bits, deep nesting
        text = None
    # orjson writes NUL as \u0000 (a backslash is rare: memchr finds there is none first).
    nul = text is not None and b"\\" in text and b"\\u0000" in text
    has_null = text is not None and b"null" in text
    if text is None or nul or has_null:
        clean, changed = _storable(tags, 0)
        if changed:
            tags, altered, text = clean, True, None
        if text is None:
            text = _dump_sorted(tags)
    raw = None
    if altered:
        try:
            raw = _raw_json(profile_item)
        except RecursionError:  # a dropped pair nested past what json can write
            raise _Unstorable("ProfileItem: nested too deeply") from None
    content = text if raw is None else b"%b\n%b" % (text, raw.encode())
    digest = hashlib.blake2b(content, digest_size=16).hexdigest()
    plain = type(profile_item) is list and not (altered or has_null)
    return tags, text.decode(), raw, digest, plain


def profile_row(user_id: str, sequence: int, profile_item: Any) -> ProfileRow:
    """One profile snapshot in PROFILE_ROW order: standard tags in their columns, all in tags."""
    tags, text, raw, digest = snapshot(profile_item)
    return (user_id, sequence, *_columns(tags), text, raw, digest)


# -- quarantine --------------------------------------------------------------------------------


def quarantine(item: Any, kind: str, reason: str) -> Quarantined:
    """The quarantined_items record of ``item``; never raises."""
    to_account = item.get("To_Account") if isinstance(item, dict) else None
    label = storable_text(to_account)[:LABEL_LIMIT] if isinstance(to_account, str) else None
    try:
        text = _raw_json(item)
    except (RecursionError, ValueError, TypeError) as exc:
        text = _raw_json({"To_Account": label, "unprintable": type(exc).__name__})
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    if len(text) > ITEM_TEXT_LIMIT:
        marker = f"...[cut: {len(text)} characters in all]"
        text = text[: ITEM_TEXT_LIMIT - len(marker)] + marker
    return Quarantined(kind, reason, label, text, digest)


def conflict(profile: Profile) -> Quarantined:
    """The record of a profile version seen with content other than the one stored first."""
    spelled = profile.item.get("profile_sequence") is not None  # as _sequence reads it
    field_name = "profile_sequence" if spelled else "ProfileSequence"
    return quarantine(profile.item, CONFLICT, f"{field_name}: stored with other content")


# -- pages -------------------------------------------------------------------------------------


def page_rows(page: Page, known: KnownProfiles) -> PageRows:
    """Turn one well-formed page into edge and profile rows and quarantined items; never raises.

    ``known`` is shared by every fetcher: a version it holds with the same content yields no
    row; one it holds with other content does, so the writer can tell a conflict against what
    is stored.
    """
    rows = PageRows()
    seen_edges: set[str] = set()
    for item in page.items:
        try:
            _item_rows(item, known, rows, seen_edges)
        except _Unstorable as exc:
            rows.quarantined.append(quarantine(item, UNSTORABLE, str(exc)))
        except Exception as exc:  # one item's surprise must not stop the run: a bug, logged
            log.warning("an item could not be read; quarantined", exc_info=True)
            reason = f"item: unreadable ({type(exc).__name__})"
            rows.quarantined.append(quarantine(item, UNSTORABLE, reason))
    return rows


def _item_rows(
    item: dict[str, Any], known: KnownProfiles, rows: PageRows, seen_edges: set[str]
) -> None:
    to_account = item["To_Account"]
    problem = key_problem(to_account)
    if problem is not None:
        rows.quarantined.append(quarantine(item, UNSTORABLE, problem))
        return
    # A list that changes between pages can repeat an account; one row per key per page.
    if to_account not in seen_edges:
        seen_edges.add(to_account)
        rows.edges.append((to_account, follow_time(item.get("FollowTime"))))
    sequence = _sequence(item)  # the edge is in: an _Unstorable now quarantines the profile
    if sequence is None:
        return
    profile_item = item.get("ProfileItem")
    key = (to_account, sequence)
    known_mark = known.mark(key)
    data = _item_bytes(profile_item)
    if data is not None and known_mark == hash(data):
        return  # the very bytes of a version known stored: the common case, kept cheap
    tags, text, raw, digest, plain = _snapshot(profile_item)
    mark = hash(data) if plain and data is not None else digest_mark(digest)
    if known_mark == digest_mark(digest):
        known.remember(key, mark)  # the same content in other bytes: next time, a lookup
        return
    if known_mark is None:
        known.remember(key, mark)
    # New, or other content than known: the writer tells a conflict from what is stored.
    row = (to_account, sequence, *_columns(tags), text, raw, digest)
    rows.profiles.append(Profile(row, item, mark))
