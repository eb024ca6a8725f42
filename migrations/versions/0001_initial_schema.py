"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25

The tables of etl/schema.py and the two views analysts start from:
- current_follow_edges: edges still listed (removed_at is null);
- current_profiles: the highest-sequence snapshot of each user.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_FOLLOW_EDGES = """
CREATE VIEW current_follow_edges AS
SELECT account, follow_type, to_account, follow_time, first_seen_at
FROM follow_edges
WHERE removed_at IS NULL
"""

# Portable (no DISTINCT ON); the correlated MAX walks the primary key index.
CURRENT_PROFILES = """
CREATE VIEW current_profiles AS
SELECT p.*
FROM profile_snapshots p
WHERE p.profile_sequence = (
    SELECT MAX(q.profile_sequence) FROM profile_snapshots q WHERE q.user_id = p.user_id
)
"""


def upgrade() -> None:
    op.create_table(
        "follow_edges",
        sa.Column("account", sa.String(), nullable=False, comment="the From_Account crawled"),
        sa.Column(
            "follow_type", sa.SmallInteger(), nullable=False, comment="1 fans, 2 follows, 3 mutual"
        ),
        sa.Column("to_account", sa.String(), nullable=False),
        sa.Column("follow_time", sa.DateTime(timezone=True), nullable=True, comment="FollowTime"),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "removed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when a complete crawl no longer lists it",
        ),
        sa.CheckConstraint("follow_type IN (1, 2, 3)", name=op.f("ck_follow_edges_follow_type")),
        sa.PrimaryKeyConstraint(
            "account", "follow_type", "to_account", name=op.f("pk_follow_edges")
        ),
    )
    with op.batch_alter_table("follow_edges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_follow_edges_to_account"), ["to_account"], unique=False
        )

    op.create_table(
        "profile_snapshots",
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("profile_sequence", sa.BigInteger(), nullable=False),
        sa.Column("nick", sa.Text(), nullable=True),
        sa.Column("gender", sa.Text(), nullable=True),
        sa.Column("birthday", sa.BigInteger(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("self_signature", sa.Text(), nullable=True),
        sa.Column("allow_type", sa.Text(), nullable=True),
        sa.Column("language", sa.BigInteger(), nullable=True),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("msg_settings", sa.BigInteger(), nullable=True),
        sa.Column("admin_forbid_type", sa.Text(), nullable=True),
        sa.Column("level", sa.BigInteger(), nullable=True),
        sa.Column("role", sa.BigInteger(), nullable=True),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="every Tag -> Value as returned",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "run_id", sa.Integer(), nullable=True, comment="the run that first saw this version"
        ),
        sa.PrimaryKeyConstraint("user_id", "profile_sequence", name=op.f("pk_profile_snapshots")),
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False, comment="running, done or abandoned"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False, comment="types and page size of the run"),
        sa.Column("lists_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lists_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lists_skipped", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lists_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pages", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("items", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("requests", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("edges_removed", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'done', 'abandoned')", name=op.f("ck_sync_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index(
            "uq_sync_runs_job_running",
            ["job"],
            unique=True,
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )

    op.create_table(
        "sync_seen",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("follow_type", sa.SmallInteger(), nullable=False),
        sa.Column("to_account", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint(
            "run_id", "account", "follow_type", "to_account", name=op.f("pk_sync_seen")
        ),
    )
    op.create_table(
        "sync_checkpoints",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("follow_type", sa.SmallInteger(), nullable=False),
        sa.Column(
            "cursor", sa.Text(), server_default="", nullable=False, comment="next StartCursor"
        ),
        sa.Column(
            "status", sa.String(), nullable=False, comment="pending running done skipped failed"
        ),
        sa.Column("pages", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("restarts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "failures", sa.Integer(), server_default="0", nullable=False, comment="given up at 3"
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'done', 'skipped', 'failed')",
            name=op.f("ck_sync_checkpoints_status"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sync_runs.id"],
            name=op.f("fk_sync_checkpoints_run_id_sync_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "run_id", "account", "follow_type", name=op.f("pk_sync_checkpoints")
        ),
    )
    with op.batch_alter_table("sync_checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_checkpoints_run_id_status"), ["run_id", "status"], unique=False
        )

    op.execute(CURRENT_FOLLOW_EDGES)
    op.execute(CURRENT_PROFILES)


def downgrade() -> None:
    op.execute("DROP VIEW current_profiles")
    op.execute("DROP VIEW current_follow_edges")
    with op.batch_alter_table("sync_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_checkpoints_run_id_status"))

    op.drop_table("sync_checkpoints")
    op.drop_table("sync_seen")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_sync_runs_job_running",
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )

    op.drop_table("sync_runs")
    op.drop_table("profile_snapshots")
    with op.batch_alter_table("follow_edges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_follow_edges_to_account"))

    op.drop_table("follow_edges")
