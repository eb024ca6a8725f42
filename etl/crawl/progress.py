"""Progress snapshots of one process's crawl of a run, for the ``on_progress`` of a sync."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from etl.crawl.messages import Rate, Tally
from etl.results import Progress, SyncReport
from etl.store import db, runs
from etl.tencent.client import FollowClient

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds between progress snapshots
COUNTS_EVERY = 5.0  # seconds between reads of the run's counters (other workers move them)


class Progresser:
    """Turns batch tallies into Progress snapshots, at most every PROGRESS_EVERY seconds."""

    def __init__(
        self,
        engine: Engine,
        report: SyncReport,
        client: FollowClient,
        before: dict[str, int],
        sink: Callable[[Progress], None] | None,
    ) -> None:
        self.engine, self.report, self.client, self.sink = engine, report, client, sink
        self.calls_before, self.retries_before = before["calls"], before["retries"]
        self.malformed_before = before["malformed"]
        self.started = time.monotonic()
        self.next = 0.0
        self.next_count = 0.0
        self.total = self.settled_before = 0
        self.settled_base = 0  # this process's settled lists at the last recount
        self.rate = Rate()
        self.settle_rate = Rate(window=30.0)
        self.peers = 1

    def __call__(self, tally: Tally, final: bool = False) -> None:
        if self.sink is None:
            return
        now = time.monotonic()
        if now < self.next and not final:
            return
        self.next = now + PROGRESS_EVERY
        if now >= self.next_count or final:
            self.next_count = now + COUNTS_EVERY
            try:
                with self.engine.connect() as conn:
                    counts = runs.counts(conn, self.report.run_id)  # a few counter rows
            except Exception as exc:
                if not db.is_database_error(exc):
                    raise
                log.debug("progress: could not read the run's counters: %s", db.first_line(exc))
            else:
                self.total = counts["total"]
                self.settled_before = counts["total"] - counts["open"]
                self.settled_base = tally.settled
        settled = min(self.total, self.settled_before + tally.settled - self.settled_base)
        calls = self.client.calls - self.calls_before
        per_list = self.settle_rate.add(now, settled)
        eta = (self.total - settled) / per_list if per_list > 0 else None
        self.sink(
            Progress(
                run_id=self.report.run_id,
                job=self.report.job,
                lists_total=self.total,
                lists_settled=settled,
                pages=tally.pages,
                items=tally.items,
                calls=calls,
                retries=self.client.retries - self.retries_before,
                elapsed=now - self.started,
                calls_per_second=self.rate.add(now, calls),
                eta_seconds=0.0 if final else eta,
                workers=self.peers,
                final=final,
                edges_added=tally.events - tally.edges_removed,
                edges_removed=tally.edges_removed,
                quarantined=tally.quarantined,
                conflicts=tally.conflicts,
                profiles=tally.profiles,
                malformed=self.client.malformed - self.malformed_before,
                answers=self.client.answered(),
            )
        )
