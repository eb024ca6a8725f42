"""The coordinator: claims lists, hands them to fetchers, and decides when the crawl is over.

It runs in the thread that calls ``Crawl.run`` and is the only owner of the claims in flight:
a claim enters ``in_flight`` when leased and leaves it when its writer reports the list's
Ended committed, or when a newer claim of the same list replaces it. The crawl is over when
nothing is in flight and nothing is left to claim (and no live peer holds a list that may yet
come free, and ``listed`` says no list is still to be added to the run), or, after a stop
request, when what was in flight has been written or STOP_GRACE has passed. It opens short
transactions of its own for claims, each retried across a lost connection (etl.store.db.retrying).
"""

from __future__ import annotations

import gc
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy.engine import Engine

from etl import holds
from etl.crawl.fetcher import Fetchers
from etl.crawl.known import KnownProfiles
from etl.crawl.messages import Claim, Ended, Fetched, Tally
from etl.crawl.outcome import EFFECTS
from etl.crawl.writer import Writer
from etl.errors import Stopped
from etl.store import db, leases, workers
from etl.store.dialect import dialect_of
from etl.store.rows import Key
from etl.tencent.client import FollowClient

log = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds a stopping crawl waits for the pages in flight to be written
JOIN_TIMEOUT = 30.0  # seconds to wait for a writer to drain its queue at the end
# Seconds between looks, once nothing is left to claim, at the lists peers still hold: the
# process ends this long after the last of them is done at most (one indexed count a look).
IDLE_LOOK = 0.1
# While lists are still being added (the run's start), the look comes this often: the lister's
# next chunk is claimed as soon as it is committed.
LISTING_LOOK = 0.05
# Lists kept claimed and not yet started: this process's calls of CLAIM_AHEAD seconds (at its
# pace), between 2 and twice ``concurrency``, topped up to twice that once fewer are waiting;
# a list fetched and waiting for its batch's commit no longer counts. A slow commit then cannot
# starve the fetchers, and when the run runs out each process holds a fraction of a second of
# calls.
CLAIM_AHEAD = 0.25
IN_FLIGHT_PER_FETCHER = 8  # lists claimed and not yet committed, at most, per fetcher
LOOK_EVERY = 0.05  # seconds the coordinator waits for an ending before it looks at the queue
CLAIM_BACK_OFF = 0.1  # seconds before claiming again after a claim found nothing
GC_THRESHOLD = 100_000  # allocations between young collections while crawling (Python: 700)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect cyclic garbage rarely while crawling; restore the collector's settings after.

    A crawl builds and drops a page's worth of objects per call (a 1000-item page is some
    30,000), none of them cyclic, so reference counting frees them; at Python's default a
    young collection ran every 700 allocations and took about 40% of a fetcher's CPU (parsing
    a page: 4.4 ms with it, 2.0 ms without). The objects alive when the crawl starts are
    frozen out of the collector's scans.
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


class Crawl:
    """Crawl the open lists of one run with ``concurrency`` fetchers until none is left.

    ``writer`` is the class of its writer lanes (a test passes one that watches them)."""

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
        db_seconds: float = db.RECONNECT_SECONDS,
        thresholds: holds.Thresholds | None = None,
        listed: Callable[[], bool] = lambda: True,
        writer: type[Writer] = Writer,
    ) -> None:
        self.engine, self.me, self.run_id, self.clock = engine, me, run_id, clock
        self.pacer = client.pacer  # this process's pace: how many lists to keep waiting
        self.listed = listed  # no list is still to be added to the run (etl.crawl.lister)
        self.concurrency, self.db_seconds = concurrency, db_seconds
        self.stop = stop  # set by a signal, a fatal error, or an API that keeps failing
        self.abort = threading.Event()  # a writer is gone: everything ends now
        self.tally = Tally()
        self.error: BaseException | None = None
        self.in_flight: dict[Key, Claim] = {}  # only this thread changes it
        self.closed: queue.Queue[Ended] = queue.Queue()  # writers report committed endings
        self.next_claim = 0.0
        # One lane per writer; a list always takes the same lane, so its pages are written in
        # order.
        lanes = dialect_of(engine).writers
        size = max(2, concurrency * 4 // lanes)  # 4 queued pages per fetcher in all
        known = KnownProfiles()  # profile versions stored: fetchers skip them
        self.writers = [
            writer(
                i,
                engine,
                run_id,
                me.id,
                clock=clock,
                queue_size=size,
                known=known,
                tally=self.tally,
                on_batch=on_batch,
                on_closed=self.closed.put,
                stop=stop,
                abort=self.abort,
                db_seconds=db_seconds,
                thresholds=thresholds,
            )
            for i in range(lanes)
        ]
        self.fetchers = Fetchers(client, page_size, known, self._put, stop, clock)

    def run(self) -> None:
        """Crawl until no open list is left to this process, or until stopped."""
        with fewer_collections():
            self._run()

    def _run(self) -> None:
        self.started = self.clock()  # lists this process fails are left to the next sync
        for writer in self.writers:
            writer.start()
        self.fetchers.start(self.concurrency)
        try:
            self._coordinate()
        except Stopped:
            pass  # stopped while the database was away: what is committed stays
        finally:
            stopping = self.stop.is_set()
            for writer in self.writers:
                writer.finishing.set()
            for writer in self.writers:
                writer.join(timeout=1.0 if stopping else JOIN_TIMEOUT)
            self.abort.set()  # fetchers drop whatever they still hold
            self.fetchers.finish(timeout=1.0)
        errors = [self.error, *(writer.error for writer in self.writers)]
        error = next((e for e in errors if e is not None), None)
        if error is not None:
            raise error

    def _coordinate(self) -> None:
        stop_deadline: float | None = None
        while not self.abort.is_set():
            self._drain(timeout=0.0)
            if self.stop.is_set():
                stop_deadline = stop_deadline or time.monotonic() + STOP_GRACE
                if not self.in_flight or time.monotonic() > stop_deadline:
                    return
                self._drain(timeout=0.1)
                continue
            self._top_up()
            if self.in_flight:
                self._drain(timeout=LOOK_EVERY)
                continue
            self.next_claim = 0.0  # idle: look again now, not after the back-off
            # Asked before the claim: a list added after this look is claimed next time round.
            listed = self.listed()
            self._top_up()
            if self.in_flight:
                continue
            if listed and not self._others_hold_lists():
                return
            # A peer may die and free its lists; the lister may add some.
            self.stop.wait(IDLE_LOOK if listed else LISTING_LOOK)
            self.next_claim = 0.0

    def _drain(self, timeout: float) -> None:
        """Forget the claims whose endings writers have committed."""
        try:
            end = self.closed.get(timeout=timeout) if timeout else self.closed.get_nowait()
        except queue.Empty:
            return
        while True:
            if self.in_flight.get(end.claim.key) is end.claim:  # not a newer claim of the list
                del self.in_flight[end.claim.key]
            if EFFECTS[end.outcome].stops_crawl:
                if self.error is None and end.exc is not None:
                    self.error = end.exc
                self.stop.set()
            try:
                end = self.closed.get_nowait()
            except queue.Empty:
                return

    def _waiting(self) -> int:
        """How many claimed lists no fetcher has started, at least (see CLAIM_AHEAD)."""
        return max(2, min(self.concurrency * 2, math.ceil(self.pacer.rate * CLAIM_AHEAD)))

    def _top_up(self) -> None:
        """Claim lists so that a few are always waiting for the fetchers (CLAIM_AHEAD); claims
        come in chunks (one statement each), not one per list."""
        waiting, low = self.fetchers.tasks.qsize(), self._waiting()
        room = self.concurrency * IN_FLIGHT_PER_FETCHER - len(self.in_flight)
        if waiting >= low or room <= 0 or time.monotonic() < self.next_claim:
            return
        want = min(2 * low - waiting, room)
        claimed = db.retrying(
            self.engine,
            lambda conn: leases.claim(conn, self.run_id, self.me.id, want, self.started),
            what="claiming lists",
            stop=self.stop,
            seconds=self.db_seconds,
        )
        for task in claimed:
            # A list can come back while its Ended is still on the way: a writer that found its
            # removal check state lost sent it back to its start (leases.recrawl) and gave
            # the lease back. The new claim replaces the old one, which ends with no effect.
            claim = self.in_flight[task.key] = Claim(task)
            self.fetchers.tasks.put(claim)
        if not claimed:
            # Nothing free now: don't ask at every look (the lister may add lists soon).
            self.next_claim = time.monotonic() + CLAIM_BACK_OFF

    def _others_hold_lists(self) -> bool:
        held = db.retrying(
            self.engine,
            lambda conn: leases.open_elsewhere(conn, self.run_id, self.me.id),
            what="looking for lists other processes hold",
            stop=self.stop,
            seconds=self.db_seconds,
        )
        return held > 0

    def _put(self, item: Fetched | Ended) -> None:
        """Queue an item for the writer of its list's lane, unless the writers have gone."""
        lane = self.writers[hash(item.claim.key) % len(self.writers)]
        while not self.abort.is_set():
            try:
                lane.pages.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
