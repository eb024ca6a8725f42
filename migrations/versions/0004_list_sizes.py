"""list sizes: biggest lists are claimed first

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

- follow_lists.items: what the list's last complete crawl found (NULL until a crawl completes
  after this revision).
- sync_checkpoints.expected_items: the list's size as known when its run began (its last
  complete crawl, else follow_get_info's count, else 0). Claims take the biggest open list
  first, so a 10,000-call list does not start in the night's last minute.
- ix_sync_checkpoints_open: (run_id, expected_items) over open lists only (pending, running,
  failed): the claim reads it backwards, biggest first, and never walks the lists already done.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status IN ('pending', 'running', 'failed')"


def upgrade() -> None:
    op.add_column(
        "follow_lists",
        sa.Column(
            "items", sa.BigInteger, nullable=True, comment="items its last complete crawl found"
        ),
    )
    op.add_column(
        "sync_checkpoints",
        sa.Column(
            "expected_items",
            sa.BigInteger,
            nullable=False,
            server_default="0",
            comment="the list's size when the run began: claims take the biggest first",
        ),
    )
    op.create_index(
        "ix_sync_checkpoints_open",
        "sync_checkpoints",
        ["run_id", "expected_items"],
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("ix_sync_checkpoints_open", table_name="sync_checkpoints")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy would trip over the views.
    op.drop_column("sync_checkpoints", "expected_items")
    op.drop_column("follow_lists", "items")
