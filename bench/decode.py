"""The page path alone, one thread, no database: ``python -m bench.decode``.

Fetches the fans lists of the accounts with most fans of a 20,000-user sandbox graph (seed 1,
the big-list case's graph; 1000-item pages), keeps each answer's bytes, then times on the same
bytes, best of five, in CPU microseconds per item:

- exact: ``parse_json`` + the code check + ``parse_page`` (the way every answer went before
  issue 18, and the way an unusual one still goes);
- typed: ``decode_page`` (msgspec; each ProfileItem kept as the answer's bytes);
- rows, cold: ``page_rows`` over every page with an empty KnownProfiles (each profile version
  read once);
- rows, known: ``page_rows`` over the pages again, every version known (a re-sync's common
  case, and a big list's fans seen in an earlier list).

The figures the README and CHANGELOG quote for the page path come from this command.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import httpx

from etl.config import ApiSettings, RetryPolicy, Secret
from etl.crawl.known import KnownProfiles
from etl.crawl.transform import page_rows
from etl.sandbox import Graph, Sandbox, SandboxConfig, serve_in_thread
from etl.tencent.client import FollowClient
from etl.tencent.codes import answer_body
from etl.tencent.page import Page, decode_page, parse_page


class _Keep(httpx.HTTPTransport):
    """An httpx transport that keeps the body of every answer."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        body = response.read()
        self.bodies.append(body)
        return httpx.Response(response.status_code, headers=response.headers, content=body)


def _answers(users: int, accounts: int) -> list[bytes]:
    """The follow_get answers of the fans lists of the ``accounts`` biggest accounts."""
    graph = Graph(users, seed=1)
    config = SandboxConfig()
    by_fans = sorted(graph.accounts, key=lambda a: -(graph.counts(a) or (0, 0, 0))[0])
    keep = _Keep()
    with serve_in_thread(Sandbox(graph, config)) as server:
        settings = ApiSettings(
            sdkappid=config.sdkappid,
            admin=config.admin,
            base_urls=(server.url,),
            secret_key=Secret(config.secret_key),
            usersig=None,
            rate=10_000.0,
            timeout=30.0,
            retry=RetryPolicy(attempts=1, initial_wait=0.0, max_wait=0.0),
        )
        with FollowClient.from_settings(settings, transport=keep) as client:
            for account in by_fans[:accounts]:
                cursor = ""
                while True:
                    cursor = client.follow_get(account, 1, cursor, 1000).next_cursor
                    if not cursor:
                        break
    return keep.bodies


def _exact(body: bytes) -> Page:
    return parse_page(answer_body(200, body, "follow_get", max_bytes=1 << 30, renewable=False))


def _best(call: Callable[[], Any], items: int, rounds: int = 5) -> float:
    """CPU µs per item of ``call``, best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return best / items * 1e6


def main() -> None:
    """Print the page path's CPU per item."""
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=40)
    args = parser.parse_args()
    bodies = _answers(args.users, args.accounts)
    typed = [decode_page(body) for body in bodies]
    pages = [page for page in typed if page is not None]
    assert len(pages) == len(bodies), "every sandbox page decodes typed"
    items = sum(len(page.items) for page in pages)
    known = KnownProfiles()
    for page in pages:
        page_rows(page, known)
    size = sum(map(len, bodies)) / len(bodies) / 1024
    print(f"{len(bodies)} pages, {items:,} items, {size:.0f} KB a page; CPU µs per item:")
    figures = [
        ("exact (parse_json, parse_page)", lambda: [_exact(body) for body in bodies]),
        ("typed (decode_page)", lambda: [decode_page(body) for body in bodies]),
        ("rows, cold (page_rows, new KnownProfiles)", lambda: _rows(pages, KnownProfiles())),
        ("rows, known (page_rows, every version known)", lambda: _rows(pages, known)),
    ]
    for label, call in figures:
        print(f"  {label:<46} {_best(call, items):6.2f}")


def _rows(pages: list[Page], known: KnownProfiles) -> None:
    for page in pages:
        page_rows(page, known)


if __name__ == "__main__":
    main()
