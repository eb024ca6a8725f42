"""quarantined_items: items that cannot be stored (see etl.tencent.rows), and profile
sightings that conflict with the version stored, recorded once per run, list and item."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.store.dialect import Dialect
from etl.store.rows import Key
from etl.store.schema import quarantined_items
from etl.tencent.rows import CONFLICT, UNSTORABLE, Quarantined

log = logging.getLogger(__name__)


@functools.cache
def _insert(d: Dialect) -> Any:
    q = quarantined_items.c
    return (
        d.insert(quarantined_items)
        .on_conflict_do_nothing(index_elements=[q.run_id, q.account, q.follow_type, q.item_digest])
        .returning(q.kind)
    )


def record(
    conn: sa.Connection,
    d: Dialect,
    run_id: int,
    records: Sequence[tuple[Key, Quarantined]],
    now: datetime,
) -> tuple[int, int]:
    """Add quarantined items, but those this run already has for the same list; return how
    many unstorable items and conflicts were new."""
    rows = {
        (key, q.item_digest): {
            "run_id": run_id,
            "account": key[0],
            "follow_type": key[1],
            "to_account": q.to_account,
            "kind": q.kind,
            "reason": q.reason,
            "item": q.item,
            "item_digest": q.item_digest,
            "observed_at": now,
        }
        for key, q in records
    }
    kinds = conn.execute(_insert(d), list(rows.values())).scalars().all()
    return kinds.count(UNSTORABLE), kinds.count(CONFLICT)
