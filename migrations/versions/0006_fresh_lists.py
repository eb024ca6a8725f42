"""fresh lists: a crawl that began with nothing stored keeps no sync_seen rows

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- sync_checkpoints.fresh: the list's crawl began at its start while no current edge of it was
  stored, and has not restarted since. Every current edge of such a list is one this crawl
  listed, so it needs neither sync_seen rows nor a search for removed edges; the flag lets a
  process that resumes the list (after a crash, or a lease taken over) know it too.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sync_checkpoints",
        sa.Column(
            "fresh",
            sa.Boolean,
            nullable=False,
            server_default=sa.false(),
            comment="the crawl began with no current edge stored: no sync_seen, no removals",
        ),
    )


def downgrade() -> None:
    op.drop_column("sync_checkpoints", "fresh")
