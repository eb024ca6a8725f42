"""API payloads become rows: the page contract, every tag kept, hostile values in their
documented form, unstorable items quarantined, and page_rows never raising."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from etl.crawl.known import KnownProfiles
from etl.crawl.transform import page_rows
from etl.errors import MalformedAnswer
from etl.tencent.page import Page, parse_page
from etl.tencent.profile import MAX_NESTING, PROFILE_ROW, ProfileRow, profile_row
from etl.tencent.rows import CONFLICT, ITEM_TEXT_LIMIT, UNSTORABLE, PageRows, as_datetime, conflict

U64 = 2**64 - 1


def named(row: ProfileRow) -> dict[str, Any]:
    """A profile row as column -> value, tags decoded."""
    result = dict(zip(PROFILE_ROW, row, strict=True))
    result["tags"] = json.loads(result["tags"])
    return result


def item(
    to: str, seq: object = 5, key: str = "profile_sequence", **extra: object
) -> dict[str, Any]:
    """One FollowItem as the service answers it."""
    return {
        "To_Account": to,
        "FollowTime": 1702262118,
        "ProfileItem": [
            {"Tag": "Tag_Profile_IM_Nick", "Value": "昵称"},
            {"Tag": "Tag_Profile_IM_Level", "Value": 7},
            {"Tag": "Tag_Profile_Custom_Hobby", "Value": "go"},
        ],
        key: seq,
        **extra,
    }


def with_tags(to: str, *pairs: tuple[str, object], seq: object = 5) -> dict[str, Any]:
    """A FollowItem whose ProfileItem holds exactly ``pairs``."""
    return {
        "To_Account": to,
        "FollowTime": 1,
        "ProfileItem": [{"Tag": t, "Value": v} for t, v in pairs],
        "profile_sequence": seq,
    }


def rows_of(*items: dict[str, Any], known: KnownProfiles | None = None) -> PageRows:
    """page_rows of a page holding ``items``."""
    return page_rows(Page.of(list(items), ""), known if known is not None else KnownProfiles())


def only_profile(rows: PageRows) -> dict[str, Any]:
    (profile,) = rows.profiles
    return named(profile.row)


# -- the page contract ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<html>", "not a JSON object"),
        ({"ActionStatus": "OK", "ErrorCode": 0}, "FollowItem is missing or null"),
        ({"FollowItem": None, "NextCursor": ""}, "FollowItem is missing or null"),
        ({"FollowItem": {}, "NextCursor": ""}, "FollowItem is dict"),
        ({"FollowItem": []}, "NextCursor is missing or null"),
        ({"FollowItem": [], "NextCursor": 3}, "NextCursor is int"),
        ({"FollowItem": ["junk"], "NextCursor": ""}, r"FollowItem\[0\] has no string"),
        ({"FollowItem": [{"To_Account": 7}], "NextCursor": ""}, "has no string To_Account"),
        ({"FollowItem": [], "NextCursor": "c\x00d"}, "NextCursor cannot be stored"),
        ({"FollowItem": [], "NextCursor": "c\ud83d"}, "NextCursor cannot be stored"),
        ({"FollowItem": [], "NextCursor": "c" * 70_000}, "NextCursor cannot be stored"),
    ],
)
def test_an_answer_that_is_not_a_page_is_malformed(body: object, message: str) -> None:
    """FollowItem must be an array of objects with a string To_Account, NextCursor a string."""
    with pytest.raises(MalformedAnswer, match=message):
        parse_page(body)


def test_a_page_says_whether_it_is_the_last() -> None:
    """An empty NextCursor ends the list; any other string is the next page's cursor."""
    assert parse_page({"FollowItem": [], "NextCursor": ""}).last
    assert not parse_page({"FollowItem": [], "NextCursor": "c2"}).last


# -- rows ----------------------------------------------------------------------------------


def test_edges_and_profiles_from_a_page() -> None:
    """Each item gives an edge with its follow time and a snapshot with every tag."""
    rows = rows_of(item("b"))
    assert rows.edges == [("b", 1702262118)]
    assert as_datetime(rows.edges[0][1]) == datetime(2023, 12, 11, 2, 35, 18, tzinfo=UTC)
    profile = only_profile(rows)
    assert profile["profile_sequence"] == 5
    assert profile["nick"] == "昵称"
    assert profile["level"] == 7
    assert profile["gender"] is None
    assert profile["tags"] == {
        "Tag_Profile_IM_Nick": "昵称",
        "Tag_Profile_IM_Level": 7,
        "Tag_Profile_Custom_Hobby": "go",
    }
    assert profile["tags_raw"] is None
    assert rows.quarantined == []


def test_profile_sequence_spelled_the_sdk_way() -> None:
    """ProfileSequence (the web SDK's spelling) is read like profile_sequence."""
    assert only_profile(rows_of(item("b", 9, key="ProfileSequence")))["profile_sequence"] == 9


def test_item_without_sequence_keeps_its_edge() -> None:
    """An item with no sequence (or a null one) yields its edge, but no snapshot is keyed."""
    raw = item("b")
    del raw["profile_sequence"]
    rows = rows_of(raw, item("c", None))
    assert rows.to_accounts == ["b", "c"]
    assert rows.profiles == []
    assert rows.quarantined == []


def test_a_repeated_account_yields_one_edge() -> None:
    """A list that changes between pages can repeat an account: one edge, one profile."""
    rows = rows_of(item("b"), item("c"), item("b"))
    assert rows.to_accounts == ["b", "c"]
    assert [p.key for p in rows.profiles] == [("b", 5), ("c", 5)]


def test_bad_values_stay_out_of_typed_columns() -> None:
    """A value of the wrong type is kept in tags but not forced into its column."""
    row = named(
        profile_row(
            "u",
            1,
            [
                {"Tag": "Tag_Profile_IM_Level", "Value": "high"},
                {"Tag": "Tag_Profile_IM_BirthDay", "Value": "20190419"},
                {"Tag": "Tag_Profile_IM_Gender", "Value": 3},
                {"Tag": "Tag_Profile_IM_Role", "Value": True},
                {"Tag": "Tag_Profile_IM_Language", "Value": "²"},
                {"Tag": "Tag_Profile_IM_MsgSettings", "Value": 1.0},
            ],
        )
    )
    assert row["level"] is None
    assert row["birthday"] == 20190419
    assert row["gender"] is None
    assert row["role"] is None
    assert row["language"] is None
    assert row["msg_settings"] is None
    assert row["tags"]["Tag_Profile_IM_Level"] == "high"
    assert row["tags_raw"] is None  # nothing had to change to be stored


def test_integer_columns_hold_the_bigint_range() -> None:
    """Integers in BIGINT's range fill their column; beyond it the column is NULL and tags
    keep the value exactly (so no raw copy is needed)."""
    row = named(
        profile_row(
            "u",
            1,
            [
                {"Tag": "Tag_Profile_IM_Level", "Value": -(2**63)},
                {"Tag": "Tag_Profile_IM_Role", "Value": 2**63 - 1},
                {"Tag": "Tag_Profile_IM_Language", "Value": 2**63},
                {"Tag": "Tag_Profile_IM_BirthDay", "Value": -(10**40)},
            ],
        )
    )
    assert (row["level"], row["role"]) == (-(2**63), 2**63 - 1)
    assert (row["language"], row["birthday"]) == (None, None)
    assert row["tags"]["Tag_Profile_IM_Language"] == 2**63
    assert row["tags"]["Tag_Profile_IM_BirthDay"] == -(10**40)
    assert row["tags_raw"] is None


def test_follow_time_nonsense_is_null() -> None:
    """A FollowTime that is not a number is stored as NULL, not a crash."""
    assert rows_of(item("b", FollowTime="yesterday")).edges[0][1] is None


def test_follow_time_out_of_range_is_null() -> None:
    """Negative, NaN, infinite or past-9999 FollowTimes are stored as NULL; floats truncate."""
    for bad in (-1, float("nan"), float("inf"), 10**13, 2**70, True):
        assert rows_of(item("b", FollowTime=bad)).edges[0][1] is None
    assert rows_of(item("b", FollowTime=12.9)).edges[0][1] == 12


def test_tags_beyond_64_bits_are_kept() -> None:
    """A tag value too big for a 64-bit integer is still stored in tags, exactly."""
    row = named(profile_row("u", 1, [{"Tag": "Tag_Profile_Custom_Big", "Value": 2**70}]))
    assert row["tags"] == {"Tag_Profile_Custom_Big": 2**70}
    assert row["tags_raw"] is None


def test_nested_tags_of_any_json_type_are_kept() -> None:
    """Objects, arrays, null, booleans and floats are tag values like any other."""
    value = {"a": [1, 2.5, None, True, {"b": "c"}], "z": {}}
    row = named(profile_row("u", 1, [{"Tag": "Tag_Profile_Custom_X", "Value": value}]))
    assert row["tags"] == {"Tag_Profile_Custom_X": value}
    assert row["tags_raw"] is None


# -- hostile text and numbers --------------------------------------------------------------


def test_nul_and_lone_surrogates_become_replacement_characters() -> None:
    """NUL and lone surrogates become U+FFFD in the columns and inside tags (names too); the
    exact ProfileItem is kept in tags_raw as ASCII JSON."""
    profile_item = [
        {"Tag": "Tag_Profile_IM_Nick", "Value": "a\x00b\ud83d"},
        {"Tag": "Tag_Profile_Custom_\udc00", "Value": ["\x00", {"k\x00": "v"}]},
    ]
    row = named(profile_row("u", 1, profile_item))
    assert row["nick"] == "a\ufffdb\ufffd"
    assert row["tags"] == {
        "Tag_Profile_IM_Nick": "a\ufffdb\ufffd",
        "Tag_Profile_Custom_\ufffd": ["\ufffd", {"k\ufffd": "v"}],
    }
    assert row["tags_raw"].isascii()
    assert "\\u0000" in row["tags_raw"]
    assert "\\ud83d" in row["tags_raw"]
    assert json.loads(row["tags_raw"]) == profile_item
    row["tags_raw"].encode("utf-8")  # storable as it is


def test_non_finite_floats_become_strings() -> None:
    """NaN and the infinities are stored as "NaN", "Infinity" and "-Infinity"; raw kept."""
    values = [float("nan"), float("inf"), float("-inf")]
    row = named(profile_row("u", 1, [{"Tag": "Tag_Profile_Custom_F", "Value": values}]))
    assert row["tags"] == {"Tag_Profile_Custom_F": ["NaN", "Infinity", "-Infinity"]}
    (raw,) = json.loads(row["tags_raw"])
    assert math.isnan(raw["Value"][0])
    assert raw["Value"][1:] == [math.inf, -math.inf]


def test_malformed_profile_items_are_kept_raw() -> None:
    """A ProfileItem that is not an array of {Tag, Value} pairs keeps what it can in tags
    (a repeated Tag: the last) and its exact self in tags_raw."""
    messy = [
        {"Tag": "Tag_Profile_IM_Nick", "Value": "first"},
        {"Tag": "Tag_Profile_IM_Nick", "Value": "last"},
        {"Tag": "Tag_Profile_Custom_NoValue"},
        {"Tag": 5, "Value": 1},
        "junk",
    ]
    row = named(profile_row("u", 1, messy))
    assert row["tags"] == {"Tag_Profile_IM_Nick": "last", "Tag_Profile_Custom_NoValue": None}
    assert row["nick"] == "last"
    assert json.loads(row["tags_raw"]) == messy
    for odd in ("a string", {"Tag": "x"}, 3):
        row = named(profile_row("u", 1, odd))
        assert row["tags"] == {}
        assert json.loads(row["tags_raw"]) == odd
    assert named(profile_row("u", 1, None))["tags_raw"] is None  # no tags is not a change


def test_a_megabyte_nick_is_kept_whole() -> None:
    """Very long strings are stored whole, in their column and in tags."""
    nick = "长" * 1_000_000
    row = named(profile_row("u", 1, [{"Tag": "Tag_Profile_IM_Nick", "Value": nick}]))
    assert row["nick"] == nick
    assert row["tags"]["Tag_Profile_IM_Nick"] == nick


def test_nesting_up_to_the_limit_is_kept_and_deeper_is_quarantined() -> None:
    """A tag value nested MAX_NESTING arrays deep is stored; one more level quarantines the
    profile (its edge stays)."""

    def nested(depth: int) -> object:
        value: object = "x"
        for _ in range(depth):
            value = [value]
        return value

    ok = rows_of(with_tags("b", ("Tag_Profile_Custom_Deep", nested(MAX_NESTING))))
    assert json.loads(ok.profiles[0].row[PROFILE_ROW.index("tags")]) == {
        "Tag_Profile_Custom_Deep": nested(MAX_NESTING)
    }
    deep = with_tags("c", ("Tag_Profile_Custom_Deep", nested(MAX_NESTING + 1)), ("n", "\x00"))
    rows = rows_of(deep)
    assert rows.to_accounts == ["c"]
    assert rows.profiles == []
    (record,) = rows.quarantined
    assert (record.kind, record.reason) == (UNSTORABLE, "ProfileItem: nested too deeply")


# -- what cannot be stored -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to_account", "reason"),
    [
        ("", "To_Account: empty"),
        ("a\x00b", "To_Account: contains NUL"),
        ("a\ud83d", "To_Account: contains a lone surrogate"),
        ("x" * 256, "To_Account: over 255 bytes"),
        ("é" * 128, "To_Account: over 255 bytes"),
    ],
)
def test_an_account_that_cannot_be_a_key_quarantines_the_item(to_account: str, reason: str) -> None:
    """Neither edge nor profile: the whole item is quarantined, with its reason."""
    rows = rows_of(item(to_account), item("ok"))
    assert rows.to_accounts == ["ok"]
    assert [p.key for p in rows.profiles] == [("ok", 5)]
    (record,) = rows.quarantined
    assert (record.kind, record.reason) == (UNSTORABLE, reason)
    assert record.item.isascii()
    assert json.loads(record.item) == item(to_account)
    assert record.to_account is not None
    assert "\x00" not in record.to_account
    record.to_account.encode("utf-8")


def test_the_longest_accounts_that_fit_are_keys() -> None:
    """255 bytes is still a key, in ASCII or not."""
    rows = rows_of(item("x" * 255), item("é" * 127))
    assert len(rows.edges) == 2
    assert rows.quarantined == []


@pytest.mark.parametrize(
    ("sequence", "stored"),
    [(0, 0), (U64, U64), (" 42 ", 42), ("18446744073709551615", U64), ("007", 7), ("-0", 0)],
)
def test_sequences_of_the_whole_unsigned_range_are_kept(sequence: object, stored: int) -> None:
    """Integers 0 .. 2**64-1, and strings of ASCII digits, are sequences."""
    assert only_profile(rows_of(item("b", sequence)))["profile_sequence"] == stored


@pytest.mark.parametrize(
    ("sequence", "reason"),
    [
        (-1, "profile_sequence: out of range"),
        (2**64, "profile_sequence: out of range"),
        ("-3", "profile_sequence: out of range"),
        ("-" + "9" * 30, "profile_sequence: out of range"),
        ("18446744073709551616", "profile_sequence: out of range"),
        ("9" * 5000, "profile_sequence: out of range"),
        (1.5, "profile_sequence: not an integer"),
        (5.0, "profile_sequence: not an integer"),
        (True, "profile_sequence: not an integer"),
        ("abc", "profile_sequence: not an integer"),
        ("²", "profile_sequence: not an integer"),
        ("1_000", "profile_sequence: not an integer"),
        ([5], "profile_sequence: not an integer"),
    ],
)
def test_a_sequence_that_cannot_be_stored_quarantines_the_profile(
    sequence: object, reason: str
) -> None:
    """The edge is kept; the profile goes to quarantine with the field named."""
    rows = rows_of(item("b", sequence))
    assert rows.to_accounts == ["b"]
    assert rows.profiles == []
    (record,) = rows.quarantined
    assert (record.kind, record.reason, record.to_account) == (UNSTORABLE, reason, "b")


def test_a_huge_item_is_recorded_cut_with_its_whole_digest() -> None:
    """The quarantined item is cut at 64 KiB with a marker; its digest is of all of it."""
    one = rows_of(item("", FollowTime="x" * 200_000)).quarantined[0]
    other = rows_of(item("", FollowTime="x" * 200_001)).quarantined[0]
    assert len(one.item) == ITEM_TEXT_LIMIT
    assert one.item.endswith("characters in all]")
    assert one.item_digest != other.item_digest


def test_page_rows_never_raises() -> None:
    """An item no parse should have let through (a hand-built Page) is quarantined."""
    rows = page_rows(Page.of(["junk", {"To_Account": None}, item("b")], ""), KnownProfiles())
    assert rows.to_accounts == ["b"]
    assert [q.kind for q in rows.quarantined] == [UNSTORABLE, UNSTORABLE]


# -- versions already known ------------------------------------------------------------------


def test_known_profiles_are_not_built_again() -> None:
    """A version known with the same content yields its edge but no profile row."""
    known = KnownProfiles()
    rows_of(item("b", 5), known=known)
    rows = rows_of(item("b", 5), item("c", 6), known=known)
    assert rows.to_accounts == ["b", "c"]
    assert [p.key for p in rows.profiles] == [("c", 6)]


def test_tag_order_is_not_content() -> None:
    """The same tags in another order have the same digest (the writer then finds nothing to
    store or report). A profile kept raw is its exact ProfileItem: there, order is content."""
    known = KnownProfiles()
    first = rows_of(with_tags("b", ("a", 1), ("b", "x")), known=known)
    again = rows_of(with_tags("b", ("b", "x"), ("a", 1)), known=known)
    assert first.profiles[0].digest == again.profiles[0].digest
    raw = rows_of(with_tags("c", ("a", 1), ("b", "\x00")), known=known)
    raw_again = rows_of(with_tags("c", ("b", "\x00"), ("a", 1)), known=known)
    assert raw.profiles[0].digest != raw_again.profiles[0].digest


def test_other_content_for_a_known_version_goes_to_the_writer() -> None:
    """A known version seen with other content yields a row, for the writer to tell a conflict
    against what is stored; its record names the field."""
    known = KnownProfiles()
    (first,) = rows_of(item("b", 5), known=known).profiles
    changed = item("b", 5)
    changed["ProfileItem"][0]["Value"] = "另一个"
    (second,) = rows_of(changed, known=known).profiles
    assert second.key == first.key
    assert second.digest != first.digest
    record = conflict(second)
    assert (record.kind, record.reason) == (CONFLICT, "profile_sequence: stored with other content")
    assert json.loads(record.item) == changed


def test_null_and_nan_are_different_content() -> None:
    """orjson writes NaN as null; the cache still tells the two apart."""
    known = KnownProfiles()
    rows_of(with_tags("b", ("x", None)), known=known)
    (nan,) = rows_of(with_tags("b", ("x", float("nan"))), known=known).profiles
    assert named(nan.row)["tags"] == {"x": "NaN"}
    assert rows_of(with_tags("b", ("x", None)), known=known).profiles == []


def test_the_cache_is_bounded() -> None:
    """Past its limit the cache starts again: versions are then built again, nothing worse."""
    known = KnownProfiles(limit=2)
    rows_of(item("a"), item("b"), known=known)
    rows_of(item("c"), known=known)
    assert len(known) == 1
    assert [p.key for p in rows_of(item("a"), known=known).profiles] == [("a", 5)]


def test_settle_tells_the_cache_what_is_stored() -> None:
    """After the writer settles a version with the stored content, only that content is known."""
    known = KnownProfiles()
    (mine,) = rows_of(item("b", 5), known=known).profiles
    stored = item("b", 5)
    stored["ProfileItem"] = []
    (theirs,) = rows_of(stored, known=known).profiles
    known.settle(mine.key, theirs.digest)
    assert rows_of(stored, known=known).profiles == []
    assert len(rows_of(item("b", 5), known=known).profiles) == 1
    known.settle(mine.key, None)
    assert len(rows_of(stored, known=known).profiles) == 1
