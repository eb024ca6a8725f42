"""sync_seen, the working set of removal detection: every statement that reads or writes it.

What a searched crawl (etl.store.rows.Mode) has seen of a list it has not finished is
remembered here per batch, checked for loss before the list's removals, and dropped when the
list ends, restarts or is held, when its run ends (etl.store.runs), and by ``prune``
(etl.store.retention) for what an ended run left. Where the two backends spell a statement
differently (remembering a batch, finding the seen rows of the lists that end), both
spellings are here and the dialect object (etl.store.dialect) picks its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.store import chunks
from etl.store.rows import Key
from etl.store.schema import sync_seen

# The seen rows of the lists that end in this batch (stage_lists), a source of the removal
# search (etl.store.edges). PostgreSQL reads them list by list through their keys (OFFSET 0
# keeps the planner from flattening it into a join it may hash); SQLite joins by nested loops.
SEEN_OF_ENDING_PG = """stage_lists l CROSS JOIN LATERAL (
        SELECT y.account, y.follow_type, y.to_account FROM sync_seen y
        WHERE y.run_id = :run_id AND y.account = l.account AND y.follow_type = l.follow_type
        OFFSET 0) x"""
SEEN_OF_ENDING_SQLITE = """sync_seen x
    JOIN stage_lists l ON l.account = x.account AND l.follow_type = x.follow_type
    WHERE x.run_id = :run_id"""

_REMEMBER_LIST = sa.text("""
INSERT INTO sync_seen (run_id, account, follow_type, to_account)
SELECT :run_id, s.account, s.follow_type, s.to_account FROM stage_edges s
WHERE s.keep_seen AND s.account = :account AND s.follow_type = :follow_type
ON CONFLICT DO NOTHING
""")
_COUNT_SEEN = sa.text(
    "UPDATE sync_checkpoints SET seen = seen + :added WHERE run_id = :run_id "
    "AND account = :account AND follow_type = :follow_type"
)

# Every list's new sync_seen rows and its seen counter in one statement (PostgreSQL). Each
# list's checkpoint is found by its key on its own and updated by its ctid (the batch's
# advance updated and locked it first): no join that reads the whole run (see HOLD in
# etl.store.dialect.postgres_checkpoints).
_REMEMBER_ALL = sa.text("""
WITH added AS (
    INSERT INTO sync_seen (run_id, account, follow_type, to_account)
    SELECT :run_id, s.account, s.follow_type, s.to_account FROM stage_edges s WHERE s.keep_seen
    ON CONFLICT DO NOTHING
    RETURNING account, follow_type
), n AS MATERIALIZED (
    SELECT a.k, c.tid
    FROM (SELECT account, follow_type, count(*) AS k FROM added GROUP BY account, follow_type) a
    CROSS JOIN LATERAL (
        SELECT x.ctid AS tid FROM sync_checkpoints x
        WHERE x.run_id = :run_id AND x.account = a.account AND x.follow_type = a.follow_type
        OFFSET 0) c
)
UPDATE sync_checkpoints c SET seen = c.seen + n.k
FROM n
WHERE c.ctid = n.tid
""")

# Each ending list's checkpoint by its key (a correlated subquery, on both databases).
_MISMATCH = sa.text("""
SELECT k.account, k.follow_type FROM (
    SELECT l.account, l.follow_type,
        (SELECT c.seen FROM sync_checkpoints c WHERE c.run_id = :run_id
         AND c.account = l.account AND c.follow_type = l.follow_type) AS seen
    FROM stage_lists l WHERE NOT l.fresh) AS k
WHERE k.seen > 0 AND k.seen <> (
    SELECT count(*) FROM sync_seen x
    WHERE x.run_id = :run_id AND x.account = k.account AND x.follow_type = k.follow_type)
""")

_FORGET_ENDING = sa.text("""
DELETE FROM sync_seen WHERE run_id = :run_id AND EXISTS (
    SELECT 1 FROM stage_lists l
    WHERE l.account = sync_seen.account AND l.follow_type = sync_seen.follow_type)
""")


def remember_each(conn: sa.Connection, run_id: int, keys: Sequence[Key]) -> None:
    """Keep the staged To_Accounts of these lists (stage_edges.keep_seen), one list at a
    time, and count them in each list's checkpoint."""
    for account, follow_type in keys:
        key = {"run_id": run_id, "account": account, "follow_type": follow_type}
        added = conn.execute(_REMEMBER_LIST, key).rowcount
        conn.execute(_COUNT_SEEN, {"added": added, **key})


def remember_all(conn: sa.Connection, run_id: int) -> None:
    """Keep every staged To_Account marked keep_seen, and count them, in one statement."""
    conn.execute(_REMEMBER_ALL, {"run_id": run_id})


def lost(conn: sa.Connection, run_id: int) -> list[Key]:
    """The staged lists that end whose sync_seen rows are not all there (a crash emptied it)."""
    rows = conn.execute(_MISMATCH, {"run_id": run_id})
    return [(account, follow_type) for account, follow_type in rows]


def forget_ending(conn: sa.Connection, run_id: int) -> None:
    """Drop the sync_seen rows of the staged lists that end (stage_lists)."""
    conn.execute(_FORGET_ENDING, {"run_id": run_id})


def forget(conn: sa.Connection, run_id: int, keys: Sequence[Key]) -> None:
    """Drop what earlier pages of these lists recorded in sync_seen."""
    if keys:
        conn.execute(
            sa.text(
                "DELETE FROM sync_seen WHERE run_id = :run_id "
                "AND account = :account AND follow_type = :follow_type"
            ),
            [{"run_id": run_id, "account": a, "follow_type": t} for a, t in keys],
        )


def forget_run(conn: sa.Connection, run_id: int) -> None:
    """Drop a run's whole removal-check working set (the run ended or was abandoned)."""
    conn.execute(sa.text("DELETE FROM sync_seen WHERE run_id = :run_id"), {"run_id": run_id})


def prune_run(
    engine: Engine, run_id: int, *, chunk: int, stop: threading.Event | None = None
) -> int:
    """Delete what an ended run left in sync_seen, ``chunk`` rows per transaction (Stopped
    between chunks once ``stop`` is set); how many went."""
    return chunks.delete_chunks(engine, sync_seen, sync_seen.c.run_id == run_id, chunk, stop)
