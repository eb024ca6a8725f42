"""The tables, as SQLAlchemy Core. Alembic migrations create them; this module describes them.

Views (``current_profiles``, ``current_follow_edges``) live in the migrations only: Alembic does
not compare views, and the migrations are the single schema authority.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from etl.store import side_tables
from etl.store.meta import (
    CONTENT_DIGEST_COMMENT,
    PROVISIONAL,
    PRUNED_AT_COMMENT,
    TAGS_RAW_COMMENT,
    TOUCHED,
    JsonDoc,
    Timestamp,
    metadata,
)
from etl.store.types import ProfileSequence
from etl.tencent.profile import STANDARD_TAGS

# The Alembic revision these tables describe; a test checks it is the newest migration.
SCHEMA_REVISION = "0012"

# Lists a claim may take (a held list: its confirming crawl, see etl.holds).
OPEN_STATUSES = "status IN ('pending', 'running', 'failed', 'held')"
MAX_FAILURES = 3  # a list that failed in this many syncs of its run is given up

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
    sa.Column(
        "changed_at",
        Timestamp,
        nullable=True,
        comment=(
            "last inserted, listed again, given a new follow time or removed (null: before 0008)"
        ),
    ),
    sa.Column(
        "time_provisional",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment=PROVISIONAL,
    ),
    sa.CheckConstraint("follow_type IN (1, 2, 3)", name="follow_type"),
    sa.Index(None, "to_account"),
)

profile_snapshots = sa.Table(
    "profile_snapshots",
    metadata,
    sa.Column("user_id", sa.String, primary_key=True),
    sa.Column("profile_sequence", ProfileSequence(), primary_key=True),
    # One column per standard tag, defined once in etl.tencent.profile.STANDARD_TAGS.
    *(
        sa.Column(column, sa.Text if kind is str else sa.BigInteger)
        for column, kind in STANDARD_TAGS.values()
    ),
    sa.Column("tags", JsonDoc, nullable=False, comment="every Tag -> Value as returned"),
    sa.Column("first_seen_at", Timestamp, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=True, comment="the run that first saw this version"),
    sa.Column("tags_raw", sa.Text, nullable=True, comment=TAGS_RAW_COMMENT),
    sa.Column("content_digest", sa.Text, nullable=True, comment=CONTENT_DIGEST_COMMENT),
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
    sa.Column("pruned_at", Timestamp, nullable=True, comment=PRUNED_AT_COMMENT),
    sa.Column(
        "listed",
        sa.Boolean,
        nullable=False,
        server_default=sa.true(),
        comment="every requested list of the run is in sync_checkpoints",
    ),
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
    sa.Column(
        "status", sa.String, nullable=False, comment="pending running done skipped failed held"
    ),
    sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("items", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0", comment="given up at 3"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column(
        "lease_owner",
        sa.String,
        nullable=True,
        comment="sync_workers.id crawling the list; void once that worker stops heartbeating",
    ),
    sa.Column(
        "seen",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="rows this crawl put in sync_seen (checked before removals)",
    ),
    sa.Column(
        "expected_items",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="the list's size when the run began: claims take the biggest first",
    ),
    sa.Column(
        "fresh",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment="the crawl began with no current edge stored: no sync_seen, no removals",
    ),
    # What the crawl that held the list saw (etl.holds): R of S, how it ended, when.
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
    sa.Column("held_at", Timestamp, nullable=True, comment="held: when"),
    sa.Column(
        "crawl_started_at",
        Timestamp,
        nullable=True,
        comment="when the list's crawl began (database clock): it undoes no later change",
    ),
    sa.Column("touched", sa.Boolean, nullable=False, server_default=sa.false(), comment=TOUCHED),
    sa.CheckConstraint(
        "status IN ('pending', 'running', 'done', 'skipped', 'failed', 'held')", name="status"
    ),
    # Lists that carry an error: what `status` shows (few, among millions of lists).
    sa.Index(
        "ix_sync_checkpoints_errors",
        "run_id",
        "account",
        "follow_type",
        postgresql_where=sa.text("last_error IS NOT NULL"),
        sqlite_where=sa.text("last_error IS NOT NULL"),
    ),
    # Open lists, touched first, biggest first: what a claim reads (never the lists done).
    sa.Index(
        "ix_sync_checkpoints_open",
        "run_id",
        "touched",
        "expected_items",  # read backwards: touched first, biggest first
        postgresql_where=sa.text(OPEN_STATUSES),
        sqlite_where=sa.text(OPEN_STATUSES),
    ),
)

# A run's lists by status, pages and items: what status, the progress display and the metrics
# read instead of counting the run's checkpoints. Kept by the transactions that change the
# checkpoints (etl.store.runs.count_changes), each adding its changes to the row of its own server
# backend (``shard``): a backend runs one transaction at a time, so concurrent batches never
# wait for each other's counter row. A read sums the run's few rows.
sync_run_counters = sa.Table(
    "sync_run_counters",
    metadata,
    sa.Column(
        "run_id", sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column(
        "shard",
        sa.Integer,
        primary_key=True,
        autoincrement=False,
        comment="pg_backend_pid() of the transactions that wrote it (0: SQLite, or a backfill)",
    ),
    *(
        sa.Column(name, sa.BigInteger, nullable=False, server_default="0", comment=comment)
        for name, comment in (
            ("pending", "lists by status (a shard's share may be negative; the sum is not)"),
            ("running", None),
            ("done", None),
            ("skipped", None),
            ("failed", None),
            ("held", "lists held for a mass removal (etl.holds)"),
            ("retryable", "failed lists with fewer than 3 failures (still open)"),
            ("pages", None),
            ("items", None),
        )
    ),
    sa.Column("moved_at", Timestamp, nullable=True, comment="when a list of the run last moved"),
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


# Processes working on a job: a heartbeat row each. A `sync` holds its job (at most one live
# `sync` row per job: the overlap guard); workers join its run. A row whose expires_at has
# passed belongs to a dead process: its leases are void and its row may be deleted.
sync_workers = sa.Table(
    "sync_workers",
    metadata,
    sa.Column("id", sa.String, primary_key=True, comment="host:pid:random"),
    sa.Column("job", sa.String, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("role", sa.String, nullable=False, comment="sync or worker"),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("heartbeat_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pages", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("items", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column(
        "pid_ns",
        sa.String,
        nullable=True,
        comment="the process's PID namespace: pids compare only within one",
    ),
    sa.CheckConstraint("role IN ('sync', 'worker')", name="role"),
    sa.Index(
        "uq_sync_workers_job_sync",
        "job",
        unique=True,
        postgresql_where=sa.text("role = 'sync'"),
        sqlite_where=sa.text("role = 'sync'"),
    ),
)

# Lists crawled to their end at least once. Edge changes are events only after that: the first
# complete crawl of a list is its baseline, not a day on which every edge was "added".
follow_lists = sa.Table(
    "follow_lists",
    metadata,
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("follow_type", sa.SmallInteger, primary_key=True),
    sa.Column("baseline_run_id", sa.Integer, nullable=False),
    sa.Column("baseline_at", Timestamp, nullable=False),
    sa.Column("items", sa.BigInteger, nullable=True, comment="items its last complete crawl found"),
    sa.Column(
        "crawled_at",
        Timestamp,
        nullable=True,
        comment="start of its last complete crawl: older callbacks are stale for it",
    ),
    sa.Column(
        "live_from",
        Timestamp,
        nullable=True,
        comment="first callback change since its last complete crawl (null: none)",
    ),
    # The lists callbacks touched since their last complete crawl (sync --changed-first).
    sa.Index(
        "ix_follow_lists_live_from",
        "live_from",
        postgresql_where=sa.text("live_from IS NOT NULL"),
        sqlite_where=sa.text("live_from IS NOT NULL"),
    ),
)

# What changed: an edge that appeared in a list with a baseline, or left one, as a sync saw it
# (source 'crawl', with its run) or as a callback said it (source 'callback', no run).
follow_edge_events = sa.Table(
    "follow_edge_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("account", sa.String, nullable=False),
    sa.Column("follow_type", sa.SmallInteger, nullable=False),
    sa.Column("to_account", sa.String, nullable=False),
    sa.Column("event", sa.String, nullable=False, comment="added or removed"),
    sa.Column("observed_at", Timestamp, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column(
        "source", sa.String, nullable=False, server_default="crawl", comment="crawl or callback"
    ),
    sa.CheckConstraint("event IN ('added', 'removed')", name="event"),
    sa.CheckConstraint("source IN ('crawl', 'callback')", name="source"),
    sa.Index(None, "account", "observed_at"),
    sa.Index(None, "observed_at"),
)

# Items of well-formed pages that could not be stored as they are (kind 'unstorable': a
# To_Account that cannot be a key, or a profile that cannot be), and profile versions seen
# again with other content than the one stored first (kind 'conflict'). Once per run, list and
# item: a replayed or resumed batch adds nothing twice.
quarantined_items = sa.Table(
    "quarantined_items",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("account", sa.String, nullable=False),
    sa.Column("follow_type", sa.SmallInteger, nullable=False),
    sa.Column(
        "to_account", sa.Text, nullable=True, comment="as text can hold it, cut at 256 characters"
    ),
    sa.Column("kind", sa.String, nullable=False, comment="unstorable or conflict"),
    sa.Column("reason", sa.Text, nullable=False, comment="the field, and what is wrong with it"),
    sa.Column(
        "item", sa.Text, nullable=False, comment="the FollowItem as ASCII JSON, cut at 64 KiB"
    ),
    sa.Column("item_digest", sa.String, nullable=False, comment="of the whole item JSON"),
    sa.Column("observed_at", Timestamp, nullable=False),
    sa.CheckConstraint("kind IN ('unstorable', 'conflict')", name="kind"),
    sa.UniqueConstraint("run_id", "account", "follow_type", "item_digest"),
)

# The tables of `verify` and `listen` (etl.store.side_tables), in the same metadata.
verify_mismatches = side_tables.verify_mismatches
live_pairs = side_tables.live_pairs
list_reconciliation = side_tables.list_reconciliation


def is_open(failed_before: datetime | None = None) -> sa.ColumnElement[bool]:
    """Lists a run still has to crawl: not started, half done, failed fewer than 3 times
    (and, with ``failed_before``, before that time), or held and not yet confirmed."""
    c = sync_checkpoints.c
    failed = sa.and_(c.status == "failed", c.failures < MAX_FAILURES)
    if failed_before is not None:
        failed = sa.and_(failed, c.updated_at < failed_before)
    held = sa.and_(c.status == "held", c.failures < MAX_FAILURES)
    return sa.or_(c.status.in_(("pending", "running")), failed, held)
