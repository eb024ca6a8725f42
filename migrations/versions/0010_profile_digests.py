"""profile digests: every profile version has its content digest

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

- profile_snapshots.content_digest is computed for the rows stored before revision 0003 (NULL
  until now), with the loader's own digest (etl.tencent.profile.snapshot) of the stored tags:
  a second sighting of such a version is a conflict exactly when its content differs, as for
  every other row, and the loader no longer compares their tags in SQL. Rows are read and
  written in batches of BATCH, on PostgreSQL and SQLite alike.
- The column's comment no longer says it may be null (PostgreSQL; SQLite keeps no comments).

Downgrade keeps the digests (revision 0009 reads them as it reads any other).
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from etl.tencent.profile import snapshot

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000
COMMENT = "digest of tags and tags_raw; the same version seen with another is a conflict"
OLD_COMMENT = f"{COMMENT} (null: stored before revision 0003)"

# Raw values (no type processing), so a SQLite sequence past 2**63-1 ('u' + 20 digits) is
# bound back exactly as it was read. Keyset order: a row whose digest cannot be computed is
# passed over, not read again.
_FIRST = """SELECT user_id, profile_sequence, tags FROM profile_snapshots
WHERE content_digest IS NULL ORDER BY user_id, profile_sequence LIMIT :n"""
_NEXT = """SELECT user_id, profile_sequence, tags FROM profile_snapshots
WHERE content_digest IS NULL AND (user_id > :u OR (user_id = :u AND profile_sequence > :s))
ORDER BY user_id, profile_sequence LIMIT :n"""
_SET = """UPDATE profile_snapshots SET content_digest = :digest
WHERE user_id = :u AND profile_sequence = :s"""


def digest(tags: Any) -> str:
    """The loader's digest of a version whose ProfileItem held ``tags`` (Tag -> Value)."""
    if isinstance(tags, str | bytes):
        tags = json.loads(tags)
    items = [{"Tag": tag, "Value": value} for tag, value in (tags or {}).items()]
    return snapshot(items)[3]


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(_FIRST), {"n": BATCH}).all()
    while rows:
        conn.execute(
            sa.text(_SET), [{"digest": digest(tags), "u": u, "s": s} for u, s, tags in rows]
        )
        last_u, last_s = rows[-1][0], rows[-1][1]
        rows = conn.execute(sa.text(_NEXT), {"n": BATCH, "u": last_u, "s": last_s}).all()
    if conn.dialect.name == "postgresql":
        op.alter_column(
            "profile_snapshots",
            "content_digest",
            existing_type=sa.Text(),
            existing_nullable=True,
            comment=COMMENT,
            existing_comment=OLD_COMMENT,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "profile_snapshots",
            "content_digest",
            existing_type=sa.Text(),
            existing_nullable=True,
            comment=OLD_COMMENT,
            existing_comment=COMMENT,
        )
