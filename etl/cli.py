"""The command line: parses arguments, builds settings, client and engine, maps errors to exit
codes and prints. Everything else lives below this module and never prints.

Exit codes (also in the README):
    0    every requested list finished (lists of accounts that do not exist count, and are named)
    1    internal error (a bug: rerun with --debug for the traceback)
    2    usage error: bad arguments or accounts file; nothing was fetched
    3    configuration error: missing or invalid environment; nothing was fetched
    4    the API refused the credentials or the app (wrong key, not admin, feature off); resumable
    5    database error: unreachable, not migrated, or a statement failed; resumable
    6    the run stopped early with lists left (resumable), or ended with lists given up
    130  interrupted (Ctrl-C); resumable
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import sqlalchemy as sa

from etl import __version__, checkpoint, db
from etl.client import FollowClient
from etl.config import ApiSettings, Secret, Settings, load_settings
from etl.errors import ConfigError, DatabaseError, EtlError, UsageError
from etl.schema import sync_runs
from etl.sync import SyncReport, SyncRequest, sync
from etl.transform import TYPE_NAMES
from etl.usersig import DEFAULT_EXPIRE, UserSigSource, generate

log = logging.getLogger("etl")

EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 130
TYPE_ALIASES = {"fans": 1, "follows": 2, "mutual": 3, "1": 1, "2": 2, "3": 3}
MAX_USERID_BYTES = 32  # Tencent's documented limit for a UserID


# --- secrets never reach a terminal or a log ------------------------------------------------

_USERSIG_IN_URL = re.compile(r"(usersig=)[^&\s'\"]+", re.IGNORECASE)


class Redactor(logging.Filter):
    """Masks UserSigs in URLs and any configured secret, in every log record."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        """The text with every secret replaced by ***."""
        text = _USERSIG_IN_URL.sub(r"\1***", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        return True


_REDACTOR = Redactor()


def _setup_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO, and the URL carries the UserSig.
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings() -> Settings:
    settings = load_settings()
    _REDACTOR.secrets = [
        s.reveal() for s in (settings.secret_key, settings.usersig) if s is not None
    ]
    return settings


def _say(text: str, stream: TextIO | None = None) -> None:
    print(_REDACTOR.redact(text), file=stream or sys.stdout)


# --- input -------------------------------------------------------------------------------


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


# --- commands ----------------------------------------------------------------------------


def _engine(settings: Settings) -> sa.Engine:
    return db.make_engine(settings.database_url)


def _client(api: ApiSettings, clock: Any = time.time) -> FollowClient:
    source = UserSigSource(
        sdkappid=api.sdkappid,
        identifier=api.admin,
        secret_key=api.secret_key.reveal() if api.secret_key else None,
        fixed=None if api.secret_key else (api.usersig.reveal() if api.usersig else None),
        clock=clock,
    )
    return FollowClient(api, source)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database to the newest schema."""
    settings = _settings()
    engine = _engine(settings)
    before = db.current_revision(engine)
    db.upgrade(engine)
    after = db.current_revision(engine)
    where = db.describe(settings.database_url)
    if before == after:
        _say(f"{where}: already at revision {after}")
    else:
        _say(f"{where}: migrated from {before or 'empty'} to {after}")
    return 0


def _requested_accounts(args: argparse.Namespace) -> list[str]:
    accounts: dict[str, None] = {}
    if args.accounts:
        accounts.update(dict.fromkeys(read_accounts(args.accounts)))
    for account in args.account or []:
        check_account(account.strip(), "--account")
        accounts.setdefault(account.strip())
    if not accounts:
        raise UsageError("no accounts to sync: give --accounts FILE or --account ID")
    return list(accounts)


def cmd_sync(args: argparse.Namespace) -> int:
    """Crawl the lists of the given accounts and load them."""
    accounts = _requested_accounts(args)
    settings = _settings()
    api = settings.api()
    if args.rate:
        api = dataclasses.replace(api, rate=args.rate)
    engine = _engine(settings)
    db.require_schema(engine)
    request = SyncRequest(
        job=args.job,
        accounts=accounts,
        types=args.types,
        page_size=args.page_size,
        restart=args.restart,
    )
    with _client(api) as client:
        report = sync(engine, client, request)
    return _print_report(report)


def _print_report(report: SyncReport) -> int:
    """Print what a sync did; return its exit code."""
    lists = report.lists
    verb = "resumed, " if report.resumed else ""
    verb += "finished" if report.finished else "stopped"
    _say(
        f"run {report.run_id} of job {report.job!r} {verb} in {report.seconds:.1f} s: "
        f"{lists['total']} lists ({lists['done']} done, {lists['skipped']} skipped, "
        f"{lists['failed']} failed), "
        f"{report.pages} pages and {report.items} items stored, "
        f"{report.requests} requests ({report.retries} retried), "
        f"{report.edges_removed} edges marked removed"
    )
    if report.missing_accounts:
        shown = ", ".join(report.missing_accounts[:20])
        more = len(report.missing_accounts) - 20
        _say(
            f"accounts that do not exist (30003), skipped: {shown}"
            + (f" and {more} more" if more > 0 else "")
        )
    for failure in report.failures[:20]:
        _say(f"failed: {failure}")
    problem = report.problem()
    if problem is None:
        return 0
    _say(f"follow-etl: error: {problem}", sys.stderr)
    return problem.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    """Show the latest run of a job."""
    engine = _engine(_settings())
    db.require_schema(engine)
    with engine.connect() as conn:
        doc = checkpoint.status_document(conn, args.job)
    if args.json:
        _say(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    run = doc["run"]
    if run is None:
        _say(f"job {args.job!r} has no runs yet")
        return 0
    lists = run["lists"]
    _say(f"job {args.job!r}, run {run['id']}: {run['status']}")
    _say(f"  started   {run['started_at']}")
    _say(f"  finished  {run['finished_at'] or '-'}")
    _say(f"  last move {run['last_activity'] or '-'}")
    _say(
        f"  lists     {lists['done']}/{lists['total']} done, {lists['skipped']} skipped, "
        f"{lists['failed']} failed, {lists['running']} half done, {lists['pending']} pending"
    )
    _say(f"  stored    {run['pages']} pages, {run['items']} items, {run['requests']} requests")
    for error in run["errors"]:
        kind = TYPE_NAMES.get(error["follow_type"], error["follow_type"])
        _say(f"  {error['status']:8}  {error['account']}/{kind}: {error['error']}")
    return 0


def cmd_usersig(args: argparse.Namespace) -> int:
    """Print a UserSig for IM_ADMIN made from IM_SECRET_KEY."""
    settings = _settings()
    if settings.sdkappid is None or settings.secret_key is None:
        raise ConfigError("usersig needs IM_SDKAPPID and IM_SECRET_KEY")
    sig = generate(
        settings.sdkappid,
        settings.admin,
        settings.secret_key.reveal(),
        now=int(time.time()),
        expire=args.expire,
    )
    print(sig)  # the one command whose output is a credential, on purpose
    return 0


def _sandbox_config(settings: Settings, args: argparse.Namespace) -> Any:
    from etl.sandbox import SandboxConfig

    config = SandboxConfig(
        faults=args.faults, latency_ms=args.latency_ms, rate=args.rate, fault_seed=args.seed
    )
    overrides: dict[str, Any] = {}
    if settings.sdkappid is not None:
        overrides["sdkappid"] = settings.sdkappid
    if settings.secret_key is not None:
        overrides["secret_key"] = settings.secret_key.reveal()
    overrides["admin"] = settings.admin
    return dataclasses.replace(config, **overrides)


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Serve the stand-in follow API in the foreground until Ctrl-C."""
    from etl.sandbox import Graph, Sandbox
    from etl.sandbox.server import serve_forever

    settings = _settings()
    config = _sandbox_config(settings, args)
    graph = Graph(users=args.users, seed=args.seed)

    def ready(url: str) -> None:
        key = "$IM_SECRET_KEY" if settings.secret_key else config.secret_key
        _say(f"sandbox: {args.users} users (seed {args.seed}) at {url}; Ctrl-C stops it")
        _say(f"  export IM_BASE_URL={url} IM_SDKAPPID={config.sdkappid} IM_ADMIN={config.admin}")
        if not settings.secret_key:
            _say(f"  export IM_SECRET_KEY={key}   # the sandbox's public default key")
        _say(f"  accounts: curl -s {url}/sandbox/accounts")
        sys.stdout.flush()

    serve_forever(Sandbox(graph, config), args.host, args.port, on_ready=ready)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the sandbox, migrate the database, sync every sandbox account, print a summary."""
    from etl.sandbox import Graph, Sandbox, SandboxConfig, serve_in_thread

    settings = _settings()
    config = SandboxConfig()
    started = time.monotonic()
    graph = Graph(users=args.users, seed=args.seed)
    engine = _engine(settings)
    db.upgrade(engine)
    _say(f"database: {db.describe(settings.database_url)} (migrated)")
    # Each demo run sees the graph changed once more than the last: unfollows, new follows,
    # profile updates, so a second `make demo` shows removals and new profile versions.
    with engine.connect() as conn:
        earlier = conn.execute(
            sa.select(sa.func.count()).where(
                sync_runs.c.job == "demo", sync_runs.c.status == "done"
            )
        ).scalar_one()
    for generation in range(1, earlier + 1):
        graph.mutate(seed=generation)
    with serve_in_thread(Sandbox(graph, config)) as server:
        changed = f" (graph changed {earlier}x, once per earlier demo run)" if earlier else ""
        _say(f"sandbox: {args.users} users at {server.url}{changed}")
        api = ApiSettings(
            sdkappid=config.sdkappid,
            admin=config.admin,
            base_urls=(server.url,),
            secret_key=Secret(config.secret_key),
            usersig=None,
            rate=args.rate,
            timeout=settings.timeout,
            retry=settings.retry,
        )
        request = SyncRequest(job="demo", accounts=graph.accounts, restart=False)
        with _client(api) as client:
            report = sync(engine, client, request)
    code = _print_report(report)
    _print_summary(engine, time.monotonic() - started)
    return code


def _print_summary(engine: sa.Engine, seconds: float) -> None:
    with engine.connect() as conn:
        by_type: dict[int, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT follow_type, count(*) FROM current_follow_edges GROUP BY follow_type"
                )
            ).all()
        )
        accounts = conn.execute(
            sa.text("SELECT count(DISTINCT account) FROM follow_edges")
        ).scalar_one()
        snapshots, users = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT user_id) FROM profile_snapshots")
        ).one()
    _say(f"accounts with edges: {accounts}")
    for follow_type, name in TYPE_NAMES.items():
        _say(f"  {name:8} {by_type.get(follow_type, 0):>9} edges")
    _say(f"profiles: {users} users, {snapshots} snapshots")
    _say(f"time: {seconds:.1f} s")


# --- the parser and the edge ---------------------------------------------------------------

EPILOG = """\
configuration (environment):
  DATABASE_URL    SQLAlchemy URL (default sqlite:///follow_etl.db; postgresql:// works)
  IM_SDKAPPID     the app's SDKAppID
  IM_ADMIN        an App administrator account (default administrator)
  IM_SECRET_KEY   the app's secret key: UserSigs are made and renewed from it
  IM_USERSIG      a fixed UserSig instead of the key (it expires)
  IM_REGION       china, singapore, seoul, tokyo, frankfurt, mumbai, silicon-valley, jakarta
  IM_BASE_URL     instead of IM_REGION, e.g. http://127.0.0.1:8080 (http only on loopback)
  IM_RATE         calls per second, for all follow APIs together (default 150)
  IM_TIMEOUT      seconds per request, above the service's 3 s (default 10)

exit codes: 0 done, 1 internal error, 2 usage, 3 configuration, 4 API refused credentials or
app, 5 database, 6 lists left (resumable) or given up, 130 interrupted (resumable)
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the synopsis is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``follow-etl`` / ``python -m etl``."""
    parser = _Parser(
        prog="follow-etl",
        description="Crawl the Tencent Cloud Chat follow graph into a SQL database, resumably.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=1,
        default=0,
        dest="verbosity",
        help="debug logging",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=-1,
        dest="verbosity",
        help="only warnings and errors on stderr",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an internal error"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="upgrade the database at DATABASE_URL to the newest schema")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "sync",
        help="crawl and load; resumes the job's unfinished run",
        description="Crawl the fans/follows/mutual lists of the given accounts and load them.\n"
        "If the job has an unfinished run (crashed, killed, interrupted) it is resumed: done\n"
        "lists are not fetched again and half-done lists continue from their stored cursor.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--accounts",
        metavar="FILE",
        help="one UserID per line (# comments and blank lines ignored; - for stdin)",
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
        type=_positive(float),
        metavar="R",
        help="calls per second (default: IM_RATE or 150)",
    )
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("status", help="show the latest run of a job")
    p.add_argument("--job", default="default")
    p.add_argument("--json", action="store_true", help="print the JSON document of the README")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("sandbox", help="serve the stand-in follow API in the foreground")
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
        type=_positive(float),
        default=None,
        metavar="R",
        help="answer 60007 above R calls per second (default: no limit)",
    )
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("demo", help="what `make demo` runs: sandbox + embedded database + sync")
    p.add_argument("--users", type=_positive(int), default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=_positive(float), default=150.0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("usersig", help="print a UserSig for IM_ADMIN made from IM_SECRET_KEY")
    p.add_argument(
        "--expire",
        type=_positive(int),
        default=DEFAULT_EXPIRE,
        metavar="SECONDS",
        help="lifetime (default 180 days)",
    )
    p.set_defaults(func=cmd_usersig)
    return parser


def _database_error(exc: sa.exc.SQLAlchemyError) -> DatabaseError:
    """One line for a database failure: the driver's first line, never the SQL or parameters."""
    orig = getattr(exc, "orig", None)
    first = str(orig or exc).strip().splitlines()
    return DatabaseError(f"database error: {first[0] if first else type(exc).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sandbox" and not 0 <= args.faults <= 1:
        parser.error("--faults must be between 0 and 1")
    _setup_logging(args.verbosity)
    try:
        result: int = args.func(args)
        return result
    except EtlError as exc:
        _say(f"follow-etl: error: {exc}", sys.stderr)
        return exc.exit_code
    except sa.exc.SQLAlchemyError as exc:
        error = _database_error(exc)
        _say(f"follow-etl: error: {error}", sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        _say(
            "follow-etl: interrupted; the run is resumable: run the same command again", sys.stderr
        )
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        _say(
            f"follow-etl: internal error: {type(exc).__name__}: {exc} (--debug shows where)",
            sys.stderr,
        )
        return EXIT_INTERNAL
