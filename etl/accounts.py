"""Account lists as users give them: a file or stdin, one UserID per line.

An account id is kept verbatim or refused with one clear line (UsageError, exit 2), never
silently changed. The rules:

- In an accounts file (or stdin), a line is one UserID. The whitespace around a line is
  trimmed; blank lines and lines whose first non-blank character is ``#`` are comments. A
  UTF-8 byte order mark (U+FEFF) is accepted only at the very start of the file.
- From ``--accounts-query`` (a row's first column) and ``--account`` (the option's value), the
  value is taken verbatim: nothing is trimmed and nothing is a comment (``#abc`` is an id).
  Whitespace at either end is an error naming the row, like any character refused below.
- Refused anywhere in an id: whitespace, control characters (Unicode Cc), lone surrogates
  (Cs) and format characters (Cf: zero-width and bidi controls such as U+200B..U+200F,
  U+202A..U+202E, U+2060..U+2064, U+2066..U+2069, and U+FEFF past the start of a file), which
  would make two ids that look the same differ; and more than 32 bytes of UTF-8.

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
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO, TextIO, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.errors import Stopped, UsageError
from etl.store import db

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
        self._verbatim = query is not None  # the spool holds checked ids, not file lines
        for account in extra:
            check_account(account, extra_label)  # verbatim: never trimmed
        self._extra = list(extra)
        self.count = len(self._extra)  # accounts given, repeats included
        try:
            if query is not None:
                # Read once, as a stream, into a spool: the run sees one consistent answer. One
                # id a line, split on "\n" alone (an id holds no whitespace, so no line break).
                self._spool = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115
                self.count += _from_query(*query, self._spool, stop)
            elif source == "-":
                # Kept open for the second pass; close() ends it.
                self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
                self.count += _check(stdin or sys.stdin, "<stdin>", self._spool, stop)
            elif source is not None:
                self._path = Path(source)
                with _open(source) as lines:
                    self.count += _check(lines, source, None, stop)
        except BaseException:
            self.close()  # a refused list leaves no spool behind
            raise

    def __iter__(self) -> Iterator[str]:
        if self._spool is not None:
            self._spool.seek(0)
            if self._verbatim:
                yield from (line[:-1] for line in self._spool)
            else:
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


def _file_account(line: str, number: int) -> str | None:
    """The UserID of line ``number`` of an accounts file, or None for a blank or comment line:
    a byte order mark at the start of the file and the whitespace around the line go."""
    if number == 1 and line.startswith("\ufeff"):
        line = line[1:]
    account = line.strip()
    if not account or account.startswith("#"):
        return None
    return account


def _accounts(lines: IO[str]) -> Iterator[str]:
    for number, line in enumerate(lines, 1):
        account = _file_account(line, number)
        if account is not None:
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
            account = _file_account(line, number)
            if account is None:
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
        with (
            engine.connect() as conn,
            # Closed on the way out, a refused row included: a server-side cursor stays open
            # otherwise.
            conn.execution_options(stream_results=True, yield_per=QUERY_CHUNK).execute(
                sa.text(sql)
            ) as rows,
        ):
            for number, row in enumerate(rows, 1):
                _stopped(stop, number, "--accounts-query")
                value = row[0] if len(row) else None
                if not isinstance(value, str):
                    kind = "NULL" if value is None else type(value).__name__
                    raise UsageError(
                        f"--accounts-query: row {number} has {kind} in its first column, "
                        "not text (select the UserID column, cast to text if need be)"
                    )
                check_account(value, f"--accounts-query row {number}")  # verbatim
                spool.write(value + "\n")
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


REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cs": "a lone surrogate",
    "Cf": "an invisible format character (zero-width or bidi)",
}


def _problem(account: str) -> str | None:
    """Why ``account`` cannot be a UserID, or None if it can."""
    if not account:
        return "empty"
    for ch in account:
        kind = REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if kind is None and ch.isspace():
            kind = "whitespace"
        if kind is not None:
            return f"{kind}, U+{ord(ch):04X}"
    if len(account.encode("utf-8", "surrogatepass")) > MAX_USERID_BYTES:
        return f"over {MAX_USERID_BYTES} bytes"
    return None


def check_account(account: str, where: str) -> None:
    """Refuse what cannot be a UserID, naming ``where`` and why: empty, whitespace (anywhere,
    ends included), a control, surrogate or format character (Cc, Cs, Cf: NUL, zero-width and
    bidi characters), over 32 bytes. Nothing is trimmed here."""
    problem = _problem(account)
    if problem is not None:
        raise UsageError(f"{where}: not a UserID ({problem}): {account[:40]!a}")


T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter), read lazily: a stream of a
    million accounts or lists is held a chunk at a time (itertools.batched needs Python 3.12)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
