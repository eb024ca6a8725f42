"""The statements of a run's checkpoints on PostgreSQL (sync_checkpoints): the claim, the
batch's hold (or its unlocked check) and advance. etl.store.dialect.postgres runs them.

Each reads its lists through the indexes whatever the planner believes of the run: a run newer
than the statistics looks tiny to it, and a plan that joins or scans "the few rows of the run"
then reads every checkpoint of the run (tests/integration/test_plans.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.store.rows import Key, ListPart
from etl.store.schema import MAX_FAILURES, OPEN_STATUSES, sync_checkpoints

# One statement: pick free lists of an open run without waiting for other claimers (touched
# first, each group biggest first: a backward walk of ix_sync_checkpoints_open, no sort), lease
# them, stamp the start of each crawl that begins at its first page, and say which have a
# baseline. Liveness and starts by the server's clock. A checkpoint resumed from before
# revision 0008 has no start: its run's start is earlier still, the safe side.
# Fixed text, so psycopg prepares it once.
# The picked rows are found once (a MATERIALIZED CTE) and updated by their ctid, which they
# keep while locked: whatever the planner believes of a run too new for its statistics, it
# cannot re-run the pick per row of the run (it did: 360 ms a claim beside 9 million older
# checkpoints).
CLAIM = """
WITH free AS MATERIALIZED (
    SELECT ctid FROM sync_checkpoints
    WHERE run_id = :run_id AND {open_statuses}
      AND EXISTS (SELECT 1 FROM sync_runs WHERE id = :run_id AND status = 'running')
      AND ({pick})
      AND (lease_owner IS NULL
           OR (lease_owner <> :owner
               AND lease_owner NOT IN (SELECT id FROM sync_workers
                                       WHERE expires_at > statement_timestamp())))
    ORDER BY touched DESC, expected_items DESC
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE sync_checkpoints c SET lease_owner = :owner,
    crawl_started_at = CASE WHEN c.cursor = '' THEN statement_timestamp()
        ELSE coalesce(c.crawl_started_at,
                      (SELECT started_at FROM sync_runs WHERE id = :run_id)) END
FROM free
WHERE c.ctid = free.ctid
RETURNING c.account, c.follow_type, c.cursor, c.seen, c.expected_items, c.crawl_started_at,
    EXISTS (SELECT 1 FROM follow_lists l
            WHERE l.account = c.account AND l.follow_type = c.follow_type) AS baseline,
    CASE WHEN c.cursor = '' THEN NOT EXISTS (
        SELECT 1 FROM follow_edges e
        WHERE e.account = c.account AND e.follow_type = c.follow_type AND e.removed_at IS NULL
    ) ELSE c.fresh END AS fresh,
    c.held_at IS NOT NULL AS confirming, c.touched
"""
_PICK = f"""status IN ('pending', 'running')
           OR (status = 'failed' AND failures < {MAX_FAILURES} AND updated_at < :failed_before)"""
# Held lists come after every other open list of the run (a second claim, when the first finds
# fewer than it wants): their confirming crawl is the last thing a run does, not the first.
_HELD = f"status = 'held' AND failures < {MAX_FAILURES}"
CLAIMS = {
    False: sa.text(CLAIM.format(open_statuses=OPEN_STATUSES, pick=_PICK)).bindparams(
        sa.bindparam("failed_before", type_=sync_checkpoints.c.updated_at.type)
    ),
    True: sa.text(CLAIM.format(open_statuses=OPEN_STATUSES, pick=_HELD)),
}

# A share lock on the run's row, before any other lock of the batch (etl.store.leases.hold).
RUN_OPEN = sa.text("SELECT 1 FROM sync_runs WHERE id = :run_id AND status = 'running' FOR SHARE")
# The batch's keys as two arrays: one fixed text whatever the batch's size (prepared once).
# Each key is looked up on its own (a LATERAL subquery that locks, or has OFFSET 0: never
# pulled up into a join), so no plan reads the whole run: a generic plan made while the
# statistics still thought the run small did, a hash join over every checkpoint of the run,
# for every batch.
_HOLD = """
SELECT c.account, c.follow_type
FROM unnest(CAST(:accounts AS text[]), CAST(:types AS smallint[])) AS v(account, follow_type)
CROSS JOIN LATERAL (
    SELECT x.account, x.follow_type FROM sync_checkpoints x
    WHERE x.run_id = :run_id AND x.account = v.account AND x.follow_type = v.follow_type
      AND x.lease_owner = :owner
    {lock}) c
"""
HOLD = sa.text(_HOLD.format(lock="FOR UPDATE"))
# The lists the batch's advance updates, checked, not locked: a row lock is a WAL record (54
# bytes a list); the advance, the batch's next statement, locks them and checks the lease again.
LEASED = sa.text(_HOLD.format(lock="OFFSET 0"))

# One statement: the old standing of each list moved (for the run's counters; the CTEs see the
# rows as they were before the UPDATE), and the update itself: with an owner, of the lists it
# still leases only (a list a claim took over since hold checked it is left out). Each key is
# looked up by the primary key on its own (LATERAL, OFFSET 0: see HOLD); the update finds its
# rows by the keys the lookup returned, run id included, so the planner has no "rows of this
# run" to scan, only keys to look up.
ADVANCE = sa.text("""
WITH v AS (
    SELECT * FROM unnest(CAST(:accounts AS text[]), CAST(:types AS smallint[]),
                         CAST(:cursors AS text[]), CAST(:pages AS int[]),
                         CAST(:items AS bigint[]), CAST(:complete AS bool[]),
                         CAST(:restarted AS bool[]), CAST(:fresh AS bool[]),
                         CAST(:started AS timestamptz[]))
         AS v(account, follow_type, cursor, pages, items, complete, restarted, fresh, started)
), old AS MATERIALIZED (
    SELECT v.*, c.run_id, c.status AS was, c.failures, c.pages AS pages_before,
        c.items AS items_before
    FROM v CROSS JOIN LATERAL (
        SELECT x.run_id, x.status, x.failures, x.pages, x.items
        FROM sync_checkpoints x
        WHERE x.run_id = :run_id AND x.account = v.account AND x.follow_type = v.follow_type
        OFFSET 0) c
), moved AS (
    UPDATE sync_checkpoints c SET
        cursor = o.cursor,
        status = CASE WHEN o.complete THEN 'done' ELSE 'running' END,
        pages = CASE WHEN o.restarted THEN o.pages ELSE c.pages + o.pages END,
        items = CASE WHEN o.restarted THEN o.items ELSE c.items + o.items END,
        restarts = c.restarts + CASE WHEN o.restarted THEN 1 ELSE 0 END,
        seen = CASE WHEN o.restarted THEN 0 ELSE c.seen END,
        fresh = o.fresh,
        crawl_started_at = CASE WHEN o.restarted THEN o.started ELSE c.crawl_started_at END,
        lease_owner = CASE WHEN o.complete THEN NULL ELSE c.lease_owner END,
        last_error = NULL,
        updated_at = :now
    FROM old o
    WHERE c.run_id = o.run_id AND c.account = o.account AND c.follow_type = o.follow_type
      AND (CAST(:owner AS text) IS NULL OR c.lease_owner = CAST(:owner AS text))
    RETURNING c.account, c.follow_type
)
SELECT o.account, o.follow_type, o.was AS status, o.failures, o.pages_before AS pages,
    o.items_before AS items
FROM old o JOIN moved m ON m.account = o.account AND m.follow_type = o.follow_type
""").bindparams(sa.bindparam("now", type_=sync_checkpoints.c.updated_at.type))


def leased_keys(
    conn: sa.Connection, statement: sa.TextClause, run_id: int, owner: str, keys: Sequence[Key]
) -> set[Key]:
    """The lists among ``keys`` that ``owner`` leases (HOLD: and locked)."""
    if not keys:
        return set()
    params = {"run_id": run_id, "owner": owner, "accounts": [a for a, _ in keys]}
    params["types"] = [t for _, t in keys]
    return {(r.account, r.follow_type) for r in conn.execute(statement, params)}


def advance_params(
    run_id: int, parts: Sequence[ListPart], now: datetime, owner: str | None
) -> dict[str, Any]:
    """ADVANCE's parameters (``owner`` None: whoever leases the lists)."""
    return {
        "run_id": run_id,
        "owner": owner,
        "now": now,
        "accounts": [p.account for p in parts],
        "types": [p.follow_type for p in parts],
        "cursors": [p.next_cursor for p in parts],
        "pages": [p.pages for p in parts],
        "items": [len(p.edges) for p in parts],
        "complete": [p.mode.ends for p in parts],
        "restarted": [p.mode.restarted for p in parts],
        "fresh": [p.mode.fresh for p in parts],
        "started": [p.started or now if p.mode.restarted else None for p in parts],
    }
