"""The tables beside the crawl's: what `verify` found and what `listen` keeps (etl.store.schema
re-exports them)."""

from __future__ import annotations

import sqlalchemy as sa

from etl.store.meta import Timestamp, metadata

# Per unordered pair of accounts, the newest callback applied in each direction (etl.store.live):
# EventTime (ms) and whether it followed. Duplicated and reordered callbacks are decided against
# it, and two listeners lock this one row, so a mutual follow is decided once.
live_pairs = sa.Table(
    "live_pairs",
    metadata,
    sa.Column("low", sa.String, primary_key=True, comment="the lesser account id"),
    sa.Column("high", sa.String, primary_key=True, comment="the greater account id"),
    sa.Column("low_ms", sa.BigInteger, nullable=True, comment="EventTime: low -> high"),
    sa.Column("low_follows", sa.Boolean, nullable=True, comment="low follows high"),
    sa.Column("high_ms", sa.BigInteger, nullable=True, comment="EventTime: high -> low"),
    sa.Column("high_follows", sa.Boolean, nullable=True, comment="high follows low"),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# Per run and list with anything to reconcile: the callback changes its crawl confirmed (live)
# and the edges the crawl had to add or remove (drift). The view run_reconciliation sums them.
list_reconciliation = sa.Table(
    "list_reconciliation",
    metadata,
    sa.Column(
        "run_id", sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("follow_type", sa.SmallInteger, primary_key=True),
    sa.Column(
        "live",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="callback changes to the list since its last complete crawl",
    ),
    sa.Column(
        "added",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="edges the crawl added: callbacks missed them",
    ),
    sa.Column(
        "removed",
        sa.BigInteger,
        nullable=False,
        server_default="0",
        comment="edges the crawl removed: callbacks missed them",
    ),
    sa.Column("reconciled_at", Timestamp, nullable=False),
)

# The lists a verification found disagreeing with follow_get_info (etl.verify): the report
# shows the first few; `verify --repair` reads them all back from here, a chunk at a time.
verify_mismatches = sa.Table(
    "verify_mismatches",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True, comment="the run verified"),
    sa.Column("verified_at", Timestamp, primary_key=True),
    sa.Column("account", sa.String, primary_key=True),
    sa.Column("follow_type", sa.SmallInteger, primary_key=True),
    sa.Column("stored", sa.BigInteger, nullable=False),
    sa.Column("api", sa.BigInteger, nullable=False),
    sa.Column(
        "missing",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment="the API says the account does not exist",
    ),
)
