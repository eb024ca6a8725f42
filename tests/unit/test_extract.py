"""Walking a list: every page once, stale cursors restart it, and a list that would never end
ends with CursorLoop."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest

from etl.crawl import extract
from etl.crawl.extract import Step
from etl.errors import CursorLoop, RequestRejected
from etl.sandbox import Graph, Sandbox, SandboxConfig, serve_in_thread
from etl.sandbox.hostile import HOSTILE_IDS
from etl.tencent.client import FollowClient
from etl.tencent.page import Page
from tests.conftest import sandbox_client

NOW = 1_750_000_000.0


class FakeSource:
    """Answers follow_get from a map of cursor -> page (or error), recording the cursors."""

    def __init__(self, answers: Mapping[str, Page | Exception]) -> None:
        self.answers = dict(answers)
        self.asked: list[str] = []

    def follow_get(self, account: str, follow_type: int, cursor: str, want: int) -> Page:
        self.asked.append(cursor)
        answer = self.answers[cursor]
        if isinstance(answer, Exception):
            raise answer
        return answer


def item(name: str) -> dict[str, object]:
    return {"To_Account": name}


def crawl(source: extract.PageSource, cursor: str = "", **limits: int) -> list[Step]:
    """Every step of list a/1 from ``cursor``, as far as it goes."""
    return list(extract.pages(source, "a", 1, cursor, 100, **limits))


def test_pages_walk_the_list_to_its_end() -> None:
    """Each page is yielded once, in order; the last one says so."""
    source = FakeSource(
        {"": Page.of([item("x")], "c2"), "c2": Page.of([item("y")], "c3"), "c3": Page.of([], "")}
    )
    steps = crawl(source)
    assert [step.page.source for step in steps] == [[item("x")], [item("y")], []]
    assert [(step.next_cursor, step.last, step.restarted) for step in steps] == [
        ("c2", False, False),
        ("c3", False, False),
        ("", True, False),
    ]


def test_a_cursor_seen_again_is_a_loop() -> None:
    """p1 -> p2 -> p3 -> p2: CursorLoop naming the list, the cursor and the pages so far; the
    page that points back is not yielded."""
    source = FakeSource(
        {
            "": Page.of([item("x")], "c2"),
            "c2": Page.of([item("y")], "c3"),
            "c3": Page.of([item("z")], "c2"),
        }
    )
    steps: list[Step] = []
    with pytest.raises(CursorLoop) as caught:
        steps.extend(extract.pages(source, "a", 1, "", 100))
    assert [step.next_cursor for step in steps] == ["c2", "c3"]
    assert str(caught.value) == (
        "a/1: the service answered cursor 'c2' again after 3 pages: the list would never end"
    )


def test_the_resumed_cursor_counts_as_seen() -> None:
    """A crawl resumed at c5 that is sent back to c5 (an immediate repeat) is a loop."""
    with pytest.raises(CursorLoop, match="'c5' again after 1 pages"):
        crawl(FakeSource({"c5": Page.of([item("x")], "c5")}), "c5")


def test_a_loop_message_shows_40_characters_of_the_cursor() -> None:
    """A long cursor is cut to its first 40 characters in the message."""
    long = "k" * 500
    source = FakeSource({"": Page.of([item("x")], long), long: Page.of([item("y")], long)})
    with pytest.raises(CursorLoop) as caught:
        crawl(source)
    assert f"'{'k' * 40}'" in str(caught.value)
    assert "k" * 41 not in str(caught.value)


class Script:
    """Answers follow_get from a script of (expected cursor, page or error), in order."""

    def __init__(self, script: list[tuple[str, Page | Exception]]) -> None:
        self.script = script

    def follow_get(self, account: str, follow_type: int, cursor: str, want: int) -> Page:
        expected, answer = self.script.pop(0)
        assert cursor == expected
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_stale_cursor_restarts_the_list_with_a_fresh_memory() -> None:
    """30001 on a resumed cursor restarts from ""; cursors asked before the restart are not
    a loop when the new crawl meets them."""
    source = Script(
        [
            ("c2", Page.of([item("y")], "c3")),
            ("c3", RequestRejected("stale", code=30001)),
            ("", Page.of([item("x")], "c2")),
            ("c2", Page.of([item("y")], "c3")),
            ("c3", Page.of([], "")),
        ]
    )
    steps = crawl(source, "c2")
    assert source.script == []
    assert [(step.next_cursor, step.restarted) for step in steps] == [
        ("c3", False),
        ("c2", True),
        ("c3", False),
        ("", False),
    ]


def test_a_list_that_keeps_rejecting_fresh_cursors_fails() -> None:
    """After MAX_RESTARTS restarts the 30001 is raised."""
    source = FakeSource({"c": RequestRejected("stale", code=30001), "": Page.of([], "c")})
    with pytest.raises(RequestRejected):
        crawl(source, "c")
    assert source.asked.count("") == extract.MAX_RESTARTS


def test_a_rejected_first_page_is_not_restarted() -> None:
    """30001 on "" is the answer, not a stale cursor."""
    with pytest.raises(RequestRejected):
        crawl(FakeSource({"": RequestRejected("bad", code=30001)}))


class Endless:
    """A service that always has another page: fresh cursors, items or not."""

    def __init__(self, items: list[dict[str, object]]) -> None:
        self.items = items
        self.counter = itertools.count(1)

    def follow_get(self, account: str, follow_type: int, cursor: str, want: int) -> Page:
        return Page.of(list(self.items), f"c{next(self.counter)}")


def test_more_than_100_empty_pages_in_a_row_end_the_list() -> None:
    """Empty pages that always point at another: CursorLoop after the 101st."""
    steps: list[Step] = []
    with pytest.raises(CursorLoop, match="101 empty pages in a row"):
        steps.extend(extract.pages(Endless([]), "a", 1, "", 100))
    assert len(steps) == extract.MAX_EMPTY_PAGES == 100


def test_empty_pages_between_full_ones_are_fine() -> None:
    """100 empty pages, then one with items, then 100 more empty ones: not a loop."""
    pages = {"": Page.of([], "e1")}
    for n in range(1, 100):
        pages[f"e{n}"] = Page.of([], f"e{n + 1}")
    pages["e100"] = Page.of([item("x")], "f1")
    for n in range(1, 100):
        pages[f"f{n}"] = Page.of([], f"f{n + 1}")
    pages["f100"] = Page.of([], "")
    assert len(crawl(FakeSource(pages))) == 201


def test_a_list_longer_than_max_pages_ends() -> None:
    """Pages with items and fresh cursors forever: CursorLoop past max_pages."""
    steps: list[Step] = []
    with pytest.raises(CursorLoop, match="more than 50 pages"):
        steps.extend(extract.pages(Endless([item("x")]), "a", 1, "", 100, max_pages=50))
    assert len(steps) == 50
    assert extract.MAX_PAGES == 1_000_000


# ---- against the sandbox -----------------------------------------------------------------


def client_for(sandbox: Sandbox, url: str | None = None) -> FollowClient:
    """A client of the sandbox app, at ``url`` or over its in-process transport."""
    return sandbox_client(sandbox, clock=lambda: NOW, url=url)


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph(400, seed=5)


def longest(graph: Graph) -> str:
    return max(graph.accounts, key=lambda a: (len(graph.list_ids(a, 1)), a))


@pytest.mark.parametrize("pages", [2, 3, 6])
def test_a_looping_sandbox_account_ends_with_cursor_loop(graph: Graph, pages: int) -> None:
    """A loop account's list (last page -> second page) fails with CursorLoop after its
    pages but the last were yielded, for 2-page lists as for longer ones."""
    account = longest(graph)
    ids = graph.list_ids(account, 1)
    want = -(-len(ids) // pages)
    assert -(-len(ids) // want) == pages
    sandbox = Sandbox(graph, SandboxConfig(loop_accounts=(account,)), clock=lambda: NOW)
    steps: list[Step] = []
    with client_for(sandbox) as client, pytest.raises(CursorLoop) as caught:
        steps.extend(extract.pages(client, account, 1, "", want))
    assert f"{account}/1: the service answered cursor" in str(caught.value)
    assert f"after {pages} pages: the list would never end" in str(caught.value)
    seen = [i.To_Account for step in steps for i in step.page.items]
    assert seen == ids[: want * (pages - 1)]


def test_other_accounts_of_a_looping_sandbox_end(graph: Graph) -> None:
    """Accounts not in loop_accounts page to their end as usual."""
    account = longest(graph)
    other = next(a for a in graph.accounts if a != account and len(graph.list_ids(a, 1)) > 10)
    sandbox = Sandbox(graph, SandboxConfig(loop_accounts=(account,)), clock=lambda: NOW)
    with client_for(sandbox) as client:
        steps = list(extract.pages(client, other, 1, "", 3))
    assert [i.To_Account for s in steps for i in s.page.items] == graph.list_ids(other, 1)


def test_malformed_answers_never_end_a_list_early(graph: Graph) -> None:
    """With a third of the answers malformed, every list still comes back whole."""
    config = SandboxConfig(faults=0.3, fault_kinds=("malformed",), fault_seed=11)
    sandbox = Sandbox(graph, config, clock=lambda: NOW)
    with client_for(sandbox) as client:
        for account in graph.accounts[:40]:
            steps = list(extract.pages(client, account, 2, "", 4))
            found = [i.To_Account for s in steps for i in s.page.items]
            assert found == graph.list_ids(account, 2)
    assert client.malformed > 10
    assert sandbox.stats()["by_fault"] == {"malformed": client.malformed}


def test_an_httpx_transport_error_is_not_a_page(graph: Graph) -> None:
    """A truncated answer (the connection dropped) is retried, never taken for a page."""
    config = SandboxConfig(faults=0.5, fault_kinds=("truncated",), fault_seed=2)
    sandbox = Sandbox(graph, config, clock=lambda: NOW)
    account = longest(graph)
    with client_for(sandbox) as client:
        steps = list(extract.pages(client, account, 1, "", 7))
    assert [i.To_Account for s in steps for i in s.page.items] == graph.list_ids(account, 1)
    assert client.retries > 0
    assert client.malformed == 0


def test_a_hostile_graph_crawls_exactly_over_a_real_socket() -> None:
    """Over HTTP, with hostile profiles and ids and a fifth of the answers malformed, every
    list holding hostile users comes back whole, its values exact."""
    graph = Graph(300, seed=6, hostile=0.05)
    config = SandboxConfig(faults=0.2, fault_kinds=("malformed",), fault_seed=5)
    sandbox = Sandbox(graph, config, clock=lambda: NOW)
    evil = set(graph.hostile_users) | set(HOSTILE_IDS)
    accounts = [a for a in graph.accounts if evil & set(graph.list_ids(a, 1))][:15]
    with serve_in_thread(sandbox) as server:
        client = client_for(sandbox, server.url)
        with client:
            for account in accounts:
                items = [i for s in extract.pages(client, account, 1, "", 3) for i in s.page.items]
                assert [i.To_Account for i in items] == graph.list_ids(account, 1)
                for i in items:
                    seq, _ = graph.profile(i.To_Account)
                    assert i.profile_sequence == seq
    assert client.malformed > 0
