"""streamed start: a run says whether all its lists are in; verify keeps its mismatches

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

- sync_runs.listed: every requested list of the run is in sync_checkpoints. A sync adds a
  run's lists in committed chunks while it already crawls them; until the last chunk is in,
  the run cannot finish, and a sync stopped half way resumes the listing. Runs created before
  this revision were listed in one transaction: true.
- verify_mismatches: the lists a `verify` found disagreeing with follow_get_info, by the
  verified run and the time of the verification. The report shows the first few; `--repair`
  reads them back from here a chunk at a time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sync_runs",
        sa.Column(
            "listed",
            sa.Boolean,
            nullable=False,
            server_default=sa.true(),
            comment="every requested list of the run is in sync_checkpoints",
        ),
    )
    op.create_table(
        "verify_mismatches",
        sa.Column("run_id", sa.Integer, primary_key=True, comment="the run verified"),
        sa.Column("verified_at", sa.DateTime(timezone=True), primary_key=True),
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


def downgrade() -> None:
    op.drop_table("verify_mismatches")
    op.drop_column("sync_runs", "listed")
