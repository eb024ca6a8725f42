"""API payloads become rows: every tag kept, both sequence spellings, bad items dropped."""

from __future__ import annotations

from datetime import UTC, datetime

from etl.transform import parse_page, profile_row


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
    assert rows.edges == [
        {
            "account": "a",
            "follow_type": 1,
            "to_account": "b",
            "follow_time": datetime(2023, 12, 11, 2, 35, 18, tzinfo=UTC),
        }
    ]
    (profile,) = rows.profiles
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
    assert rows.profiles[0]["profile_sequence"] == 9


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
    row = profile_row(
        "u",
        1,
        [
            {"Tag": "Tag_Profile_IM_Level", "Value": "high"},
            {"Tag": "Tag_Profile_IM_BirthDay", "Value": "20190419"},
            {"Tag": "Tag_Profile_IM_Gender", "Value": 3},
            {"Tag": "Tag_Profile_IM_Role", "Value": True},
        ],
    )
    assert row["level"] is None
    assert row["birthday"] == 20190419
    assert row["gender"] is None
    assert row["role"] is None
    assert row["tags"]["Tag_Profile_IM_Level"] == "high"


def test_follow_time_nonsense_is_null() -> None:
    """A FollowTime that is not a number is stored as NULL, not a crash."""
    rows = parse_page({"FollowItem": [item("b", FollowTime="yesterday")]}, "a", 1)
    assert rows.edges[0]["follow_time"] is None
