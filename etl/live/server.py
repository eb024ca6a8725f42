"""The listener served by uvicorn (httptools parsing HTTP/1.1; uvloop running the loop where it
is installed), one process per ``follow-etl listen``.

The socket is bound here, before uvicorn starts, so that a port in use is one clear line (a
UsageError) and port 0 gives the port bound. uvicorn's own loggers go to the root logger, so
they come out as the command's other lines (text or JSON); its access log is off.

Stopping: ``stop`` (a threading.Event, or etl.session.StopRequest) asks for it; in the main
thread SIGINT and SIGTERM set it (a second signal ends at once), in any other thread no signal
handler is installed. Then uvicorn stops accepting, closes idle connections, lets the requests
in flight finish (a callback waiting for its commit waits ACK_GRACE s more at most: then 503),
the app's lifespan drains the writer, and ``serve`` returns: within 10 s, whatever the
database does.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
import uvicorn

from etl.errors import Interrupted, UsageError
from etl.live.app import ListenApp
from etl.live.metrics import ListenMetrics
from etl.live.settings import ListenReport, ListenSettings
from etl.live.writer import Apply
from etl.store import live

log = logging.getLogger(__name__)

ACK_GRACE = 3.0  # seconds a waiting callback gets once a stop is asked (then 503)
GRACEFUL_SECONDS = 5  # uvicorn's wait for the requests in flight (then it cancels them)
# The stop's worst case: ACK_GRACE for the callbacks in flight, then DRAIN_SECONDS (etl.live.app)
# for the writer: about 5.5 s, well inside the 10 s a supervisor waits before SIGKILL.
KEEP_ALIVE_SECONDS = 65  # above the 60 s idle timeout of the common load balancers
BACKLOG = 2048


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by ``stop`` and telling ``ready`` its URL once it serves."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: ListenApp,
        stop: threading.Event,
        url: str,
        ready: Callable[[str], None] | None,
    ) -> None:
        super().__init__(config)
        self.app, self.stop, self.url, self.ready = app, stop, url, ready
        self.forced_by: int | None = None  # the second signal, which ended it at once
        self._told = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.ready is not None:
            self.ready(self.url)

    async def on_tick(self, counter: int) -> bool:
        if self.stop.is_set():
            self.should_exit = True
        if self.should_exit and not self._told:
            self._told = True
            self.app.shutting_down(ACK_GRACE)
        return await super().on_tick(counter)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """In the main thread, SIGINT and SIGTERM ask for the stop (a second one forces it);
        the previous handlers afterwards. Unlike uvicorn's, the signal is not raised again
        after the stop: a stopped listener ends 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.should_exit:
            self.force_exit = True
            self.forced_by = signum
            log.warning("%s again: stopping at once", name)
            return
        request = getattr(self.stop, "request", None)
        if callable(request):
            request(signum)
        else:
            self.stop.set()
        self.should_exit = True
        log.warning("%s: finishing the callbacks in flight, then stopping (again to force)", name)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(
    engine: sa.Engine,
    settings: ListenSettings,
    *,
    stop: threading.Event | None = None,
    ready: Callable[[str], None] | None = None,
    metrics: ListenMetrics | None = None,
    apply: Apply = live.apply,
) -> ListenReport:
    """Serve callbacks until ``stop``; what was done. UsageError when the address cannot be
    bound; Interrupted when a second signal forced the end."""
    sock = bind(settings.host, settings.port)
    url = address(settings.host, sock.getsockname()[1], settings.path)
    metrics = metrics or ListenMetrics()
    app = ListenApp(settings, engine, metrics=metrics, apply=apply)
    server = _Server(_config(app), app, stop or threading.Event(), url, ready)
    started = time.monotonic()
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn's exit on a failed start, logged above by uvicorn
        raise RuntimeError(f"the listener could not start (uvicorn exit {exc.code})") from None
    finally:
        app.writer.close(0.0)  # already drained by the lifespan, unless the end was forced
        sock.close()
    if server.forced_by is not None:
        name = signal.Signals(server.forced_by).name
        raise Interrupted(
            f"stopped at once by a second signal ({name}); callbacks not committed were not "
            "acknowledged",
            signum=server.forced_by,
        )
    return _report(url, time.monotonic() - started, metrics)


class _PlainRecords(logging.Filter):
    """uvicorn's records carry an ANSI-coloured copy of their message; not ours to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


_PLAIN = _PlainRecords()


def _config(app: ListenApp) -> uvicorn.Config:
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        if _PLAIN not in logger.filters:
            logger.addFilter(_PLAIN)
    return uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools",
        ws="none",
        lifespan="on",
        log_config=None,  # the command's logging, as set up by etl.console
        access_log=False,
        proxy_headers=False,  # the peer is who connected; X-Forwarded-For is logged as given
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        backlog=BACKLOG,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; UsageError (one line) when that fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:  # create_server adds "(while attempting to bind ...)": cut
        why = str(exc.strerror or exc).split(" (while attempting", 1)[0]
        shown = f"[{host}]" if ":" in host else host or "*"
        raise UsageError(f"cannot listen on {shown}:{port}: {why}") from None


def address(host: str, port: int, path: str) -> str:
    """``http://host:port/path`` (an IPv6 host in brackets)."""
    shown = f"[{host}]" if ":" in host else host or "0.0.0.0"  # noqa: S104 - only shown
    return f"http://{shown}:{port}{path}"


def _report(url: str, seconds: float, metrics: ListenMetrics) -> ListenReport:
    return ListenReport(
        url=url,
        seconds=seconds,
        received=metrics.total("follow_etl_callbacks_received"),
        acknowledged=metrics.total("follow_etl_callbacks_acknowledged"),
        rejected=metrics.total("follow_etl_callbacks_rejected"),
        unacknowledged=metrics.total("follow_etl_callbacks_unacknowledged"),
    )
