"""The tables, as SQLAlchemy Core. Alembic migrations create them; this module describes them.

Views (``current_profiles``, ``current_follow_edges``) live in the migrations only: Alembic does
not compare views, and the migrations are the single schema authority.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# The Alembic revision these tables describe; a test checks it is the newest migration.
SCHEMA_REVISION = "0001"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Timestamp = sa.DateTime(timezone=True)
JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

follow_edges = sa.Table(
    "follow_edges",
    metadata,
    sa.Column("account", sa.String, primary_key=True, comment="the From_Account crawled"),
    sa.Column(
        "follow_type", sa.SmallInteger, primary_key=True, comment="1 fans, 2 follows, 3 mutual"
    ),
    sa.Column("to_account", sa.String, primary_key=True),
    sa.Column("follow_time", Timestamp, nullable=True, comment="FollowTime"),
    sa.Column("first_seen_at", Timestamp, nullable=False),
    sa.Column(
        "removed_at",
        Timestamp,
        nullable=True,
        comment="set when a complete crawl no longer lists it",
    ),
    sa.CheckConstraint("follow_type IN (1, 2, 3)", name="follow_type"),
    sa.Index(None, "to_account"),
)

profile_snapshots = sa.Table(
    "profile_snapshots",
    metadata,
    sa.Column("user_id", sa.String, primary_key=True),
    sa.Column("profile_sequence", sa.BigInteger, primary_key=True),
    sa.Column("nick", sa.Text),
    sa.Column("gender", sa.Text),
    sa.Column("birthday", sa.BigInteger),
    sa.Column("location", sa.Text),
    sa.Column("self_signature", sa.Text),
    sa.Column("allow_type", sa.Text),
    sa.Column("language", sa.BigInteger),
    sa.Column("image", sa.Text),
    sa.Column("msg_settings", sa.BigInteger),
    sa.Column("admin_forbid_type", sa.Text),
    sa.Column("level", sa.BigInteger),
    sa.Column("role", sa.BigInteger),
    sa.Column("tags", JsonDoc, nullable=False, comment="every Tag -> Value as returned"),
    sa.Column("first_seen_at", Timestamp, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=True, comment="the run that first saw this version"),
)

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String, nullable=False),
    sa.Column("status", sa.String, nullable=False, comment="running, done or abandoned"),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("options", sa.JSON, nullable=False, comment="types and page size of the run"),
    sa.Column("lists_total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lists_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lists_skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lists_failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pages", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("items", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("edges_removed", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("status IN ('running', 'done', 'abandoned')", name="status"),
    # At most one unfinished run per job: the database, not the process, decides.
    sa.Index(
        "uq_sync_runs_job_running",
        "job",
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    ),
)

sync_checkpoints = sa.Table(
    "sync_checkpoints",
    metadata,
    sa.Column(
        "run_id", sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("follow_type", sa.SmallInteger, primary_key=True),
    sa.Column("cursor", sa.Text, nullable=False, server_default="", comment="next StartCursor"),
    sa.Column("status", sa.String, nullable=False, comment="pending running done skipped failed"),
    sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("items", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0", comment="given up at 3"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.CheckConstraint(
        "status IN ('pending', 'running', 'done', 'skipped', 'failed')", name="status"
    ),
    sa.Index(None, "run_id", "status"),
)

# To_Accounts already listed by earlier pages of a list still being crawled: what the removal
# check needs once the list is complete. Rows live only while their list is in progress.
sync_seen = sa.Table(
    "sync_seen",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("follow_type", sa.SmallInteger, primary_key=True),
    sa.Column("to_account", sa.String, primary_key=True),
)
