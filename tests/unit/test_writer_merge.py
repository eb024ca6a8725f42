"""The writer's merge of a batch: one ListPart per held list, from that list's pages in order.

``etl.crawl.writer._merge`` decides what a batch's transaction advances and writes for each
list: its edges, page count, next cursor and whether it is complete. A wrong merge shows up in
whole syncs only as "stored != truth"; these tests say which rule broke.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.crawl.messages import Claim, Ended, Fetched
from etl.crawl.outcome import Outcome
from etl.crawl.writer import _merge
from etl.store.rows import Key, ListPart, ListState, Mode
from etl.tencent.info import Answer
from etl.tencent.rows import PageRows

Edges = dict[str, int | None]
Item = Fetched | Ended


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def claim(
    account: str = "a",
    follow_type: int = 1,
    *,
    seen: int = 0,
    baseline: bool = False,
    fresh: bool = False,
    started: datetime | None = None,
) -> Claim:
    """A claim of one list, as the coordinator hands it to a fetcher."""
    task = ListState(
        account, follow_type, cursor="", seen=seen, baseline=baseline, fresh=fresh, started=started
    )
    return Claim(task)


def page(
    c: Claim,
    edges: Edges,
    next_cursor: str = "next",
    *,
    restarted: bool = False,
    started: datetime | None = None,
) -> Fetched:
    """One fetched page of ``c``'s list carrying ``edges`` (to_account -> follow_time)."""
    return Fetched(c, PageRows(edges=list(edges.items())), next_cursor, restarted, started)


def ended(c: Claim, outcome: Outcome = Outcome.COMPLETE) -> Ended:
    return Ended(c, outcome)


# ---- the rules, one example each ---------------------------------------------------------


def test_one_part_per_held_list_in_the_batch() -> None:
    """Pages of two held lists, interleaved: one part each, keyed by (account, type), with
    each list's own edges and page count; a held list with no page in the batch has none."""
    a, b = claim("a", 1), claim("b", 2)
    batch: list[Item] = [
        page(a, {"x": 1}),
        page(b, {"y": 2}),
        page(a, {"z": 3}),
    ]
    parts = _merge(batch, {("a", 1), ("b", 2), ("c", 3)})
    assert set(parts) == {("a", 1), ("b", 2)}
    assert parts[("a", 1)].key == ("a", 1)
    assert parts[("a", 1)].edges == {"x": 1, "z": 3}
    assert parts[("a", 1)].pages == 2
    assert parts[("b", 2)].edges == {"y": 2}
    assert parts[("b", 2)].pages == 1


def test_pages_of_lists_not_held_are_ignored() -> None:
    """A list whose lease is gone gets no part, and its edges land in no other part."""
    mine, lost = claim("a", 1), claim("a", 2)
    batch: list[Item] = [page(mine, {"x": 1}), page(lost, {"y": 2}, ""), page(mine, {"z": 3})]
    parts = _merge(batch, {("a", 1)})
    assert list(parts) == [("a", 1)]
    assert parts[("a", 1)].edges == {"x": 1, "z": 3}
    assert _merge(batch, set()) == {}


def test_a_later_page_wins_for_an_account_on_two_pages() -> None:
    """The same To_Account on two pages (the list shifted while paging): the later page's
    follow time is kept, including a later None."""
    c = claim()
    parts = _merge([page(c, {"x": 1, "y": 2}), page(c, {"y": 20, "x": None})], {c.key})
    assert parts[c.key].edges == {"x": None, "y": 20}
    assert parts[c.key].pages == 2


def test_a_restart_drops_the_pages_before_it() -> None:
    """A page marked restarted (the list began again from "") clears the edges and page count
    gathered before it in the batch, and marks the part restarted."""
    c = claim()
    batch: list[Item] = [
        page(c, {"old": 1}, "c1"),
        page(c, {"older": 2}, "c2"),
        page(c, {"x": 3}, "d1", restarted=True),
        page(c, {"y": 4}, "d2"),
    ]
    part = _merge(batch, {c.key})[c.key]
    assert part.edges == {"x": 3, "y": 4}
    assert part.pages == 2
    assert part.mode.restarted
    assert part.next_cursor == "d2"


def test_a_restart_on_the_first_page_is_still_a_restart() -> None:
    """The restart flag survives even when nothing came before it in this batch (earlier
    batches' rows of the list are what the loader must then forget)."""
    c = claim()
    part = _merge([page(c, {"x": 1}, restarted=True), page(c, {"y": 2})], {c.key})[c.key]
    assert part.mode.restarted
    assert part.pages == 2
    assert part.edges == {"x": 1, "y": 2}


def test_no_restart_means_not_restarted() -> None:
    c = claim()
    assert not _merge([page(c, {"x": 1}), page(c, {"y": 2})], {c.key})[c.key].mode.restarted


@pytest.mark.parametrize(
    ("cursors", "complete"),
    [
        (["c1", ""], True),
        ([""], True),
        (["c1", "c2"], False),
        (["", "c1"], False),  # only the last page of the list in the batch counts
    ],
)
def test_complete_and_next_cursor_come_from_the_last_page(
    cursors: list[str], complete: bool
) -> None:
    """``complete`` is True only if the list's last page in the batch has NextCursor "", and
    ``next_cursor`` is that page's, whatever pages of other lists come after it."""
    c, other = claim("a", 1), claim("b", 1)
    batch: list[Item] = [page(c, {f"u{n}": n}, cursor) for n, cursor in enumerate(cursors)]
    batch.append(page(other, {"v": 1}, "elsewhere" if complete else ""))
    part = _merge(batch, {c.key, other.key})[c.key]
    assert part.mode.ends is complete
    assert part.next_cursor == cursors[-1]


def test_endings_contribute_nothing() -> None:
    """An Ended makes no part on its own and changes nothing of the part of its list."""
    c, gone = claim("a", 1), claim("b", 1)
    assert _merge([ended(gone, Outcome.MISSING), ended(c)], {c.key, gone.key}) == {}
    with_end = _merge([page(c, {"x": 1}, ""), ended(c), ended(gone, Outcome.FAILED)], {c.key})
    assert with_end == _merge([page(c, {"x": 1}, "")], {c.key})
    assert with_end[c.key].mode.ends


@pytest.mark.parametrize(("seen", "had_seen"), [(0, False), (1, True), (250, True)])
@pytest.mark.parametrize("baseline", [False, True])
def test_baseline_and_had_seen_come_from_the_claim(
    seen: int, had_seen: bool, baseline: bool
) -> None:
    """The part carries the claimed ListState's baseline, and had_seen = (seen > 0)."""
    c = claim(seen=seen, baseline=baseline)
    part = _merge([page(c, {"x": 1})], {c.key})[c.key]
    assert part.baseline is baseline
    assert part.mode.had_seen is had_seen
    assert (part.account, part.follow_type) == c.key


# ---- against a reference model, over random batches ----------------------------------------

KEYS: list[Key] = [(account, follow_type) for account in ("a", "b", "c") for follow_type in (1, 3)]
USERS = ("u1", "u2", "u3", "u4", "u5")  # few, so pages of one list share To_Accounts


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Item], set[Key]]:
    """A batch over a few lists (one Claim each, as in a crawl) and the set of lists held."""
    times = st.none() | st.integers(0, 10).map(lambda n: T0 + timedelta(seconds=n))
    claims = {}
    for key in KEYS:
        fresh = draw(st.booleans())  # a fresh crawl keeps no sync_seen rows
        seen = 0 if fresh else draw(st.integers(0, 3))
        claims[key] = claim(
            *key, seen=seen, baseline=draw(st.booleans()), fresh=fresh, started=draw(times)
        )
    keys = st.sampled_from(KEYS)
    edges = st.dictionaries(
        st.sampled_from(USERS), st.none() | st.integers(0, 2**31 - 1), max_size=4
    )
    fetched = st.builds(
        lambda k, e, cursor, restarted, started: page(
            claims[k], e, cursor, restarted=restarted, started=started if restarted else None
        ),
        keys,
        edges,
        st.sampled_from(["", "c1", "c2", "c3"]),
        st.booleans(),
        times,
    )
    ending = st.builds(lambda k, o: ended(claims[k], o), keys, st.sampled_from(list(Outcome)))
    batch = draw(st.lists(fetched | ending, max_size=14))
    held = draw(st.sets(keys))
    return batch, held


def reference(batch: list[Item], held: set[Key]) -> dict[Key, ListPart]:
    """The merge written as "per list: its pages since its last restart in the batch"."""
    result: dict[Key, ListPart] = {}
    for key in held:
        pages = [i for i in batch if isinstance(i, Fetched) and i.claim.key == key]
        if not pages:
            continue
        restarts = [n for n, p in enumerate(pages) if p.restarted]
        kept = pages[restarts[-1] :] if restarts else pages
        task = pages[0].claim.task
        if restarts:
            mode = Mode.RESTARTED
        elif task.fresh:
            mode = Mode.FRESH
        else:
            mode = Mode.SEEN if task.seen > 0 else Mode.FIRST
        result[key] = ListPart(
            key[0],
            key[1],
            edges=dict(edge for p in kept for edge in p.rows.edges),
            pages=len(kept),
            next_cursor=pages[-1].next_cursor,
            mode=mode.ending(pages[-1].next_cursor == ""),
            baseline=task.baseline,
            started=kept[0].started if restarts else task.started,
        )
    return result


@settings(max_examples=300, deadline=None)
@given(batches())
def test_merge_matches_the_reference_model(case: tuple[list[Item], set[Key]]) -> None:
    """Every list mode (fresh, first, seen, restarted; ending or not) against the model; the
    batch's pages and their claims are left exactly as they were (the claims learn of a
    restart only once the batch is committed)."""
    batch, held = case
    before = copy.deepcopy(batch)
    tasks = {id(i.claim): copy.deepcopy(i.claim.task) for i in batch}
    assert _merge(batch, held) == reference(batch, held)
    assert batch == before  # the batch's pages are not changed by merging them
    assert all(i.claim.task == tasks[id(i.claim)] for i in batch)  # nor their claims


@settings(max_examples=150, deadline=None)
@given(batches())
def test_merge_only_sees_held_lists_pages(case: tuple[list[Item], set[Key]]) -> None:
    """Parts exist exactly for held lists with a page in the batch; removing the endings and
    every item of lists not held changes nothing."""
    batch, held = case
    parts = _merge(batch, held)
    with_pages = {i.claim.key for i in batch if isinstance(i, Fetched)}
    assert set(parts) == held & with_pages
    only: list[Item] = [i for i in batch if isinstance(i, Fetched) and i.claim.key in held]
    assert _merge(only, held) == parts
    assert _merge(only, held | set(KEYS)) == parts


def test_a_confirming_claim_hands_its_info_count_to_the_part() -> None:
    """A confirming crawl's part says so, with follow_get_info's count for its follow type
    once the fetcher has asked (as the list ends); without an answer the count is unknown."""
    c = Claim(ListState("a", 2, cursor="", confirming=True))
    assert _merge([page(c, {"x": 1})], {c.key})[c.key].info_count is None
    c.info = Answer({1: 7, 2: 42, 3: 5})
    part = _merge([page(c, {"x": 1}, "")], {c.key})[c.key]
    assert (part.confirming, part.info_count) == (True, 42)
    plain = claim()
    assert not _merge([page(plain, {"x": 1}, "")], {plain.key})[plain.key].confirming
