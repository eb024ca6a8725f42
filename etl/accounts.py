"""Account lists as users give them: a file or stdin, one UserID per line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from etl.errors import UsageError

MAX_USERID_BYTES = 32  # Tencent's documented limit for a UserID


def read_accounts(source: str, stdin: TextIO | None = None) -> list[str]:
    """UserIDs from a file (``-`` for stdin): one per line, blanks and ``#`` comments ignored,
    duplicates dropped, order kept."""
    name = "<stdin>" if source == "-" else source
    try:
        if source == "-":
            lines = (stdin or sys.stdin).read().splitlines()
        else:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"accounts file not found: {source}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read accounts file {name}: {exc}") from None
    accounts: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        account = line.strip().lstrip("\ufeff")
        if not account or account.startswith("#"):
            continue
        check_account(account, f"{name}:{number}")
        accounts.setdefault(account)
    return list(accounts)


def check_account(account: str, where: str) -> None:
    """Refuse what cannot be a UserID (empty, whitespace inside, over 32 bytes)."""
    if (
        not account
        or any(ch.isspace() for ch in account)
        or len(account.encode()) > MAX_USERID_BYTES
    ):
        raise UsageError(f"{where}: not a UserID: {account[:40]!r}")
