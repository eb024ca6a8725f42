"""An account id is stored verbatim or refused (UsageError, exit 2), never changed: from an
accounts file (where the documented line rules apply), from --accounts-query and from --account,
with whitespace, control, zero-width and bidi characters, ``#`` and U+FEFF in every position."""

from __future__ import annotations

import itertools
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.accounts import Accounts
from etl.errors import UsageError
from etl.store import runs
from etl.store.schema import sync_checkpoints

NOW = datetime(2026, 1, 1, tzinfo=UTC)
IDS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What an id must never hide: format characters (zero-width, bidi, BOM), whitespace of every
# kind, control characters, a lone surrogate; and what a file treats specially (#).
TRICKY = [
    *"\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e",
    *"\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff\u00ad\u061c",
    *" \t\u00a0\u1680\u2000\u2028\u2029\u3000\x0b\x0c\x1c\x85",
    *"\x00\x01\x1b\x7f\ud800",
    "#",
]
PLAIN = st.text("abcXYZ019_-.@é中", min_size=0, max_size=6)
_jobs = itertools.count()


@st.composite
def tricky_ids(draw: st.DrawFn) -> str:
    """A plain id with tricky characters at its start, inside and at its end (each maybe)."""
    parts = [draw(PLAIN) for _ in range(2)]
    at = [draw(st.one_of(st.just(""), st.sampled_from(TRICKY))) for _ in range(3)]
    return at[0] + parts[0] + at[1] + parts[1] + at[2]


def acceptable(account: str) -> bool:
    """The rules, independently: non-empty, at most 32 bytes, no whitespace, no Cc/Cs/Cf."""
    return (
        bool(account)
        and len(account.encode("utf-8", "surrogatepass")) <= 32
        and not any(
            ch.isspace() or unicodedata.category(ch) in ("Cc", "Cs", "Cf") for ch in account
        )
    )


def checkpoints(engine: sa.Engine, accounts: Accounts) -> list[str]:
    """Start a run of ``accounts`` as sync does; the accounts its checkpoints hold."""
    with engine.begin() as conn:
        run_id = runs.start_run(conn, f"ids-{next(_jobs)}", {}, NOW)
        runs.add_lists(conn, run_id, ((a, 1) for a in accounts), NOW)
        c = sync_checkpoints.c
        rows = conn.execute(sa.select(c.account).where(c.run_id == run_id).order_by(c.account))
        return [row.account for row in rows]


@IDS
@given(account=tricky_ids())
def test_an_account_option_is_stored_verbatim_or_refused(engine: sa.Engine, account: str) -> None:
    """--account ID: the checkpoints hold exactly ID, or it is refused; never trimmed."""
    if not acceptable(account):
        with pytest.raises(UsageError, match=r"^--account: not a UserID \("):
            Accounts(None, [account])
        return
    assert checkpoints(engine, Accounts(None, [account])) == [account]


@IDS
@given(account=tricky_ids())
def test_a_query_row_is_stored_verbatim_or_refused(engine: sa.Engine, account: str) -> None:
    """--accounts-query: a row's value is the id as it is (``#x`` too), or refused naming the
    row; never trimmed, never taken for a comment."""
    storable = "\ud800" not in account and not (
        engine.dialect.name == "postgresql" and "\x00" in account
    )
    if not storable:  # the source database itself cannot hold it
        return
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS app_users (n INTEGER, user_id TEXT)"))
        conn.execute(sa.text("DELETE FROM app_users"))
        conn.execute(
            sa.text("INSERT INTO app_users VALUES (1, 'plain'), (2, :account)"),
            {"account": account},
        )
    query = (engine, "SELECT user_id FROM app_users ORDER BY n")
    if not acceptable(account):
        with pytest.raises(UsageError, match=r"^--accounts-query row 2: not a UserID \("):
            Accounts(None, [], query=query)
        return
    accounts = Accounts(None, [], query=query)
    try:
        assert checkpoints(engine, accounts) == sorted(["plain", account])
    finally:
        accounts.close()


@IDS
@given(account=tricky_ids().filter(lambda a: "\n" not in a and "\r" not in a), first=st.booleans())
def test_a_file_line_is_stored_as_documented_or_refused(
    engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory, account: str, first: bool
) -> None:
    """An accounts file line: trimmed of surrounding whitespace, a comment if it then starts
    with #, a BOM dropped only at the very start of the file; what is left is stored exactly,
    or refused naming the line."""
    path = tmp_path_factory.mktemp("ids") / "accounts.txt"
    lines = [account] if first else ["plain", account]
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n")
    expected = account[1:] if first and account.startswith("\ufeff") else account
    expected = expected.strip()
    others = [] if first else ["plain"]
    if "\ud800" in account:  # not UTF-8 at all
        with pytest.raises(UsageError, match="cannot read accounts file"):
            Accounts(str(path), [])
    elif not expected or expected.startswith("#"):  # a blank or comment line
        assert checkpoints(engine, Accounts(str(path), [])) == others
    elif not acceptable(expected):
        with pytest.raises(UsageError, match=rf"accounts.txt:{len(lines)}: not a UserID \("):
            Accounts(str(path), [])
    else:
        assert checkpoints(engine, Accounts(str(path), [])) == sorted([expected, *others])


def test_a_bom_is_accepted_at_the_start_of_a_file_only(tmp_path: Path) -> None:
    """U+FEFF opening the file is a byte order mark; on any later line it is refused."""
    path = tmp_path / "a.txt"
    path.write_text("\ufeffalice\nbob\n", encoding="utf-8")
    assert list(Accounts(str(path), [])) == ["alice", "bob"]
    path.write_text("alice\n\ufeffbob\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"a.txt:2: not a UserID \(an invisible format"):
        Accounts(str(path), [])
