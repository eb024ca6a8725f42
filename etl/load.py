"""Writes of crawled rows. Every function takes a connection and never commits: the caller
(etl.sync) owns the transaction, so rows and the cursor that follows them commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from etl.schema import follow_edges, profile_snapshots, sync_seen


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (both Postgres and SQLite do)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def upsert_edges(conn: sa.Connection, edges: Sequence[dict[str, Any]], now: datetime) -> None:
    """Insert new edges; touch a known edge only if its follow time changed or it came back."""
    if not edges:
        return
    stmt = _insert(conn, follow_edges)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account", "follow_type", "to_account"],
        set_={"follow_time": stmt.excluded.follow_time, "removed_at": None},
        # Unchanged rows are left alone: no new row version, no WAL for them.
        where=sa.or_(
            follow_edges.c.follow_time.is_distinct_from(stmt.excluded.follow_time),
            follow_edges.c.removed_at.is_not(None),
        ),
    )
    conn.execute(stmt, [{**edge, "first_seen_at": now} for edge in edges])


def insert_profiles(
    conn: sa.Connection, profiles: Sequence[dict[str, Any]], now: datetime, run_id: int
) -> None:
    """Store profile versions not seen before; a stored (user, sequence) is never rewritten."""
    if not profiles:
        return
    stmt = _insert(conn, profile_snapshots).on_conflict_do_nothing(
        index_elements=["user_id", "profile_sequence"]
    )
    conn.execute(stmt, [{**row, "first_seen_at": now, "run_id": run_id} for row in profiles])


def remember_seen(
    conn: sa.Connection, run_id: int, account: str, follow_type: int, to_accounts: Sequence[str]
) -> None:
    """Record the To_Accounts of a page that is not the list's last, for the removal check."""
    if not to_accounts:
        return
    stmt = _insert(conn, sync_seen).on_conflict_do_nothing()
    key = {"run_id": run_id, "account": account, "follow_type": follow_type}
    conn.execute(stmt, [{**key, "to_account": to_account} for to_account in to_accounts])


def forget_seen(conn: sa.Connection, run_id: int, account: str, follow_type: int) -> None:
    """Drop what earlier pages of this list recorded (the list is complete, or restarts)."""
    conn.execute(
        sa.delete(sync_seen).where(
            sync_seen.c.run_id == run_id,
            sync_seen.c.account == account,
            sync_seen.c.follow_type == follow_type,
        )
    )


def mark_removed(
    conn: sa.Connection,
    run_id: int,
    account: str,
    follow_type: int,
    last_page: Sequence[str],
    now: datetime,
    earlier_pages: bool,
) -> int:
    """After a complete crawl: edges of the list that neither the last page nor an earlier page
    (``earlier_pages``: recorded in sync_seen) listed get ``removed_at``. Returns how many."""
    e = follow_edges.c
    listed_before = (
        sa.select(sa.literal(1))
        .where(
            sync_seen.c.run_id == run_id,
            sync_seen.c.account == e.account,
            sync_seen.c.follow_type == e.follow_type,
            sync_seen.c.to_account == e.to_account,
        )
        .exists()
    )
    conditions = [e.account == account, e.follow_type == follow_type, e.removed_at.is_(None)]
    if earlier_pages:
        conditions.append(~listed_before)
    if last_page:
        conditions.append(e.to_account.not_in(last_page))
    result = conn.execute(sa.update(follow_edges).where(*conditions).values(removed_at=now))
    return result.rowcount


def mark_all_removed(conn: sa.Connection, account: str, follow_type: int, now: datetime) -> int:
    """The account no longer exists (30003): every listed edge of this list is removed."""
    e = follow_edges.c
    result = conn.execute(
        sa.update(follow_edges)
        .where(e.account == account, e.follow_type == follow_type, e.removed_at.is_(None))
        .values(removed_at=now)
    )
    return result.rowcount
