"""Column types that differ per backend: profile_sequence, exact from 0 to 2**64-1."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

_SQLITE_INTEGER_MAX = 2**63 - 1


def sqlite_sequence(value: int) -> int | str:
    """A profile_sequence as SQLite stores it: an INTEGER up to 2**63-1, above that the TEXT
    'u' + 20 digits (non-numeric, so INTEGER affinity leaves it alone; TEXT sorts after every
    INTEGER and fixed width sorts among itself, so MAX() still finds the newest version)."""
    return value if value <= _SQLITE_INTEGER_MAX else f"u{value:020d}"


class ProfileSequence(sa.types.TypeDecorator[int]):
    """profile_sequence, exact for 0 .. 2**64-1: NUMERIC(20, 0) on PostgreSQL, and on SQLite
    the BIGINT column with :func:`sqlite_sequence` above 2**63-1. Reads back as int."""

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        """NUMERIC(20, 0) on PostgreSQL; BIGINT elsewhere."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(20, 0))
        return dialect.type_descriptor(sa.BigInteger())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Encode values past SQLite's INTEGER range."""
        if value is None or dialect.name == "postgresql":
            return value
        return sqlite_sequence(int(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        """Decimal (PostgreSQL) or 'u'-text (SQLite) back to int."""
        return decode_sequence(value)


def decode_sequence(value: Any) -> int | None:
    """A profile_sequence as a driver returns it (int, Decimal, or SQLite's 'u'-text) as int."""
    if value is None:
        return None
    if isinstance(value, str):
        return int(value[1:] if value.startswith("u") else value)
    return int(value)  # int, or Decimal from NUMERIC
