"""room for HOT updates: follow_lists and sync_checkpoints keep 30% of each page free

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Every run updates each list's follow_lists row once (its size and crawled_at) and each of its
checkpoints at least twice (the claim, the end). An update that finds no room on the row's page
writes the new version elsewhere: a lock record, the new row, and an entry in every index
(PostgreSQL cannot make it a HOT update). With a fillfactor of 70 the claim's update and the
baseline's update stay on their page: an unchanged re-sync of small lists wrote about 140
bytes of WAL a list less (measured with pg_walinspect, issue 18). PostgreSQL only; pages
written before the upgrade keep what they hold until they are rewritten.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("follow_lists", "sync_checkpoints")
FILLFACTOR = 70


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
