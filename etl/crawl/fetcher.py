"""Fetcher threads: pages of claimed lists -> parsed pages and one ending per list.

A fetcher takes a Claim, walks the list's pages (etl.crawl.extract), parses each
(etl.crawl.transform) into its writer lane, then sends the list's Ended. It never touches the
database. Every wait it makes (pacing, retry backoff) wakes on the crawl's stop event.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from etl.crawl import extract
from etl.crawl.known import KnownProfiles
from etl.crawl.messages import Claim, Ended, Fetched
from etl.crawl.outcome import Outcome, outcome_of
from etl.crawl.transform import page_rows
from etl.errors import FatalApiError, Stopped, TransientApiError
from etl.tencent import info
from etl.tencent.client import FollowClient

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3  # lists failing in a row: the API is down, stop burning the budget


class Fetchers:
    """The fetcher threads of one crawl and what they share."""

    def __init__(
        self,
        client: FollowClient,
        page_size: int,
        known: KnownProfiles,
        put: Callable[[Fetched | Ended], None],
        stop: threading.Event,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.client, self.page_size, self.known, self.put = client, page_size, known, put
        self.clock = clock or (lambda: datetime.now(UTC))  # stamps a restarted list's start
        self.stop = stop  # set by a signal, a fatal error, or an API that keeps failing
        self.tasks: queue.Queue[Claim | None] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.opened = threading.Event()  # a call has succeeded: fetchers may call at once
        self.probe = threading.Lock()
        self.failures_lock = threading.Lock()
        self.consecutive_failures = 0  # lists that failed after retries, none succeeding since

    def start(self, count: int) -> None:
        """Start ``count`` fetcher threads."""
        self.threads = [
            threading.Thread(target=self._loop, name=f"fetch-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def finish(self, timeout: float) -> None:
        """Ask every thread to end and wait for them, at most ``timeout`` seconds in all. A
        thread still inside an HTTP call by then is left behind: the process is ending."""
        for _ in self.threads:
            self.tasks.put(None)
        for thread in self.threads:
            thread.join(timeout=timeout / max(1, len(self.threads)))

    def _loop(self) -> None:
        while (claim := self.tasks.get()) is not None:
            self.put(self._fetch(claim))

    def _fetch(self, claim: Claim) -> Ended:
        """Send a list's pages to its lane; return the Ended that closes it."""
        task = claim.task
        try:
            steps = extract.pages(
                self.client, task.account, task.follow_type, task.cursor, self.page_size
            )
            while not (self.stop.is_set() or claim.dropped):
                before = self.clock()  # a restart happens within the next step's calls
                step = self._next(steps)
                if step is None:
                    return Ended(claim, Outcome.COMPLETE)
                rows = page_rows(step.page, self.known)
                if step.last and task.confirming:
                    claim.info = self._ask(task.account)
                started = before if step.restarted else None
                self.put(Fetched(claim, rows, step.next_cursor, step.restarted, started))
                if step.last:
                    return Ended(claim, Outcome.COMPLETE)
            return Ended(claim, Outcome.STOPPED)
        except BaseException as exc:  # noqa: BLE001 - every ending is an Outcome (etl.crawl.outcome)
            outcome = outcome_of(exc)
            if outcome is Outcome.MISSING and task.confirming:
                try:
                    claim.info = self._ask(task.account)
                except BaseException as second:  # noqa: BLE001 - a stop or a fatal answer, as above
                    exc, outcome = second, outcome_of(second)
            if outcome is Outcome.CRASH:
                self.stop.set()
                return Ended(claim, outcome, f"{type(exc).__name__}: {exc}", exc)
            if outcome is Outcome.STOPPED:
                return Ended(claim, outcome)
            if outcome is not Outcome.FAILED:
                self.opened.set()  # the service answered: the credentials work
            return Ended(claim, outcome, str(exc), exc)

    def _ask(self, account: str) -> info.Answer:
        """follow_get_info's answer for a confirming crawl's account (etl.holds). Retries that
        run out are an answer too: without a count the hold stands."""
        try:
            return info.ask(self.client, [account])[account]
        except TransientApiError as exc:
            return info.Answer({}, error=str(exc))

    def _next(self, steps: Iterator[extract.Step]) -> extract.Step | None:
        """The next page; until one call has succeeded, one call at a time: wrong credentials
        cost one request, not one per fetcher."""
        if self.opened.is_set():
            return self._call(steps)
        with self.probe:
            if self.stop.is_set():
                raise Stopped("stopped before the first call")
            step = self._call(steps)
        self.opened.set()
        return step

    def _call(self, steps: Iterator[extract.Step]) -> extract.Step | None:
        """next(steps), deciding on the spot whether the crawl must stop."""
        try:
            step = next(steps, None)
        except TransientApiError:
            if self.stop.is_set():
                raise Stopped("stopped during retries") from None
            with self.failures_lock:
                self.consecutive_failures += 1
                if self.consecutive_failures == MAX_CONSECUTIVE_FAILURES:
                    log.error("%d lists failed in a row: stopping", MAX_CONSECUTIVE_FAILURES)
                    self.stop.set()
            raise
        except FatalApiError:
            self.stop.set()  # before the next fetcher gets the probe lock
            raise
        self.consecutive_failures = 0
        return step
