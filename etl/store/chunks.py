"""Deletes of many rows, a chunk per statement and transaction, that a stop request ends."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.errors import Stopped


def delete_chunks(
    engine: Engine,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    chunk: int,
    stop: threading.Event | None,
    key: tuple[sa.ColumnElement[object], ...] | None = None,
) -> int:
    """Delete ``table``'s rows that match ``where``, ``chunk`` rows per statement and
    transaction (by ``key``, default the primary key); how many went. Stopped (between
    chunks) once ``stop`` is set."""
    columns = key or tuple(table.primary_key.columns)
    target = columns[0] if len(columns) == 1 else sa.tuple_(*columns)
    deleted = 0
    while True:
        if stop is not None and stop.is_set():
            raise Stopped(f"stopped while pruning {table.name}")
        some = sa.select(*columns).where(where).limit(chunk)
        with engine.begin() as conn:
            n = max(conn.execute(sa.delete(table).where(target.in_(some))).rowcount, 0)
        deleted += n
        if n < chunk:
            return deleted
