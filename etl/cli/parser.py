"""The parser's common parts: the one-line usage error, the help texts every documented
command shows (the environment, the exit codes from etl.errors.EXIT_CODES), and the options
every command or every crawling command takes."""

from __future__ import annotations

import argparse
import textwrap
from typing import NoReturn, TypeAlias

from etl.cli import values
from etl.console import error
from etl.errors import EXIT_CODES, UsageError

ENVIRONMENT_HELP = """\
configuration (environment):
  DATABASE_URL    SQLAlchemy URL (default sqlite:///follow_etl.db; postgresql:// works)
  ACCOUNTS_DATABASE_URL
                  where `sync --accounts-query` runs (default: DATABASE_URL)
  IM_SDKAPPID     the app's SDKAppID
  IM_ADMIN        an App administrator account (default administrator)
  IM_SECRET_KEY   the app's secret key: UserSigs are made and renewed from it
  IM_USERSIG      a fixed UserSig instead of the key (it expires)
  IM_REGION       china, singapore, seoul, tokyo, frankfurt, mumbai, silicon-valley, jakarta
  IM_BASE_URL     instead of IM_REGION, e.g. http://127.0.0.1:8080 (http only on loopback)
  IM_CALLBACK_TOKEN
                  `listen`: the console's callback token; each callback's Sign is checked
  IM_RATE         calls per second, for all follow APIs together (default 150)
  IM_TIMEOUT      seconds per request, above the service's 3 s (default 10)
  IM_RETRY_ATTEMPTS, IM_RETRY_MAX_SECONDS, IM_RETRY_WAIT
                  retries of one request: attempts, total seconds, first backoff (8, 300, 0.5)
  DATABASE_RETRY_SECONDS
                  how long a run waits for a lost database, reconnecting (default 180)
  FOLLOW_ETL_HOLD_MIN_EDGES, FOLLOW_ETL_HOLD_SHARE
                  a crawl that would remove at least this many of a list's edges and more
                  than this share of them is held until confirmed (default 20, 0.5)
"""
EPILOG_WIDTH = 92  # the exit-code paragraph's lines, about as wide as the ones above


def exit_codes_help(width: int = EPILOG_WIDTH) -> str:
    """The exit-code paragraph of ``--help``, from etl.errors.EXIT_CODES: ``exit codes: 0 done,
    1 internal error, ...``, filled to *width*; a code never ends a line (it stays with its
    first word)."""
    glue = "\N{NO-BREAK SPACE}"  # not whitespace to textwrap: it never breaks a line there
    entries = ", ".join(f"{code}{glue}{entry.brief}" for code, entry in EXIT_CODES.items())
    text = textwrap.fill(f"exit codes: {entries}", width=width, break_on_hyphens=False)
    return text.replace(glue, " ")


EPILOG = f"{ENVIRONMENT_HELP}\n{exit_codes_help()}\n"


USAGE = UsageError.exit_code


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the synopsis is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        error(f"{message} (see {self.prog} --help)", USAGE, prefix=f"{self.prog}: error: ")
        self.exit(USAGE)


Commands: TypeAlias = "argparse._SubParsersAction[Parser]"  # where each command is added


def documented(
    commands: Commands, name: str, help: str, description: str
) -> argparse.ArgumentParser:
    """A command whose ``--help`` shows its description as written, then the epilog."""
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def metrics_options(parser: argparse.ArgumentParser) -> None:
    """Where a crawling process writes its Prometheus metrics."""
    parser.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write Prometheus metrics to PATH (node_exporter's textfile collector: a *.prom "
        "file in its directory), every --metrics-every seconds and at exit",
    )
    parser.add_argument(
        "--pushgateway",
        type=values.pushgateway_url,
        metavar="URL",
        help="push Prometheus metrics to this Pushgateway (grouped by job and instance), "
        "every --metrics-every seconds and at exit; basic auth as https://user:password@host",
    )
    parser.add_argument(
        "--metrics-every",
        type=values.positive(float),
        default=15.0,
        metavar="SECONDS",
        help="seconds between metrics refreshes (default 15)",
    )


def global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-v, -q, --log-format and --debug, before the command (``top``) or after it. After it,
    they have no defaults of their own, so one given before the command still counts."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=1,
        default=default(0),
        dest="verbosity",
        help="debug logging",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=-1,
        default=default(0),
        dest="verbosity",
        help="only warnings and errors on stderr (and no progress display)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default("text"),
        help="stderr log lines as text (default) or one JSON object per line, the final error "
        "line included; results on stdout stay text",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show the traceback of an internal error",
    )
