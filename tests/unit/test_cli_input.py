"""Parsing what a user types: accounts files, follow types, page sizes."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from etl.accounts import read_accounts
from etl.cli import build_parser
from etl.cli.values import parse_types
from etl.console import Redactor
from etl.errors import UsageError


def test_accounts_file_rules(tmp_path: Path) -> None:
    """Blank lines and # comments are ignored, spaces trimmed, duplicates dropped, order kept."""
    path = tmp_path / "accounts.txt"
    path.write_text("\ufeffalice\n\n# a comment\n  bob  \nalice\n\tcarol\n", encoding="utf-8")
    assert read_accounts(str(path)) == ["alice", "bob", "carol"]


def test_accounts_from_stdin() -> None:
    """``-`` reads the accounts from standard input."""
    assert read_accounts("-", io.StringIO("x\ny\nx\n")) == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("two words\n", ":1: not a UserID"), ("ok\n" + "x" * 33 + "\n", ":2: not a UserID")],
)
def test_bad_account_lines_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    """A line that cannot be a UserID is refused with its line number."""
    path = tmp_path / "a.txt"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        read_accounts(str(path))


def test_missing_and_binary_files(tmp_path: Path) -> None:
    """A missing file or one that is not UTF-8 is a usage error, not a crash."""
    with pytest.raises(UsageError, match="not found"):
        read_accounts(str(tmp_path / "nope.txt"))
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="cannot read"):
        read_accounts(str(binary))


def test_types() -> None:
    """Names and numbers both work; repeats collapse; unknown names are refused."""
    assert parse_types("fans,follows,mutual") == (1, 2, 3)
    assert parse_types("mutual, 1 ,mutual") == (3, 1)
    with pytest.raises(argparse.ArgumentTypeError, match="bogus"):
        parse_types("fans,bogus")


@pytest.mark.parametrize("size", ["0", "1001", "ten", "-5"])
def test_page_size_bounds(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--page-size outside 1..1000 is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["sync", "--account", "a", "--page-size", size])
    assert caught.value.code == 2
    assert "1 to 1000" in capsys.readouterr().err


def test_redactor_masks_usersig_and_secrets() -> None:
    """UserSigs in URLs and configured secrets become ***."""
    redactor = Redactor(["topsecret"])
    text = redactor.redact("POST https://h/v4?sdkappid=1&usersig=eJyrVipKz&random=2 topsecret")
    assert text == "POST https://h/v4?sdkappid=1&usersig=***&random=2 ***"


def test_accounts_are_checked_up_front_and_streamed_after(tmp_path: Path) -> None:
    """Every line is checked when the file is opened; iterating reads it again, repeats and
    --account values included (the database ignores repeats), without holding the list."""
    from etl.accounts import Accounts

    path = tmp_path / "a.txt"
    path.write_text("# c\nalice\n\nbob\nalice\n", encoding="utf-8")
    accounts = Accounts(str(path), ["carol"])
    assert accounts.count == 4
    assert list(accounts) == ["alice", "bob", "alice", "carol"]
    assert list(accounts) == ["alice", "bob", "alice", "carol"]  # a second pass reads it again
    path.write_text("ok\nnot ok\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"a.txt:2"):
        Accounts(str(path), [])


def test_stdin_is_spooled_for_the_second_pass() -> None:
    """Standard input cannot be read twice: it is copied aside while it is checked."""
    from etl.accounts import Accounts

    accounts = Accounts("-", [], io.StringIO("x\ny\nx"))
    try:
        assert accounts.count == 3
        assert list(accounts) == ["x", "y", "x"]
    finally:
        accounts.close()
