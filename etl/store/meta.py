"""The one MetaData every table of etl.store.schema belongs to, and the column types and
comments the tables share."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

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
PRUNED_AT_COMMENT = "when `prune` deleted the run's checkpoints (its counters stay)"
TAGS_RAW_COMMENT = "the exact ProfileItem (ASCII JSON) when storing it changed anything, else null"
CONTENT_DIGEST_COMMENT = (
    "digest of tags and tags_raw; the same version seen with another is a conflict"
)
JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
PROVISIONAL = "follow_time is a callback's EventTime until a crawl stores FollowTime"
TOUCHED = "changed by callbacks since its last complete crawl (--changed-first)"
