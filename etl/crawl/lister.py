"""The start of a run, alongside its crawl: the run's lists added in committed chunks, each
chunk sized (etl.tencent.sizes) before it is committed, then the run marked ``listed``.

``sync`` opens (or resumes) its run in one short transaction and starts crawling at once; a
``Lister`` thread adds the lists behind it. A chunk of up to ``chunk`` lists is read in one
short transaction (which of its lists the run already has, the sizes their last complete
crawls found), the rest are asked of follow_get_info through the run's paced client, and the
new lists go in with their sizes in one more transaction. Memory holds one chunk. A stop
request is heard between chunks and between follow_get_info calls; a chunk whose sizing a
stop cut short is not written. A stop or a crash keeps the chunks committed: the next
``sync`` of the job streams the accounts again, reads past the lists the run has (one
indexed read per chunk, no write) and goes on from there.

With ``changed_first`` (``sync --changed-first``) the same read says which lists of the chunk
callbacks changed since their last complete crawl (etl.store.reconcile): the new ones go in
marked touched, and those the run already has are marked touched while still open, so that
claims take them first.

The crawl does not end before the lister is done (etl.crawl.coordinator's ``listed``), and a
run is not closed as done before it is marked listed (etl.crawl.session).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.errors import Stopped
from etl.store import db, reconcile, runs
from etl.store.rows import Key
from etl.tencent import sizes
from etl.tencent.client import FollowClient

log = logging.getLogger(__name__)

# The first chunk holds at most this many lists, and each next one twice the one before, up to
# ``chunk``: the crawl has lists to claim after a few follow_get_info calls and a short insert,
# not after sizing and inserting a whole chunk (while the budget goes unused). The next chunks'
# calls share the budget with the crawl's.
FIRST_CHUNK = 500


class Lister:
    """Adds a run's lists in committed, sized chunks, in a thread of its own; ``done`` once
    every list is in, or once it stopped (a stop request, or an error: ``error``, and it
    sets ``stop`` so that the crawl ends too)."""

    def __init__(
        self,
        engine: Engine,
        client: FollowClient,
        run_id: int,
        lists: Iterable[Key],
        *,
        clock: Callable[[], datetime],
        stop: threading.Event,
        chunk: int = runs.ADD_CHUNK,
        concurrency: int = 1,
        db_seconds: float = db.RECONNECT_SECONDS,
        changed_first: bool = False,
    ) -> None:
        self.engine, self.client, self.run_id, self.lists = engine, client, run_id, lists
        self.clock, self.stop, self.chunk = clock, stop, max(1, chunk)
        self.concurrency, self.db_seconds = concurrency, db_seconds
        self.changed_first = changed_first  # mark the lists callbacks touched (claimed first)
        self.done = threading.Event()
        self.listed = False  # every list is in, and the run says so
        self.error: BaseException | None = None
        self.added = 0  # lists this process added to the run
        self.chunks = 0  # chunks read (each at most ``chunk`` lists)
        self.largest = 0  # the most lists held at once
        self.asked = 0  # follow_get_info calls
        self._thread = threading.Thread(target=self._run, name="lister", daemon=True)

    def start(self) -> None:
        """Start adding the lists."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (its owner calls this after setting ``stop``)."""
        self._thread.join(timeout)

    def run(self) -> None:
        """Add the lists in this thread (tests, and a caller with nothing else to do)."""
        self._run()

    def _run(self) -> None:
        asker = sizes.Asker(self.client, self.concurrency, self.stop)
        try:
            for part in _growing(self.lists, min(FIRST_CHUNK, self.chunk), self.chunk):
                if self.stop.is_set():
                    return
                self._add(part, asker)
            if self.stop.is_set():
                return
            db.retrying(
                self.engine,
                lambda conn: runs.mark_listed(conn, self.run_id),
                what="marking the run listed",
                stop=self.stop,
                seconds=self.db_seconds,
            )
            self.listed = True
            log.debug(
                "run %d listed: %d lists added in %d chunks, %d follow_get_info calls",
                self.run_id,
                self.added,
                self.chunks,
                asker.calls,
            )
        except Stopped:
            pass  # stopped while the database was away: the chunks committed stay
        except BaseException as exc:  # noqa: BLE001 - handed to the sync, which raises it
            self.error = exc
            self.stop.set()
        finally:
            asker.close()
            self.asked = asker.calls
            self.done.set()

    def _add(self, part: list[Key], asker: sizes.Asker) -> None:
        keys = list(dict.fromkeys(part))
        self.chunks += 1
        self.largest = max(self.largest, len(keys))

        def look(conn: sa.Connection) -> tuple[list[Key], dict[Key, int], set[Key]]:
            have = runs.present(conn, self.run_id, keys)
            new = [key for key in keys if key not in have]
            touched = reconcile.touched_lists(conn, keys) if self.changed_first else set()
            return new, sizes.from_history(conn, (account for account, _ in new)), touched

        new, known, touched = db.retrying(
            self.engine,
            look,
            what="adding the run's lists",
            stop=self.stop,
            seconds=self.db_seconds,
        )
        had = touched.difference(new)  # lists the run has: marked touched if still open
        if not new and not had:
            return
        unknown = sorted({account for account, t in new if (account, t) not in known})
        if unknown:
            known.update(asker.sizes(unknown))
        if self.stop.is_set():
            return  # sizing was cut short: the next sync adds this chunk, sized
        now = self.clock()

        def add(conn: sa.Connection) -> int:
            reconcile.mark_touched(conn, self.run_id, had)
            return runs.add_lists(
                conn, self.run_id, new, now, chunk=max(1, len(new)), sizes=known, touched=touched
            )

        self.added += db.retrying(
            self.engine, add, what="adding the run's lists", stop=self.stop, seconds=self.db_seconds
        )


def _growing(items: Iterable[Key], first: int, largest: int) -> Iterator[list[Key]]:
    """``items`` in lists of ``first``, then twice as many each time, up to ``largest``."""
    iterator = iter(items)
    size = first
    while batch := list(itertools.islice(iterator, size)):
        yield batch
        size = min(size * 2, largest)
