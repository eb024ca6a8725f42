"""Hostile values, through parse_page -> page_rows -> Loader.write on both databases: nothing
raises but MalformedAnswer, and what is stored reads back in the documented form (README,
"Hostile values: what is stored, exactly")."""

from __future__ import annotations

import json
import math
import re
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from etl.crawl.known import KnownProfiles
from etl.crawl.transform import page_rows
from etl.errors import MalformedAnswer
from etl.store import db
from etl.store.load import Loader, Written
from etl.store.rows import Key, ListPart, Mode
from etl.store.schema import SCHEMA_REVISION, profile_snapshots, quarantined_items
from etl.store.status import quarantine_summary
from etl.store.types import decode_sequence
from etl.tencent.codes import answer_body
from etl.tencent.page import Page, decode_page, parse_page
from etl.tencent.profile import MAX_NESTING, STANDARD_TAGS
from etl.tencent.rows import PageRows

RUN = 1
NOW = datetime(2026, 12, 1, tzinfo=UTC)
U64 = 2**64 - 1
I64 = (-(2**63), 2**63 - 1)
HOSTILE = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies ------------------------------------------------------------------------------

# Every code point, lone surrogates (Cs) and NUL included.
chars = st.characters(codec=None, categories=("L", "M", "N", "P", "S", "Z", "C"))
nasty = st.sampled_from(["", "\x00", "\ud83d", "a\udc00b", "\\N", "tab\there", "null", "é" * 130])
texts = st.text(chars, max_size=12) | nasty | st.text(max_size=6)
numbers = (
    st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.sampled_from([*I64, I64[0] - 1, I64[1] + 1, U64, U64 + 1])
    | st.floats()  # NaN and the infinities included
)
scalars = st.none() | st.booleans() | numbers | texts
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
tag_names = st.sampled_from(sorted(STANDARD_TAGS)) | st.just("Tag_Profile_Custom_X") | texts
pairs = st.builds(lambda tag, value: {"Tag": tag, "Value": value}, tag_names, values)
profile_items = (
    st.lists(pairs, max_size=5)
    | st.lists(pairs | values, max_size=3)  # junk among the pairs
    | values
)
repeated = st.sampled_from([1, 2**63, U64])  # versions seen again: same or other content
sequences = (
    repeated
    | repeated
    | repeated
    | st.integers(min_value=0, max_value=U64)
    | st.sampled_from([0, 2**63 - 1, 2**63, U64, U64 + 1, -1])
    | st.from_regex(r"\A ?-?[0-9]{1,22} ?\Z")
    | values
)
accounts = st.sampled_from(["u1", "用户"]) | st.sampled_from(["u1", "用户"]) | texts


@st.composite
def follow_items(draw: st.DrawFn) -> dict[str, Any]:
    """A FollowItem: a To_Account of any text, any other field of any JSON type, or absent."""
    item: dict[str, Any] = {"To_Account": draw(accounts)}
    if draw(st.booleans()):
        item["FollowTime"] = draw(numbers | values)
    if draw(st.integers(0, 4)):
        item["ProfileItem"] = draw(profile_items)
    key = draw(st.sampled_from(["profile_sequence", "ProfileSequence", None]))
    if key is not None:
        item[key] = draw(sequences)
    return item


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    """A follow_get answer: mostly pages, sometimes anything at all."""
    items = draw(st.lists(follow_items(), max_size=6))
    for _ in range(draw(st.integers(0, 2)) if items else 0):  # an item seen again, maybe changed
        again = dict(draw(st.sampled_from(items)))
        if draw(st.booleans()):
            again["ProfileItem"] = draw(profile_items)
        items.append(again)
    page: dict[str, Any] = {
        "ActionStatus": "OK",
        "ErrorCode": 0,
        "FollowItem": items,
        "NextCursor": draw(st.sampled_from(["", "c2"])),
    }
    spoil = draw(st.integers(0, 9))
    if spoil == 0:
        return draw(values)
    if spoil == 1:
        page[draw(st.sampled_from(["FollowItem", "NextCursor"]))] = draw(values)
    if spoil == 2 and page["FollowItem"]:
        page["FollowItem"][0] = draw(values | st.fixed_dictionaries({"To_Account": values}))
    return page


# -- the documented form (an oracle written from the README, not from etl.transform) ---------


def stored_text(text: str) -> str:
    return re.sub("[\x00\ud800-\udfff]", "\ufffd", text)


def stored_value(value: Any) -> Any:
    if isinstance(value, str):
        return stored_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [stored_value(v) for v in value]
    if isinstance(value, dict):
        return {stored_text(k): stored_value(v) for k, v in value.items()}
    return value


def exact(value: Any) -> str:
    """JSON that tells apart everything JSON can: 1 and 1.0, NaN, lone surrogates."""
    return json.dumps(value, ensure_ascii=True)


def tags_of(profile_item: Any) -> dict[str, Any]:
    """Tag -> Value as returned: pairs with a string Tag, the last of a repeated one."""
    tags: dict[str, Any] = {}
    for pair in profile_item if isinstance(profile_item, list) else []:
        if isinstance(pair, dict) and isinstance(pair.get("Tag"), str):
            tags[pair["Tag"]] = pair.get("Value")
    return tags


def kept_raw(profile_item: Any) -> bool:
    """Whether storing the profile changes anything, so tags_raw keeps it."""
    if profile_item is None:
        return False
    if not isinstance(profile_item, list):
        return True
    if not all(
        isinstance(p, dict) and set(p) == {"Tag", "Value"} and isinstance(p["Tag"], str)
        for p in profile_item
    ):
        return True
    tags = tags_of(profile_item)
    return len(tags) != len(profile_item) or exact(stored_value(tags)) != exact(tags)


def content(profile_item: Any) -> tuple[str, str | None]:
    """What a version stores: its tags and, when kept, its exact ProfileItem."""
    tags = stored_value(tags_of(profile_item))
    raw = exact(profile_item) if kept_raw(profile_item) else None
    return json.dumps(tags, sort_keys=True, ensure_ascii=True), raw


def column(value: Any, text: bool) -> Any:
    if text:
        return value if isinstance(value, str) else None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and I64[0] <= value <= I64[1]:
        return value
    return None


def key_reason(to_account: str) -> str | None:
    if to_account == "":
        return "To_Account: empty"
    if "\x00" in to_account:
        return "To_Account: contains NUL"
    if re.search("[\ud800-\udfff]", to_account):
        return "To_Account: contains a lone surrogate"
    if len(to_account.encode()) > 255:
        return "To_Account: over 255 bytes"
    return None


def sequence_of(item: dict[str, Any]) -> int | str | None:
    """The sequence, the reason it cannot be stored, or None when the item has none."""
    name = "profile_sequence" if item.get("profile_sequence") is not None else "ProfileSequence"
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{name}: not an integer"
    return value if 0 <= value <= U64 else f"{name}: out of range"


def follow_seconds(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if 0 <= value <= 253402300799 else None  # NaN compares False


def is_page(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("NextCursor"), str)
        and isinstance(body.get("FollowItem"), list)
        and all(
            isinstance(i, dict) and isinstance(i.get("To_Account"), str) for i in body["FollowItem"]
        )
    )


def numeric(value: Any) -> Any:
    """Numbers as Decimals: jsonb keeps a float's decimal text exactly, so 1e+16 reads back
    as the integer 10000000000000000. Everything else as it is."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, list):
        return [numeric(v) for v in value]
    return {k: numeric(v) for k, v in value.items()}


# -- driving the writer ------------------------------------------------------------------------


def reset(engine: sa.Engine) -> None:
    """An empty store with run 1 running."""
    with engine.begin() as conn:
        for table in ("follow_edges", "profile_snapshots", "quarantined_items", "follow_lists"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(sa.text("DELETE FROM sync_runs"))
        conn.execute(
            sa.text(
                "INSERT INTO sync_runs (id, job, status, started_at, options) "
                "VALUES (1, 'j', 'running', CURRENT_TIMESTAMP, '{}')"
            )
        )


def write(
    engine: sa.Engine, pages: list[tuple[Key, PageRows]], known: KnownProfiles | None = None
) -> Written:
    """One batch: every page's edges on its list (complete), profiles and quarantined items."""
    parts: dict[Key, ListPart] = {}
    for key, rows in pages:
        part = parts.setdefault(key, ListPart(*key, pages=0, mode=Mode.FIRST_END))
        part.edges.update(rows.edges)
        part.pages += 1
    with engine.begin() as conn:
        return Loader(engine.dialect.name).write(
            conn, RUN, list(parts.values()), pages, NOW, known=known
        )


def stored_edges(engine: sa.Engine) -> dict[Key, dict[str, int | None]]:
    result: dict[Key, dict[str, int | None]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT account, follow_type, to_account, follow_time FROM follow_edges"
            ).columns(follow_time=sa.DateTime(timezone=True))
        )
        for account, follow_type, to, when in rows:
            if when is not None and when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = None if when is None else int(when.timestamp())
            result.setdefault((account, follow_type), {})[to] = seconds
    return result


def stored_profiles(engine: sa.Engine) -> dict[tuple[str, int], Any]:
    with engine.connect() as conn:
        return {
            (row.user_id, row.profile_sequence): row
            for row in conn.execute(sa.select(profile_snapshots))
        }


def stored_quarantine(engine: sa.Engine) -> set[tuple[Key, str, str, str]]:
    q = quarantined_items.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(q.account, q.follow_type, q.kind, q.reason, q.item)).all()
    return {((a, t), kind, reason, exact(json.loads(item))) for a, t, kind, reason, item in rows}


# -- properties --------------------------------------------------------------------------------


@HOSTILE
@given(st.lists(bodies(), min_size=1, max_size=4))
def test_any_answer_is_stored_as_documented(engine: sa.Engine, answers: list[Any]) -> None:
    """Arbitrary answers: only parse_page may raise, and only MalformedAnswer; every storable
    edge, profile version and quarantined item then reads back in its documented form, and
    writing the batch again adds nothing."""
    reset(engine)
    known = KnownProfiles()
    pages: list[tuple[Key, PageRows]] = []
    for number, body in enumerate(answers):
        try:
            page = parse_page(body)
        except MalformedAnswer:
            assert not is_page(body)
            event("a malformed answer")
            continue
        assert is_page(body)
        pages.append((("acc", number % 3 + 1), page_rows(page, known)))
    written = write(engine, pages, known)

    edges: dict[Key, dict[str, int | None]] = {}
    first: dict[tuple[str, int], Any] = {}
    expected_quarantine: set[tuple[Key, str, str, str]] = set()
    for (key, _), body in zip(pages, [b for b in answers if is_page(b)], strict=True):
        page_edges: dict[str, int | None] = {}
        for item in body["FollowItem"]:
            to = item["To_Account"]
            reason = key_reason(to)
            if reason is not None:
                expected_quarantine.add((key, "unstorable", reason, exact(item)))
                continue
            page_edges.setdefault(to, follow_seconds(item.get("FollowTime")))
            sequence = sequence_of(item)
            if isinstance(sequence, str):
                expected_quarantine.add((key, "unstorable", sequence, exact(item)))
            elif sequence is not None:
                profile_item = item.get("ProfileItem")
                held = first.setdefault((to, sequence), profile_item)
                if content(held) != content(profile_item):
                    expected_quarantine.add((key, "conflict", conflict_reason(item), exact(item)))
        edges.setdefault(key, {}).update(page_edges)

    assert stored_edges(engine) == {k: v for k, v in edges.items() if v}
    profiles = stored_profiles(engine)
    assert set(profiles) == set(first)
    for key, profile_item in first.items():
        row = profiles[key]
        tags = stored_value(tags_of(profile_item))
        assert numeric(row.tags) == numeric(tags)
        for tag, (name, kind) in STANDARD_TAGS.items():
            assert getattr(row, name) == column(tags.get(tag), kind is str), name
        if kept_raw(profile_item):
            assert row.tags_raw.isascii()
            assert exact(json.loads(row.tags_raw)) == exact(profile_item)
        else:
            assert row.tags_raw is None
    assert stored_quarantine(engine) == expected_quarantine
    kinds = [kind for _, kind, _, _ in expected_quarantine]
    for quarantined_as in sorted(set(kinds)):
        event(f"an item quarantined as {quarantined_as}")
    if any(row.tags_raw for row in profiles.values()):
        event("a profile kept raw")
    if any(seq > 2**63 - 1 for _, seq in profiles):
        event("a sequence past 2**63-1")
    assert (written.quarantined, written.conflicts) == (
        kinds.count("unstorable"),
        kinds.count("conflict"),
    )
    with engine.connect() as conn:
        current = conn.execute(sa.text("SELECT user_id, profile_sequence FROM current_profiles"))
        newest = {user: decode_sequence(seq) for user, seq in current}
    assert newest == {user: max(s for u, s in first if u == user) for user, _ in first}

    again = write(engine, pages, KnownProfiles())  # a replay: a restarted process, no cache
    assert (again.quarantined, again.conflicts) == (0, 0)
    assert stored_quarantine(engine) == expected_quarantine
    assert stored_profiles(engine).keys() == profiles.keys()


def conflict_reason(item: dict[str, Any]) -> str:
    name = "profile_sequence" if item.get("profile_sequence") is not None else "ProfileSequence"
    return f"{name}: stored with other content"


@settings(HOSTILE, max_examples=60)
@given(
    user=st.sampled_from(["u", "用户", "x" * 255]),
    sequence=st.integers(min_value=0, max_value=U64),
    profiles=st.lists(profile_items, min_size=2, max_size=4),
    same_batch=st.booleans(),
)
def test_the_first_content_of_a_version_wins(
    engine: sa.Engine, user: str, sequence: int, profiles: list[Any], same_batch: bool
) -> None:
    """The same (user, profile_sequence) seen with other content, in one batch or the next,
    through the shared cache or not: the first stays, each other one is a conflict."""
    reset(engine)
    known = KnownProfiles()
    items = [
        {"To_Account": user, "FollowTime": n, "ProfileItem": p, "profile_sequence": sequence}
        for n, p in enumerate(profiles)
    ]
    pages = [
        (("acc", 1), page_rows(parse_page({"FollowItem": [i], "NextCursor": ""}), known))
        for i in items
    ]
    if same_batch:
        write(engine, pages, known)
    else:
        for page in pages:
            write(engine, [page], known)
    (row,) = stored_profiles(engine).values()
    assert row.profile_sequence == sequence
    assert numeric(row.tags) == numeric(stored_value(tags_of(profiles[0])))
    conflicts = {
        (("acc", 1), "conflict", "profile_sequence: stored with other content", exact(i))
        for i in items[1:]
        if content(i["ProfileItem"]) != content(profiles[0])
    }
    assert stored_quarantine(engine) == conflicts


# -- cases worth naming ------------------------------------------------------------------------


def one_page(*items: dict[str, Any]) -> list[tuple[Key, PageRows]]:
    return [
        (
            ("acc", 1),
            page_rows(parse_page({"FollowItem": list(items), "NextCursor": ""}), KnownProfiles()),
        )
    ]


@pytest.fixture
def store(engine: sa.Engine) -> sa.Engine:
    """A migrated store of each database, with run 1 running."""
    reset(engine)
    return engine


def test_a_megabyte_nick_round_trips(store: sa.Engine) -> None:
    """A 1 MB nickname (and a 1 MB custom tag) is stored whole, column and tags alike."""
    nick = "长" * 350_000 + "x" * 1_000_000
    write(
        store,
        one_page(
            {
                "To_Account": "b",
                "ProfileItem": [
                    {"Tag": "Tag_Profile_IM_Nick", "Value": nick},
                    {"Tag": "Tag_Profile_Custom_Big", "Value": nick},
                ],
                "profile_sequence": 1,
            }
        ),
    )
    (row,) = stored_profiles(store).values()
    assert row.nick == nick
    assert row.tags == {"Tag_Profile_IM_Nick": nick, "Tag_Profile_Custom_Big": nick}
    assert row.tags_raw is None


def test_values_nested_to_the_limit_round_trip(store: sa.Engine) -> None:
    """A tag value nested MAX_NESTING levels deep, with a NUL at the bottom, is stored and read
    back; one level deeper, the profile is quarantined and the edge kept."""

    def nested(depth: int, leaf: str = "\x00") -> Any:
        value: Any = {"leaf": leaf}
        for _ in range(depth - 1):
            value = [value]
        return value

    def deep(to: str, depth: int) -> dict[str, Any]:
        return {
            "To_Account": to,
            "profile_sequence": 1,
            "ProfileItem": [{"Tag": "Tag_Profile_Custom_Deep", "Value": nested(depth)}],
        }

    write(store, one_page(deep("b", MAX_NESTING), deep("c", MAX_NESTING + 1)))
    (row,) = stored_profiles(store).values()
    assert row.tags == {"Tag_Profile_Custom_Deep": nested(MAX_NESTING, "\ufffd")}
    assert json.loads(row.tags_raw) == deep("b", MAX_NESTING)["ProfileItem"]
    assert set(stored_edges(store)[("acc", 1)]) == {"b", "c"}
    assert stored_quarantine(store) == {
        (
            ("acc", 1),
            "unstorable",
            "ProfileItem: nested too deeply",
            exact(deep("c", MAX_NESTING + 1)),
        )
    }


def test_sequences_across_the_unsigned_range_order_and_round_trip(store: sa.Engine) -> None:
    """0, 2**63-1, 2**63 and 2**64-1 are stored exactly, and current_profiles picks the
    highest, past the signed 64-bit range too."""
    sequences = [2**63, 0, U64, 2**63 - 1, 12345678901234567890]
    items = [
        {
            "To_Account": "b",
            "ProfileItem": [{"Tag": "Tag_Profile_IM_Nick", "Value": str(s)}],
            "profile_sequence": s,
        }
        for s in sequences
    ]
    write(store, one_page(*items))
    assert set(stored_profiles(store)) == {("b", s) for s in sequences}
    with store.connect() as conn:
        current = conn.execute(sa.text("SELECT profile_sequence, nick FROM current_profiles"))
        assert [(decode_sequence(s), nick) for s, nick in current] == [(U64, str(U64))]
        # The view was created again by 0003: its p.* has the new columns.
        assert conn.execute(sa.text("SELECT tags_raw, content_digest FROM current_profiles")).one()
        top = conn.execute(
            sa.select(sa.func.max(profile_snapshots.c.profile_sequence))
        ).scalar_one()
    assert top == U64


def test_two_writers_of_one_version_at_once(store: sa.Engine) -> None:
    """Two writers store the same version with other content at the same time: the first to
    commit wins, and the other, which waited for that row, records the conflict."""
    first = {"To_Account": "b", "profile_sequence": 5, "ProfileItem": []}
    second = {**first, "ProfileItem": [{"Tag": "Tag_Profile_IM_Nick", "Value": "other"}]}
    written: list[Written] = []

    def other_writer() -> None:
        with store.begin() as conn:
            written.append(Loader(store.dialect.name).write(conn, RUN, [], one_page(second), NOW))

    with store.connect() as conn:
        transaction = conn.begin()
        Loader(store.dialect.name).write(conn, RUN, [], one_page(first), NOW)
        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second writer did not wait for the first's row"
        transaction.commit()
    thread.join(30)
    assert [w.conflicts for w in written] == [1]
    (row,) = stored_profiles(store).values()
    assert row.tags == {}
    assert stored_quarantine(store) == {
        (("acc", 1), "conflict", "profile_sequence: stored with other content", exact(second))
    }


def test_a_list_not_held_stores_its_profiles_but_records_no_items(store: sa.Engine) -> None:
    """Pages of a list the writer no longer holds (not in ``parts``) still give their profile
    versions, but their unstorable items are the holder's to record."""
    pages = one_page(
        {"To_Account": "", "FollowTime": 1}, {"To_Account": "b", "profile_sequence": 1}
    )
    with store.begin() as conn:
        written = Loader(store.dialect.name).write(conn, RUN, [], pages, NOW)
    assert written.quarantined == 0
    assert stored_quarantine(store) == set()
    assert set(stored_profiles(store)) == {("b", 1)}


def test_a_version_stored_before_digests_is_compared_by_its_tags(store: sa.Engine) -> None:
    """A row from revision 0002 had no content digest; migration 0010 gives it the digest of
    its tags: seeing its tags again is no conflict, other tags are."""
    tags = {"Tag_Profile_IM_Nick": "old", "Tag_Profile_IM_Level": 3}
    script = ScriptDirectory.from_config(db.alembic_config())
    revision = script.get_revision("0010")
    assert revision is not None
    backfilled = revision.module.digest(tags)
    with store.begin() as conn:
        conn.execute(
            sa.insert(profile_snapshots),
            [
                {
                    "user_id": "b",
                    "profile_sequence": 5,
                    "nick": "old",
                    "tags": tags,
                    "content_digest": backfilled,
                    "first_seen_at": NOW,
                    "run_id": RUN,
                }
            ],
        )
    same = {
        "To_Account": "b",
        "profile_sequence": 5,
        "ProfileItem": [
            {"Tag": "Tag_Profile_IM_Level", "Value": 3},
            {"Tag": "Tag_Profile_IM_Nick", "Value": "old"},
        ],
    }
    other = {
        **same,
        "FollowTime": 1,
        "ProfileItem": [{"Tag": "Tag_Profile_IM_Nick", "Value": "new"}],
    }
    assert write(store, one_page(same)).conflicts == 0
    assert write(store, one_page(other)).conflicts == 1
    (row,) = stored_profiles(store).values()
    assert (row.nick, row.content_digest) == ("old", backfilled)


def test_status_summarises_the_quarantine(store: sa.Engine) -> None:
    """quarantine_summary counts by kind and reason and shows the newest items, not their blob."""
    write(
        store,
        one_page(
            {"To_Account": "", "FollowTime": 1},
            {"To_Account": "a\x00", "FollowTime": 2},
            {"To_Account": "b", "profile_sequence": -1},
            {"To_Account": "c", "profile_sequence": 1, "ProfileItem": []},
            {"To_Account": "c", "profile_sequence": 1, "ProfileItem": [{"Tag": "t", "Value": 1}]},
        ),
    )
    with store.connect() as conn:
        summary = quarantine_summary(conn, RUN, samples=2)
        assert quarantine_summary(conn, RUN + 1)["total"] == 0
    assert summary["total"] == 4
    assert summary["by_kind"] == {"unstorable": 3, "conflict": 1}
    assert {(r["kind"], r["reason"], r["count"]) for r in summary["by_reason"]} == {
        ("unstorable", "To_Account: empty", 1),
        ("unstorable", "To_Account: contains NUL", 1),
        ("unstorable", "profile_sequence: out of range", 1),
        ("conflict", "profile_sequence: stored with other content", 1),
    }
    assert [(x["kind"], x["to_account"]) for x in summary["samples"]] == [
        ("conflict", "c"),
        ("unstorable", "b"),
    ]
    assert "item" not in summary["samples"][0]
    with store.connect() as conn:
        labels = {x["to_account"] for x in quarantine_summary(conn, RUN)["samples"]}
    assert labels == {"", "a\ufffd", "b", "c"}
    json.dumps(summary)  # ready for `status --json`


def test_downgrade_refuses_to_drop_unsigned_sequences(store: sa.Engine) -> None:
    """Revision 0002's BIGINT cannot hold 2**64-1: the downgrade says so and changes nothing."""
    write(store, one_page({"To_Account": "b", "profile_sequence": U64, "ProfileItem": []}))
    with pytest.raises(RuntimeError, match="above 9223372036854775807"):
        db.downgrade(store, "0002")
    assert db.current_revision(store) == SCHEMA_REVISION  # the whole downgrade rolled back
    assert set(stored_profiles(store)) == {("b", U64)}


# -- the answer's bytes: the typed decoding reads what the exact path reads -------------------


def _exact_page(content: bytes) -> Any:
    """The exact path's reading of an answer's bytes: a Page, or the error it raises."""
    try:
        body = answer_body(200, content, "follow_get", max_bytes=1 << 30, renewable=False)
        return parse_page(body)
    except Exception as exc:  # noqa: BLE001 - the error is the answer here
        return exc


def _read(pages: list[Page]) -> list[tuple[Any, ...]]:
    """What page_rows makes of pages in turn, one KnownProfiles for all, as the writer takes
    it: the edges, the quarantined items, and each profile version's sightings with content
    not seen before (a sighting again with the same content is redundant: the writer keeps
    the first), each with the item it came from."""
    known = KnownProfiles()
    out = []
    versions: set[tuple[Any, str]] = set()
    for page in pages:
        rows = page_rows(page, known)
        profiles = []
        for p in rows.profiles:
            if (p.key, p.digest) not in versions:
                versions.add((p.key, p.digest))
                profiles.append((p.row, json.dumps(p.item, sort_keys=True)))
        out.append((rows.edges, profiles, rows.quarantined))
    return out


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(bodies(), min_size=1, max_size=3),
    st.booleans(),
    st.sampled_from([b"", b',"Junk":"\xff"', b',"Junk":"\xed\xa0\x80"', b',"X":1e400']),
    st.sampled_from([{}, {"ErrorCode": 30001}, {"ActionStatus": "FAIL"}, {"ErrorCode": None}]),
)
def test_typed_decoding_reads_what_the_exact_path_reads(
    answers: list[Any], ascii_only: bool, tail: bytes, status: dict[str, Any]
) -> None:
    """Any answer's bytes (any escapes, invalid UTF-8 or surrogates elsewhere in the body):
    ``decode_page`` gives up, or gives the Page the exact path gives, and page_rows makes the
    same rows of both, profile versions seen again included."""
    decoded, exact = [], []
    for body in answers:
        if isinstance(body, dict):
            body.update(status)
        text = json.dumps(body, ensure_ascii=ascii_only)  # NaN and Infinity too: not JSON
        content = text.encode("utf-8", "surrogatepass")
        if tail and content.endswith(b"}"):
            content = content[:-1] + tail + b"}"
        page = decode_page(content)
        if page is None:
            event("left to the exact path")
            continue
        event("decoded")
        reference = _exact_page(content)
        assert isinstance(reference, Page), reference
        assert page.next_cursor == reference.next_cursor
        decoded.append(page)
        exact.append(reference)
    assert _read(decoded) == _read(exact)
