"""The sandbox's two routes, follow_get and follow_get_info, answered from a ``Graph``.

A request reaches them past auth, rate limit and faults (etl.sandbox.app); they check the JSON
body (60003), their own parameters (30001) and the account (30003). follow_get pages by keyset:
a cursor (etl.sandbox.cursor) names the list and the last To_Account served, so a change to the
list between two pages neither repeats nor skips an item that stayed. Items come pre-serialized
from ``render.ItemRenderer`` (about 1 µs per item of a 1000-item page).

``loop_accounts``: every list of these accounts longer than one page answers its last page
with the cursor its first page answered, the very same string (these accounts' cursors are
issued once per position and reused), so a crawl goes p1, p2, ... p_last, p2, ... forever.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable
from dataclasses import dataclass

from etl.sandbox.config import SandboxConfig
from etl.sandbox.cursor import CursorCodec, InvalidCursor
from etl.sandbox.faults import OK_TAIL
from etl.sandbox.graph import FOLLOW_TYPES, Graph, ListView
from etl.sandbox.render import ItemRenderer, to_json
from etl.sandbox.response import BadRequest

FOLLOW_GET = "/v4/follow/follow_get"
FOLLOW_GET_INFO = "/v4/follow/follow_get_info"
API_ROUTES = (FOLLOW_GET, FOLLOW_GET_INFO)


@dataclass(frozen=True)
class Page:
    """A follow_get answer before it is put together: items (JSON, comma-separated), cursor."""

    items: bytes
    cursor: str
    count: int
    key: str

    def body(self) -> bytes:
        """The whole answer: FollowItem, NextCursor and an OK status."""
        return b"".join(
            (
                b'{"FollowItem":[',
                self.items,
                b'],"NextCursor":"',
                self.cursor.encode(),  # base64url and ".": nothing to escape
                b'"',
                OK_TAIL,
            )
        )


class Routes:
    """follow_get (keyset paging, loop accounts, injected list faults) and follow_get_info."""

    def __init__(
        self,
        graph: Graph,
        config: SandboxConfig,
        clock: Callable[[], float],
        take_injected: Callable[[str, int], str | None],
    ) -> None:
        self._graph = graph
        self._config = config
        self._clock = clock
        self._take_injected = take_injected
        self._cursors = CursorCodec(config.secret_key)
        self.items = ItemRenderer(graph, config.sequence_key)
        self._loop_accounts = frozenset(config.loop_accounts)
        # (account, type, last id) -> the one cursor a loop account gets for that position.
        self._loop_cursors: dict[tuple[str, int, str], str] = {}

    def answer(self, path: str, body: bytes) -> tuple[Page | None, bytes]:
        """(the page, if follow_get; the answer) of a request past auth, rate and faults."""
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest(60003, "request body is not valid JSON") from exc
        if not isinstance(payload, dict):
            raise BadRequest(60003, "request body must be a JSON object")
        if path == FOLLOW_GET:
            page = self._follow_get(payload)
            return page, page.body()
        return None, self._follow_get_info(payload)

    def _follow_get(self, payload: dict[str, object]) -> Page:
        account = payload.get("From_Account")
        follow_type = payload.get("FollowType")
        want = payload.get("WantNum", 100)
        cursor = payload.get("StartCursor", "")
        if not isinstance(account, str) or not account:
            raise BadRequest(30001, "From_Account must be a non-empty string")
        if type(follow_type) is not int or follow_type not in FOLLOW_TYPES:
            raise BadRequest(30001, "FollowType must be 1, 2 or 3")
        if type(want) is not int or not 1 <= want <= 1000:
            raise BadRequest(30001, "WantNum must be an integer in 1..1000")
        if not isinstance(cursor, str):
            raise BadRequest(30001, "StartCursor must be a string")
        injected = self._take_injected(account, follow_type)
        if injected == "empty-page":
            return Page(b"", "", 0, f"{account}/{follow_type}")
        view = self._graph.view(account, follow_type)
        if view is None or injected == "30003":
            raise BadRequest(30003, f"account {account} does not exist")
        start = self._cursor_start(cursor, account, follow_type, view) if cursor else 0
        size = len(view.ids)
        end = min(start + want, size)
        if end < size:
            next_cursor = self._issue(account, follow_type, view.ids[end - 1])
        elif start > 0 and account in self._loop_accounts:
            # The last page points back at the second: the cursor the first page answered.
            next_cursor = self._issue(account, follow_type, view.ids[min(want, size) - 1])
        else:
            next_cursor = ""
        items = self.items.items(view, start, end)
        return Page(items, next_cursor, end - start, f"{account}/{follow_type}")

    def _issue(self, account: str, follow_type: int, last: str) -> str:
        """A cursor resuming after ``last``; a loop account's is the same string every time."""
        if account not in self._loop_accounts:
            return self._cursors.issue(account, follow_type, last, self._clock())
        key = (account, follow_type, last)
        cursor = self._loop_cursors.get(key)
        if cursor is None:
            cursor = self._cursors.issue(account, follow_type, last, self._clock())
            cursor = self._loop_cursors.setdefault(key, cursor)
        return cursor

    def _cursor_start(self, cursor: str, account: str, follow_type: int, view: ListView) -> int:
        """Index of the first item after the cursor's last To_Account (keyset paging)."""
        try:
            fields = self._cursors.open(cursor)
        except InvalidCursor as exc:
            raise BadRequest(30001, "StartCursor is invalid") from exc
        if fields.account != account or fields.follow_type != follow_type:
            raise BadRequest(30001, "StartCursor belongs to another list")
        ttl = self._config.cursor_ttl
        if ttl is not None and self._clock() - fields.issued_at > ttl:
            raise BadRequest(30001, "StartCursor has expired")
        return bisect.bisect_right(view.ids, fields.last)

    def _follow_get_info(self, payload: dict[str, object]) -> bytes:
        account = payload.get("From_Account")
        targets = payload.get("To_Account")
        if not isinstance(account, str) or not account:
            raise BadRequest(30001, "From_Account must be a non-empty string")
        if (
            not isinstance(targets, list)
            or not 1 <= len(targets) <= 20
            or not all(isinstance(t, str) and t for t in targets)
        ):
            raise BadRequest(30001, "To_Account must be a list of 1..20 account ids")
        results = []
        for target in targets:
            counts = self._graph.counts(target)
            fans, follows, mutual = counts or (0, 0, 0)
            results.append(
                {
                    "To_Account": target,
                    "ResultCode": 0 if counts else 30003,
                    "ResultInfo": "" if counts else "account does not exist",
                    "FollowerCount": fans,
                    "FollowingCount": follows,
                    "MutualFollowingCount": mutual,
                }
            )
        return b'{"FollowInfo":' + to_json(results) + OK_TAIL
