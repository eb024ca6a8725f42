"""A FollowItem's profile as the tables store it, and the digest of that content. Pure.

A ProfileItem (an array of {"Tag": ..., "Value": ...} pairs, custom tags too) becomes one
profile_snapshots row (PROFILE_ROW): the standard tags in their own columns (STANDARD_TAGS),
every tag in ``tags`` as JSON text, and a content digest that tells two sightings of one
version apart. What the tables cannot hold is stored in the documented form (README, "Hostile
values"): NUL and lone surrogates become U+FFFD in the columns and everywhere inside ``tags``;
non-finite floats become "NaN", "Infinity" and "-Infinity". Whenever a profile had to change to
be stored, its exact ProfileItem is kept too, as ASCII JSON in ``tags_raw``. A profile that no
documented form holds raises Unstorable (the caller quarantines it).

``snapshot`` and ``profile_row`` are the digest's one definition: whatever recomputes a stored
digest (a migration, a check) calls them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import orjson

from etl.tencent.text import needs_replacing, raw_json, storable_text

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
MAX_NESTING = 500  # arrays/objects inside a tag value; deeper, the profile is quarantined

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


class Unstorable(Exception):
    """A profile that cannot be stored in any documented form; the message is the reason."""


def profile_sequence(spelled: Any, other: Any) -> int | None:
    """An item's profile_sequence from its two spellings' values (None: absent); None when it
    has none, Unstorable when it is not an integer in 0 .. 2**64-1."""
    # The reference spells it profile_sequence; Tencent's own web SDK reads ProfileSequence.
    name, value = "profile_sequence", spelled
    if value is None:
        name, value = "ProfileSequence", other
        if value is None:
            return None
    if type(value) is int and 0 <= value <= SEQUENCE_MAX:
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] == "-" else text
        if not (digits.isascii() and digits.isdigit()):
            raise Unstorable(f"{name}: not an integer")
        # Checked before int(): 5,000 digits would raise, and a billion would take seconds.
        if len(digits.lstrip("0")) > 20:
            raise Unstorable(f"{name}: out of range")
        value = -int(digits) if text[:1] == "-" else int(digits)  # "-0" is 0
    elif isinstance(value, bool) or not isinstance(value, int):
        raise Unstorable(f"{name}: not an integer")
    if not 0 <= value <= SEQUENCE_MAX:
        raise Unstorable(f"{name}: out of range")
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


def columns(tags: dict[str, Any]) -> list[Any]:
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
        return (storable_text(value), True) if needs_replacing(value) else (value, False)
    if isinstance(value, float):
        if math.isfinite(value):
            return value, False
        return ("NaN" if value != value else _NON_FINITE[value]), True
    if value is None or isinstance(value, int):  # bool is an int; integers of any size are fine
        return value, False
    if depth > MAX_NESTING:
        raise Unstorable("ProfileItem: nested too deeply")
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
                raise Unstorable(f"ProfileItem: a {type(key).__name__} key")
            if needs_replacing(key):
                key, change = storable_text(key), True  # a key it now equals: the last wins
            obj[key] = clean
            changed = changed or change
        return obj, changed
    raise Unstorable(f"ProfileItem: a {type(value).__name__} value")


def _dump_sorted(tags: dict[str, Any]) -> bytes:
    return json.dumps(
        tags, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode()


def snapshot(profile_item: Any) -> tuple[dict[str, Any], str, str | None, str]:
    """(tags, tags as JSON text, tags_raw, content digest) of one ProfileItem, as stored.

    Unstorable when no documented form holds it (nested deeper than MAX_NESTING).
    """
    return snapshot_and_plain(profile_item)[:4]


def snapshot_and_plain(profile_item: Any) -> tuple[dict[str, Any], str, str | None, str, bool]:
    """snapshot(), and whether orjson's bytes of the ProfileItem stand for its content: an
    array, nothing changed, and no null (orjson writes NaN and Infinity so too)."""
    tags, altered = profile_tags(profile_item)
    return snapshot_of_tags(tags, altered, lambda: profile_item, type(profile_item) is list)


Snapshot = tuple[dict[str, Any], str, str | None, str, bool]


def snapshot_of_tags(
    tags: dict[str, Any], altered: bool, original: Callable[[], Any], is_list: bool
) -> Snapshot:
    """snapshot_and_plain() of a ProfileItem read as ``tags`` (``altered``: something was left
    out or merged); ``original()`` gives the ProfileItem itself, needed only when it changed."""
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
            raw = raw_json(original())
        except RecursionError:  # a dropped pair nested past what json can write
            raise Unstorable("ProfileItem: nested too deeply") from None
    content = text if raw is None else b"%b\n%b" % (text, raw.encode())
    digest = hashlib.blake2b(content, digest_size=16).hexdigest()
    plain = is_list and not (altered or has_null)
    return tags, text.decode(), raw, digest, plain


def profile_row(user_id: str, sequence: int, profile_item: Any) -> ProfileRow:
    """One profile snapshot in PROFILE_ROW order: standard tags in their columns, all in tags."""
    tags, text, raw, digest = snapshot(profile_item)
    return (user_id, sequence, *columns(tags), text, raw, digest)


def item_bytes(profile_item: Any) -> bytes | None:
    """orjson's bytes of a ProfileItem (the cheap mark of an identical answer); None when orjson
    cannot write it."""
    try:
        return orjson.dumps(profile_item)
    except TypeError:  # a lone surrogate, an integer past 64 bits, deep nesting
        return None
