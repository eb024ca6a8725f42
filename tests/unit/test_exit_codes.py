"""The exit-code table (etl.errors.EXIT_CODES) against everything that states the codes: the
README's "Exit codes" table, ``--help``, the exception classes and the etl.errors docstring."""

from __future__ import annotations

import argparse
import re
import signal
from pathlib import Path

import pytest

from etl import cli, errors
from etl.cli.parser import EPILOG_WIDTH, exit_codes_help
from etl.errors import EXIT_CODES, EXIT_INTERNAL, EXIT_INTERRUPTED, EtlError, Interrupted

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_codes() -> list[int]:
    """The codes of the rows ``| N | ... |`` of the README's "### Exit codes" table, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Exit codes\n", 1)[1]
    section = re.split(r"^#{1,3} ", section, maxsplit=1, flags=re.M)[0]
    return [int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)]


def help_paragraph(text: str) -> str:
    """The exit-code paragraph of a ``--help``, on one line."""
    paragraph = text.split("\nexit codes: ", 1)[1].split("\n\n", 1)[0]
    return "exit codes: " + " ".join(paragraph.split())


def subclasses(cls: type[EtlError]) -> list[type[EtlError]]:
    found: list[type[EtlError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


def test_the_readme_table_has_exactly_the_codes_of_the_table() -> None:
    """Same codes, same order, each once."""
    assert readme_codes() == list(EXIT_CODES)
    assert list(EXIT_CODES) == sorted(EXIT_CODES)


def test_help_lists_every_code_with_its_brief() -> None:
    """``follow-etl --help`` (and the commands that show the epilog) list each code of the
    table, in its order, with the table's words for it."""
    expected = "exit codes: " + ", ".join(
        f"{code} {entry.brief}" for code, entry in EXIT_CODES.items()
    )
    parser = cli.build_parser()
    assert help_paragraph(parser.format_help()) == expected
    shown = [int(code) for code in re.findall(r"(?:: |, )(\d+) ", expected)]
    assert shown == list(EXIT_CODES)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("sync", "worker", "verify"):
        assert help_paragraph(commands.choices[name].format_help()) == expected, name


def test_help_paragraph_keeps_each_code_with_its_words() -> None:
    """Filled to the width, never ending a line with a bare code, nor past the width."""
    for width in (40, 60, EPILOG_WIDTH):
        lines = exit_codes_help(width).splitlines()
        assert all(len(line) <= width for line in lines)
        assert not any(re.search(r"(?:^|\s)\d+$", line) for line in lines), lines


@pytest.mark.parametrize("code", [c for c, entry in EXIT_CODES.items() if entry.error])
def test_each_exception_carries_its_code(code: int) -> None:
    """The class the table names for a code raises with that code (Interrupted: 128 + the
    signal, SIGINT 130 and SIGTERM 143)."""
    cls = EXIT_CODES[code].error
    assert cls is not None
    if cls is Interrupted:
        assert Interrupted("x", signum=signal.Signals(code - 128)).exit_code == code
    else:
        assert cls.exit_code == code
        assert cls("x").exit_code == code


def test_every_error_class_exits_with_a_code_of_the_table() -> None:
    """No EtlError subclass ends the process with a code the table does not explain, and each
    code of a class is the one the table gives that class (or inherits, for ApiError's)."""
    named = {entry.error for entry in EXIT_CODES.values()}
    classes: list[type[EtlError]] = [EtlError, *subclasses(EtlError)]
    for cls in classes:
        assert cls.exit_code in EXIT_CODES, cls
        if cls in named and cls is not Interrupted:
            assert EXIT_CODES[cls.exit_code].error is cls, cls
    assert EXIT_INTERNAL in EXIT_CODES
    assert EXIT_CODES[EXIT_INTERNAL].error is None
    assert EXIT_CODES[EXIT_INTERRUPTED].error is Interrupted
    assert EXIT_INTERRUPTED == 128 + signal.SIGINT


def test_the_errors_docstring_agrees() -> None:
    """The exception tree at the top of etl.errors states the same code for each class."""
    doc = errors.__doc__ or ""
    stated = dict(re.findall(r"(\w+)\s+\((\d+)(?: / \d+)?\)", doc))
    assert stated, "no codes found in the docstring"
    for name, code in stated.items():
        entry = EXIT_CODES[int(code)]
        assert entry.error is getattr(errors, name), name
    assert set(stated) == {entry.error.__name__ for entry in EXIT_CODES.values() if entry.error}


def test_help_paragraph_is_unchanged() -> None:
    """The paragraph is part of the CLI's contract: rendering it from the table kept it as it
    was written by hand."""
    assert exit_codes_help() == (
        "exit codes: 0 done, 1 internal error, 2 usage, 3 configuration, 4 API refused "
        "credentials or\napp, 5 database, 6 lists left (resumable), given up or held, 7 the job is "
        "already running,\n9 verify found lists that disagree, 130 interrupted (Ctrl-C), 143 "
        "SIGTERM (both resumable)"
    )


def test_no_command_at_all_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`follow-etl` alone says what is missing in one line and exits 2."""
    from etl.cli import main
    from etl.console import setup_logging

    setup_logging(0, "text")  # a fresh process's default; an earlier test may have left JSON on
    with pytest.raises(SystemExit) as stopped:
        main([])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    missing = "the following arguments are required: COMMAND (see follow-etl --help)"
    assert err.strip().splitlines() == [f"follow-etl: error: {missing}"]


def test_as_error_is_the_one_mapping_to_exit_codes() -> None:
    """etl.session.as_error: an EtlError is itself, an API error that outlasted its retries is
    RunIncomplete (6), a database layer's error is DatabaseError (5) with the driver's first
    line only, Ctrl-C is Interrupted (130), anything else is a bug (None, exit 1)."""
    import sqlite3

    from etl.errors import (
        ApiError,
        DatabaseError,
        FatalApiError,
        RunIncomplete,
        TransientApiError,
        UsageError,
    )
    from etl.session import as_error, exit_code

    usage = UsageError("bad")
    assert as_error(usage) is usage
    fatal = FatalApiError("no", code=70001)
    assert as_error(fatal) is fatal
    for transient in (ApiError("gone"), TransientApiError("slow", code=30006)):
        mapped = as_error(transient)
        assert isinstance(mapped, RunIncomplete)
        assert str(mapped) == str(transient)
    database = as_error(sqlite3.OperationalError("database is locked\nSELECT secret"))
    assert isinstance(database, DatabaseError)
    assert str(database) == "database error: database is locked"
    interrupted = as_error(KeyboardInterrupt())
    assert isinstance(interrupted, Interrupted)
    assert interrupted.exit_code == EXIT_INTERRUPTED
    assert as_error(ValueError("a bug")) is None
    codes = [exit_code(e) for e in (usage, fatal, ApiError("x"), KeyboardInterrupt(), OSError())]
    assert codes == [2, 4, 6, 130, EXIT_INTERNAL]
