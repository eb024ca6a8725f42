"""API payloads become rows: every tag kept, both sequence spellings, bad items dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from etl.transform import PROFILE_ROW, ProfileRow, as_datetime, parse_page, profile_row


def named(row: ProfileRow) -> dict[str, Any]:
    """A profile row as column -> value, tags decoded."""
    result = dict(zip(PROFILE_ROW, row, strict=True))
    result["tags"] = json.loads(result["tags"])
    return result


def item(
    to: str, seq: object = 5, key: str = "profile_sequence", **extra: object
) -> dict[str, object]:
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


def test_edges_and_profiles_from_a_page() -> None:
    """Each item gives an edge with its follow time and a snapshot with every tag."""
    rows = parse_page({"FollowItem": [item("b")], "NextCursor": ""}, "a", 1)
    assert rows.edges == [("b", 1702262118)]
    assert as_datetime(rows.edges[0][1]) == datetime(2023, 12, 11, 2, 35, 18, tzinfo=UTC)
    (profile,) = map(named, rows.profiles)
    assert profile["profile_sequence"] == 5
    assert profile["nick"] == "昵称"
    assert profile["level"] == 7
    assert profile["gender"] is None
    assert profile["tags"] == {
        "Tag_Profile_IM_Nick": "昵称",
        "Tag_Profile_IM_Level": 7,
        "Tag_Profile_Custom_Hobby": "go",
    }


def test_profile_sequence_spelled_the_sdk_way() -> None:
    """ProfileSequence (the web SDK's spelling) is read like profile_sequence."""
    rows = parse_page({"FollowItem": [item("b", 9, key="ProfileSequence")]}, "a", 2)
    assert named(rows.profiles[0])["profile_sequence"] == 9


def test_item_without_sequence_keeps_its_edge() -> None:
    """An item with no sequence still yields its edge, but no snapshot can be keyed."""
    raw = item("b")
    del raw["profile_sequence"]
    rows = parse_page({"FollowItem": [raw]}, "a", 1)
    assert len(rows.edges) == 1
    assert rows.profiles == []


def test_malformed_items_are_dropped_and_counted() -> None:
    """Items without a To_Account are skipped; a repeated account yields one edge."""
    page = {"FollowItem": [item("b"), {"FollowTime": 1}, "junk", item("b"), item("c")]}
    rows = parse_page(page, "a", 3)
    assert rows.to_accounts == ["b", "c"]
    assert rows.skipped_items == 2
    assert len(rows.profiles) == 2


def test_empty_or_missing_list() -> None:
    """A page with no FollowItem (or null) has no rows."""
    assert parse_page({"NextCursor": ""}, "a", 1).edges == []
    assert parse_page({"FollowItem": None}, "a", 1).edges == []


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
            ],
        )
    )
    assert row["level"] is None
    assert row["birthday"] == 20190419
    assert row["gender"] is None
    assert row["role"] is None
    assert row["tags"]["Tag_Profile_IM_Level"] == "high"


def test_follow_time_nonsense_is_null() -> None:
    """A FollowTime that is not a number is stored as NULL, not a crash."""
    rows = parse_page({"FollowItem": [item("b", FollowTime="yesterday")]}, "a", 1)
    assert rows.edges[0][1] is None


def test_follow_time_out_of_range_is_null() -> None:
    """Negative, NaN or past-9999 FollowTimes are stored as NULL; floats are truncated."""
    for bad in (-1, float("nan"), 10**13, True):
        assert parse_page({"FollowItem": [item("b", FollowTime=bad)]}, "a", 1).edges[0][1] is None
    assert parse_page({"FollowItem": [item("b", FollowTime=12.9)]}, "a", 1).edges[0][1] == 12


def test_known_profiles_are_not_built_again() -> None:
    """A (user, sequence) the caller already stored yields its edge but no profile row."""
    page = {"FollowItem": [item("b", 5), item("c", 6)]}
    rows = parse_page(page, "a", 1, known_profiles={("b", 5)})
    assert rows.to_accounts == ["b", "c"]
    assert [row[:2] for row in rows.profiles] == [("c", 6)]


def test_tags_beyond_64_bits_are_kept() -> None:
    """A tag value too big for a 64-bit integer is still stored in tags, exactly."""
    row = named(profile_row("u", 1, [{"Tag": "Tag_Profile_Custom_Big", "Value": 2**70}]))
    assert row["tags"] == {"Tag_Profile_Custom_Big": 2**70}
