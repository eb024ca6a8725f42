"""The listener's writer: threads (one per writer lane of the backend: 2 on PostgreSQL, where one
batch's Python work overlaps the other's wait for the server; 1 on SQLite), each with its own
connection, that take the changes of every callback waiting (up to a cap), apply them in ONE
transaction (etl.store.live.apply), commit, and only then tell the callbacks (``notify``),
which answer 200. Concurrent batches cannot deadlock (etl.store.live locks in key order), and
the ordering rule makes the order in which two batches commit irrelevant.

The only place the listener opens a transaction. A transient database error (a deadlock, a
serialization failure, a lost connection: the pool reconnects) retries the whole batch, with a
backoff capped at a few seconds, for as long as the writer runs: the callbacks of a batch that
does not commit within their ack timeout are answered 503 by the app meanwhile, and the batch
is still applied once the database is back (the ordering rule makes a late change harmless).
Any other error fails the batch; a batch of several callbacks is then written one callback at
a time, so one bad callback fails alone. The queue is bounded (``submit`` says no when it is
full: the app answers 503). ``close`` drains what is queued, within its time.

When idle, the writer checks its database once a second (``SELECT 1``): ``problem`` says
whether it works, for ``GET /healthz``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential, wait_random

from etl.errors import Stopped
from etl.live.metrics import ListenMetrics
from etl.store import db, live
from etl.store.live import Applied, Change

log = logging.getLogger(__name__)

MAX_BATCH = 5000  # changes per transaction (one callback's are never split)
MAX_QUEUED = 50_000  # changes waiting before submit says no
PROBE_EVERY = 1.0  # seconds between database checks while idle
STUCK_AFTER = 10.0  # a batch in flight this long makes the writer unhealthy


class Outcome(enum.Enum):
    """What became of a callback's changes."""

    COMMITTED = "committed"
    FAILED = "failed"  # an error no retry cures
    DROPPED = "dropped"  # the writer stopped before they committed


@dataclass(eq=False, slots=True)
class Pending:
    """One callback's changes, and whatever the app needs to answer it (``ticket``)."""

    changes: Sequence[Change]
    ticket: Any


Notify = Callable[[Sequence[Pending], Outcome], None]
Apply = Callable[[sa.Connection, Sequence[Change]], Applied]


def retriable(exc: BaseException) -> bool:
    """A database error the next attempt may not meet."""
    return db.is_transient(exc) or isinstance(
        exc, sa.exc.OperationalError | sa.exc.DisconnectionError
    )


class BatchWriter:
    """The writer thread; ``notify`` gets each batch's callbacks, from the thread, once their
    outcome is known."""

    def __init__(
        self,
        engine: sa.Engine,
        notify: Notify,
        metrics: ListenMetrics,
        *,
        apply: Apply = live.apply,
        max_batch: int = MAX_BATCH,
        max_queued: int = MAX_QUEUED,
        max_wait: float = 2.0,
        lanes: int = 1,
    ) -> None:
        self.engine, self.notify, self.metrics, self.apply = engine, notify, metrics, apply
        self.max_batch, self.max_queued, self.max_wait = max_batch, max_queued, max_wait
        self._queue: deque[Pending] = deque()
        self._queued = 0  # changes in the queue
        self._cond = threading.Condition()
        self._closing = False
        self._abandon = threading.Event()  # set: stop retrying, drop what is left
        self._error: str | None = None  # the last database error, until a success
        self._busy_since: dict[int, float] = {}  # thread ident -> when its batch began
        self._threads = [
            threading.Thread(target=self._run, name=f"listen-writer-{i}", daemon=True)
            for i in range(max(1, lanes))
        ]
        self._local = threading.local()  # each thread's own Retrying (they keep state)
        self._retryer = Retrying(
            retry=retry_if_exception(retriable),
            wait=wait_exponential(multiplier=0.05, max=max_wait) + wait_random(0, 0.05),
            stop=lambda state: self._abandon.is_set(),
            sleep=self._sleep,
            before_sleep=self._before_retry,
            reraise=True,
        )
        metrics.watch_queue(lambda: self._queued)

    def start(self) -> None:
        """Start the threads."""
        for thread in self._threads:
            thread.start()

    def submit(self, pending: Pending) -> bool:
        """Queue a callback's changes; False when the queue is full or the writer closing."""
        size = len(pending.changes)
        with self._cond:
            if self._closing or (self._queued and self._queued + size > self.max_queued):
                return False
            self._queue.append(pending)
            self._queued += size
            self._cond.notify()
        return True

    def close(self, timeout: float) -> None:
        """Commit what is queued, within ``timeout`` seconds; then drop the rest and stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._abandon.set()  # a retry's sleep ends at once
        for thread in self._threads:
            thread.join(0.2)  # still in a statement: left to the database (a daemon)
        self._drop_queued()

    def problem(self) -> str | None:
        """Why the writer cannot commit now, or None when it can."""
        if not all(thread.is_alive() for thread in self._threads):
            return "the writer is not running"
        if self._error is not None:
            return f"database error: {self._error}"
        busy = min(self._busy_since.values(), default=None)
        if busy is not None and time.monotonic() - busy > STUCK_AFTER:
            return f"a batch has been in flight for {time.monotonic() - busy:.0f} s"
        return None

    # ---- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        self._probe()
        try:
            while (batch := self._take()) is not None:
                if batch:
                    self._write(batch)
                else:
                    self._probe()
        except Exception:  # a bug: say so; the queued callbacks are answered, /healthz fails
            log.exception("the listener's writer stopped")
        finally:
            self._drop_queued()

    def _take(self) -> list[Pending] | None:
        """The next batch: callbacks in arrival order up to ``max_batch`` changes (at least
        one callback); [] after PROBE_EVERY idle seconds; None once closed and drained."""
        with self._cond:
            if not self._queue and not self._closing:
                self._cond.wait(PROBE_EVERY)
            if not self._queue or self._abandon.is_set():
                return None if self._closing else []
            batch = [self._queue.popleft()]
            size = len(batch[0].changes)
            while self._queue and size + len(self._queue[0].changes) <= self.max_batch:
                size += len(self._queue[0].changes)
                batch.append(self._queue.popleft())
            self._queued -= size
            return batch

    def _write(self, batch: list[Pending]) -> None:
        """Commit one batch and notify its callbacks; one at a time after a hard failure."""
        changes = [change for pending in batch for change in pending.changes]
        try:
            self._retrying(changes)
        except Stopped:
            self.notify(batch, Outcome.DROPPED)
        except Exception as exc:  # answered 500 (or 503), and logged
            if self._abandon.is_set() or retriable(exc):  # stopped while the database was away
                self.notify(batch, Outcome.DROPPED)
                return
            if len(batch) > 1:
                for pending in batch:
                    self._write([pending])
                return
            log.error(
                "a callback's changes could not be applied: %s",
                db.first_line(exc) if db.is_database_error(exc) else repr(exc),
                extra={"event": "callback_failed", "changes": len(changes)},
                exc_info=not db.is_database_error(exc),
            )
            self.notify(batch, Outcome.FAILED)
        else:
            self.notify(batch, Outcome.COMMITTED)

    def _retrying(self, changes: Sequence[Change]) -> Applied:
        """Apply and commit ``changes``, again after each transient error, until the writer is
        abandoned (Stopped)."""
        retryer = getattr(self._local, "retryer", None)
        if retryer is None:
            retryer = self._local.retryer = self._retryer.copy()
        result: Applied = retryer(self._commit, changes)
        return result

    def _commit(self, changes: Sequence[Change]) -> Applied:
        me = threading.get_ident()
        self._busy_since[me] = time.monotonic()
        started = time.perf_counter()
        try:
            with self.engine.begin() as conn:
                applied = self.apply(conn, changes)
        except Exception as exc:
            if db.is_database_error(exc):
                self._error = db.first_line(exc)
            raise
        finally:
            self._busy_since.pop(me, None)
        self.metrics.committed(applied, time.perf_counter() - started)
        self._recovered()
        return applied

    def _sleep(self, seconds: float) -> None:
        if self._abandon.wait(seconds):
            raise Stopped("the listener's writer")

    def _before_retry(self, state: RetryCallState) -> None:
        self.metrics.retries.inc()
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "a batch of callbacks failed on the database (%s); retrying in %.2f s",
            db.first_line(exc) if exc is not None else "?",
            wait,
            extra={"event": "batch_retry", "attempt": state.attempt_number},
        )

    def _probe(self) -> None:
        """``SELECT 1``: does the database answer? (Logged when that changes.)"""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure is the database not working
            if self._error is None:
                log.warning(
                    "the listener's database does not answer: %s",
                    db.first_line(exc),
                    extra={"event": "database_down"},
                )
            self._error = db.first_line(exc)
        else:
            self._recovered()

    def _recovered(self) -> None:
        if self._error is not None:
            log.info("the listener's database answers again", extra={"event": "database_up"})
            self._error = None

    def _drop_queued(self) -> None:
        """Answer every callback still queued: it was not committed."""
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            self._queued = 0
        if left:
            self.notify(left, Outcome.DROPPED)
