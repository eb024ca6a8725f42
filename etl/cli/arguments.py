"""One function per command: it adds the command, its arguments and their help text to the
parser, and names what runs it (etl.cli.commands). ``COMMANDS`` is their order in ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from etl.cli import values
from etl.cli.commands import (
    cmd_listen,
    cmd_migrate,
    cmd_prune,
    cmd_prune_events,
    cmd_report,
    cmd_status,
    cmd_sync,
    cmd_usersig,
    cmd_verify,
    cmd_worker,
)
from etl.cli.parser import Commands, documented, metrics_options
from etl.cli.sandbox_arguments import add_demo, add_sandbox
from etl.live import settings as listening
from etl.results import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from etl.store.retention import DEFAULT_KEEP_RUNS
from etl.tencent.usersig import DEFAULT_EXPIRE


def add_migrate(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "migrate", help="upgrade the database at DATABASE_URL to the newest schema"
    )
    p.set_defaults(func=cmd_migrate)
    return p


def add_sync(commands: Commands) -> argparse.ArgumentParser:
    p = documented(
        commands,
        "sync",
        help="crawl and load; resumes the job's unfinished run",
        description="Crawl the fans/follows/mutual lists of the given accounts and load them.\n"
        "If the job has an unfinished run (crashed, killed, interrupted) it is resumed: done\n"
        "lists are not fetched again and half-done lists continue from their stored cursor.",
    )
    _sync_sources(p)
    p.add_argument(
        "--types",
        type=values.parse_types,
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
        type=values.page_size,
        default=1000,
        metavar="N",
        help="WantNum, 1..1000 (default 1000)",
    )
    p.add_argument(
        "--rate",
        type=values.rate,
        metavar="R",
        help="calls per second for the whole run, all workers together "
        "(default: IM_RATE or 150; the documented quota is 200)",
    )
    p.add_argument(
        "--concurrency",
        type=values.concurrency,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"lists fetched at once by this process, 1..{MAX_CONCURRENCY} "
        f"(default {DEFAULT_CONCURRENCY})",
    )
    _sync_policies(p)
    metrics_options(p)
    p.set_defaults(func=cmd_sync)
    return p


def _sync_sources(p: argparse.ArgumentParser) -> None:
    """Where a sync's accounts come from: a file, a query, and/or --account."""
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


def _sync_policies(p: argparse.ArgumentParser) -> None:
    """What a sync does about a busy job, its order, old checkpoints and mass removals."""
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another sync holds the job, wait for it to end instead of exiting with 7",
    )
    p.add_argument(
        "--changed-first",
        action="store_true",
        help="crawl first the lists that callbacks (`listen`) changed since their last "
        "complete crawl, biggest first, then the others, biggest first",
    )
    p.add_argument(
        "--keep-runs",
        type=values.count(0),
        default=DEFAULT_KEEP_RUNS,
        metavar="N",
        help="after a clean finish, delete the checkpoints of the job's runs but the last N "
        f"(see `prune`; default {DEFAULT_KEEP_RUNS}, 0 keeps all)",
    )
    p.add_argument(
        "--hold-min-edges",
        type=values.count(1),
        metavar="N",
        help="hold a crawl that would remove at least N of a list's stored edges (and more "
        "than --hold-share of them) until a second crawl confirms it "
        "(default: FOLLOW_ETL_HOLD_MIN_EDGES or 20)",
    )
    p.add_argument(
        "--hold-share",
        type=values.share,
        metavar="S",
        help="... and more than this share of them, 0..1; 1 never holds "
        "(default: FOLLOW_ETL_HOLD_SHARE or 0.5)",
    )


def add_worker(commands: Commands) -> argparse.ArgumentParser:
    p = documented(
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
    metrics_options(p)
    p.set_defaults(func=cmd_worker)
    return p


def add_listen(commands: Commands) -> argparse.ArgumentParser:
    p = documented(
        commands,
        "listen",
        help="receive Tencent's follow callbacks and apply them to the graph, live",
        description="Serve the app's callback URL (uvicorn): the two follow callbacks, checked\n"
        "(SdkAppid; Sign and RequestTime with IM_CALLBACK_TOKEN, required off loopback) and\n"
        "applied to the lists the store keeps, each answered 200 once committed; GET /healthz,\n"
        "GET /metrics. SIGTERM or Ctrl-C: stop accepting, finish, exit 0 within 10 s.",
    )
    p.add_argument(
        "--host",
        default=listening.DEFAULT_HOST,
        help=f"the address to bind (default {listening.DEFAULT_HOST}; others need the token)",
    )
    p.add_argument(
        "--port",
        type=values.port,
        default=listening.DEFAULT_PORT,
        help=f"the TCP port (default {listening.DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--path", type=values.url_path, default="/", help="the callback path (default /)"
    )
    p.add_argument(
        "--max-body",
        type=values.count(1),
        default=listening.DEFAULT_MAX_BODY,
        metavar="BYTES",
        help=f"refuse a larger body with 413 (default {listening.DEFAULT_MAX_BODY})",
    )
    p.add_argument(
        "--ack-timeout",
        type=values.positive(float),
        default=listening.DEFAULT_ACK_TIMEOUT,
        metavar="SECONDS",
        help="503 for a callback not committed by then (default 10)",
    )
    p.set_defaults(func=cmd_listen)
    return p


def add_status(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser("status", help="show the latest run of a job")
    p.add_argument("--job", default="default")
    p.add_argument("--json", action="store_true", help="print the JSON document of the README")
    p.set_defaults(func=cmd_status)
    return p


def add_verify(commands: Commands) -> argparse.ArgumentParser:
    p = documented(
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


def add_prune(commands: Commands) -> argparse.ArgumentParser:
    p = documented(
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
        type=values.count(1),
        default=DEFAULT_KEEP_RUNS,
        metavar="N",
        help=f"the runs whose checkpoints stay, newest first (at least 1; default "
        f"{DEFAULT_KEEP_RUNS})",
    )
    p.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    p.set_defaults(func=cmd_prune)
    return p


def add_prune_events(commands: Commands) -> argparse.ArgumentParser:
    p = documented(
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
        type=values.before,
        required=True,
        metavar="DATE",
        help="YYYY-MM-DD (midnight UTC) or an ISO date and time",
    )
    p.add_argument("--json", action="store_true", help="print the count as JSON")
    p.set_defaults(func=cmd_prune_events)
    return p


def add_report(commands: Commands) -> argparse.ArgumentParser:
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


def add_usersig(commands: Commands) -> argparse.ArgumentParser:
    p = commands.add_parser("usersig", help="print a UserSig for IM_ADMIN made from IM_SECRET_KEY")
    p.add_argument(
        "--expire",
        type=values.positive(int),
        default=DEFAULT_EXPIRE,
        metavar="SECONDS",
        help="lifetime (default 180 days)",
    )
    p.set_defaults(func=cmd_usersig)
    return p


COMMANDS: tuple[Callable[[Commands], argparse.ArgumentParser], ...] = (
    add_migrate,
    add_sync,
    add_worker,
    add_listen,
    add_status,
    add_verify,
    add_prune,
    add_prune_events,
    add_report,
    add_sandbox,
    add_demo,
    add_usersig,
)
