"""Mass-removal holds: a crawl that would remove a large share of a list's stored edges is not
applied until a second crawl confirms it.

A well-formed empty or short last page, or one 30003, would otherwise mark a whole list
removed, with a ``removed`` event per edge, and the next night's crawl would add it all back
(``added`` events): the history would be wrong for good. The rule (``Thresholds.is_mass``):
a crawl that would mark removed R of the S current edges stored for its list is a mass
removal when R >= ``min_edges`` (FOLLOW_ETL_HOLD_MIN_EDGES, default 20) and
R > ``share`` x S (FOLLOW_ETL_HOLD_SHARE, default 0.5). A 30003 for a list with
S >= ``min_edges`` current edges is one (R = S).

The life of a held list, within one run:
1. The crawl that meets the rule removes nothing and records no removal event; the edges it
   listed stay stored (they are real). The checkpoint goes to ``held`` with what was seen
   (``held_removed`` R, ``held_current`` S, ``held_ending``, ``held_at``), its cursor back to
   "" and its pages and items to 0, its ``sync_seen`` rows dropped (etl.store.cursors.put_on_hold;
   etl.store.load decides for completed crawls, inside the batch, before any removal).
2. Once no other open list of the run is free, it is claimed again (etl.store.leases.claim): a
   second full crawl, whose fetcher asks follow_get_info for the list's count as the crawl
   ends (writers never call the API).
3. That crawl decides (``decide`` in the batch with its last page, ``decide_missing`` for a
   30003): no longer a mass removal: applied as an ordinary crawl (the glitch is gone); a mass
   removal again and follow_get_info's count agrees with what the crawl found (``agrees``:
   within max(2, 1%)), or 30003 again with follow_get_info saying the account does not exist:
   confirmed, applied as usual. Otherwise it stays ``held``, given up for this run
   (failures = MAX_FAILURES: not crawled a third time); the next run crawls it afresh under the
   same rule.

This module holds the rule alone (no I/O): etl.load and etl.crawl.writer apply it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from etl.store.rows import Key

DEFAULT_MIN_EDGES = 20
DEFAULT_SHARE = 0.5
TOLERANCE_EDGES = 2  # follow_get_info may lag a crawl by a follow or two
TOLERANCE_SHARE = 0.01  # ... or by 1% of a big list
LAST_PAGE = "last_page"  # the crawl reached an empty NextCursor
MISSING = "missing"  # 30003: the account does not exist
ENDINGS = {LAST_PAGE: "its last page", MISSING: "30003, the account does not exist"}


@dataclass(frozen=True)
class Thresholds:
    """When a crawl's removals are a mass removal, held until confirmed."""

    min_edges: int = DEFAULT_MIN_EDGES
    share: float = DEFAULT_SHARE

    def __post_init__(self) -> None:
        problem = invalid(self.min_edges, self.share)
        if problem:
            raise ValueError(problem)

    def is_mass(self, removed: int, current: int) -> bool:
        """R of S is a mass removal: R >= min_edges and R > share x S (exactly, no float error)."""
        return removed >= self.min_edges and removed > Fraction(self.share) * current


def invalid(min_edges: object, share: object) -> str | None:
    """What is wrong with these thresholds, or None."""
    if type(min_edges) is not int or min_edges < 1:
        return f"the hold minimum must be a whole number of edges >= 1, got {min_edges!r}"
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1:
        return f"the hold share must be a number from 0 to 1 (1: never hold), got {share!r}"
    return None


def tolerance(count: int, found: int) -> int:
    """How far follow_get_info's count may be from a crawl's and still agree."""
    return max(TOLERANCE_EDGES, math.ceil(TOLERANCE_SHARE * max(count, found)))


def agrees(count: int | None, found: int) -> bool:
    """follow_get_info's ``count`` (None: unknown) agrees with the ``found`` edges."""
    return count is not None and abs(count - found) <= tolerance(count, found)


@dataclass(frozen=True)
class Hold:
    """A list whose crawl is not applied: what it saw, and whether it was the confirming one."""

    key: Key
    removed: int  # R: the current edges the crawl did not list
    current: int  # S: the current edges stored for the list
    ending: str  # LAST_PAGE or MISSING
    confirming: bool = False  # a second crawl that did not confirm: given up for this run
    count: int | None = None  # follow_get_info's count (a confirming crawl's)
    missing: bool = False  # follow_get_info said the account does not exist

    def message(self) -> str:
        """The checkpoint's last_error: what was held and what comes next."""
        seen = (
            f"would mark {self.removed} of {self.current} stored edges removed "
            f"({ENDINGS[self.ending]})"
        )
        if not self.confirming:
            return f"held: the crawl {seen}; a second crawl confirms it or not"
        said = (
            "the account does not exist"
            if self.missing
            else "no count"
            if self.count is None
            else f"{self.count}"
        )
        return (
            f"held, not confirmed: the second crawl {seen}, follow_get_info says {said}; "
            "nothing removed, the next run crawls it again"
        )


def decide(
    thresholds: Thresholds,
    key: Key,
    removed: int,
    current: int,
    *,
    confirming: bool,
    count: int | None,
) -> Hold | None:
    """A completed crawl's removals: None to apply them, or the Hold that keeps them back."""
    if not thresholds.is_mass(removed, current):
        return None
    if confirming and agrees(count, current - removed):
        return None  # confirmed: a true mass unfollow
    return Hold(key, removed, current, LAST_PAGE, confirming, count)


def decide_missing(
    thresholds: Thresholds,
    key: Key,
    current: int,
    *,
    confirming: bool,
    missing: bool,
    count: int | None,
) -> Hold | None:
    """A 30003 for a list with ``current`` stored edges: None to remove them all, or the Hold
    that keeps them."""
    if not thresholds.is_mass(current, current):
        return None
    if confirming and missing:
        return None  # confirmed: the account is gone
    return Hold(key, current, current, MISSING, confirming, count, missing)
