"""Writes of crawled rows, a batch of pages at a time. Functions take a connection and never
commit: the batch transaction of a writer lane (etl.crawl.writer) holds them, with the cursors
that follow the rows (etl.store.cursors.advance), so both commit together.

A batch goes into per-connection temporary staging tables (etl.store.staging; COPY on
PostgreSQL), and set-based statements move from there only what changed, table by table:
edges, removals and baselines (etl.store.edges), the reconciliation of completed lists with
the callbacks (etl.store.reconcile), profile versions (etl.store.profiles),
quarantined items and conflicts (etl.store.quarantine). What a crawl has seen of a list it
has not finished is kept in sync_seen, whose statements are all in etl.store.seen. The dialect
object (etl.store.dialect) spells what PostgreSQL and SQLite spell differently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from etl.holds import Hold, Thresholds, decide
from etl.store import edges, profiles, quarantine, reconcile, seen
from etl.store.dialect import Dialect, for_name
from etl.store.rows import Key, ListPart
from etl.store.staging import stage_lists, unstage_lists
from etl.tencent.rows import PageRows, Quarantined

if TYPE_CHECKING:  # a type only: etl.crawl imports this module
    from etl.crawl.known import KnownProfiles

log = logging.getLogger(__name__)


@dataclass
class Written:
    """What one batch changed."""

    edges_removed: int = 0
    events: int = 0
    recrawl: list[Key] = field(default_factory=list)  # lists whose sync_seen was lost
    held: list[Hold] = field(default_factory=list)  # completed lists held (etl.holds)
    quarantined: int = 0  # items newly recorded as unstorable
    conflicts: int = 0  # profile sightings newly recorded as conflicts
    profiles: int = 0  # profile versions stored for the first time


# The staged lists' statistics are made again only when a batch stages REANALYZE_FACTOR times
# more or fewer lists than the last ANALYZE on the connection saw (and more than SMALL_STAGE):
# the plans need their order of magnitude, and each ANALYZE writes the table's pg_statistic and
# pg_class rows (WAL: about 95 bytes a list on an unchanged re-sync of small lists, when every
# batch analyzed, issue 18).
REANALYZE_FACTOR = 4
SMALL_STAGE = 16  # up to this many lists, the order of magnitude is the same
_ANALYZED = "etl.store.load.analyzed_lists"  # in the DBAPI connection's info: rows analyzed


def _analyze_lists(conn: sa.Connection, d: Dialect, rows: int) -> None:
    info = conn.connection.info
    last = info.get(_ANALYZED)
    if last is not None and (
        max(rows, last) <= REANALYZE_FACTOR * min(rows, last) or max(rows, last) <= SMALL_STAGE
    ):
        return
    d.analyze(conn, "stage_lists")
    info[_ANALYZED] = rows
    # A rollback undoes the statistics: then analyze again next time.
    sa.event.listen(conn, "rollback", _forget_analyzed, once=True)


def _forget_analyzed(conn: sa.Connection) -> None:
    if not conn.invalidated and not conn.closed:
        conn.connection.info.pop(_ANALYZED, None)


class Loader:
    """Writes batches on connections of one backend; makes their staging tables on first use.
    A completed list whose removals would be a mass removal (``thresholds``, etl.holds) is
    held: none of its removals is applied."""

    def __init__(self, dialect: str, thresholds: Thresholds | None = None) -> None:
        self.dialect: Dialect = for_name(dialect)  # "postgresql" or "sqlite"
        self.thresholds = thresholds or Thresholds()
        self._events_from: dict[int, datetime] = {}  # by run (etl.store.reconcile)

    def prepare(self, conn: sa.Connection) -> None:
        """Create the staging tables on this connection (once) and empty them."""
        self.dialect.prepare(conn)

    def write(
        self,
        conn: sa.Connection,
        run_id: int,
        parts: Sequence[ListPart],
        pages: Sequence[tuple[Key, PageRows]],
        now: datetime,
        *,
        known: KnownProfiles | None = None,
    ) -> Written:
        """Store a batch: edges, removals and events of ``parts``; the profile versions of
        ``pages`` (every page of the batch, in order, held or not: profiles are facts about
        users) and their conflicts; the unstorable items of the pages of ``parts``' lists.
        ``known`` (the fetchers' cache) learns what is stored for each version staged."""
        d = self.dialect
        d.prepare(conn)
        params = {"run_id": run_id, "now": now}
        written = Written()
        seen.forget(conn, run_id, [p.key for p in parts if p.mode.restarted])
        written.events += edges.write(conn, d, parts, params)
        keeping = [p.key for p in parts if p.mode.keeps_seen and p.edges]
        if keeping:
            d.remember_seen(conn, run_id, keeping)
        ending = [p for p in parts if p.mode.ends]
        if ending:
            self._end_lists(conn, run_id, ending, params, written)
        held = {p.key for p in parts}
        records = [(key, q) for key, rows in pages if key in held for q in rows.quarantined]
        written.profiles, conflicts = profiles.write(conn, d, pages, params, known)
        records += conflicts
        if records:
            self._record(conn, run_id, records, now, written)
        return written

    def _end_lists(
        self,
        conn: sa.Connection,
        run_id: int,
        ending: Sequence[ListPart],
        params: dict[str, Any],
        written: Written,
    ) -> None:
        """The lists whose last page is in the batch: their removals (unless lost or held),
        the reconciliation of those with a baseline, their baselines, and their sync_seen
        rows dropped."""
        d = self.dialect
        now = params["now"]
        rows = [(*p.key, p.mode.fresh, d.bind_time(p.started or now)) for p in ending]
        d.stage(conn, stage_lists, rows)
        _analyze_lists(conn, d, len(rows))
        searched = [p for p in ending if p.mode.searches]
        if any(p.mode.had_seen for p in ending):
            written.recrawl = seen.lost(conn, run_id)
        if written.recrawl:
            # Their removals cannot be trusted: they are crawled again (etl.sync resets them).
            unstage_lists(conn, written.recrawl)
        if searched and self._hold_back(conn, run_id, searched, params, written):
            removed = edges.mark_unlisted(conn, d, params)
            written.edges_removed = removed
            written.events += removed
        if any(p.baseline for p in ending):
            # After the removals (their events count), before the baselines (which move
            # live_from on).
            events_from = self._run_events(conn, run_id)
            reconcile.record(conn, d, {**params, "events_from": events_from})
        gone = {*written.recrawl, *(h.key for h in written.held)}  # unstaged above
        starts = [(a, t, at) for a, t, _, at in rows if (a, t) not in gone]
        edges.record_baselines(conn, params, starts)
        if any(p.mode.had_seen for p in ending):
            seen.forget_ending(conn, run_id)

    def _run_events(self, conn: sa.Connection, run_id: int) -> datetime:
        """From when the run's crawl events are read (read once per run)."""
        if run_id not in self._events_from:
            self._events_from[run_id] = reconcile.events_from(conn, run_id)
        return self._events_from[run_id]

    def _hold_back(
        self,
        conn: sa.Connection,
        run_id: int,
        searched: Sequence[ListPart],
        params: dict[str, Any],
        written: Written,
    ) -> bool:
        """Count each completed list's removals first; hold (in ``written.held``, unstaged,
        their sync_seen dropped) those that are a mass removal. Whether the other lists have
        any removal to apply."""
        removals = edges.removal_counts(conn, self.dialect, params)
        for part in searched:
            removed = removals.get(part.key, 0)
            if removed < self.thresholds.min_edges:
                continue  # never a mass removal: no count of the list needed
            held = decide(
                self.thresholds,
                part.key,
                removed,
                edges.current_edges(conn, *part.key),
                confirming=part.confirming,
                count=part.info_count,
            )
            if held is not None:
                written.held.append(held)
        keys = [h.key for h in written.held]
        if keys:
            unstage_lists(conn, keys)
            seen.forget(conn, run_id, keys)
        return any(n for key, n in removals.items() if key not in keys)

    def _record(
        self,
        conn: sa.Connection,
        run_id: int,
        records: Sequence[tuple[Key, Quarantined]],
        now: datetime,
        written: Written,
    ) -> None:
        """Add quarantined items; those this run already has for the same list are skipped."""
        unstorable, conflicts = quarantine.record(conn, self.dialect, run_id, records, now)
        written.quarantined += unstorable
        written.conflicts += conflicts
        if unstorable or conflicts:  # the run's summary gives the totals; this says when
            log.info(
                "quarantined %d items that cannot be stored and %d profile conflicts "
                "(`status` lists them)",
                written.quarantined,
                written.conflicts,
            )
