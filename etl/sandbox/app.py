"""Request handling for the sandbox: Tencent's follow API, answered from a ``Graph``, no sockets.

``Sandbox.handle`` takes (method, path, query, body) and returns a ``SandboxResponse``; the HTTP
server and the httpx ``MockTransport`` are thin shells around it. Latency and "slow" faults are
returned as a ``delay`` for the shell to wait out, so tests of the logic never wait.

The hot path is kept cheap so the sandbox is never what a benchmark measures: a UserSig is
verified once and then only its expiry is checked, and items come pre-serialized from
``render.ItemRenderer`` (about 1 µs per item of a 1000-item page).

The checks run in the service's order: URL parameters (60009), SDKAppID (60005), UserSig (700xx),
administrator (30004), call rate (60007), injected faults, JSON body (60003), then the route's own
parameters (30001) and account (30003). An outage (``set_outage``, admin ``POST
/sandbox/outage``) answers before all of them when it is an HTTP status (a proxy in front of
the service), after the rate check when it is a Tencent error code.

Hostile behaviour, all off by default:

- ``faults`` with ``fault_kinds`` including "malformed": HTTP 200 with ActionStatus OK and
  ErrorCode 0 but no page (``MALFORMED_KINDS``: NextCursor missing, null or a number;
  FollowItem missing, null or an object; an item without To_Account or with a number for it;
  a bare status; an HTML body; an empty body). The default kinds leave it out.
- ``loop_accounts``: every list of these accounts longer than one page answers its last page
  with the cursor its first page answered, the very same string (these accounts' cursors are
  issued once per position and reused), so a crawl goes p1, p2, ... p_last, p2, ... forever.
- ``Graph(hostile=P)``: hostile profile values and ids (see etl.sandbox.hostile).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import httpx

from etl.sandbox import admin
from etl.sandbox.cursor import CursorCodec, InvalidCursor
from etl.sandbox.faults import DEFAULT_FAULT_KINDS as DEFAULT_FAULT_KINDS
from etl.sandbox.faults import FAULT_KINDS as FAULT_KINDS
from etl.sandbox.faults import HTML, JSON, OK_TAIL, TARGETED_KINDS, html, malformed
from etl.sandbox.faults import MALFORMED_KINDS as MALFORMED_KINDS
from etl.sandbox.graph import FOLLOW_TYPES, Graph, ListView
from etl.sandbox.render import ItemRenderer, ascii_json, to_json
from etl.sandbox.stats import SandboxStats
from etl.tencent import usersig

FOLLOW_GET = "/v4/follow/follow_get"
FOLLOW_GET_INFO = "/v4/follow/follow_get_info"
API_ROUTES = (FOLLOW_GET, FOLLOW_GET_INFO)

_MAX_RANDOM = 4294967295
_VERIFIED_LIMIT = 64  # UserSigs remembered as verified; a client renews its own once a day


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves: credentials, limits and injected faults.

    ``faults`` is the share of API calls answered with a fault, drawn (seeded by
    ``fault_seed``) from ``fault_kinds``; a "malformed" fault draws its shape from
    ``malformed_kinds``. ``loop_accounts``: lists of these accounts never end (see the module
    docstring).
    """

    sdkappid: int = 1400000001
    admin: str = "administrator"
    secret_key: str = field(default="sandbox-secret-key-0123456789abcdef", repr=False)
    faults: float = 0.0
    fault_kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    loop_accounts: tuple[str, ...] = ()
    slow_ms: float = 5000.0
    latency_ms: float = 0.0
    rate: float | None = None
    cursor_ttl: float | None = None
    sequence_key: str = "profile_sequence"
    fault_seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown or not self.fault_kinds:
            raise ValueError(f"fault_kinds must be a non-empty subset of {FAULT_KINDS}")
        if set(self.malformed_kinds) - set(MALFORMED_KINDS) or not self.malformed_kinds:
            raise ValueError(f"malformed_kinds must be a non-empty subset of {MALFORMED_KINDS}")
        if not 0.0 <= self.faults <= 1.0:
            raise ValueError("faults is a probability between 0 and 1")


@dataclass(frozen=True)
class SandboxResponse:
    """One answer; the transport waits ``delay`` seconds before sending it.

    ``truncated`` marks a body cut in half on purpose: the transport must announce the full
    length and break off, the way a dropped connection looks to a client. ``trickle`` spreads
    the sending of the answer over that many seconds, in TRICKLE_PIECES pieces.
    """

    status: int
    body: bytes
    content_type: str = JSON
    delay: float = 0.0
    truncated: bool = False
    full_length: int = 0
    trickle: float = 0.0


TRICKLE_PIECES = 40


@dataclass(frozen=True)
class _Page:
    """A follow_get answer before it is put together: items (JSON, comma-separated), cursor."""

    items: bytes
    cursor: str
    count: int
    key: str

    def body(self) -> bytes:
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


class _BadRequest(Exception):
    """A check failed: answer HTTP 200 with this Tencent error code."""

    def __init__(self, code: int, info: str) -> None:
        super().__init__(info)
        self.code = code
        self.info = info


def _error_body(code: int, info: str) -> bytes:
    fields = {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info, "ErrorDisplay": ""}
    return to_json(fields)


def _is_uint(text: str) -> bool:
    # Length-capped so int() never meets a string past Python's digit limit.
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


class Sandbox:
    """Tencent's follow endpoints answered from a Graph, with auth, rate limit and faults."""

    def __init__(
        self, graph: Graph, config: SandboxConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.graph = graph
        self.config = config
        self._clock = clock
        self._cursors = CursorCodec(config.secret_key)
        self._fault_rng = random.Random(config.fault_seed)
        self._fault_lock = threading.Lock()
        self._rate_lock = threading.Lock()
        self._accepted_window: deque[float] = deque()
        self._items = ItemRenderer(graph, config.sequence_key)
        self._loop_accounts = frozenset(config.loop_accounts)
        # (account, type, last id) -> the one cursor a loop account gets for that position.
        self._loop_cursors: dict[tuple[str, int, str], str] = {}
        self._outage: tuple[str, int] | None = None  # ("status", 503) or ("code", 30006)
        # (account, type) -> targeted faults still to answer, in order (under _fault_lock)
        self._injected: dict[tuple[str, int], list[str]] = {}
        # (usersig, identifier, sdkappid) -> expiry of a UserSig whose HMAC has been checked:
        # the zlib + JSON + HMAC work is done once per UserSig, not once per call.
        self._verified: dict[tuple[str, str, int], int] = {}
        self._stats = SandboxStats()

    def warm(self) -> None:
        """Render every user's item now, so the first crawl does not pay for it (about 1 s
        for 20,000 users)."""
        self._items.warm()

    # ---- stats ---------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """A snapshot of the counters (API routes only; admin calls are not counted)."""
        return self._stats.snapshot()

    def counts(self) -> dict[str, object]:
        """The cheap counters (SandboxStats.counts)."""
        return self._stats.counts()

    def reset_stats(self) -> None:
        """Zero every counter and forget the request timestamps."""
        self._stats.reset()

    def max_calls_in_window(self, window: float = 1.0, *, accepted_only: bool = False) -> int:
        """Most follow_get requests received (or only rate-accepted ones) in any window."""
        return self._stats.max_calls_in_window(window, accepted_only=accepted_only)

    # ---- outage --------------------------------------------------------------------------

    @property
    def outage(self) -> dict[str, int] | None:
        """The outage in force, as ``{"status": 503}`` or ``{"code": 30006}``; None if none."""
        outage = self._outage
        return None if outage is None else {outage[0]: outage[1]}

    def set_outage(self, *, status: int | None = None, code: int | None = None) -> None:
        """Answer every API call with HTTP ``status``, or with Tencent error ``code``; with
        neither, end the outage."""
        if status is not None and code is not None:
            raise ValueError("an outage is an HTTP status or an error code, not both")
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status, 100..599")
        if code == 0:
            raise ValueError("code must be a Tencent error code, not 0")
        if status is not None:
            self._outage = ("status", status)
        elif code is not None:
            self._outage = ("code", code)
        else:
            self._outage = None

    # ---- targeted faults ------------------------------------------------------------------

    def inject(self, account: str, follow_type: int, kind: str, times: int = 1) -> None:
        """Answer the next ``times`` follow_get calls of this list with ``kind`` (one of
        TARGETED_KINDS, see etl.sandbox.faults), whatever their cursor."""
        if kind not in TARGETED_KINDS:
            raise ValueError(f"kind must be one of {TARGETED_KINDS}, got {kind!r}")
        if follow_type not in FOLLOW_TYPES or type(times) is not int or times < 1:
            raise ValueError("type must be 1, 2 or 3 and times a positive integer")
        with self._fault_lock:
            self._injected.setdefault((account, follow_type), []).extend([kind] * times)

    def _take_injected(self, account: str, follow_type: int) -> str | None:
        if not self._injected:
            return None
        with self._fault_lock:
            waiting = self._injected.get((account, follow_type))
            if not waiting:
                return None
            kind = waiting.pop(0)
            if not waiting:
                del self._injected[(account, follow_type)]
            return kind

    # ---- entry points --------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: Mapping[str, str], body: bytes
    ) -> SandboxResponse:
        """Answer one HTTP request."""
        if path.startswith("/sandbox/"):
            status, answer = admin.answer(self, method, path, query, body)
            return SandboxResponse(status, ascii_json(answer))
        if path not in API_ROUTES:
            self._stats.answered("other", 404, None, None)
            return SandboxResponse(404, ascii_json({"error": "not found", "path": path}))
        if path == FOLLOW_GET:
            self._stats.received(self._clock())
        response, code, fault = self._api(method, path, query, body)
        self._stats.answered(path, response.status, code, fault)
        latency = self.config.latency_ms / 1000
        if latency:
            response = dataclasses.replace(response, delay=response.delay + latency)
        return response

    def transport(self) -> httpx.MockTransport:
        """An httpx transport that answers in-process (sleeping any delay, breaking truncations)."""

        def answer(request: httpx.Request) -> httpx.Response:
            response = self.handle(
                request.method, request.url.path, dict(request.url.params), request.read()
            )
            if response.delay:
                time.sleep(response.delay)
            if response.truncated:
                # The same failure the socket server produces: a body that stops short.
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    f"(received {len(response.body)} bytes, expected {response.full_length})",
                    request=request,
                )
            headers = {"Content-Type": response.content_type}
            if response.trickle:
                return httpx.Response(response.status, content=_trickled(response), headers=headers)
            return httpx.Response(response.status, content=response.body, headers=headers)

        return httpx.MockTransport(answer)

    # ---- the Tencent API -----------------------------------------------------------------

    def _api(
        self, method: str, path: str, query: Mapping[str, str], body: bytes
    ) -> tuple[SandboxResponse, int | None, str | None]:
        outage = self._outage
        if outage is not None and outage[0] == "status":
            return SandboxResponse(outage[1], html(outage[1]), HTML), None, "outage"
        try:
            if method != "POST":
                raise _BadRequest(60002, "HTTP method must be POST")
            self._check_auth(query)
            self._check_rate(path)
        except _BadRequest as exc:
            return SandboxResponse(200, _error_body(exc.code, exc.info)), exc.code, None
        if outage is not None:
            code = outage[1]
            return SandboxResponse(200, _error_body(code, "service unavailable")), code, "outage"

        fault, shape = self._pick_fault()
        if fault in ("30006", "30007"):
            code = int(fault)
            info = "server internal error" if code == 30006 else "network timeout"
            return SandboxResponse(200, _error_body(code, info)), code, fault
        if fault in ("502", "503"):
            return SandboxResponse(int(fault), html(int(fault)), HTML), None, fault

        try:
            page, answer = self._route(path, body)
        except _BadRequest as exc:
            return SandboxResponse(200, _error_body(exc.code, exc.info)), exc.code, fault
        if fault == "malformed":
            spoiled, content_type = malformed(shape, (page.items, page.cursor) if page else None)
            json_code = 0 if spoiled.startswith(b"{") else None
            return SandboxResponse(200, spoiled, content_type), json_code, fault
        if fault == "truncated":
            cut = answer[: len(answer) // 2]
            return SandboxResponse(200, cut, truncated=True, full_length=len(answer)), None, fault
        self._stats.served(page.count if page else 0, page.key if page else None)
        delay = self.config.slow_ms / 1000 if fault == "slow" else 0.0
        trickle = self.config.slow_ms / 1000 if fault == "trickle" else 0.0
        return SandboxResponse(200, answer, delay=delay, trickle=trickle), 0, fault

    def _route(self, path: str, body: bytes) -> tuple[_Page | None, bytes]:
        """(the page, if follow_get; the answer) of a request past auth, rate and faults."""
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _BadRequest(60003, "request body is not valid JSON") from exc
        if not isinstance(payload, dict):
            raise _BadRequest(60003, "request body must be a JSON object")
        if path == FOLLOW_GET:
            page = self._follow_get(payload)
            return page, page.body()
        return None, self._follow_get_info(payload)

    def _check_auth(self, query: Mapping[str, str]) -> None:
        for name in ("sdkappid", "identifier", "usersig", "random", "contenttype"):
            if name not in query:
                raise _BadRequest(60009, f"missing URL parameter: {name}")
        if not _is_uint(query["sdkappid"]):
            raise _BadRequest(60009, "invalid URL parameter: sdkappid must be an integer")
        if not _is_uint(query["random"]) or int(query["random"]) > _MAX_RANDOM:
            raise _BadRequest(60009, "invalid URL parameter: random must be in 0..4294967295")
        if query["contenttype"] != "json":
            raise _BadRequest(60009, "invalid URL parameter: contenttype must be json")
        sdkappid = int(query["sdkappid"])
        if sdkappid != self.config.sdkappid:
            raise _BadRequest(60005, "SDKAppID is invalid")
        now = int(self._clock())
        key = (query["usersig"], query["identifier"], sdkappid)
        try:
            expires_at = self._verified.get(key)
            if expires_at is None:
                fields = usersig.verify(
                    key[0],
                    sdkappid=sdkappid,
                    identifier=key[1],
                    secret_key=self.config.secret_key,
                    now=now,
                )
                if len(self._verified) >= _VERIFIED_LIMIT:
                    self._verified.clear()
                self._verified[key] = fields.expires_at
            elif now > expires_at:
                raise usersig.UserSigRejected(usersig.EXPIRED, "UserSig has expired")
        except usersig.UserSigRejected as exc:
            raise _BadRequest(exc.code, f"UserSig rejected: {exc}") from exc
        if query["identifier"] != self.config.admin:
            raise _BadRequest(30004, "this API needs App administrator permission")

    def _check_rate(self, path: str) -> None:
        now = self._clock()
        limit = self.config.rate
        if limit is not None:
            with self._rate_lock:
                window = self._accepted_window
                while window and now - window[0] >= 1.0:
                    window.popleft()
                if len(window) >= limit:
                    raise _BadRequest(60007, "call frequency over the limit")
                window.append(now)
        if path == FOLLOW_GET:
            self._stats.accepted(now)

    def _pick_fault(self) -> tuple[str | None, str]:
        """(fault kind or None, shape of a malformed answer) for the next call."""
        if self.config.faults <= 0.0:
            return None, ""
        with self._fault_lock:
            if self._fault_rng.random() >= self.config.faults:
                return None, ""
            fault = self._fault_rng.choice(self.config.fault_kinds)
            if fault != "malformed":
                return fault, ""
            return fault, self._fault_rng.choice(self.config.malformed_kinds)

    def _follow_get(self, payload: dict[str, object]) -> _Page:
        account = payload.get("From_Account")
        follow_type = payload.get("FollowType")
        want = payload.get("WantNum", 100)
        cursor = payload.get("StartCursor", "")
        if not isinstance(account, str) or not account:
            raise _BadRequest(30001, "From_Account must be a non-empty string")
        if type(follow_type) is not int or follow_type not in FOLLOW_TYPES:
            raise _BadRequest(30001, "FollowType must be 1, 2 or 3")
        if type(want) is not int or not 1 <= want <= 1000:
            raise _BadRequest(30001, "WantNum must be an integer in 1..1000")
        if not isinstance(cursor, str):
            raise _BadRequest(30001, "StartCursor must be a string")
        injected = self._take_injected(account, follow_type)
        if injected == "empty-page":
            return _Page(b"", "", 0, f"{account}/{follow_type}")
        view = self.graph.view(account, follow_type)
        if view is None or injected == "30003":
            raise _BadRequest(30003, f"account {account} does not exist")
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
        items = self._items.items(view, start, end)
        return _Page(items, next_cursor, end - start, f"{account}/{follow_type}")

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
            raise _BadRequest(30001, "StartCursor is invalid") from exc
        if fields.account != account or fields.follow_type != follow_type:
            raise _BadRequest(30001, "StartCursor belongs to another list")
        ttl = self.config.cursor_ttl
        if ttl is not None and self._clock() - fields.issued_at > ttl:
            raise _BadRequest(30001, "StartCursor has expired")
        return bisect.bisect_right(view.ids, fields.last)

    def _follow_get_info(self, payload: dict[str, object]) -> bytes:
        account = payload.get("From_Account")
        targets = payload.get("To_Account")
        if not isinstance(account, str) or not account:
            raise _BadRequest(30001, "From_Account must be a non-empty string")
        if (
            not isinstance(targets, list)
            or not 1 <= len(targets) <= 20
            or not all(isinstance(t, str) and t for t in targets)
        ):
            raise _BadRequest(30001, "To_Account must be a list of 1..20 account ids")
        results = []
        for target in targets:
            counts = self.graph.counts(target)
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


def _trickled(response: SandboxResponse) -> Iterator[bytes]:
    """The body in TRICKLE_PIECES pieces, ``response.trickle`` seconds in all."""
    body, pause = response.body, response.trickle / TRICKLE_PIECES
    step = max(1, -(-len(body) // TRICKLE_PIECES))
    for start in range(0, len(body), step):
        time.sleep(pause)
        yield body[start : start + step]
