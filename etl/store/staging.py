"""The staging tables a batch goes through on its way into the stored tables.

Temporary, one set per connection, emptied at each commit on PostgreSQL (each dialect of
etl.store.dialect makes and fills them). Their columns come from the tables they feed, so a new
column is declared once (etl.store.schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from etl.store.schema import follow_edges, profile_snapshots, sync_checkpoints
from etl.tencent.profile import PROFILE_ROW

_staging = sa.MetaData()


def _temporary(name: str, *columns: sa.Column[Any], key: Sequence[str]) -> sa.Table:
    """A staging table; its rows are unique by ``key`` (the writer merges a batch first).

    Only SQLite gets an index on the key (``Sqlite.prepare``): it serves its correlated
    lookups. PostgreSQL hashes the few thousand staged rows where a statement needs them,
    and maintaining a key index cost more than the rest of the COPY (1.8 µs a row with it,
    0.6 without, measured on stage_edges).
    """
    return sa.Table(
        name,
        _staging,
        *columns,
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DELETE ROWS",
        info={"key": tuple(key)},
    )


def _like(table: sa.Table, *names: str) -> list[sa.Column[Any]]:
    """Copies of ``table``'s columns ``names`` (NOT NULL, as staged rows always have them)."""
    return [sa.Column(name, table.c[name].type, nullable=False) for name in names]


stage_edges = _temporary(
    "stage_edges",
    *_like(follow_edges, "account", "follow_type", "to_account"),
    sa.Column("follow_time", sa.BigInteger),  # Unix seconds; follow_edges keeps a timestamp
    sa.Column("baseline", sa.Boolean, nullable=False),
    sa.Column("keep_seen", sa.Boolean, nullable=False),  # Mode.keeps_seen
    sa.Column("fresh", sa.Boolean, nullable=False),  # Mode.fresh
    key=("account", "follow_type", "to_account"),
)
stage_lists = _temporary(
    "stage_lists",
    *_like(follow_edges, "account", "follow_type"),
    sa.Column("fresh", sa.Boolean, nullable=False),  # Mode.fresh: no removal search
    *_like(sync_checkpoints, "crawl_started_at"),  # ListPart.started: what it may remove
    key=("account", "follow_type"),
)
stage_profiles = _temporary(
    "stage_profiles",
    *_like(profile_snapshots, "user_id", "profile_sequence"),
    *(
        sa.Column(
            name,
            sa.Text if name == "tags" else profile_snapshots.c[name].type,  # tags: JSON text
            nullable=name not in ("tags", "content_digest"),
        )
        for name in PROFILE_ROW[2:]  # the order etl.tencent.profile builds rows in
    ),
    key=("user_id", "profile_sequence"),
)
STAGES = (stage_edges, stage_lists, stage_profiles)
STAGE_EDGE_COLUMNS = tuple(stage_edges.c.keys())
STAGED_MARK = "etl.store.load.staged"  # in the DBAPI connection's info: its staging tables exist


def forget_stages(conn: sa.Connection) -> None:
    """Forget that this connection's staging tables exist (its transaction rolled back)."""
    # An invalidated connection has no DBAPI connection to ask (asking would reconnect); its
    # info goes with it, and the next DBAPI connection starts with an empty one.
    if not conn.invalidated and not conn.closed:
        conn.connection.info.pop(STAGED_MARK, None)


def unstage_lists(conn: sa.Connection, keys: Sequence[tuple[str, int]]) -> None:
    """Take these lists out of stage_lists (their removals are not applied in this batch)."""
    conn.execute(
        sa.text("DELETE FROM stage_lists WHERE account = :account AND follow_type = :follow_type"),
        [{"account": account, "follow_type": follow_type} for account, follow_type in keys],
    )
