"""One dialect object per backend: where PostgreSQL and SQLite need different SQL, each class
answers the same methods (``stage_edges``, ``mark_removed``, ``claim``, ``advance``, ...), the
way SQLAlchemy's own dialects and alembic's ``impl`` classes do. It is chosen once per backend
(``dialect_of``); callers never ask which database they are on.

- base: the methods, and the statements both spell alike with each one's fragments;
- postgres: COPY, LATERAL lookups, data-modifying WITH, the server's clock;
- sqlite: indexed staging tables, nested loops, RETURNING, this machine's clock.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa

from etl.store.dialect.base import Dialect
from etl.store.dialect.postgres import Postgres
from etl.store.dialect.sqlite import Sqlite

__all__ = ["Dialect", "Postgres", "Sqlite", "dialect_of", "for_name"]


@functools.cache
def for_name(name: str) -> Dialect:
    """The dialect object of a SQLAlchemy dialect name ("postgresql" or "sqlite"), made once."""
    if name == Postgres.name:
        return Postgres()
    if name == Sqlite.name:
        return Sqlite()
    raise ValueError(f"unsupported database: {name}")


def dialect_of(bind: sa.Connection | sa.Engine) -> Dialect:
    """The dialect object of a connection's or engine's backend."""
    return for_name(bind.dialect.name)
