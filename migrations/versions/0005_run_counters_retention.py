"""run counters and retention: status stops recounting checkpoints, old checkpoints can go

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

- sync_run_counters: a run's lists by status, pages and items, kept by the transactions that
  change its checkpoints, one row per (run, server backend) so concurrent batches never share
  a row; summed on read. Backfilled here from the checkpoints of every run already stored.
- sync_runs.pruned_at: when `prune` deleted the run's checkpoints (its counters stay).
- ix_sync_checkpoints_errors: the lists of a run that carry an error (what `status` lists),
  a partial index over those lists only.
- ix_sync_checkpoints_run_id_status is dropped: nothing reads the checkpoints by status any
  more (counts come from sync_run_counters; claims from ix_sync_checkpoints_open; the rest
  read one run's rows by the primary key), and every status change paid for it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_FAILURES = 3  # etl.runs.MAX_FAILURES when this revision was written
COUNTED = (
    ("pending", "lists by status (a shard's share may be negative; the sum is not)"),
    ("running", None),
    ("done", None),
    ("skipped", None),
    ("failed", None),
    ("retryable", "failed lists with fewer than 3 failures (still open)"),
    ("pages", None),
    ("items", None),
)
ERRORS = "last_error IS NOT NULL"

BACKFILL = f"""
INSERT INTO sync_run_counters
    (run_id, shard, pending, running, done, skipped, failed, retryable, pages, items, moved_at)
SELECT run_id, 0,
       SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'skipped' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'failed' AND failures < {MAX_FAILURES} THEN 1 ELSE 0 END),
       SUM(pages), SUM(items), MAX(updated_at)
FROM sync_checkpoints
GROUP BY run_id
"""


def upgrade() -> None:
    op.create_table(
        "sync_run_counters",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column(
            "shard",
            sa.Integer(),
            autoincrement=False,
            nullable=False,
            comment="pg_backend_pid() of the transactions that wrote it (0: SQLite, or a backfill)",
        ),
        *(
            sa.Column(name, sa.BigInteger(), server_default="0", nullable=False, comment=comment)
            for name, comment in COUNTED
        ),
        sa.Column(
            "moved_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when a list of the run last moved",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sync_runs.id"],
            name=op.f("fk_sync_run_counters_run_id_sync_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "shard", name=op.f("pk_sync_run_counters")),
    )
    op.execute(BACKFILL)
    op.add_column(
        "sync_runs",
        sa.Column(
            "pruned_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when `prune` deleted the run's checkpoints (its counters stay)",
        ),
    )
    op.create_index(
        "ix_sync_checkpoints_errors",
        "sync_checkpoints",
        ["run_id", "account", "follow_type"],
        postgresql_where=sa.text(ERRORS),
        sqlite_where=sa.text(ERRORS),
    )
    op.drop_index("ix_sync_checkpoints_run_id_status", table_name="sync_checkpoints")


def downgrade() -> None:
    op.create_index("ix_sync_checkpoints_run_id_status", "sync_checkpoints", ["run_id", "status"])
    op.drop_index("ix_sync_checkpoints_errors", table_name="sync_checkpoints")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy would trip over the views.
    op.drop_column("sync_runs", "pruned_at")
    op.drop_table("sync_run_counters")
