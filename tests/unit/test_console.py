"""Logging at the edge: text or JSON lines on stderr, secrets masked in both, results on stdout."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from etl.cli import build_parser
from etl.console import REDACTOR, say, setup_logging

SECRET = "hunter2-secret-key"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test sets up logging its own way; the root logger and the redactor come back after."""
    root = logging.getLogger()
    handlers, level, secrets = root.handlers[:], root.level, REDACTOR.secrets
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    REDACTOR.secrets = secrets


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every stderr line, each parsed as one JSON object."""
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_carry_the_record_and_extras(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under json, each record is one JSON object: ts (UTC), level, logger, message, extras."""
    setup_logging(0, "json")
    logging.getLogger("etl.sync").info("stored %d pages", 3, extra={"run_id": 7, "job": "nightly"})
    logging.getLogger("etl.tencent.client").debug("not shown at verbosity 0")
    [doc] = json_lines(capsys.readouterr().err)
    assert doc["level"] == "info"
    assert doc["logger"] == "etl.sync"
    assert doc["message"] == "stored 3 pages"
    assert (doc["run_id"], doc["job"]) == (7, "nightly")
    ts = datetime.fromisoformat(doc["ts"])
    assert doc["ts"].endswith("Z")
    assert ts.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - ts).total_seconds()) < 60


def test_json_lines_mask_secrets_in_message_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """The configured secrets and any usersig= value are masked in the message and the fields."""
    REDACTOR.secrets = [SECRET]
    setup_logging(0, "json")
    url = "https://console.tim.qq.com/v4/follow/follow_get?sdkappid=1&usersig=eJyrVipKzSsp&random=9"
    logging.getLogger("etl.tencent.client").warning(
        "retrying %s with key %s",
        url,
        SECRET,
        extra={"url": url, "detail": {"key": SECRET, "tries": [SECRET, 2]}, "note": f"k={SECRET}"},
    )
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "eJyrVipKzSsp" not in err
    [doc] = json_lines(err)
    assert doc["message"] == (
        "retrying https://console.tim.qq.com/v4/follow/follow_get?sdkappid=1&usersig=***&random=9"
        " with key ***"
    )
    assert doc["url"].endswith("usersig=***&random=9")
    assert doc["note"] == "k=***"
    assert doc["detail"] == {"key": "***", "tries": ["***", 2]}


def test_json_exception_is_one_line_field(capsys: pytest.CaptureFixture[str]) -> None:
    """A logged exception becomes one masked line in an ``exception`` field, not a traceback."""
    REDACTOR.secrets = [SECRET]
    setup_logging(0, "json")
    try:
        raise ValueError(f"bad answer\nfor key {SECRET}")
    except ValueError:
        logging.getLogger("etl.sync").exception("page failed")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert SECRET not in err
    [doc] = json_lines(err)
    assert doc["level"] == "error"
    assert doc["message"] == "page failed"
    assert re.fullmatch(
        r"ValueError: bad answer for key \*\*\* \(at test_console\.py:\d+ in test_\w+\)",
        doc["exception"],
    )


def test_text_format_is_unchanged_and_masks_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    """The default stays ``HH:MM:SS LEVEL message``, secrets masked, tracebacks included."""
    REDACTOR.secrets = [SECRET]
    setup_logging(0)
    log = logging.getLogger("etl.sync")
    log.warning("usersig=abc&x=1 and %s", SECRET)
    try:
        raise RuntimeError(SECRET)
    except RuntimeError:
        log.exception("boom")
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING usersig=\*\*\*&x=1 and \*\*\*", lines[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d ERROR boom", lines[1])
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: ***"
    assert not any(SECRET in line for line in lines)


def test_quiet_drops_info_in_either_format(capsys: pytest.CaptureFixture[str]) -> None:
    """-q keeps warnings and drops info, whatever the format."""
    setup_logging(-1, "json")
    logging.getLogger("etl.sync").info("chatty")
    logging.getLogger("etl.sync").warning("listen")
    assert [d["message"] for d in json_lines(capsys.readouterr().err)] == ["listen"]


def test_say_stays_plain_text_on_stdout_under_json(capsys: pytest.CaptureFixture[str]) -> None:
    """The command's result lines are not log records: plain text on stdout, still masked."""
    REDACTOR.secrets = [SECRET]
    setup_logging(0, "json")
    say(f"run 1 of job 'demo' finished, key {SECRET}")
    out, err = capsys.readouterr()
    assert out == "run 1 of job 'demo' finished, key ***\n"
    assert err == ""


def test_log_format_option() -> None:
    """--log-format is a global option taking text or json, text by default."""
    parser = build_parser()
    assert parser.parse_args(["status"]).log_format == "text"
    assert parser.parse_args(["--log-format", "json", "-q", "status"]).log_format == "json"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--log-format", "xml", "status"])
    assert exit_info.value.code == 2
