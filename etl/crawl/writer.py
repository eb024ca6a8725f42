"""Writer lanes: the unit of work. One batch of pages and endings, one transaction.

The transaction of a batch, in order (``Writer._write``, the only place it opens):
1. ``leases.hold``: which of the batch's lists this process still leases, row-locked until
   commit. Nothing is written for a list it does not hold; that list's fetcher is told to stop.
   A run no longer open (abandoned, or closed) gets nothing written at all, and the crawl stops.
2. ``cursors.advance``: the held lists' cursors, pages and items. The lists with pages in the
   batch are locked by this update, not by hold (a row lock is a WAL record of its own): one
   taken over in between is left out, as if hold had not found it.
3. ``Loader.write``: their edges, removals, events and quarantined items, and the batch's
   profile versions (facts about users, stored whichever list carried them). A completed
   list whose removals would be a mass removal is put on hold instead (etl.holds,
   ``cursors.put_on_hold``): none of its removals is applied.
4. ``cursors.settle``: each held list that ended, as its Outcome's Effect says (a 30003 for a
   list with many stored edges is held the same way until confirmed).
A crash at any instant loses at most this batch; the upserts make replaying it harmless.

A lost connection (a database restart, a dead network) rolls the batch back; the lane
reconnects with backoff for up to ``db_seconds`` and writes the same batch again, re-checking
its leases as step 1 always does.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import holds
from etl.crawl.known import KnownProfiles
from etl.crawl.messages import Ended, Fetched, Tally
from etl.crawl.outcome import EFFECTS, Outcome
from etl.errors import Stopped
from etl.store import cursors, db, edges, leases, load, seen
from etl.store.rows import Key, ListPart, ListState, Mode
from etl.tencent.page import TYPE_NAMES

log = logging.getLogger(__name__)

BATCH_ROWS = 20_000  # edges per transaction at most
BATCH_PAGES = 500
# Seconds a writer waits for a first page before looking around: at the end of a crawl, how
# late it hears that it is finishing.
BATCH_WAIT = 0.05
MISSING_ERROR = "the account does not exist (30003)"


@dataclass
class _Result:
    """What a committed batch did, for the accounting after the commit."""

    leased: set[Key]  # the batch's lists this process still leases (leases.hold)
    parts: dict[Key, ListPart]
    written: load.Written
    removed: int = 0
    ended: list[Ended] = field(default_factory=list)
    holds: list[holds.Hold] = field(default_factory=list)  # 30003s held (completed: written)


class Writer(threading.Thread):
    """One lane: its queue, its connection, and the batches it commits in order."""

    def __init__(
        self,
        index: int,
        engine: Engine,
        run_id: int,
        owner: str,
        *,
        clock: Callable[[], datetime],
        queue_size: int,
        known: KnownProfiles,
        tally: Tally,
        on_batch: Callable[[Tally], None],
        on_closed: Callable[[Ended], None],
        stop: threading.Event,
        abort: threading.Event,
        db_seconds: float,
        thresholds: holds.Thresholds | None = None,
    ) -> None:
        super().__init__(name=f"write-{index}", daemon=True)
        self.engine, self.run_id, self.owner, self.clock = engine, run_id, owner, clock
        self.pages: queue.Queue[Fetched | Ended] = queue.Queue(maxsize=queue_size)
        self.thresholds = thresholds or holds.Thresholds()
        self.loader = load.Loader(engine.dialect.name, self.thresholds)
        self.known = known
        self.tally, self.on_batch, self.on_closed = tally, on_batch, on_closed
        self.stop, self.abort, self.db_seconds = stop, abort, db_seconds
        self.finishing = threading.Event()  # nothing more will come: drain the queue and end
        self.error: BaseException | None = None
        self._conn: sa.Connection | None = None

    def run(self) -> None:
        try:
            while not self.abort.is_set():
                batch = self._collect()
                if batch:
                    self._commit(batch)
                elif self.finishing.is_set() and self.pages.empty():
                    return
        except Stopped:
            self.abort.set()  # stopped while the database was away: the batch is not stored
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator, which raises
            self.error = exc
            self.stop.set()
            self.abort.set()
        finally:
            self._disconnect()

    def _collect(self) -> list[Fetched | Ended]:
        """The items waiting now (at least one, if one comes within BATCH_WAIT)."""
        try:
            batch = [self.pages.get(timeout=BATCH_WAIT)]
        except queue.Empty:
            return []
        rows = 0
        while len(batch) < BATCH_PAGES and rows < BATCH_ROWS:
            try:
                item = self.pages.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            if isinstance(item, Fetched):
                rows += len(item.rows.edges)
        return batch

    def _commit(self, batch: list[Fetched | Ended]) -> None:
        result = self._write_retrying(batch)
        self._account(batch, result)
        for end in result.ended:
            self.on_closed(end)

    def _write_retrying(self, batch: list[Fetched | Ended]) -> _Result:
        deadline = time.monotonic() + self.db_seconds
        attempt = 0
        while True:
            try:
                if self._conn is None:
                    self._conn = self.engine.connect()
                result = self._write(self._conn, batch)
                if attempt:
                    log.info("reconnected to the database: the batch is stored")
                return result
            except Exception as exc:  # noqa: BLE001 - wait_to_retry re-raises all but transient errors
                self._disconnect()
                attempt += 1
                db.wait_to_retry(
                    exc,
                    attempt,
                    deadline,
                    what="writing a batch",
                    stop=self.stop,
                    seconds=self.db_seconds,
                )

    def _write(self, conn: sa.Connection, batch: list[Fetched | Ended]) -> _Result:
        """The batch's one transaction (see the module docstring)."""
        now = self.clock()
        with conn.begin():
            keys = {i.claim.key for i in batch}
            fetched = {i.claim.key for i in batch if isinstance(i, Fetched)}
            leased = leases.hold(conn, self.run_id, self.owner, keys, advancing=fetched)
            if leased is None:
                return self._run_closed(batch)
            parts = _merge(batch, leased)
            pages = [(i.claim.key, i.rows) for i in batch if isinstance(i, Fetched)]
            moved = cursors.advance(conn, self.run_id, list(parts.values()), now, owner=self.owner)
            parts = _kept(parts, leased, moved)
            written = self.loader.write(
                conn, self.run_id, list(parts.values()), pages, now, known=self.known
            )
            if written.recrawl:
                log.warning(
                    "%d lists lost their removal check state: crawling them again",
                    len(written.recrawl),
                )
                cursors.recrawl(conn, self.run_id, written.recrawl, now)
            cursors.put_on_hold(conn, self.run_id, written.held, now)
            result = _Result(leased, parts, written)
            for item in batch:
                if isinstance(item, Ended):
                    result.ended.append(item)
                    if item.claim.key in leased and item.outcome is not Outcome.COMPLETE:
                        self._settle(conn, item, now, result)
        return result

    def _run_closed(self, batch: list[Fetched | Ended]) -> _Result:
        """The run was abandoned or closed under this process: store nothing, stop the crawl."""
        if not self.stop.is_set():
            log.warning(
                "run %d was abandoned or closed by another process: stopping; its pages in "
                "flight are not stored",
                self.run_id,
            )
        self.stop.set()
        for item in batch:
            item.claim.dropped = True
        return _Result(set(), {}, load.Written(), ended=[i for i in batch if isinstance(i, Ended)])

    def _settle(self, conn: sa.Connection, end: Ended, now: datetime, result: _Result) -> None:
        """Apply an ending's Effect to its list (edges it marks removed go into ``result``),
        unless it is a mass removal to hold (etl.holds)."""
        effect = EFFECTS[end.outcome]
        key = end.claim.key
        if effect.removes_all:
            seen.forget(conn, self.run_id, [key])
            answer = end.claim.info
            hold = holds.decide_missing(
                self.thresholds,
                key,
                edges.current_edges(conn, *key),
                confirming=end.claim.task.confirming,
                missing=answer is not None and answer.missing,
                count=None if answer is None else answer.counts.get(key[1]),
            )
            if hold is not None:
                cursors.put_on_hold(conn, self.run_id, [hold], now)
                result.holds.append(hold)
                return
            part = result.parts.get(key)  # a restart in this batch began the crawl again
            started = end.claim.task.started if part is None else part.started
            result.removed += edges.mark_all_removed(conn, self.run_id, *key, now, started=started)
        error = None
        if effect.records_error:
            error = MISSING_ERROR if end.outcome is Outcome.MISSING else end.error
        cursors.settle(
            conn,
            self.run_id,
            key,
            status=effect.status,
            failures=effect.failures,
            error=error,
            now=now,
        )

    def _account(self, batch: list[Fetched | Ended], result: _Result) -> None:
        """Count what a committed batch did, and tell fetchers of lists taken over."""
        for item in batch:
            # A page of a list no longer held: another process took it over. (An ending that
            # comes after the list's last page finds the lease already given back: no news.)
            gone = isinstance(item, Fetched) and item.claim.key not in result.leased
            if gone and not item.claim.dropped:
                log.warning("%s/%d: another worker took this list over", *item.claim.key)
                item.claim.dropped = True
        _restarted(batch, result.parts)
        with self.tally.lock:
            holding = _count(self.tally, batch, result)
            self.on_batch(self.tally)
        for hold in holding:
            log.warning("%s/%s: %s", hold.key[0], TYPE_NAMES[hold.key[1]], hold.message())

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                log.debug("closing a broken connection failed", exc_info=True)
            self._conn = None


def _kept(parts: dict[Key, ListPart], leased: set[Key], moved: set[Key]) -> dict[Key, ListPart]:
    """The parts whose cursors moved; a list taken over since hold checked it (its cursor not
    moved) is no longer leased, and nothing is written for it."""
    lost = set(parts) - moved
    leased -= lost
    return {key: part for key, part in parts.items() if key not in lost}


def _last_task(batch: list[Fetched | Ended], key: Key) -> ListState:
    return next(i.claim.task for i in reversed(batch) if i.claim.key == key)


def _restarted(batch: list[Fetched | Ended], parts: dict[Key, ListPart]) -> None:
    """A committed restart reaches its list's claim: the crawl began again then, and is no
    longer fresh (what the first attempt stored may not be listed again)."""
    for key, part in parts.items():
        if part.mode.restarted:
            task = _last_task(batch, key)
            task.started, task.fresh = part.started, False


def _count(tally: Tally, batch: list[Fetched | Ended], result: _Result) -> list[holds.Hold]:
    """Add a committed batch to ``tally`` (its lock held); return the holds it made."""
    written, leased = result.written, result.leased
    tally.edges_removed += written.edges_removed + result.removed
    tally.events += written.events + result.removed
    tally.quarantined += written.quarantined
    tally.conflicts += written.conflicts
    tally.profiles += written.profiles
    for item in batch:
        if isinstance(item, Fetched) and item.claim.key in leased:
            tally.pages += 1
            tally.items += len(item.rows.edges)
    recrawled = set(written.recrawl)
    holding = {h.key: h for h in (*written.held, *result.holds)}
    for key, part in result.parts.items():
        if key in recrawled or (key in holding and not holding[key].confirming):
            continue  # back to its start: neither settled nor holding sync_seen rows
        if part.mode.ends:
            tally.settled += 1
        elif part.edges and part.mode.keeps_seen:
            task = _last_task(batch, key)
            task.seen = max(task.seen, 1)  # sync_seen has rows now
    missing_held = {h.key: h for h in result.holds}
    for end in result.ended:
        if end.claim.key in missing_held:
            # given up for this run if it was the confirming crawl; else still open
            tally.settled += missing_held[end.claim.key].confirming
        elif end.claim.key in leased:
            _count_ending(tally, end)
    return list(holding.values())


def _count_ending(tally: Tally, end: Ended) -> None:
    task = end.claim.task
    label = f"{task.account}/{TYPE_NAMES[task.follow_type]}"
    if end.outcome is Outcome.MISSING:
        tally.settled += 1
        tally.missing.add(task.account, distinct=True)  # the account's other lists too
    elif end.outcome is Outcome.REJECTED:
        tally.settled += 1
        tally.failures.add(end.error)
        log.error("%s: the service rejects this list, giving it up: %s", label, end.error)
    elif end.outcome is Outcome.FAILED:
        tally.failures.add(end.error)
        log.error("%s: failed after retries, the next sync retries it: %s", label, end.error)


def _merge(batch: list[Fetched | Ended], leased: set[Key]) -> dict[Key, ListPart]:
    """The batch's pages as one ListPart per leased list. The claims are left as they are:
    a restart reaches its task once the batch is committed (``_restarted``)."""
    parts: dict[Key, ListPart] = {}
    for item in batch:
        if not isinstance(item, Fetched) or item.claim.key not in leased:
            continue
        task = item.claim.task
        part = parts.get(task.key)
        if part is None:
            part = parts[task.key] = ListPart(
                task.account,
                task.follow_type,
                mode=Mode.of(task),
                baseline=task.baseline,
                started=task.started,
            )
        if item.restarted:
            part.edges.clear()
            part.pages, part.mode = 0, Mode.RESTARTED
            # The crawl begins again: what the first attempt stored is now older than its
            # start, so what the new one does not list is removed (cursors.advance keeps it).
            # What the first attempt stored may not be listed again: no longer fresh.
            part.started = item.started
        part.edges.update(item.rows.edges)
        part.pages += 1
        part.next_cursor = item.next_cursor
        part.mode = part.mode.ending(item.next_cursor == "")
        part.confirming = task.confirming
        if item.claim.info is not None:  # asked as the list's crawl ended (etl.crawl.fetcher)
            part.info_count = item.claim.info.counts.get(task.follow_type)
    return parts
