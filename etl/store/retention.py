"""Retention: what a job's history keeps, and what goes.

- A run's checkpoints (sync_checkpoints: one row per list, 3 million a night at a million
  accounts) are kept for the job's last ``keep_runs`` runs; ``prune`` deletes those of older
  runs that have ended (done or abandoned: never the unfinished run, which is always the
  newest, and never the latest run). The sync_runs rows stay, with their stored counters and
  their sync_run_counters rows, so a job's history of run totals is complete; ``pruned_at``
  says when their checkpoints went. ``sync`` prunes its job this way after every clean finish
  (``keep_runs``, default DEFAULT_KEEP_RUNS; 0 keeps everything).
- sync_seen rows (the removal check's working set) of a run that ended are deleted when it
  ends (etl.store.runs.close_run, abandon_run); ``prune`` deletes any a run left before that
  (etl.store.seen.prune_run).
- quarantined_items are evidence of what could not be stored: they are kept with their run,
  pruned or not (they are few: one row per bad item and run).
- A run's list_reconciliation rows (per list, what the callbacks missed: etl.store.reconcile)
  and its verify_mismatches go with its checkpoints; a sync_runs row deleted by hand takes its
  checkpoints, counters and reconciliation rows with it (ON DELETE CASCADE; SQLite enforces
  it too: etl.store.dialect.sqlite turns foreign keys on for every connection).
- Edges, profile versions and follow_edge_events are the data: kept for ever.
  ``prune_events`` deletes events observed before a date, for those who archive them first.

Every delete is chunked (CHUNK rows per statement, one transaction each), so pruning a night
of 3 million checkpoints never holds one huge transaction or its locks, and a stop request
(``stop``) is heard between chunks: Stopped, with every chunk done so far kept.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.store import chunks, seen
from etl.store.schema import (
    follow_edge_events,
    list_reconciliation,
    sync_checkpoints,
    sync_runs,
    verify_mismatches,
)

log = logging.getLogger(__name__)

DEFAULT_KEEP_RUNS = 7  # a week of nightly runs: enough to look back at, and flat in size
CHUNK = 10_000  # rows per delete statement (and transaction)
ENDED = ("done", "abandoned")

r = sync_runs.c


@dataclass
class Pruned:
    """What ``prune`` deleted."""

    runs: list[int] = field(default_factory=list)  # runs whose checkpoints were deleted
    checkpoints: int = 0
    seen: int = 0  # sync_seen leftovers of ended runs

    def document(self) -> dict[str, object]:
        """``prune --json``."""
        return {"runs": self.runs, "checkpoints": self.checkpoints, "seen": self.seen}


def jobs(conn: sa.Connection) -> list[str]:
    """Every job with runs."""
    return list(conn.execute(sa.select(r.job).distinct().order_by(r.job)).scalars())


def prune(
    engine: Engine,
    job: str,
    keep_runs: int,
    now: datetime,
    *,
    chunk: int = CHUNK,
    stop: threading.Event | None = None,
) -> Pruned:
    """Delete the checkpoints (and stored verify mismatches and list reconciliations) of the
    job's ended runs older than its last ``keep_runs`` (at least 1), and the sync_seen
    leftovers of every ended run; return what went. Stopped if ``stop`` is set: the chunks
    deleted so far stay deleted."""
    if keep_runs < 1:
        raise ValueError("keep_runs must be at least 1: the latest run is always kept")
    with engine.connect() as conn:
        # Only runs not pruned yet: the cost stays flat however long the job's history grows.
        rows = conn.execute(
            sa.select(r.id, r.status)
            .where(r.job == job, r.pruned_at.is_(None))
            .order_by(r.id.desc())
        ).all()
        newest = conn.execute(
            sa.select(r.id).where(r.job == job).order_by(r.id.desc()).offset(keep_runs - 1).limit(1)
        ).scalar()
    # Runs with an id below the keep_runs-th newest are old; every run at or above it is kept.
    oldest_kept = newest if newest is not None else 0
    done = Pruned()
    for run_id, status in sorted(rows):
        if status not in ENDED:
            continue  # the unfinished run: its checkpoints are the run
        done.seen += seen.prune_run(engine, run_id, chunk=chunk, stop=stop)
        if run_id >= oldest_kept:
            continue
        c = sync_checkpoints.c
        keys = (c.run_id, c.account, c.follow_type)
        done.checkpoints += chunks.delete_chunks(
            engine, sync_checkpoints, c.run_id == run_id, chunk, stop, keys
        )
        for table in (verify_mismatches, list_reconciliation):
            chunks.delete_chunks(engine, table, table.c.run_id == run_id, chunk, stop)
        with engine.begin() as conn:
            conn.execute(sa.update(sync_runs).where(r.id == run_id).values(pruned_at=now))
        done.runs.append(run_id)
    if done.runs or done.seen:
        log.info(
            "pruned job %r: checkpoints of %d runs (%d rows), %d sync_seen rows",
            job,
            len(done.runs),
            done.checkpoints,
            done.seen,
        )
    return done


def prune_events(
    engine: Engine,
    before: datetime,
    *,
    chunk: int = CHUNK,
    stop: threading.Event | None = None,
) -> int:
    """Delete the follow_edge_events observed before ``before``; how many went. Stopped if
    ``stop`` is set: the chunks deleted so far stay deleted."""
    e = follow_edge_events.c
    where = e.observed_at < before
    return chunks.delete_chunks(engine, follow_edge_events, where, chunk, stop, (e.id,))
