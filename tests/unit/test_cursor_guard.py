"""The guards of ``etl.extract.pages`` against a service whose lists would never end, driven
by the sandbox in process (``loop_accounts``, ``cursor_ttl``) through a real FollowClient.

What is pinned: a looping list fails with CursorLoop (naming the list) after exactly the
requests it takes to meet a cursor again, never by running into the page limit; an
immediate repeat and a resumed crawl are caught the same way; other lists of the same service
end whole; the page limit, the empty-page limit and the restart limit fire where they say.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.config import RetryPolicy
from etl.crawl import extract
from etl.crawl.extract import Step
from etl.errors import CursorLoop, RequestRejected
from etl.sandbox import Graph, Sandbox, SandboxConfig
from etl.tencent.client import FollowClient
from etl.tencent.page import Page
from tests.conftest import sandbox_client

NOW = 1_750_000_000.0
GRAPH = Graph(400, seed=5)  # built once: hypothesis examples share it (nothing mutates it)
# The account with the longest fans list (247 items): it loops; a longer one does not.
LOOPER = max(GRAPH.accounts, key=lambda a: (len(GRAPH.list_ids(a, 1)), a))
NORMAL = max(
    (a for a in GRAPH.accounts if a != LOOPER), key=lambda a: (len(GRAPH.list_ids(a, 1)), a)
)


def client_of(sandbox: Sandbox) -> FollowClient:
    """A client of ``sandbox`` over its in-process transport: no retry waits, no pacing."""
    retry = RetryPolicy(attempts=4, max_seconds=30, initial_wait=0, max_wait=0)
    return sandbox_client(sandbox, clock=lambda: NOW, retry=retry)


def looping(clock: Callable[[], float] = lambda: NOW) -> Sandbox:
    return Sandbox(GRAPH, SandboxConfig(loop_accounts=(LOOPER,)), clock=clock)


def requests_for(sandbox: Sandbox, account: str, follow_type: int) -> int:
    """follow_get pages the sandbox served for one list."""
    served = sandbox.stats()["follow_get_ok"]
    assert isinstance(served, dict)
    return int(served.get(f"{account}/{follow_type}", 0))


class Budget:
    """A client that fails the test past ``limit`` requests: a guard that does not fire shows
    as this error at once, not as a crawl running to MAX_PAGES."""

    def __init__(self, client: FollowClient, limit: int) -> None:
        self.client, self.limit, self.calls = client, limit, 0

    def follow_get(self, account: str, follow_type: int, cursor: str, want: int) -> Page:
        self.calls += 1
        if self.calls > self.limit:
            pytest.fail(f"{account}/{follow_type}: still paging after {self.limit} requests")
        return self.client.follow_get(account, follow_type, cursor, want)


def walk(
    client: FollowClient,
    account: str,
    follow_type: int,
    want: int,
    cursor: str = "",
    *,
    budget: int = 600,
    **limits: int,
) -> tuple[list[Step], BaseException | None]:
    """The steps pages() yields for one list, and the error that ended it (None: its end);
    the test fails past ``budget`` requests."""
    steps: list[Step] = []
    try:
        source = Budget(client, budget)
        for step in extract.pages(source, account, follow_type, cursor, want, **limits):
            steps.append(step)
    except (CursorLoop, RequestRejected) as exc:
        return steps, exc
    return steps, None


def ids(steps: list[Step]) -> list[str]:
    return [item.To_Account for step in steps for item in step.page.items]


def page_count(size: int, want: int) -> int:
    return max(1, -(-size // want))


# ---- the repeated-cursor guard -----------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, len(GRAPH.list_ids(LOOPER, 1))))
def test_a_looping_list_fails_after_one_cycle(want: int) -> None:
    """A loop account's list of P >= 2 pages (the last points back at the second) ends with
    CursorLoop after exactly P requests, with P - 1 pages yielded, the items of those pages,
    and an error naming the list; at P == 1 there is nothing to loop and the list ends."""
    expected = GRAPH.list_ids(LOOPER, 1)
    pages = page_count(len(expected), want)
    sandbox = looping()
    with client_of(sandbox) as client:
        steps, error = walk(client, LOOPER, 1, want, budget=2 * pages)
    assert requests_for(sandbox, LOOPER, 1) == pages
    assert client.counters() == {"calls": pages, "retries": 0, "malformed": 0}
    if pages == 1:
        assert error is None
        assert ids(steps) == expected
        return
    assert isinstance(error, CursorLoop)
    assert str(error).startswith(f"{LOOPER}/1: the service answered cursor ")
    assert f"again after {pages} pages" in str(error)
    assert len(steps) == pages - 1
    assert ids(steps) == expected[: want * (pages - 1)]
    assert not any(step.last or step.restarted for step in steps)


def test_an_immediate_repeat_is_caught() -> None:
    """A 2-page loop list: page 2, asked with cursor c, answers c again. CursorLoop on that
    very answer, showing c, after 2 requests and 1 page."""
    size = len(GRAPH.list_ids(LOOPER, 1))
    want = -(-size // 2)
    sandbox = looping()
    with client_of(sandbox) as client:
        steps, error = walk(client, LOOPER, 1, want)
    assert isinstance(error, CursorLoop)
    assert [len(step.page.items) for step in steps] == [want]
    (asked,) = [step.next_cursor for step in steps]
    assert f"cursor {asked[:40]!r} again after 2 pages" in str(error)
    assert requests_for(sandbox, LOOPER, 1) == 2


def test_a_resumed_immediate_repeat_is_caught_on_the_first_page() -> None:
    """Resuming that 2-page list at its stored cursor c (a checkpoint): c counts as asked, so
    the first answer, c again, is the loop: one request, nothing yielded."""
    size = len(GRAPH.list_ids(LOOPER, 1))
    want = -(-size // 2)
    sandbox = looping()
    with client_of(sandbox) as client:
        first, _ = walk(client, LOOPER, 1, want)
        cursor = first[0].next_cursor
        sandbox.reset_stats()
        steps, error = walk(client, LOOPER, 1, want, cursor)
    assert isinstance(error, CursorLoop)
    assert "again after 1 pages" in str(error)
    assert steps == []
    assert requests_for(sandbox, LOOPER, 1) == 1


@pytest.mark.parametrize("resume_after", [1, 2, 4, 5])
def test_a_resumed_looping_crawl_ends_within_one_cycle(resume_after: int) -> None:
    """A crawl resumed at the cursor after page k of a 6-page loop list goes k+1 .. 6, then
    (sent back to page 2) 2 .. k, and stops when the cursor it resumed with comes back: after
    5 requests whatever k is, never reaching a page limit."""
    size = len(GRAPH.list_ids(LOOPER, 1))
    want = -(-size // 6)
    assert page_count(size, want) == 6
    sandbox = looping()
    with client_of(sandbox) as client:
        first, _ = walk(client, LOOPER, 1, want)
        cursor = first[resume_after - 1].next_cursor
        sandbox.reset_stats()
        steps, error = walk(client, LOOPER, 1, want, cursor, budget=12)
    assert isinstance(error, CursorLoop)
    assert f"{cursor[:40]!r} again after 5 pages" in str(error)
    assert requests_for(sandbox, LOOPER, 1) == 5
    assert len(steps) == 4


def test_normal_lists_of_the_same_service_end_whole() -> None:
    """In the sandbox that loops LOOPER, every list of other accounts (and LOOPER's lists that
    fit one page) ends normally with all its items, one request per page."""
    sandbox = looping()
    checked = 0
    with client_of(sandbox) as client:
        for account in dict.fromkeys([NORMAL, *GRAPH.accounts[:30]]):
            for follow_type in (1, 2, 3):
                expected = GRAPH.list_ids(account, follow_type)
                want = 3
                steps, error = walk(client, account, follow_type, want)
                assert error is None, (account, follow_type)
                assert ids(steps) == expected
                assert steps[-1].last
                assert not any(step.last for step in steps[:-1])
                assert requests_for(sandbox, account, follow_type) == page_count(
                    len(expected), want
                )
                checked += len(steps) > 1
        for follow_type in (2, 3):  # LOOPER's lists in a single page: nothing to loop
            expected = GRAPH.list_ids(LOOPER, follow_type)
            steps, error = walk(client, LOOPER, follow_type, len(expected))
            assert error is None
            assert ids(steps) == expected
    assert checked > 20  # most of them had pages to follow


# ---- the page limit ----------------------------------------------------------------------


def test_the_page_limit_stops_a_long_list() -> None:
    """A list of P pages with max_pages = P - 3: CursorLoop naming the list after max_pages
    pages yielded and one more request; a limit of P lets it end whole."""
    expected = GRAPH.list_ids(NORMAL, 1)
    want = 4
    pages = page_count(len(expected), want)
    assert pages > 10
    sandbox = looping()
    with client_of(sandbox) as client:
        steps, error = walk(client, NORMAL, 1, want, max_pages=pages - 3)
        assert isinstance(error, CursorLoop)
        assert str(error).startswith(f"{NORMAL}/1: more than {pages - 3} pages after ")
        assert len(steps) == pages - 3
        assert requests_for(sandbox, NORMAL, 1) == pages - 2
        assert ids(steps) == expected[: want * (pages - 3)]
        steps, error = walk(client, NORMAL, 1, want, max_pages=pages)
    assert error is None
    assert ids(steps) == expected


def test_the_limits_a_crawl_runs_with_are_the_module_constants() -> None:
    """The fetcher calls pages() without limits: the defaults are the documented ones, a
    million pages (no real list, a billion items at WantNum 1000, reaches it) and 100 empty
    pages in a row; a list restarts at most twice."""
    assert (extract.MAX_PAGES, extract.MAX_EMPTY_PAGES) == (1_000_000, 100)
    assert extract.MAX_RESTARTS == 2
    assert extract.pages.__kwdefaults__ == {
        "max_pages": extract.MAX_PAGES,
        "max_empty": extract.MAX_EMPTY_PAGES,
    }


# ---- the empty-page limit (the sandbox never serves an empty page with a next cursor) -----


class Empties:
    """A service whose pages are empty but for the ones listed in ``full``, each with a fresh
    cursor, until page ``last`` (NextCursor "")."""

    def __init__(self, full: set[int], last: int | None = None) -> None:
        self.full, self.last = full, last
        self.count = itertools.count(1)
        self.asked = 0

    def follow_get(self, account: str, follow_type: int, cursor: str, want: int) -> Page:
        n = self.asked = next(self.count)
        if n > 1_000:
            pytest.fail("the empty-page guard did not fire")
        items = [{"To_Account": f"u{n}"}] if n in self.full else []
        return Page.of(items, "" if n == self.last else f"c{n}")


def steps_of(source: extract.PageSource, **limits: int) -> tuple[list[Step], Exception | None]:
    steps: list[Step] = []
    try:
        steps.extend(extract.pages(source, "acct", 2, "", 100, **limits))
    except CursorLoop as exc:
        return steps, exc
    return steps, None


def test_too_many_empty_pages_in_a_row_stop_the_list() -> None:
    """max_empty = 3: the 4th empty page in a row that points onwards is the error, naming
    the list; it is not yielded."""
    source = Empties(full=set())
    steps, error = steps_of(source, max_empty=3)
    assert isinstance(error, CursorLoop)
    assert str(error).startswith("acct/2: 4 empty pages in a row, each with a next cursor")
    assert len(steps) == 3
    assert source.asked == 4


@pytest.mark.parametrize(
    ("full", "last"),
    [
        (set(), 4),  # three empty pages, then an empty last page: a last page is never judged
        ({4}, 8),  # three empty, one full, three empty, the last
        ({1, 5, 9}, 12),
    ],
)
def test_empty_runs_up_to_the_limit_are_fine(full: set[int], last: int) -> None:
    source = Empties(full, last)
    steps, error = steps_of(source, max_empty=3)
    assert error is None
    assert len(steps) == last
    assert ids(steps) == [f"u{n}" for n in sorted(full)]


def test_the_empty_limit_counts_a_run_not_a_total() -> None:
    """Empty pages only in runs of 3, 12 of them in all: a non-empty page resets the count."""
    source = Empties(full={4, 8, 12, 16}, last=20)
    assert steps_of(source, max_empty=3)[1] is None
    source = Empties(full={4, 8, 12}, last=20)  # then 4 empty in a row: 13..16
    steps, error = steps_of(source, max_empty=3)
    assert isinstance(error, CursorLoop)
    assert len(steps) == 15


# ---- the restart limit (stale cursors, from the sandbox's cursor_ttl) ---------------------


class Clock:
    """The sandbox's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = NOW
        self.tick = 0.0  # seconds added at every reading

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_a_stale_cursor_restarts_the_list_once() -> None:
    """The cursor after page 1 goes stale (30001) before it is used: the list starts again
    from "" (that step says restarted), the cursors it asks again are not a loop, and it ends
    with every item."""
    clock = Clock()
    sandbox = Sandbox(GRAPH, SandboxConfig(cursor_ttl=60), clock=clock)
    expected = GRAPH.list_ids(NORMAL, 1)
    want = 20
    with client_of(sandbox) as client:
        iterator: Iterator[Step] = extract.pages(client, NORMAL, 1, "", want)
        steps = [next(iterator)]
        clock.now += 61
        steps.extend(iterator)
    assert [step.restarted for step in steps] == [n == 1 for n in range(len(steps))]
    assert ids(steps[1:]) == expected
    assert steps[-1].last
    assert sandbox.stats()["by_error_code"] == {"0": len(steps), "30001": 1}


def test_cursors_that_always_go_stale_fail_after_the_restart_limit() -> None:
    """Every cursor stale by the time it is used: after MAX_RESTARTS restarts the 30001 is
    raised as RequestRejected (not CursorLoop: it is not a loop), after 2 requests per try."""
    clock = Clock()
    clock.tick = 100.0
    sandbox = Sandbox(GRAPH, SandboxConfig(cursor_ttl=60), clock=clock)
    with client_of(sandbox) as client:
        steps, error = walk(client, NORMAL, 1, 20)
    assert type(error) is RequestRejected
    assert [step.restarted for step in steps] == [False] + [True] * extract.MAX_RESTARTS
    tries = extract.MAX_RESTARTS + 1
    assert sandbox.stats()["by_error_code"] == {"0": tries, "30001": tries}
