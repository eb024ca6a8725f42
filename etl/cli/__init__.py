"""The command line: parses arguments, dispatches to etl.commands, maps errors to exit codes.
Everything below the edge (cli, commands, console) never prints.

Exit codes: etl.errors.EXIT_CODES, the one table of them; ``--help`` lists it (the README's
"Exit codes" table is checked against it).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeAlias

from etl import __version__
from etl.cli.commands import (
    cmd_demo,
    cmd_migrate,
    cmd_prune,
    cmd_prune_events,
    cmd_report,
    cmd_sandbox,
    cmd_status,
    cmd_sync,
    cmd_usersig,
    cmd_verify,
    cmd_worker,
)
from etl.config import Pushgateway, is_rate, pushgateway
from etl.console import CONTEXT, error, say, setup_logging
from etl.errors import EXIT_CODES, EXIT_INTERNAL, EXIT_INTERRUPTED, EtlError, UsageError
from etl.results import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from etl.store import db
from etl.store.retention import DEFAULT_KEEP_RUNS
from etl.tencent.usersig import DEFAULT_EXPIRE

TYPE_ALIASES = {"fans": 1, "follows": 2, "mutual": 3, "1": 1, "2": 2, "3": 3}


def parse_types(raw: str) -> tuple[int, ...]:
    """``fans,follows,mutual`` (or 1,2,3) -> follow types, in order, without repeats."""
    types: dict[int, None] = {}
    for part in raw.split(","):
        key = part.strip().lower()
        if key not in TYPE_ALIASES:
            raise argparse.ArgumentTypeError(
                f"unknown follow type {part.strip()!r} (use fans, follows, mutual)"
            )
        types.setdefault(TYPE_ALIASES[key])
    return tuple(types)


def _page_size(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to 1000, got {raw!r}")
    return int(raw)


def _count(least: int) -> Any:
    def parse(raw: str) -> int:
        if not raw.isdigit() or int(raw) < least:
            raise argparse.ArgumentTypeError(f"must be an integer of at least {least}, got {raw!r}")
        return int(raw)

    return parse


def _before(raw: str) -> datetime:
    """``--before``: an ISO date (midnight UTC) or date and time (UTC unless it says)."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date like 2026-01-31 (or 2026-01-31T12:00:00+00:00), got {raw!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(raw: str) -> int | float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be positive, got {raw!r}")
        return value

    return parse


def _rate(raw: str) -> float:
    """A calls-per-second rate: any positive finite number (0.2 is a call every 5 s)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not is_rate(value):
        raise argparse.ArgumentTypeError(
            f"must be a positive number of calls per second, got {raw!r}"
        )
    return value


def _concurrency(raw: str) -> int:
    """``--concurrency``: lists in flight, 1..MAX_CONCURRENCY (a thread each)."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 1 to {MAX_CONCURRENCY} (a thread per list in flight), "
            f"got {raw!r}"
        )
    return value


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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the synopsis is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        error(f"{message} (see {self.prog} --help)", USAGE, prefix=f"{self.prog}: error: ")
        self.exit(USAGE)


Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"  # where each command is added


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``follow-etl`` / ``python -m etl``."""
    parser = _Parser(
        prog="follow-etl",
        description="Crawl the Tencent Cloud Chat follow graph into a SQL database, resumably.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:  # in the order `--help` lists them
        _global_options(add(commands), top=False)  # `sync --log-format json ...` works too
    return parser


def _documented(
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


def _add_migrate(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "migrate", help="upgrade the database at DATABASE_URL to the newest schema"
    )
    p.set_defaults(func=cmd_migrate)
    return p


def _add_sync(commands: Commands) -> argparse.ArgumentParser:
    p = _documented(
        commands,
        "sync",
        help="crawl and load; resumes the job's unfinished run",
        description="Crawl the fans/follows/mutual lists of the given accounts and load them.\n"
        "If the job has an unfinished run (crashed, killed, interrupted) it is resumed: done\n"
        "lists are not fetched again and half-done lists continue from their stored cursor.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--accounts",
        metavar="FILE",
        help="one UserID per line (# comments and blank lines ignored; - for stdin)",
    )
    source.add_argument(
        "--accounts-query",
        metavar="SQL",
        help="a query whose first column is the UserIDs, run at ACCOUNTS_DATABASE_URL "
        "(default: DATABASE_URL) and streamed",
    )
    p.add_argument("--account", action="append", metavar="ID", help="a UserID (repeatable)")
    p.add_argument(
        "--types",
        type=parse_types,
        default=(1, 2, 3),
        metavar="LIST",
        help="fans,follows,mutual (default: all three)",
    )
    p.add_argument(
        "--job", default="default", help="the job name runs belong to (default: default)"
    )
    p.add_argument("--restart", action="store_true", help="abandon the job's unfinished run")
    p.add_argument(
        "--page-size",
        type=_page_size,
        default=1000,
        metavar="N",
        help="WantNum, 1..1000 (default 1000)",
    )
    p.add_argument(
        "--rate",
        type=_rate,
        metavar="R",
        help="calls per second for the whole run, all workers together "
        "(default: IM_RATE or 150; the documented quota is 200)",
    )
    p.add_argument(
        "--concurrency",
        type=_concurrency,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"lists fetched at once by this process, 1..{MAX_CONCURRENCY} "
        f"(default {DEFAULT_CONCURRENCY})",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another sync holds the job, wait for it to end instead of exiting with 7",
    )
    p.add_argument(
        "--keep-runs",
        type=_count(0),
        default=DEFAULT_KEEP_RUNS,
        metavar="N",
        help="after a clean finish, delete the checkpoints of the job's runs but the last N "
        f"(see `prune`; default {DEFAULT_KEEP_RUNS}, 0 keeps all)",
    )
    p.add_argument(
        "--hold-min-edges",
        type=_count(1),
        metavar="N",
        help="hold a crawl that would remove at least N of a list's stored edges (and more "
        "than --hold-share of them) until a second crawl confirms it "
        "(default: FOLLOW_ETL_HOLD_MIN_EDGES or 20)",
    )
    p.add_argument(
        "--hold-share",
        type=_share,
        metavar="S",
        help="... and more than this share of them, 0..1; 1 never holds "
        "(default: FOLLOW_ETL_HOLD_SHARE or 0.5)",
    )
    _metrics_options(p)
    p.set_defaults(func=cmd_sync)
    return p


def _add_worker(commands: Commands) -> argparse.ArgumentParser:
    p = _documented(
        commands,
        "worker",
        help="join the job's unfinished run from this machine (PostgreSQL only)",
        description="Join the unfinished run of a job started by `sync`, with the run's own\n"
        "settings (types, page size, budget), claiming lists with leases. Run any number, on\n"
        "any machine that reaches the same PostgreSQL: the calls-per-second budget is shared\n"
        "by all of them. Exits 0 when no work is left (at once if the job has no unfinished\n"
        "run); a killed worker's lists go to the others within seconds.",
    )
    p.add_argument("--job", default="default", help="the job to work on (default: default)")
    _metrics_options(p)
    p.set_defaults(func=cmd_worker)
    return p


def _add_status(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser("status", help="show the latest run of a job")
    p.add_argument("--job", default="default")
    p.add_argument("--json", action="store_true", help="print the JSON document of the README")
    p.set_defaults(func=cmd_status)
    return p


def _add_verify(commands: Commands) -> argparse.ArgumentParser:
    p = _documented(
        commands,
        "verify",
        help="compare the stored list sizes of a job's last run with the API's counts",
        description="Ask v4/follow/follow_get_info (20 accounts per call) for the fans, follows\n"
        "and mutual counts of the accounts of the job's latest run, and compare them with the\n"
        "current edges stored for the lists that run crawled to the end. The API counts the\n"
        "live graph: a list that changed since the crawl disagrees too. Exit 9 when any list\n"
        "disagrees; 2 when the job has no runs.",
    )
    p.add_argument("--job", default="default", help="the job to verify (default: default)")
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-crawl the disagreeing lists (as job NAME:repair) and compare them again",
    )
    p.add_argument("--json", action="store_true", help="print the result as a JSON document")
    p.set_defaults(func=cmd_verify)
    return p


def _add_prune(commands: Commands) -> argparse.ArgumentParser:
    p = _documented(
        commands,
        "prune",
        help="delete the checkpoints of a job's runs but the last N",
        description="Delete the checkpoints (sync_checkpoints, one row per list and run) of the\n"
        "job's ended runs but its last N, and the sync_seen rows any ended run left behind,\n"
        "in chunks of 10,000 rows. The latest run and an unfinished one are never pruned; run\n"
        "rows, their counters and quarantined_items stay. `sync` does this after every clean\n"
        f"finish (its --keep-runs, default {DEFAULT_KEEP_RUNS}). Exit 2 for a job without runs.",
    )
    p.add_argument("--job", default=None, help="the job to prune (default: every job)")
    p.add_argument(
        "--keep-runs",
        type=_count(1),
        default=DEFAULT_KEEP_RUNS,
        metavar="N",
        help=f"the runs whose checkpoints stay, newest first (at least 1; default "
        f"{DEFAULT_KEEP_RUNS})",
    )
    p.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    p.set_defaults(func=cmd_prune)
    return p


def _add_prune_events(commands: Commands) -> argparse.ArgumentParser:
    p = _documented(
        commands,
        "prune-events",
        help="delete follow_edge_events observed before a date",
        description="Delete the rows of follow_edge_events observed before DATE (UTC), in chunks\n"
        "of 10,000 rows, and print how many went. Events are otherwise kept for ever: archive\n"
        'them first if you need them (the README\'s "Retention" says how). Exit 2 for a date\n'
        "that is not one, or in the future.",
    )
    p.add_argument(
        "--before",
        type=_before,
        required=True,
        metavar="DATE",
        help="YYYY-MM-DD (midnight UTC) or an ISO date and time",
    )
    p.add_argument("--json", action="store_true", help="print the count as JSON")
    p.set_defaults(func=cmd_prune_events)
    return p


def _add_report(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "report",
        help="write an HTML report with charts of the stored graph and the runs",
        description="Write one self-contained HTML file (inline CSS and SVG, no network needed to\n"
        "open it): headline numbers, the follower-count distribution, the top accounts by fans,\n"
        "follows gained and lost per day, profile changes per run, run durations, latest runs.",
    )
    p.add_argument(
        "--out",
        default="report.html",
        metavar="FILE",
        help="the HTML file to write (default: report.html)",
    )
    p.add_argument("--job", default=None, help="show only the runs of this job (default: all jobs)")
    p.set_defaults(func=cmd_report)
    return p


def _add_sandbox(commands: Commands) -> argparse.ArgumentParser:
    from etl.sandbox.faults import DEFAULT_FAULT_KINDS, FAULT_KINDS

    p = commands.add_parser("sandbox", help="serve the stand-in follow API in the foreground")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--users", type=_positive(int), default=1000, help="graph size (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="graph seed (default 1)")
    p.add_argument(
        "--faults",
        type=float,
        default=0.0,
        metavar="P",
        help="share of requests answered with a transient fault (0..1)",
    )
    p.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="L", help="added to every answer"
    )
    p.add_argument(
        "--rate",
        type=_rate,
        default=None,
        metavar="R",
        help="answer 60007 above R calls per second (default: no limit)",
    )
    p.add_argument(
        "--fault-kinds",
        type=_fault_kinds,
        default=None,
        metavar="LIST",
        help=f"comma-separated kinds of fault --faults draws from: {','.join(FAULT_KINDS)} "
        f"(default {','.join(DEFAULT_FAULT_KINDS)})",
    )
    p.add_argument(
        "--hostile",
        type=_share,
        default=0.0,
        metavar="P",
        help="share of users with hostile profiles (NUL, lone surrogates, huge integers, nested "
        "tags), plus a few users with hostile ids in other users' lists (default 0)",
    )
    p.add_argument(
        "--loop-account",
        action="append",
        default=[],
        metavar="ID",
        help="this account's lists never end: their last page points back at the second "
        "(repeatable)",
    )
    p.add_argument(
        "--degree",
        type=_positive(float),
        default=None,
        metavar="D",
        help="mean number of accounts a user follows (default 12); a low D makes a sparse graph "
        "of many users cheap to build, e.g. --users 1000000 --degree 1",
    )
    p.add_argument(
        "--big-lists",
        type=_big_lists,
        default=(),
        metavar="N,N,...",
        help="give that many seeded accounts N synthetic fans each, e.g. 200000,50000: a few "
        "very long fans lists among the ordinary ones (default none)",
    )
    p.set_defaults(func=cmd_sandbox)
    return p


def _fault_kinds(raw: str) -> tuple[str, ...]:
    """``--fault-kinds``: known kinds, in order, without repeats; at least one."""
    from etl.sandbox.faults import FAULT_KINDS

    kinds = tuple(dict.fromkeys(kind.strip() for kind in raw.split(",") if kind.strip()))
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown or not kinds:
        shown = ", ".join(repr(kind) for kind in unknown) or "nothing"
        raise argparse.ArgumentTypeError(f"{shown}: choose from {','.join(FAULT_KINDS)}")
    return kinds


def _big_lists(raw: str) -> tuple[int, ...]:
    """``--big-lists``: comma-separated fan counts, each 1..9,999,999."""
    parts = [part.strip().replace("_", "") for part in raw.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and 1 <= int(part) <= 9_999_999 for part in parts):
        raise argparse.ArgumentTypeError(f"expected counts 1..9999999 like 200000,50000: {raw!r}")
    return tuple(int(part) for part in parts)


def _share(raw: str) -> float:
    """A number from 0 to 1."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {raw!r}")
    return value


def _add_demo(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "demo", help="what `make demo` runs: sandbox + embedded database + sync"
    )
    p.add_argument("--users", type=_positive(int), default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=_rate, default=150.0)
    p.set_defaults(func=cmd_demo)
    return p


def _add_usersig(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser("usersig", help="print a UserSig for IM_ADMIN made from IM_SECRET_KEY")
    p.add_argument(
        "--expire",
        type=_positive(int),
        default=DEFAULT_EXPIRE,
        metavar="SECONDS",
        help="lifetime (default 180 days)",
    )
    p.set_defaults(func=cmd_usersig)
    return p


COMMANDS: tuple[Callable[[Commands], argparse.ArgumentParser], ...] = (
    _add_migrate,
    _add_sync,
    _add_worker,
    _add_status,
    _add_verify,
    _add_prune,
    _add_prune_events,
    _add_report,
    _add_sandbox,
    _add_demo,
    _add_usersig,
)


def _metrics_options(parser: argparse.ArgumentParser) -> None:
    """Where a crawling process writes its Prometheus metrics."""
    parser.add_argument(
        "--metrics-file",
        metavar="PATH",
        help="write Prometheus metrics to PATH (node_exporter's textfile collector: a *.prom "
        "file in its directory), every --metrics-every seconds and at exit",
    )
    parser.add_argument(
        "--pushgateway",
        type=_pushgateway,
        metavar="URL",
        help="push Prometheus metrics to this Pushgateway (grouped by job and instance), "
        "every --metrics-every seconds and at exit; basic auth as https://user:password@host",
    )
    parser.add_argument(
        "--metrics-every",
        type=_positive(float),
        default=15.0,
        metavar="SECONDS",
        help="seconds between metrics refreshes (default 15)",
    )


def _pushgateway(raw: str) -> Pushgateway:
    """--pushgateway, its credentials apart; the error quotes nothing of it (a password)."""
    try:
        return pushgateway(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # Known before parsing, so that even a usage error is a JSON line when JSON was asked for.
    if any(w == "--log-format=json" or (w == "--log-format" and n == "json")
           for w, n in itertools.pairwise([*words, ""])):  # fmt: skip
        setup_logging(0, "json")
    args = parser.parse_args(words)
    if args.command == "sandbox" and not 0 <= args.faults <= 1:
        parser.error("--faults must be between 0 and 1")
    setup_logging(args.verbosity, args.log_format)
    CONTEXT["pid"] = os.getpid()
    if isinstance(getattr(args, "job", None), str):
        CONTEXT["job"] = args.job
    try:
        result: int = args.func(args)
        return result
    except EtlError as exc:
        error(str(exc), exc.exit_code)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        if not db.is_database_error(exc):
            return _internal(exc, args.debug)
        # Whichever layer raised it (SQLAlchemy, psycopg's raw COPY cursor, sqlite3): one line,
        # the driver's first, never the SQL or its parameters.
        failure = db.as_database_error(exc)
        error(str(failure), failure.exit_code)
        return failure.exit_code
    except KeyboardInterrupt:
        error("interrupted; the run is resumable: run the same command again", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED


def _internal(exc: Exception, debug: bool) -> int:
    if debug:
        raise exc
    say(
        f"follow-etl: internal error: {type(exc).__name__}: {exc} (--debug shows where)", sys.stderr
    )
    return EXIT_INTERNAL
