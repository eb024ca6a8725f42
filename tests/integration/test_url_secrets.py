"""No part of a password in a configured URL, whatever characters it holds, appears in any
message: DATABASE_URL's in config errors, connection failures, the CLI's error and log lines;
IM_BASE_URL's in its config error."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import string
import subprocess
import sys
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.cli import main
from etl.config import database_url, load_settings
from etl.console import setup_logging
from etl.errors import ConfigError
from etl.store import db
from tests.conftest import PG_SERVER, free_port

# Printable characters from the whole of Unicode, with URL punctuation (@ : / % # ? and space)
# drawn often enough that most examples hold some.
PASSWORDS = st.text(
    st.one_of(
        st.sampled_from(string.punctuation + " "),
        st.characters(codec="utf-8").filter(str.isprintable),
    ),
    min_size=6,
)
NASTY = ["p@ss:w/rd#x?y", "50% off & more", "mot de passe ünïcødé ☃", "a:b@c/d?e#f%zz g"]
CLOSED = free_port()
REFUSED = (
    "DATABASE_URL is not a database URL: write it as driver://user:password@host:port/database, "
    "with any @ : / ? # % or space in the user or password percent-encoded (%40 for @)"
)


def leaked(password: str, text: str, baseline: str) -> list[str]:
    """The password, or any 4 characters of it, found in ``text`` but not in ``baseline`` (the
    same message made with another password, whose fixed words may hold them by chance)."""
    parts = {password} | {password[i : i + 4] for i in range(len(password) - 3)}
    return sorted(p for p in parts if p in text and p not in baseline)


def url_with(password: str, *, encode: bool, host: str = "127.0.0.1", port: int = CLOSED,
             database: str = "no_such_db") -> str:  # fmt: skip
    """A PostgreSQL URL holding ``password``, percent-encoded or as typed."""
    secret = quote(password, safe="") if encode else password
    return f"postgresql://postgres:{secret}@{host}:{port}/{database}"


def cli(url: str, *words: str) -> tuple[int, str]:
    """Run follow-etl in-process with DATABASE_URL=url at debug verbosity; (exit code,
    stdout and stderr together). The logging it sets up is undone after."""
    out = io.StringIO()
    env = {"DATABASE_URL": url, "DATABASE_RETRY_SECONDS": "0"}
    loggers = [logging.getLogger(name) for name in ("", "httpx", "httpcore", "alembic")]
    saved = [(logger, logger.level, logger.handlers[:]) for logger in loggers]
    with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(out):  # fmt: skip
        try:
            code = main(["-v", *words])
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            setup_logging(0, "text")  # the format error() speaks, for whoever calls main next
            for logger, level, handlers in saved:
                logger.setLevel(level)
                logger.handlers[:] = handlers
    return code, out.getvalue()


@given(password=PASSWORDS, encode=st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_parsed_url_keeps_the_password_out_of_every_other_part(
    password: str, encode: bool
) -> None:
    """A URL is either parsed with the password whole in its place (host, port and database as
    written), or refused by an error that quotes none of it; its renderings never show it."""
    raw = url_with(password, encode=encode, port=5432)
    try:
        url = database_url(raw)
    except ConfigError as exc:
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert not encode, "a percent-encoded password is always accepted"
        assert refused == REFUSED
        return
    assert (url.host, url.port, url.database, url.query) == ("127.0.0.1", 5432, "no_such_db", {})
    if encode:
        assert url.password == password
    baseline = url_with("Zz9Zz9", encode=True, port=5432)
    for shown in (db.describe(url), repr(url), str(url)):
        assert not leaked(password, shown, baseline)


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://postgres:pa@ss@127.0.0.1:5432/db",  # '@' unencoded: the tail was the host
        "postgresql://postgres:pa@ss:w/rd@127.0.0.1:5432/db",  # ...or the port, not a number
        "postgresql://us/er:password@127.0.0.1:5432/db",  # the user hid the password
        "postgresql://postgres:password@127.0.0.1:port/db",  # a port that is not a number
    ],
)
def test_an_ambiguous_url_is_refused_in_one_line_without_its_parts(raw: str) -> None:
    """A URL the parser would misread is a configuration error that quotes nothing of it: the
    one message of every refused URL."""
    with pytest.raises(ConfigError) as caught:
        database_url(raw)
    assert str(caught.value) == REFUSED


def test_a_sqlite_path_may_hold_an_at_sign() -> None:
    """SQLite has no password: a file name with @ is a file name."""
    assert database_url("sqlite:///backups/nightly@host.db").database == "backups/nightly@host.db"


def test_libpq_password_parameter_becomes_the_hidden_password() -> None:
    """A password given as ``?password=`` is the URL's password: kept, and shown nowhere."""
    url = database_url("postgresql://postgres@127.0.0.1/db?password=hunter22&sslmode=prefer")
    assert url.password == "hunter22"
    for shown in (db.describe(url), repr(url), str(url)):
        assert "hunter22" not in shown
    assert db.describe(url) == "postgresql+psycopg://postgres:***@127.0.0.1/db?sslmode=prefer"


def test_a_password_in_the_query_still_connects(pg_server: sa.Engine) -> None:
    """The moved password reaches the server as before: trust auth lets this one in."""
    sep = "&" if "?" in PG_SERVER else "?"
    engine = db.make_engine(database_url(f"{PG_SERVER}{sep}password=any-password-at-all"))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def baselines(pg_server: sa.Engine) -> dict[tuple[bool, int], str]:
    """``status`` output for each URL shape with a harmless password."""
    return {
        (encode, port): cli(url_with("Zz9Zz9", encode=encode, port=port), "status")[1]
        for encode in (True, False)
        for port in (CLOSED, 5432)
    }


@given(password=PASSWORDS, encode=st.booleans(), closed=st.booleans())
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_status_never_prints_the_password(
    baselines: dict[tuple[bool, int], str], password: str, encode: bool, closed: bool
) -> None:
    """`status` at a closed port, or at the real server's missing database, fails in one line
    (exit 3 or 5) that holds no part of the password, its debug log lines included."""
    port = CLOSED if closed else 5432
    code, text = cli(url_with(password, encode=encode, port=port), "status")
    assert code in (3, 5), text
    assert "Traceback" not in text
    assert not leaked(password, text, baselines[encode, port])


@pytest.mark.parametrize("password", NASTY)
@pytest.mark.parametrize("encode", [True, False])
@pytest.mark.parametrize(
    ("command", "host"),
    [
        (["migrate"], "127.0.0.1"),
        (["status"], "no-such-host.invalid"),
        (["sync", "--job", "j", "--accounts", "ACCOUNTS"], "127.0.0.1"),
        (["verify", "--job", "j"], "127.0.0.1"),
    ],
)
def test_commands_never_print_the_password(
    pg_server: sa.Engine,
    tmp_path: Path,
    command: list[str],
    host: str,
    encode: bool,
    password: str,
) -> None:
    """migrate, sync, verify at a closed port and status at an unknown host end in one error
    line (exit 3 for a URL that cannot be read as written, else 5), with no part of the
    password in it or in the log lines."""
    env = {"IM_SDKAPPID": "1400000001", "IM_SECRET_KEY": "k" * 32,
           "IM_BASE_URL": f"http://127.0.0.1:{CLOSED}"}  # fmt: skip
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("user_1\n")
    command = [str(accounts) if word == "ACCOUNTS" else word for word in command]
    with mock.patch.dict(os.environ, env):
        code, text = cli(url_with(password, encode=encode, host=host), *command)
        _, baseline = cli(url_with("Zz9Zz9", encode=encode, host=host), *command)
    assert code in (3, 5) if not encode else code == 5, text
    assert "Traceback" not in text
    assert not leaked(password, text, baseline)


@pytest.mark.parametrize("encode", [True, False])
def test_python_m_etl_status_never_prints_the_password(pg_server: sa.Engine, encode: bool) -> None:
    """The real entry point, in a fresh process, at the server's missing database."""
    password = NASTY[-1]
    env = {**os.environ, "DATABASE_URL": url_with(password, encode=encode, port=5432)}
    done = subprocess.run(
        [sys.executable, "-m", "etl", "-v", "status"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == (5 if encode else 3), done.stderr
    assert not leaked(password, done.stdout + done.stderr, REFUSED + url_with("", encode=True))


@pytest.mark.parametrize(
    "raw", ["https://user:Xq7Zk9v@console.tim.qq.com", "ftp://user:Xq7Zk9v@host", "user:Xq7Zk9v@h"]
)
def test_im_base_url_with_credentials_is_refused_without_them(raw: str) -> None:
    """IM_BASE_URL takes no user or password (the UserSig authenticates), and its error
    quotes none."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"IM_BASE_URL": raw})
    assert "Xq7" not in str(caught.value)
    assert "Zk9v" not in str(caught.value)
