"""held lists: a crawl that would remove most of a list's stored edges waits for confirmation

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

- sync_checkpoints.status may be 'held': the list's crawl would have marked removed a large
  share of its stored edges (an empty or short last page, or 30003), so nothing was removed
  and the list waits for a confirming second crawl (etl.holds).
- sync_checkpoints.held_removed, held_current, held_ending, held_at: what the crawl that held
  it saw (R edges to remove of S current ones, how it ended, when).
- sync_run_counters.held: held lists of the run.
- ix_sync_checkpoints_open covers held lists too (a held list still has its second crawl).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_OPEN = "status IN ('pending', 'running', 'failed')"
NEW_OPEN = "status IN ('pending', 'running', 'failed', 'held')"
OLD_STATUS = "status IN ('pending', 'running', 'done', 'skipped', 'failed')"
NEW_STATUS = "status IN ('pending', 'running', 'done', 'skipped', 'failed', 'held')"
CHECK = "ck_sync_checkpoints_status"
OLD_COMMENT = "pending running done skipped failed"
NEW_COMMENT = "pending running done skipped failed held"


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "held_removed",
            sa.BigInteger,
            nullable=True,
            comment="held: edges the crawl would have marked removed (R)",
        ),
        sa.Column(
            "held_current",
            sa.BigInteger,
            nullable=True,
            comment="held: current edges stored for the list then (S)",
        ),
        sa.Column(
            "held_ending",
            sa.String,
            nullable=True,
            comment="held: how the crawl ended (last_page, missing)",
        ),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=True, comment="held: when"),
    ]


def _status_check(status: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f(CHECK), "sync_checkpoints", type_="check")
        op.create_check_constraint(op.f(CHECK), "sync_checkpoints", sa.text(status))
        return
    # SQLite cannot alter a CHECK constraint: the table is copied with the new one.
    with op.batch_alter_table("sync_checkpoints", recreate="always") as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")
        batch.create_check_constraint(op.f(CHECK), sa.text(status))


def _status_comment(comment: str, before: str) -> None:
    if op.get_bind().dialect.name == "postgresql":  # SQLite keeps no comments
        op.alter_column(
            "sync_checkpoints",
            "status",
            existing_type=sa.String(),
            existing_nullable=False,
            comment=comment,
            existing_comment=before,
        )


def _open_index(where: str) -> None:
    op.drop_index("ix_sync_checkpoints_open", table_name="sync_checkpoints")
    op.create_index(
        "ix_sync_checkpoints_open",
        "sync_checkpoints",
        ["run_id", "expected_items"],
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    for column in _columns():
        op.add_column("sync_checkpoints", column)
    op.add_column(
        "sync_run_counters",
        sa.Column(
            "held",
            sa.BigInteger,
            nullable=False,
            server_default="0",
            comment="lists held for a mass removal (etl.holds)",
        ),
    )
    _status_check(NEW_STATUS)
    _status_comment(NEW_COMMENT, OLD_COMMENT)
    _open_index(NEW_OPEN)


def downgrade() -> None:
    op.execute("UPDATE sync_checkpoints SET status = 'failed' WHERE status = 'held'")
    _open_index(OLD_OPEN)
    _status_check(OLD_STATUS)
    _status_comment(OLD_COMMENT, NEW_COMMENT)
    op.drop_column("sync_run_counters", "held")
    for column in reversed(_columns()):
        op.drop_column("sync_checkpoints", column.name)
