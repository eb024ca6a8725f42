"""Account lists as users give them: a file or stdin, one UserID per line.

A list of a million accounts is read twice rather than held: once up front to check every line
(a bad line is one clear error before anything is stored or fetched), then again as a stream
while the run's lists are inserted. Repeats need no memory either: the database ignores a list
it already has. Standard input, which cannot be read twice, is spooled to a temporary file.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import db
from etl.errors import Stopped, UsageError

MAX_USERID_BYTES = 32  # Tencent's documented limit for a UserID
STOP_EVERY = 4096  # lines checked between looks at a stop request (a few ms of work)


class Accounts:
    """The UserIDs of an accounts file (or stdin, or a query) and of --account options, checked,
    in order."""

    def __init__(
        self,
        source: str | None,
        extra: list[str],
        stdin: TextIO | None = None,
        *,
        query: tuple[Engine, str] | None = None,
        extra_label: str = "--account",
        stop: threading.Event | None = None,
    ) -> None:
        self._path: Path | None = None
        self._spool: IO[str] | None = None
        self.count = 0  # accounts given, repeats included
        if query is not None:
            # Read once, as a stream, into a spool: the run sees one consistent answer.
            self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
            self.count += _from_query(*query, self._spool, stop)
            self._spool.seek(0)
        elif source == "-":
            # Kept open for the second pass; close() ends it.
            self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
            self.count += _check(stdin or sys.stdin, "<stdin>", self._spool, stop)
            self._spool.seek(0)
        elif source is not None:
            self._path = Path(source)
            with _open(source) as lines:
                self.count += _check(lines, source, None, stop)
        self._extra = []
        for account in extra:
            check_account(account.strip(), extra_label)
            self._extra.append(account.strip())
        self.count += len(self._extra)

    def __iter__(self) -> Iterator[str]:
        if self._spool is not None:
            self._spool.seek(0)
            yield from _accounts(self._spool)
        elif self._path is not None:
            with _open(str(self._path)) as lines:
                yield from _accounts(lines)
        yield from self._extra

    def close(self) -> None:
        """Drop the spooled copy of stdin, if any."""
        if self._spool is not None:
            self._spool.close()


def _open(source: str) -> TextIO:
    try:
        return open(source, encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"accounts file not found: {source}") from None
    except OSError as exc:
        raise UsageError(f"cannot read accounts file {source}: {exc}") from None


def _accounts(lines: IO[str]) -> Iterator[str]:
    for line in lines:
        account = line.strip().lstrip("\ufeff")
        if account and not account.startswith("#"):
            yield account


def _stopped(stop: threading.Event | None, number: int, name: str) -> None:
    """Stopped if a stop was requested (looked at every STOP_EVERY lines)."""
    if stop is not None and number % STOP_EVERY == 0 and stop.is_set():
        raise Stopped(f"stopped while checking {name} (line {number})")


def _check(
    lines: IO[str], name: str, copy: IO[str] | None, stop: threading.Event | None = None
) -> int:
    """Check every line; return how many accounts there are. ``copy`` receives the lines.
    Stopped once ``stop`` is set."""
    count = 0
    try:
        for number, line in enumerate(lines, 1):
            _stopped(stop, number, name)
            if copy is not None:
                copy.write(line if line.endswith("\n") else line + "\n")
            account = line.strip().lstrip("\ufeff")
            if not account or account.startswith("#"):
                continue
            check_account(account, f"{name}:{number}")
            count += 1
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read accounts file {name}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read accounts file {name}: {exc}") from None
    return count


QUERY_CHUNK = 5000  # rows fetched at a time: memory stays flat whatever the query returns


def _from_query(
    engine: Engine, sql: str, spool: IO[str], stop: threading.Event | None = None
) -> int:
    """Run ``sql``, check the first column of every row, write the UserIDs to ``spool``.
    Stopped once ``stop`` is set."""
    count = 0
    try:
        with engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=QUERY_CHUNK).execute(
                sa.text(sql)
            )
            for number, row in enumerate(rows, 1):
                _stopped(stop, number, "--accounts-query")
                value = row[0] if len(row) else None
                if not isinstance(value, str):
                    kind = "NULL" if value is None else type(value).__name__
                    raise UsageError(
                        f"--accounts-query: row {number} has {kind} in its first column, "
                        "not text (select the UserID column, cast to text if need be)"
                    )
                account = value.strip()
                check_account(account, f"--accounts-query row {number}")
                spool.write(account + "\n")
                count += 1
    except sa.exc.SQLAlchemyError as exc:
        raise UsageError(f"--accounts-query failed: {db.first_line(exc)}") from None
    return count


def read_accounts(source: str, stdin: TextIO | None = None) -> list[str]:
    """UserIDs from a file (``-`` for stdin), checked, duplicates dropped, order kept."""
    accounts = Accounts(source, [], stdin)
    try:
        return list(dict.fromkeys(accounts))
    finally:
        accounts.close()


def check_account(account: str, where: str) -> None:
    """Refuse what cannot be a UserID (empty, whitespace or a control character such as NUL
    inside, over 32 bytes)."""
    if (
        not account
        or any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cs") for ch in account)
        or len(account.encode("utf-8", "surrogatepass")) > MAX_USERID_BYTES
    ):
        raise UsageError(f"{where}: not a UserID: {account[:40]!r}")
