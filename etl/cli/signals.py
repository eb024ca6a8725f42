"""Ctrl-C and SIGTERM while a command runs: a graceful stop that a crawl or a prune sees
between pages or chunks (a second signal forces it), or, for ``migrate``, the end at once."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from etl import api
from etl.cli import output
from etl.errors import Interrupted

log = logging.getLogger(__name__)


@contextmanager
def at_once() -> Iterator[None]:
    """Ctrl-C / SIGTERM end the process at once with 130 / 143, after its one error line: for
    ``migrate``, whose work is one transaction. Unwinding instead would wait for the statement
    in flight (a DDL waiting for a lock: up to lock_timeout) and then fail to roll back a
    connection still busy with it; the database rolls back a transaction whose connection
    closes."""

    def handler(signum: int, frame: object) -> None:
        code = 128 + signum
        output.migration_stopped(signal.Signals(signum).name, code)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    with _handled(handler):
        yield


@contextmanager
def graceful() -> Iterator[api.StopRequest]:
    """Ctrl-C / SIGTERM ask the crawl to stop (a second one ends the process at once)."""
    stop = api.StopRequest()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            # Forced: end now, with this signal's own code (the run stays resumable).
            raise Interrupted(
                f"stopped at once by a second signal ({signal.Signals(signum).name}); "
                "the run is resumable: run the same command again",
                signum=signum,
            )
        stop.request(signum)
        name = signal.Signals(signum).name
        log.warning("%s: finishing the pages in flight, then stopping (again to force)", name)

    with _handled(handler):
        yield stop


@contextmanager
def _handled(handler: Callable[[int, object], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block; the previous ones after it."""
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
