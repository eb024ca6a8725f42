"""live callbacks: follow webhooks applied to the graph, and the crawl's reconciliation

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

- follow_edges.time_provisional: the follow_time is a callback's EventTime (in seconds) until a
  crawl stores the API's FollowTime. The view current_follow_edges shows it.
- follow_edge_events.source: 'crawl' (what a sync saw change) or 'callback' (what `listen`
  applied); run_id is null for callback events (no run made them).
- follow_lists.crawled_at: the start of the list's last complete crawl (database clock): a
  callback older than it is stale for the list, which the crawl already saw after it.
- follow_lists.live_from: when the first callback change to the list since its last complete
  crawl was applied (null: none): a sync can crawl these lists first (--changed-first), and the
  crawl that completes the list reconciles the callback changes from then on.
- sync_checkpoints.touched: callbacks changed the list since its last complete crawl when the
  run listed it with --changed-first; claims take touched lists first, each group biggest
  first (the open-lists index leads with it).
- live_pairs: per unordered pair of accounts, the newest callback applied in each direction
  (EventTime in ms, followed or not): the ordering rule for duplicated and reordered callbacks,
  and the row two listeners lock, so a mutual follow is decided once.
- list_reconciliation: per run and list with anything to reconcile, the callback changes the
  crawl confirmed (live) and the edges it had to add or remove (the callbacks' drift); the
  view run_reconciliation sums them per run.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)
SOURCE_CHECK = "ck_follow_edge_events_source"
OPEN_STATUSES = "status IN ('pending', 'running', 'failed', 'held')"  # as of this revision
TOUCHED_COMMENT = "changed by callbacks since its last complete crawl (--changed-first)"
PROVISIONAL_COMMENT = "follow_time is a callback's EventTime until a crawl stores FollowTime"

OLD_CURRENT_FOLLOW_EDGES = """
CREATE VIEW current_follow_edges AS
SELECT account, follow_type, to_account, follow_time, first_seen_at
FROM follow_edges
WHERE removed_at IS NULL
"""
CURRENT_FOLLOW_EDGES = """
CREATE VIEW current_follow_edges AS
SELECT account, follow_type, to_account, follow_time, first_seen_at, time_provisional
FROM follow_edges
WHERE removed_at IS NULL
"""

# As revision 0002 made it (over follow_edge_events, which SQLite copies here).
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

# Per run: the lists it reconciled, the changes the callbacks brought (live) and those the
# crawl had to make (drift), and the share seen live (null: nothing changed).
RUN_RECONCILIATION = """
CREATE VIEW run_reconciliation AS
SELECT run_id,
       count(*) AS lists,
       sum(live) AS live,
       sum(added) AS missed_added,
       sum(removed) AS missed_removed,
       sum(added + removed) AS drift,
       CASE WHEN sum(live + added + removed) = 0 THEN NULL
            ELSE 1.0 * sum(live) / sum(live + added + removed) END AS live_share
FROM list_reconciliation
GROUP BY run_id
"""


def upgrade() -> None:
    op.execute("DROP VIEW current_follow_edges")
    op.add_column(
        "follow_edges",
        sa.Column(
            "time_provisional",
            sa.Boolean(),
            nullable=False,
            server_default=sa.false(),
            comment=PROVISIONAL_COMMENT,
        ),
    )
    op.execute(CURRENT_FOLLOW_EDGES)

    # SQLite copies the table to make run_id nullable: the view over it goes and comes back.
    day = DAY[op.get_bind().dialect.name]
    op.execute("DROP VIEW daily_follow_changes")
    with op.batch_alter_table("follow_edge_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "source",
                sa.String(),
                nullable=False,
                server_default="crawl",
                comment="crawl or callback",
            )
        )
        batch_op.alter_column("run_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_check_constraint(
            op.f(SOURCE_CHECK), sa.text("source IN ('crawl', 'callback')")
        )

    op.execute(DAILY_FOLLOW_CHANGES.format(day=day))

    op.add_column(
        "follow_lists",
        sa.Column(
            "crawled_at",
            Timestamp,
            nullable=True,
            comment="start of its last complete crawl: older callbacks are stale for it",
        ),
    )
    op.add_column(
        "follow_lists",
        sa.Column(
            "live_from",
            Timestamp,
            nullable=True,
            comment="first callback change since its last complete crawl (null: none)",
        ),
    )
    op.create_index(
        "ix_follow_lists_live_from",
        "follow_lists",
        ["live_from"],
        postgresql_where=sa.text("live_from IS NOT NULL"),
        sqlite_where=sa.text("live_from IS NOT NULL"),
    )

    op.add_column(
        "sync_checkpoints",
        sa.Column(
            "touched",
            sa.Boolean(),
            nullable=False,
            server_default=sa.false(),
            comment=TOUCHED_COMMENT,
        ),
    )
    _open_index(["run_id", "touched", "expected_items"])

    op.create_table(
        "live_pairs",
        sa.Column("low", sa.String(), nullable=False, comment="the lesser account id"),
        sa.Column("high", sa.String(), nullable=False, comment="the greater account id"),
        sa.Column("low_ms", sa.BigInteger(), nullable=True, comment="EventTime: low -> high"),
        sa.Column("low_follows", sa.Boolean(), nullable=True, comment="low follows high"),
        sa.Column("high_ms", sa.BigInteger(), nullable=True, comment="EventTime: high -> low"),
        sa.Column("high_follows", sa.Boolean(), nullable=True, comment="high follows low"),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("low", "high", name=op.f("pk_live_pairs")),
    )

    op.create_table(
        "list_reconciliation",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("follow_type", sa.SmallInteger(), nullable=False),
        sa.Column(
            "live",
            sa.BigInteger(),
            nullable=False,
            server_default="0",
            comment="callback changes to the list since its last complete crawl",
        ),
        sa.Column(
            "added",
            sa.BigInteger(),
            nullable=False,
            server_default="0",
            comment="edges the crawl added: callbacks missed them",
        ),
        sa.Column(
            "removed",
            sa.BigInteger(),
            nullable=False,
            server_default="0",
            comment="edges the crawl removed: callbacks missed them",
        ),
        sa.Column("reconciled_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sync_runs.id"],
            name=op.f("fk_list_reconciliation_run_id_sync_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "run_id", "account", "follow_type", name=op.f("pk_list_reconciliation")
        ),
    )
    op.execute(RUN_RECONCILIATION)


def downgrade() -> None:
    op.execute("DROP VIEW run_reconciliation")
    op.drop_table("list_reconciliation")
    op.drop_table("live_pairs")
    _open_index(["run_id", "expected_items"])
    op.drop_column("sync_checkpoints", "touched")
    op.drop_index("ix_follow_lists_live_from", table_name="follow_lists")
    op.drop_column("follow_lists", "live_from")
    op.drop_column("follow_lists", "crawled_at")
    op.execute("DELETE FROM follow_edge_events WHERE source = 'callback'")
    op.execute("DROP VIEW daily_follow_changes")
    with op.batch_alter_table("follow_edge_events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(SOURCE_CHECK), type_="check")
        batch_op.alter_column("run_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("source")
    op.execute(DAILY_FOLLOW_CHANGES.format(day=DAY[op.get_bind().dialect.name]))
    op.execute("DROP VIEW current_follow_edges")
    op.drop_column("follow_edges", "time_provisional")
    op.execute(OLD_CURRENT_FOLLOW_EDGES)


def _open_index(columns: list[str]) -> None:
    op.drop_index("ix_sync_checkpoints_open", table_name="sync_checkpoints")
    op.create_index(
        "ix_sync_checkpoints_open",
        "sync_checkpoints",
        columns,
        postgresql_where=sa.text(OPEN_STATUSES),
        sqlite_where=sa.text(OPEN_STATUSES),
    )
