"""The listener as a plain ASGI app (no web framework):

    POST <path>    a callback: checked (etl.live.callbacks), its changes queued for the writer
                   (etl.live.writer), answered 200 ``{"ActionStatus":"OK",...}`` once they are
                   committed; 503 when they are not within the ack timeout or the queue is full
                   (never acknowledged), 500 when applying them failed; a 4xx for a refused
                   request, with one log line (reason, peer; never the token or Sign) and the
                   rejected counter
    GET /healthz   200 while the writer's database works, else 503; JSON
    GET /metrics   the listener's own Prometheus registry

Its lifespan starts the writer thread and, at shutdown, drains it. ``shutting_down`` (called
by etl.live.server when a stop is asked) gives the callbacks waiting for a commit a few seconds
more at most, so that the process ends in time whatever the database does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

import sqlalchemy as sa

from etl.live import asgi
from etl.live.asgi import Receive, Scope, Send
from etl.live.callbacks import (
    COMMANDS,
    MAX_QUERY_FIELDS,
    Rejection,
    check_head,
    oversized,
    parse_body,
    reject,
)
from etl.live.metrics import CONTENT_TYPE, ListenMetrics
from etl.live.settings import ListenSettings
from etl.live.writer import Apply, BatchWriter, Outcome, Pending
from etl.store import live
from etl.store.dialect import dialect_of

log = logging.getLogger(__name__)

HEALTH, METRICS = "/healthz", "/metrics"
DRAIN_SECONDS = 2.0  # at shutdown, what the writer gets to commit what is still queued
_Waiting = asyncio.Future[Outcome | None]  # None: the ack timeout passed first


class ListenApp:
    """The ASGI app of one listener."""

    def __init__(
        self,
        settings: ListenSettings,
        engine: sa.Engine,
        *,
        metrics: ListenMetrics | None = None,
        apply: Apply = live.apply,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ListenMetrics()
        lanes = dialect_of(engine).writers
        self.writer = BatchWriter(engine, self._notify, self.metrics, apply=apply, lanes=lanes)
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: set[_Waiting] = set()
        self._until: float | None = None  # loop time: the end of every wait (shutting down)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path in (HEALTH, METRICS):
                await self._own_route(path, method, scope, send)
            else:
                await self._callback(scope, receive, send)

    def shutting_down(self, grace: float) -> None:
        """From now on, a callback waits for its commit ``grace`` seconds more at most."""
        if self._loop is None:
            return
        self._until = self._loop.time() + grace
        for waiting in list(self._waiting):
            self._loop.call_later(grace, _expire, waiting)

    # ---- callbacks -----------------------------------------------------------------------

    async def _callback(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings, query = self.settings, scope.get("query_string", b"")
        head = check_head(
            scope["method"], scope["path"], query, scope["headers"], self.clock(), settings
        )
        if scope["path"] == settings.path and scope["method"] == "POST":
            self.metrics.received.labels(_command_label(query, head)).inc()
        if isinstance(head, Rejection):
            await self._reject(scope, send, head)
            return
        try:
            body = await asgi.read_body(receive, settings.max_body)
        except asgi.Disconnected:
            return
        if body is None:
            await self._reject(scope, send, oversized(settings.max_body), close=True)
            return
        changes = parse_body(head, body)
        if isinstance(changes, Rejection):
            await self._reject(scope, send, changes)
        elif not changes:
            await self._acknowledged(send, 0.0)
        else:
            await self._commit(send, changes)

    async def _commit(self, send: Send, changes: Sequence[live.Change]) -> None:
        """Queue the changes, wait for their batch's commit, answer."""
        loop = asyncio.get_running_loop()
        waiting: _Waiting = loop.create_future()
        started = time.perf_counter()
        if not self.writer.submit(Pending(changes, waiting)):
            await self._unacknowledged(send, "busy", 503, "the listener is busy: try again")
            return
        timeout = self.settings.ack_timeout
        if self._until is not None:
            timeout = max(0.0, min(timeout, self._until - loop.time()))
        timer = loop.call_later(timeout, _expire, waiting)
        self._waiting.add(waiting)
        try:
            outcome = await waiting
        finally:
            timer.cancel()
            self._waiting.discard(waiting)
        if outcome is Outcome.COMMITTED:
            await self._acknowledged(send, time.perf_counter() - started)
        elif outcome is Outcome.FAILED:
            await self._unacknowledged(send, "error", 500, "the changes could not be applied")
        else:
            why = f"not committed within {self.settings.ack_timeout:g} s: try again"
            await self._unacknowledged(send, "timeout", 503, why)

    def _notify(self, batch: Sequence[Pending], outcome: Outcome) -> None:
        """From the writer thread: hand the outcome of a batch to the loop."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(_resolve, batch, outcome)

    async def _acknowledged(self, send: Send, seconds: float) -> None:
        self.metrics.acknowledged.inc()
        self.metrics.ack_seconds.observe(seconds)
        await asgi.respond(send, 200, asgi.OK)

    async def _unacknowledged(self, send: Send, why: str, status: int, info: str) -> None:
        self.metrics.unacknowledged.labels(why).inc()
        await asgi.respond(send, status, asgi.answer(status, info), headers=_RETRY)

    async def _reject(
        self, scope: Scope, send: Send, refused: Rejection, *, close: bool = False
    ) -> None:
        """A 4xx: the counter, one log line, the answer."""
        self.metrics.rejected.labels(refused.reason).inc()
        log.warning(
            "callback refused (%s): %s",
            refused.reason,
            refused.message,
            extra={
                "event": "callback_rejected",
                "reason": refused.reason,
                "status": refused.status,
                "remote": asgi.client(scope),
                "forwarded_for": (asgi.header(scope, b"x-forwarded-for") or "")[:200] or None,
            },
        )
        headers = [(b"connection", b"close")] if close else []
        if refused.reason == "method":
            own = scope["path"] in (HEALTH, METRICS)
            headers.append((b"allow", b"GET, HEAD" if own else b"POST"))
        info = f"{refused.reason}: {refused.message}"
        await asgi.respond(send, refused.status, asgi.answer(refused.status, info), headers=headers)

    # ---- its own routes ------------------------------------------------------------------

    async def _own_route(self, path: str, method: str, scope: Scope, send: Send) -> None:
        if method not in ("GET", "HEAD"):
            await self._reject(scope, send, reject("method", f"{method[:20]} {path}: use GET"))
        elif path == METRICS:
            body = self.metrics.exposition()
            await asgi.respond(send, 200, body, CONTENT_TYPE.encode())
        else:
            problem = self.writer.problem()
            doc = {"status": "ok" if problem is None else "unavailable", "problem": problem}
            body = json.dumps(doc, ensure_ascii=True).encode()
            await asgi.respond(send, 200 if problem is None else 503, body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self.writer.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.writer.close, DRAIN_SECONDS)
                await send({"type": "lifespan.shutdown.complete"})
                return


_RETRY = ((b"retry-after", b"1"),)


def _expire(waiting: _Waiting) -> None:
    if not waiting.done():
        waiting.set_result(None)


def _resolve(batch: Sequence[Pending], outcome: Outcome) -> None:
    for pending in batch:
        waiting: _Waiting = pending.ticket
        if not waiting.done():
            waiting.set_result(outcome)


def _command_label(query: bytes, head: str | Rejection) -> str:
    """The received counter's label: the query's CallbackCommand if it is a follow one."""
    if isinstance(head, str):
        return head
    try:
        fields = parse_qsl(query.decode("latin-1"), max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        return "other"
    commands = [value for name, value in fields if name == "CallbackCommand"]
    return commands[0] if len(commands) == 1 and commands[0] in COMMANDS else "other"
