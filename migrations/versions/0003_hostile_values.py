"""hostile values: exact sequences, raw profiles, content digests, quarantined items

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- profile_snapshots.profile_sequence holds 0 .. 2**64-1: NUMERIC(20, 0) on PostgreSQL (the
  table and its primary key are rewritten: minutes on a large table, under an exclusive lock).
  SQLite keeps its BIGINT column; values above 2**63-1 are stored as the text 'u' + 20 digits
  (etl.schema.ProfileSequence).
- profile_snapshots.tags_raw: the exact ProfileItem (ASCII JSON) when storing it changed
  anything; content_digest: what tells a second content of the same version (NULL on the rows
  already there, which are compared by their tags instead).
- quarantined_items: items that cannot be stored, and profile conflicts.
- sync_workers.pid_ns: the PID namespace of a process.
- current_profiles is created again: its `p.*` was expanded when it was created.

Downgrade refuses to run while a profile_sequence above 2**63-1 is stored: BIGINT cannot hold it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001; only the columns behind `p.*` change.
CURRENT_PROFILES = """
CREATE VIEW current_profiles AS
SELECT p.*
FROM profile_snapshots p
WHERE p.profile_sequence = (
    SELECT MAX(q.profile_sequence) FROM profile_snapshots q WHERE q.user_id = p.user_id
)
"""

TAGS_RAW_COMMENT = "the exact ProfileItem (ASCII JSON) when storing it changed anything, else null"
CONTENT_DIGEST_COMMENT = (
    "digest of tags and tags_raw; the same version seen with another is a conflict "
    "(null: stored before revision 0003)"
)
PID_NS_COMMENT = "the process's PID namespace: pids compare only within one"
BIGINT_MAX = 2**63 - 1


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW current_profiles")
    if dialect == "postgresql":
        op.alter_column(
            "profile_snapshots",
            "profile_sequence",
            existing_type=sa.BigInteger(),
            type_=sa.Numeric(20, 0),
            existing_nullable=False,
        )
    with op.batch_alter_table("profile_snapshots", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tags_raw", sa.Text(), nullable=True, comment=TAGS_RAW_COMMENT)
        )
        batch_op.add_column(
            sa.Column("content_digest", sa.Text(), nullable=True, comment=CONTENT_DIGEST_COMMENT)
        )
    op.execute(CURRENT_PROFILES)

    with op.batch_alter_table("sync_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pid_ns", sa.String(), nullable=True, comment=PID_NS_COMMENT))

    op.create_table(
        "quarantined_items",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("follow_type", sa.SmallInteger(), nullable=False),
        sa.Column(
            "to_account",
            sa.Text(),
            nullable=True,
            comment="as text can hold it, cut at 256 characters",
        ),
        sa.Column("kind", sa.String(), nullable=False, comment="unstorable or conflict"),
        sa.Column(
            "reason", sa.Text(), nullable=False, comment="the field, and what is wrong with it"
        ),
        sa.Column(
            "item",
            sa.Text(),
            nullable=False,
            comment="the FollowItem as ASCII JSON, cut at 64 KiB",
        ),
        sa.Column("item_digest", sa.String(), nullable=False, comment="of the whole item JSON"),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('unstorable', 'conflict')", name=op.f("ck_quarantined_items_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantined_items")),
        sa.UniqueConstraint(
            "run_id",
            "account",
            "follow_type",
            "item_digest",
            name=op.f("uq_quarantined_items_run_id_account_follow_type_item_digest"),
        ),
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    too_big = (
        f"profile_sequence > {BIGINT_MAX}"
        if dialect == "postgresql"
        else "typeof(profile_sequence) = 'text'"
    )
    count = (
        op.get_bind()
        .execute(sa.text(f"SELECT count(*) FROM profile_snapshots WHERE {too_big}"))
        .scalar_one()
    )
    if count:
        raise RuntimeError(
            f"{count} profile versions have a profile_sequence above {BIGINT_MAX}, which "
            "revision 0002 cannot hold: delete them first to downgrade"
        )
    op.drop_table("quarantined_items")
    with op.batch_alter_table("sync_workers", schema=None) as batch_op:
        batch_op.drop_column("pid_ns")
    op.execute("DROP VIEW current_profiles")
    with op.batch_alter_table("profile_snapshots", schema=None) as batch_op:
        batch_op.drop_column("content_digest")
        batch_op.drop_column("tags_raw")
    if dialect == "postgresql":
        op.alter_column(
            "profile_snapshots",
            "profile_sequence",
            existing_type=sa.Numeric(20, 0),
            type_=sa.BigInteger(),
            existing_nullable=False,
        )
    op.execute(CURRENT_PROFILES)
