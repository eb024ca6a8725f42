"""One process's work on a run: fetcher threads crawl leased lists, one writer stores batches.

    claim (leases) -> tasks queue -> N fetcher threads (extract + transform, paced)
                   -> pages queue (bounded: memory stays flat) -> writer (this thread):
                      one transaction per batch = rows + cursors of every list in it

The pages of one list are fetched in order by one thread and written in that order, so a
list's cursor in the database always follows the rows stored for it. A process killed at any
instant loses at most the batch in flight; the upserts make replaying it harmless.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import checkpoint, extract, load, transform, workers
from etl.client import FollowClient
from etl.errors import (
    AccountNotFound,
    FatalApiError,
    RequestRejected,
    TransientApiError,
)
from etl.load import Key, ListPart
from etl.transform import ProfileRow

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3  # lists failing in a row: the API is down, stop burning the budget
BATCH_ROWS = 20_000  # edges per transaction at most
BATCH_PAGES = 500
BATCH_WAIT = 0.2  # seconds the writer waits for a first page before looking around
WRITERS = 2  # on PostgreSQL: one stages a batch while the other waits for the server
PROFILE_CACHE = 200_000  # (user, sequence) keys known stored; bounded, so memory is too
PROGRESS_EVERY = 0.5


@dataclass
class Fetched:
    """One page of a list, parsed."""

    task: checkpoint.ListState
    rows: transform.PageRows
    next_cursor: str
    restarted: bool


@dataclass
class Ended:
    """A list's fetching stopped without a last page; ``how`` says why."""

    task: checkpoint.ListState
    how: str  # missing, rejected, failed, stopped, fatal, crash
    error: str = ""
    exc: BaseException | None = None


@dataclass
class Tally:
    """What this process did, for the report and the progress display."""

    pages: int = 0
    items: int = 0
    edges_removed: int = 0
    events: int = 0
    settled: int = 0
    missing_accounts: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Crawl:
    """Crawl the open lists of one run with ``concurrency`` fetchers until none is left."""

    def __init__(
        self,
        engine: Engine,
        client: FollowClient,
        me: workers.Presence,
        run_id: int,
        *,
        page_size: int,
        concurrency: int,
        clock: Callable[[], datetime],
        stop: threading.Event,
        on_batch: Callable[[Tally], None] = lambda tally: None,
    ) -> None:
        self.engine, self.client, self.me, self.run_id = engine, client, me, run_id
        self.page_size, self.concurrency, self.clock = page_size, concurrency, clock
        self.stop = stop  # set by a signal, a fatal error, or an API that keeps failing
        self.on_batch = on_batch
        self.tally = Tally()
        self.error: BaseException | None = None
        self.tasks: queue.Queue[checkpoint.ListState | None] = queue.Queue()
        # One lane per writer, each with its own queue and connection; a list always takes the
        # same lane, so its pages are written in order. SQLite has one writer at a time anyway.
        writers = WRITERS if engine.dialect.name == "postgresql" else 1
        size = max(2, concurrency * 4 // writers)  # 4 queued pages per fetcher in all
        self.lanes = [_Lane(engine.dialect.name, size) for _ in range(writers)]
        self.lock = threading.Lock()  # tally, in_flight and progress, shared by the writers
        self.finished = threading.Event()  # nothing more will be claimed: writers drain and end
        self.known: set[tuple[str, int]] = set()  # read by fetchers, replaced by the writer
        self.lost: set[Key] = set()  # lists another worker took over: stop fetching them
        self.in_flight = 0  # claimed lists not yet ended (changed under self.lock)
        self.consecutive_failures = 0  # lists that failed after retries, none succeeding since
        self.failures_lock = threading.Lock()
        self.abort = threading.Event()  # the writer is gone: fetchers drop what they hold
        self.next_claim = 0.0
        self.opened = threading.Event()  # a call has succeeded: fetchers may call at once
        self.probe = threading.Lock()
        self.conn: sa.Connection  # the coordinator's (and lane 0's) connection, while run() runs

    # -- the writer (the calling thread) ---------------------------------------------------

    def run(self) -> None:
        """Crawl until no open list is left to this process, or until stopped."""
        threads = [
            threading.Thread(target=self._fetch_loop, name=f"fetch-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        writers = [
            threading.Thread(target=self._lane_loop, args=(lane,), name=f"write-{i}", daemon=True)
            for i, lane in enumerate(self.lanes[1:], 1)
        ]
        for thread in threads + writers:
            thread.start()
        try:
            with self.engine.connect() as self.conn:
                self._write_loop()
            self.finished.set()
            for writer in writers:
                writer.join()
        finally:
            self.abort.set()
            self.finished.set()
            for _ in threads:
                self.tasks.put(None)
            for thread in threads:
                thread.join(timeout=30)
        if self.error is not None:
            raise self.error

    def _lane_loop(self, lane: _Lane) -> None:
        """A writer thread of its own for one lane, until the crawl is finished."""
        try:
            with self.engine.connect() as conn:
                while not self.abort.is_set():
                    batch = self._collect(lane)
                    if batch:
                        self._write(lane, conn, batch)
                    elif self.finished.is_set() and lane.pages.empty():
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator, which raises
            with self.lock:
                self.error = self.error or exc
            self.stop.set()
            self.abort.set()

    def _write_loop(self) -> None:
        """The coordinator: claims lists, writes lane 0, and decides when the crawl is over."""
        lane = self.lanes[0]
        while not self.abort.is_set():
            if not self.stop.is_set():
                self._top_up()
            if self.in_flight == 0 and all(lane.pages.empty() for lane in self.lanes):
                if self.stop.is_set():
                    return
                self.next_claim = 0.0  # idle: look again now, not after the back-off
                self._top_up()
                if self.in_flight:
                    continue
                if not self._others_hold_lists():
                    return
                self.stop.wait(workers.HEARTBEAT)  # a peer may die and free its lists
                self.next_claim = 0.0
                continue
            batch = self._collect(lane)
            if batch:
                self._write(lane, self.conn, batch)

    def _top_up(self) -> None:
        """Claim lists so that every fetcher has one in hand and a few waiting; claims come in
        chunks (one statement each), not one per list."""
        if self.in_flight > self.concurrency * 2 or time.monotonic() < self.next_claim:
            return
        want = self.concurrency * 4 - self.in_flight
        with self.conn.begin():
            claimed = checkpoint.claim(self.conn, self.run_id, self.me.id, want, self.clock())
        with self.lock:
            self.in_flight += len(claimed)
        for task in claimed:
            self.tasks.put(task)
        if not claimed:
            self.next_claim = time.monotonic() + 0.5  # nothing free now: don't ask every loop

    def _others_hold_lists(self) -> bool:
        with self.conn.begin():
            return checkpoint.open_elsewhere(self.conn, self.run_id, self.me.id, self.clock()) > 0

    def _collect(self, lane: _Lane) -> list[Fetched | Ended]:
        """The pages waiting now (at least one, if one comes within BATCH_WAIT)."""
        try:
            batch = [lane.pages.get(timeout=BATCH_WAIT)]
        except queue.Empty:
            return []
        rows = 0
        while len(batch) < BATCH_PAGES and rows < BATCH_ROWS:
            try:
                item = lane.pages.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            if isinstance(item, Fetched):
                rows += len(item.rows.edges)
        return batch

    def _write(self, lane: _Lane, conn: sa.Connection, batch: list[Fetched | Ended]) -> None:
        parts: dict[Key, ListPart] = {}
        profiles: dict[tuple[str, int], ProfileRow] = {}
        ended: list[Ended] = []
        for item in batch:
            if isinstance(item, Ended):
                ended.append(item)
                continue
            task = item.task
            part = parts.get(task.key)
            if part is None:
                part = parts[task.key] = ListPart(
                    task.account, task.follow_type, baseline=task.baseline, had_seen=task.seen > 0
                )
            if item.restarted:
                part.edges.clear()
                part.pages, part.restarted = 0, True
            part.edges.update(item.rows.edges)
            part.pages += 1
            part.next_cursor = item.next_cursor
            part.complete = item.next_cursor == ""
            for row in item.rows.profiles:
                profiles.setdefault((row[0], row[1]), row)
        now = self.clock()
        with conn.begin():
            moved = checkpoint.advance(conn, self.run_id, self.me.id, list(parts.values()), now)
            for key in parts.keys() - moved:
                log.warning("%s/%d: another worker took this list over", *key)
                self.lost.add(key)
            kept = [part for key, part in parts.items() if key in moved]
            written = lane.loader.write(conn, self.run_id, kept, list(profiles.values()), now)
            if written.recrawl:
                log.warning(
                    "%d lists lost their removal check state: crawling them again",
                    len(written.recrawl),
                )
                checkpoint.recrawl(conn, self.run_id, written.recrawl, now)
            for end in ended:
                self._settle(conn, end, now)
        # Committed: account for it.
        self._trim_profiles()
        with self.lock:
            self._account(batch, parts, moved, kept, ended, written)
            self.on_batch(self.tally)

    def _account(
        self,
        batch: list[Fetched | Ended],
        parts: dict[Key, ListPart],
        moved: set[Key],
        kept: list[ListPart],
        ended: list[Ended],
        written: load.Written,
    ) -> None:
        """Count what a committed batch did (under self.lock)."""
        tally = self.tally
        tally.edges_removed += written.edges_removed
        tally.events += written.events
        for item in batch:
            if isinstance(item, Fetched) and item.task.key in moved:
                tally.pages += 1
                tally.items += len(item.rows.edges)
        owners = {item.task.key: item.task for item in batch if isinstance(item, Fetched)}
        for part in kept:
            if part.complete:
                self.in_flight -= 1
                tally.settled += 1
            elif part.edges:
                owners[part.key].seen = max(owners[part.key].seen, 1)  # sync_seen has rows now
        for key in parts.keys() - moved:
            if parts[key].complete:
                self.in_flight -= 1
        self.in_flight -= len(ended)

    def _settle(self, conn: sa.Connection, end: Ended, now: datetime) -> None:
        """Record how a list ended early (inside the batch's transaction)."""
        with self.lock:
            self._settle_locked(conn, end, now)

    def _settle_locked(self, conn: sa.Connection, end: Ended, now: datetime) -> None:
        task, tally = end.task, self.tally
        label = f"{task.account}/{transform.TYPE_NAMES[task.follow_type]}"
        if end.how == "missing":
            tally.edges_removed += load.mark_all_removed(
                conn, self.run_id, task.account, task.follow_type, now
            )
            load.forget_seen(conn, self.run_id, [task.key])
            checkpoint.settle(
                conn,
                self.run_id,
                task.account,
                task.follow_type,
                status="skipped",
                error="the account does not exist (30003)",
                now=now,
            )
            if task.account not in tally.missing_accounts:
                tally.missing_accounts.append(task.account)
            tally.settled += 1
        elif end.how in ("rejected", "failed"):
            # Rejected: the same request would be rejected again, so the list is given up.
            # Failed: retries ran out; the next sync of the run tries it again.
            give_up = end.how == "rejected"
            checkpoint.settle(
                conn,
                self.run_id,
                task.account,
                task.follow_type,
                status="failed",
                error=end.error,
                now=now,
                give_up=give_up,
            )
            tally.failures.append(end.error)
            if give_up:
                tally.settled += 1
            log.error(
                "%s: %s: %s",
                label,
                "the service rejects this list, giving it up"
                if give_up
                else "failed after retries, the next sync retries it",
                end.error,
            )
        elif end.how in ("fatal", "crash"):
            if end.how == "fatal":
                # Not the list's fault (credentials, app): note why, count no failure.
                checkpoint.note_error(conn, self.run_id, task.account, task.follow_type, end.error)
            if self.error is None:
                self.error = end.exc
            self.stop.set()

    def _trim_profiles(self) -> None:
        if len(self.known) > PROFILE_CACHE:
            self.known = set()  # fetchers keep reading the old set until they next look

    # -- the fetchers (threads) ------------------------------------------------------------

    def _fetch_loop(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None:
                return
            if self.stop.is_set():
                self._put(Ended(task, "stopped"))
                continue
            self._put(self._fetch(task))

    def _fetch(self, task: checkpoint.ListState) -> Ended | None:
        """Fetch a list's pages into the queue; the Ended that closes it early, if any."""
        try:
            pages = extract.pages(
                self.client, task.account, task.follow_type, task.cursor, self.page_size
            )
            while True:
                page = self._next(pages)
                if page is None:
                    return Ended(task, "stopped")
                known = self.known
                rows = transform.page_rows(page.body, task.account, task.follow_type, known)
                # Claimed now, not at commit: other fetchers skip these versions at once. A
                # version that never gets committed dies with the process that claimed it.
                known.update((row[0], row[1]) for row in rows.profiles)
                self._put(Fetched(task, rows, page.next_cursor, page.restarted))
                if page.last:
                    return None
                if self.stop.is_set() or task.key in self.lost or self.abort.is_set():
                    return Ended(task, "stopped")
        except AccountNotFound:
            self.opened.set()
            return Ended(task, "missing")
        except RequestRejected as exc:
            self.opened.set()
            return Ended(task, "rejected", str(exc))
        except TransientApiError as exc:
            return Ended(task, "failed", str(exc))
        except FatalApiError as exc:
            return Ended(task, "fatal", str(exc), exc)
        except BaseException as exc:  # noqa: BLE001 - a bug or an interrupt: stop, re-raise later
            self.stop.set()
            return Ended(task, "crash", repr(exc), exc)

    def _next(self, pages: Iterator[extract.Page]) -> extract.Page | None:
        """The next page; until one call has succeeded, one call at a time: wrong credentials
        cost one request, not one per fetcher."""
        if self.opened.is_set():
            return self._call(pages)
        with self.probe:
            if self.stop.is_set():
                return None
            page = self._call(pages)
        self.opened.set()
        return page

    def _call(self, pages: Iterator[extract.Page]) -> extract.Page | None:
        """next(pages), deciding on the spot whether the crawl must stop."""
        try:
            page = next(pages, None)
        except TransientApiError:
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
        return page

    def _put(self, item: Fetched | Ended | None) -> None:
        """Queue an item for the writer of its list's lane, unless the writers have gone."""
        if item is None:
            return
        lane = self.lanes[hash(item.task.key) % len(self.lanes)]
        while not self.abort.is_set():
            try:
                lane.pages.put(item, timeout=0.5)
                return
            except queue.Full:
                continue


class _Lane:
    """One writer's queue and loader."""

    def __init__(self, dialect: str, size: int) -> None:
        self.pages: queue.Queue[Fetched | Ended] = queue.Queue(maxsize=size)
        self.loader = load.Loader(dialect)


class Rate:
    """Calls per second over the last few seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.window = window

    def add(self, now: float, calls: int) -> float:
        """Record the call count at ``now``; return the recent rate."""
        self.samples.append((now, calls))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        then, before = self.samples[0]
        return (calls - before) / (now - then) if now > then else 0.0
