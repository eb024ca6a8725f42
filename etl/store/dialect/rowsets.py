"""Row sets: many rows bound into one statement as one JSON array parameter, and probes that
find each row's partners through a table's key (etl.store.live), as each dialect spells them
(``Dialect.json_rows``, ``Dialect.probe_join``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from etl.store.dialect.base import Dialect

# The columns of a row set (``rows``): name and SQL type.
RowColumns = Sequence[tuple[str, str]]


def rows(d: Dialect, name: str, columns: RowColumns) -> str:
    """A FROM item named ``name`` with ``columns``, whose rows ``params`` binds as one
    JSON array: one parameter and a fixed text whatever the number of rows (SQLite caps
    a statement's parameters; psycopg quotes each element of an array in Python)."""
    elements, field = d.json_rows
    picks = ", ".join(
        f"{field.format(i=i, kind=kind)} AS {column}" for i, (column, kind) in enumerate(columns)
    )
    return f"(SELECT {picks} FROM {elements.format(name=name)}) AS {name}"


def probe(d: Dialect, table: str, alias: str, on: str, *, lock: bool = False) -> str:
    """A join onto a row set ``v``: for each of its rows, the rows of ``table`` (as
    ``alias``) where ``on`` holds, each found through ``table``'s key, never by reading
    the whole table; with ``lock``, locked in the order of ``v``'s rows where another
    writer may run at once."""
    return d.probe_join.format(table=table, alias=alias, on=on, lock="FOR UPDATE" if lock else "")


def params(name: str, rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    """The parameter of ``rows`` (tuples in the columns' order; times as ``bind_time`` gives
    them) for the FROM item ``rows(d, name, ...)``: one JSON array."""
    return {name: json.dumps(rows, ensure_ascii=False, separators=(",", ":"), default=_iso)}


def _iso(value: datetime) -> str:
    """A time (as PostgreSQL binds it) in a JSON row set."""
    return value.isoformat()
