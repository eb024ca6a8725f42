"""workers, leases, change events and analyst views

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

- sync_checkpoints.lease_owner / .seen: lists are claimed by one worker at a time; the count of
  sync_seen rows a crawl wrote guards the removal check (sync_seen is UNLOGGED on PostgreSQL, so
  a server crash may empty it).
- sync_workers: one heartbeat row per process working on a job (overlap guard, shared budget).
- follow_lists: lists crawled to the end at least once (their baseline).
- follow_edge_events: edges added to or removed from a list with a baseline.
- Views: follows, account_follow_counts, daily_follow_changes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One row per directed relation follower -> followee. A fan list of A that lists B says
# B -> A; a follow list of A that lists B says A -> B. Both may say it: merged, with the
# earliest follow time either gives and which lists said it (1/0).
FOLLOWS = """
CREATE VIEW follows AS
SELECT follower,
       followee,
       MIN(follow_time) AS follow_time,
       MIN(first_seen_at) AS first_seen_at,
       MAX(from_fans) AS in_fans_list,
       MAX(from_follows) AS in_follows_list
FROM (
    SELECT to_account AS follower, account AS followee, follow_time, first_seen_at,
           1 AS from_fans, 0 AS from_follows
    FROM follow_edges WHERE follow_type = 1 AND removed_at IS NULL
    UNION ALL
    SELECT account AS follower, to_account AS followee, follow_time, first_seen_at,
           0 AS from_fans, 1 AS from_follows
    FROM follow_edges WHERE follow_type = 2 AND removed_at IS NULL
) AS said
GROUP BY follower, followee
"""

# Current fans, follows and mutual follows of every crawled account (zeros included).
ACCOUNT_FOLLOW_COUNTS = """
CREATE VIEW account_follow_counts AS
SELECT a.account,
       SUM(CASE WHEN e.follow_type = 1 THEN 1 ELSE 0 END) AS fans,
       SUM(CASE WHEN e.follow_type = 2 THEN 1 ELSE 0 END) AS follows,
       SUM(CASE WHEN e.follow_type = 3 THEN 1 ELSE 0 END) AS mutual
FROM (SELECT account FROM follow_lists UNION SELECT account FROM follow_edges) AS a
LEFT JOIN follow_edges e ON e.account = a.account AND e.removed_at IS NULL
GROUP BY a.account
"""

# Per account, list type and UTC day: edges gained and lost.
DAILY_FOLLOW_CHANGES = """
CREATE VIEW daily_follow_changes AS
SELECT account,
       follow_type,
       {day} AS day,
       SUM(CASE WHEN event = 'added' THEN 1 ELSE 0 END) AS gained,
       SUM(CASE WHEN event = 'removed' THEN 1 ELSE 0 END) AS lost
FROM follow_edge_events
GROUP BY account, follow_type, {day}
"""
DAY = {
    "postgresql": "CAST(observed_at AT TIME ZONE 'UTC' AS DATE)",
    "sqlite": "date(observed_at)",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("sync_checkpoints", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "lease_owner",
                sa.String(),
                nullable=True,
                comment="sync_workers.id crawling the list; void once that worker stops "
                "heartbeating",
            )
        )
        batch_op.add_column(
            sa.Column(
                "seen",
                sa.BigInteger(),
                server_default="0",
                nullable=False,
                comment="rows this crawl put in sync_seen (checked before removals)",
            )
        )
    if dialect == "postgresql":
        # Scratch data: no WAL for it. A crash may empty it; sync_checkpoints.seen detects that.
        op.execute("ALTER TABLE sync_seen SET UNLOGGED")

    op.create_table(
        "sync_workers",
        sa.Column("id", sa.String(), nullable=False, comment="host:pid:random"),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(), nullable=False, comment="sync or worker"),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("calls", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pages", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("items", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("role IN ('sync', 'worker')", name=op.f("ck_sync_workers_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_workers")),
    )
    with op.batch_alter_table("sync_workers", schema=None) as batch_op:
        batch_op.create_index(
            "uq_sync_workers_job_sync",
            ["job"],
            unique=True,
            postgresql_where=sa.text("role = 'sync'"),
            sqlite_where=sa.text("role = 'sync'"),
        )

    op.create_table(
        "follow_lists",
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("follow_type", sa.SmallInteger(), nullable=False),
        sa.Column("baseline_run_id", sa.Integer(), nullable=False),
        sa.Column("baseline_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "follow_type", name=op.f("pk_follow_lists")),
    )

    op.create_table(
        "follow_edge_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("follow_type", sa.SmallInteger(), nullable=False),
        sa.Column("to_account", sa.String(), nullable=False),
        sa.Column("event", sa.String(), nullable=False, comment="added or removed"),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "event IN ('added', 'removed')", name=op.f("ck_follow_edge_events_event")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_follow_edge_events")),
    )
    with op.batch_alter_table("follow_edge_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_follow_edge_events_account_observed_at"),
            ["account", "observed_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_follow_edge_events_observed_at"), ["observed_at"], unique=False
        )

    op.execute(FOLLOWS)
    op.execute(ACCOUNT_FOLLOW_COUNTS)
    op.execute(DAILY_FOLLOW_CHANGES.format(day=DAY.get(dialect, DAY["sqlite"])))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW daily_follow_changes")
    op.execute("DROP VIEW account_follow_counts")
    op.execute("DROP VIEW follows")
    with op.batch_alter_table("follow_edge_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_follow_edge_events_observed_at"))
        batch_op.drop_index(batch_op.f("ix_follow_edge_events_account_observed_at"))
    op.drop_table("follow_edge_events")
    op.drop_table("follow_lists")
    with op.batch_alter_table("sync_workers", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_sync_workers_job_sync",
            postgresql_where=sa.text("role = 'sync'"),
            sqlite_where=sa.text("role = 'sync'"),
        )
    op.drop_table("sync_workers")
    if dialect == "postgresql":
        op.execute("ALTER TABLE sync_seen SET LOGGED")
    with op.batch_alter_table("sync_checkpoints", schema=None) as batch_op:
        batch_op.drop_column("seen")
        batch_op.drop_column("lease_owner")
