"""crawl starts: two runs crawling one list at once record no false events

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

- sync_checkpoints.crawl_started_at: when the list's crawl began (the claim that started it at
  its first page), by the database's clock; a process that resumes the list keeps it.
- follow_edges.changed_at: when the edge was last inserted, listed again after a removal, or
  marked removed. A crawl removes only edges unchanged since it began, and lists again only
  edges removed before it began: what another run changed meanwhile is not its to undo.
  Null: unchanged since before this revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sync_checkpoints",
        sa.Column(
            "crawl_started_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when the list's crawl began (database clock): it undoes no later change",
        ),
    )
    op.add_column(
        "follow_edges",
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment=(
                "last inserted, listed again, given a new follow time or removed "
                "(null: before 0008)"
            ),
        ),
    )


def downgrade() -> None:
    op.drop_column("follow_edges", "changed_at")
    op.drop_column("sync_checkpoints", "crawl_started_at")
