"""PostgreSQL's statements of a batch's leases and cursors (etl.store.leases.hold,
etl.store.cursors.advance), kept beside the dialect that runs them (etl.store.dialect.postgres)."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.store.rows import Key, ListPart
from etl.store.schema import sync_checkpoints

# A share lock on the run's row, before any other lock of the batch (etl.store.leases.hold).
RUN_OPEN = sa.text("SELECT 1 FROM sync_runs WHERE id = :run_id AND status = 'running' FOR SHARE")
# The batch's keys as two arrays: one fixed text whatever the batch's size (prepared once, and
# planned as one join on the primary key, not as hundreds of OR-ed index conditions).
HOLD_QUERY = """
SELECT c.account, c.follow_type
FROM unnest(CAST(:accounts AS text[]), CAST(:types AS smallint[])) AS v(account, follow_type)
JOIN sync_checkpoints c
  ON c.run_id = :run_id AND c.account = v.account AND c.follow_type = v.follow_type
WHERE c.lease_owner = :owner
"""
HOLD = sa.text(HOLD_QUERY + "FOR UPDATE OF c")
# The lists the batch's advance updates, checked, not locked: a row lock is a WAL record (54
# bytes a list); the advance, the batch's next statement, locks them and checks the lease again.
LEASED = sa.text(HOLD_QUERY)

# One statement: the old standing of each list moved (for the run's counters; the CTEs see the
# rows as they were before the UPDATE), and the update itself: with an owner, of the lists it
# still leases only (a list a claim took over since hold checked it is left out).
ADVANCE = sa.text("""
WITH v AS (
    SELECT * FROM unnest(CAST(:accounts AS text[]), CAST(:types AS smallint[]),
                         CAST(:cursors AS text[]), CAST(:pages AS int[]),
                         CAST(:items AS bigint[]), CAST(:complete AS bool[]),
                         CAST(:restarted AS bool[]), CAST(:fresh AS bool[]),
                         CAST(:started AS timestamptz[]))
         AS v(account, follow_type, cursor, pages, items, complete, restarted, fresh, started)
), old AS (
    SELECT c.account, c.follow_type, c.status, c.failures, c.pages, c.items
    FROM sync_checkpoints c JOIN v ON c.account = v.account AND c.follow_type = v.follow_type
    WHERE c.run_id = :run_id
), moved AS (
    UPDATE sync_checkpoints c SET
        cursor = v.cursor,
        status = CASE WHEN v.complete THEN 'done' ELSE 'running' END,
        pages = CASE WHEN v.restarted THEN v.pages ELSE c.pages + v.pages END,
        items = CASE WHEN v.restarted THEN v.items ELSE c.items + v.items END,
        restarts = c.restarts + CASE WHEN v.restarted THEN 1 ELSE 0 END,
        seen = CASE WHEN v.restarted THEN 0 ELSE c.seen END,
        fresh = v.fresh,
        crawl_started_at = CASE WHEN v.restarted THEN v.started ELSE c.crawl_started_at END,
        lease_owner = CASE WHEN v.complete THEN NULL ELSE c.lease_owner END,
        last_error = NULL,
        updated_at = :now
    FROM v
    WHERE c.run_id = :run_id AND c.account = v.account AND c.follow_type = v.follow_type
      AND (CAST(:owner AS text) IS NULL OR c.lease_owner = CAST(:owner AS text))
    RETURNING c.account, c.follow_type
)
SELECT old.account, old.follow_type, old.status, old.failures, old.pages, old.items
FROM old JOIN moved ON moved.account = old.account AND moved.follow_type = old.follow_type
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
