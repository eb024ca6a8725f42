"""The table verify_mismatches: the lists a verification found disagreeing with the API's
counts, keyed by the run verified and the verification's time (etl.verify). Functions take a
connection and never commit: the caller opens the transaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from etl.results import Mismatch
from etl.store.schema import verify_mismatches

vm = verify_mismatches.c


def add(conn: sa.Connection, run_id: int, verified_at: datetime, found: list[Mismatch]) -> None:
    """Store the mismatches ``found`` by the verification of ``run_id`` at ``verified_at``."""
    if not found:
        return
    rows = [
        {
            "run_id": run_id,
            "verified_at": verified_at,
            "account": m.account,
            "follow_type": m.follow_type,
            "stored": m.stored,
            "api": m.api,
            "missing": m.missing,
        }
        for m in found
    ]
    conn.execute(sa.insert(verify_mismatches), rows)


def forget(conn: sa.Connection, run_id: int, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` stored mismatches of the run's verifications before ``before``;
    returns how many went."""
    some = (
        sa.select(vm.account, vm.follow_type, vm.verified_at)
        .where(vm.run_id == run_id, vm.verified_at < before)
        .limit(limit)
    )
    return conn.execute(
        sa.delete(verify_mismatches).where(
            vm.run_id == run_id,
            sa.tuple_(vm.account, vm.follow_type, vm.verified_at).in_(some),
        )
    ).rowcount


def after(
    conn: sa.Connection, run_id: int, verified_at: datetime, key: tuple[str, int], limit: int
) -> list[tuple[str, int]]:
    """Up to ``limit`` (account, follow_type) of one verification's mismatches past ``key``,
    in key order."""
    rows = conn.execute(
        sa.select(vm.account, vm.follow_type)
        .where(
            vm.run_id == run_id,
            vm.verified_at == verified_at,
            sa.tuple_(vm.account, vm.follow_type) > sa.tuple_(*key),
        )
        .order_by(vm.account, vm.follow_type)
        .limit(limit)
    )
    return [(account, int(follow_type)) for account, follow_type in rows]
