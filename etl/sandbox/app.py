"""Request handling for the sandbox: Tencent's follow API, answered from a ``Graph``, no sockets.

``Sandbox`` puts the parts together in the service's order: auth (etl.sandbox.auth), call rate
(etl.sandbox.rate), faults and outages (etl.sandbox.faults), then the routes
(etl.sandbox.routes); the admin routes (etl.sandbox.admin) answer ``/sandbox/...``.

``Sandbox.handle`` takes (method, path, query, body) and returns a ``SandboxResponse``; the HTTP
server and the httpx ``MockTransport`` are thin shells around it. Latency and "slow" faults are
returned as a ``delay`` for the shell to wait out, so tests of the logic never wait.

The hot path is kept cheap so the sandbox is never what a benchmark measures: a UserSig is
verified once and then only its expiry is checked, and items come pre-serialized.

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
- ``loop_accounts``: lists of these accounts never end (see etl.sandbox.routes).
- ``Graph(hostile=P)``: hostile profile values and ids (see etl.sandbox.hostile).

With ``config.webhook.url`` set, every change of the graph is posted there as Tencent's follow
callbacks (etl.sandbox.changes makes them, etl.sandbox.webhook posts them, with its own faults);
``close`` stops that. Without it (the default) nothing is posted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import httpx

from etl.sandbox import admin, changes
from etl.sandbox.auth import Auth
from etl.sandbox.changes import Announcer, EventClock
from etl.sandbox.config import SandboxConfig as SandboxConfig
from etl.sandbox.faults import DEFAULT_FAULT_KINDS as DEFAULT_FAULT_KINDS
from etl.sandbox.faults import FAULT_KINDS as FAULT_KINDS
from etl.sandbox.faults import HTML, Faults, html, malformed
from etl.sandbox.faults import MALFORMED_KINDS as MALFORMED_KINDS
from etl.sandbox.graph import Graph
from etl.sandbox.rate import RateLimit
from etl.sandbox.render import ascii_json
from etl.sandbox.response import TRICKLE_PIECES as TRICKLE_PIECES
from etl.sandbox.response import BadRequest, SandboxResponse, error_body, trickled
from etl.sandbox.routes import API_ROUTES as API_ROUTES
from etl.sandbox.routes import FOLLOW_GET as FOLLOW_GET
from etl.sandbox.routes import FOLLOW_GET_INFO as FOLLOW_GET_INFO
from etl.sandbox.routes import Routes
from etl.sandbox.stats import SandboxStats
from etl.sandbox.webhook import Webhook

_Answer = tuple[SandboxResponse, int | None, str | None]  # (response, ErrorCode, fault)


class Sandbox:
    """Tencent's follow endpoints answered from a Graph, with auth, rate limit and faults."""

    def __init__(
        self, graph: Graph, config: SandboxConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.graph = graph
        self.config = config
        self._clock = clock
        self._auth = Auth(config, clock)
        self._rate = RateLimit(config.rate)
        self._faults = Faults(
            config.faults, config.fault_kinds, config.malformed_kinds, config.fault_seed
        )
        self._routes = Routes(graph, config, clock, self._faults.take_injected)
        self._stats = SandboxStats()
        self.webhook: Webhook | None = None
        if config.webhook.url is not None:
            if graph.watcher is not None:
                raise ValueError("this graph posts to another sandbox's webhook: close that first")
            self.webhook = Webhook(config.webhook, config.sdkappid, clock=clock)
            graph.watcher = Announcer(self.webhook.post, EventClock(clock))

    def warm(self) -> None:
        """Render every user's item now, so the first crawl does not pay for it (about 1 s
        for 20,000 users)."""
        self._routes.items.warm()

    def close(self) -> None:
        """Stop posting callbacks: the graph's changes from now on go unannounced; the posts in
        flight get a few seconds to finish. Nothing to do without a webhook."""
        if self.webhook is not None:
            if isinstance(self.graph.watcher, Announcer):
                self.graph.watcher = None
            self.webhook.close()

    # ---- the graph's changes -------------------------------------------------------------

    def follow(self, account: str, targets: list[str], *, follows: bool) -> dict[str, object]:
        """``account`` follows (or unfollows) each of ``targets`` now; which changed (each then
        announced to the webhook) and which did not. KeyError: an account that does not exist."""
        changed, unchanged = changes.follow(
            self.graph, account, targets, follows=follows, at=int(self._clock())
        )
        return {"changed": changed, "unchanged": unchanged}

    def webhook_report(self, *, events: bool = False, wait: float = 0.0) -> dict[str, object]:
        """What became of the callbacks (``Webhook.report``), after waiting up to ``wait`` s
        for those in flight; without a webhook, ``{"url": null}``."""
        if self.webhook is None:
            return {"url": None}
        if wait > 0:
            self.webhook.drain(wait)
        return self.webhook.report(events=events)

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

    # ---- outage and targeted faults ------------------------------------------------------

    @property
    def outage(self) -> dict[str, int] | None:
        """The outage in force, as ``{"status": 503}`` or ``{"code": 30006}``; None if none."""
        outage = self._faults.outage
        return None if outage is None else {outage[0]: outage[1]}

    def set_outage(self, *, status: int | None = None, code: int | None = None) -> None:
        """Answer every API call with HTTP ``status``, or with Tencent error ``code``; with
        neither, end the outage."""
        self._faults.set_outage(status=status, code=code)

    def inject(self, account: str, follow_type: int, kind: str, times: int = 1) -> None:
        """Answer the next ``times`` follow_get calls of this list with ``kind`` (one of
        TARGETED_KINDS, see etl.sandbox.faults), whatever their cursor."""
        self._faults.inject(account, follow_type, kind, times)

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
                return httpx.Response(response.status, content=trickled(response), headers=headers)
            return httpx.Response(response.status, content=response.body, headers=headers)

        return httpx.MockTransport(answer)

    # ---- the Tencent API -----------------------------------------------------------------

    def _api(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> _Answer:
        outage = self._faults.outage
        if outage is not None and outage[0] == "status":
            return SandboxResponse(outage[1], html(outage[1]), HTML), None, "outage"
        try:
            if method != "POST":
                raise BadRequest(60002, "HTTP method must be POST")
            self._auth.check(query)
            now = self._clock()
            self._rate.check(now)
            if path == FOLLOW_GET:
                self._stats.accepted(now)
        except BadRequest as exc:
            return SandboxResponse(200, error_body(exc.code, exc.info)), exc.code, None
        if outage is not None:
            code = outage[1]
            return SandboxResponse(200, error_body(code, "service unavailable")), code, "outage"
        return self._answer(path, body)

    def _answer(self, path: str, body: bytes) -> _Answer:
        """The answer of a call past auth and rate: the route's, or a fault drawn for it."""
        fault, shape = self._faults.pick()
        if fault in ("30006", "30007"):
            code = int(fault)
            info = "server internal error" if code == 30006 else "network timeout"
            return SandboxResponse(200, error_body(code, info)), code, fault
        if fault in ("502", "503"):
            return SandboxResponse(int(fault), html(int(fault)), HTML), None, fault
        try:
            page, answer = self._routes.answer(path, body)
        except BadRequest as exc:
            return SandboxResponse(200, error_body(exc.code, exc.info)), exc.code, fault
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
