"""The counters' arithmetic (etl.runs.Changes), pure: moving checkpoints between standings
changes the counters by exactly what a recount would see."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from etl.store import runs

standings = st.builds(
    runs.Standing,
    st.sampled_from(runs.STATUSES),
    st.integers(0, runs.MAX_FAILURES + 1),
    st.integers(0, 10),
    st.integers(0, 1000),
)


def recount(rows: list[runs.Standing]) -> dict[str, int]:
    """What counting these checkpoints gives, counter by counter."""
    result = Counter(dict.fromkeys(runs.COUNTED, 0))
    for row in rows:
        result[row.status] += 1
        # failed lists are retried, held ones get their confirming crawl (etl.holds)
        result["retryable"] += row.status in ("failed", "held") and row.failures < runs.MAX_FAILURES
        result["pages"] += row.pages
        result["items"] += row.items
    return dict(result)


@given(st.lists(st.tuples(standings, standings), max_size=30))
def test_moves_add_up_to_a_recount(moves: list[tuple[runs.Standing, runs.Standing]]) -> None:
    """Counting every checkpoint's first standing, then applying every move, gives the
    recount of the final standings."""
    start = [before for before, _ in moves]
    changes = runs.Changes()
    changes.counts.update(recount(start))
    for before, after in moves:
        changes.move(before, after)
    assert changes.counts == recount([after for _, after in moves])


def test_no_change_is_falsy() -> None:
    """A move to the same standing changes nothing (and count_changes may skip it)."""
    changes = runs.Changes()
    same = runs.Standing("failed", 1, 2, 3)
    changes.move(same, same)
    assert not changes
    changes.move(None, same)
    assert changes
