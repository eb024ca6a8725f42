"""What each command does, once the command line is parsed: build settings, engine and client,
call the library, print the outcome, return the exit code. Errors propagate to etl.cli.main."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

import sqlalchemy as sa

from etl import checkpoint, db
from etl.accounts import check_account, read_accounts
from etl.client import FollowClient
from etl.config import ApiSettings, Secret, Settings, load_settings
from etl.console import REDACTOR, say
from etl.errors import ConfigError, UsageError
from etl.schema import sync_runs
from etl.sync import SyncReport, SyncRequest, sync
from etl.transform import TYPE_NAMES
from etl.usersig import UserSigSource, generate


def _settings() -> Settings:
    settings = load_settings()
    REDACTOR.secrets = [
        s.reveal() for s in (settings.secret_key, settings.usersig) if s is not None
    ]
    return settings


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
        say(f"{where}: already at revision {after}")
    else:
        say(f"{where}: migrated from {before or 'empty'} to {after}")
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
    say(
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
        say(
            f"accounts that do not exist (30003), skipped: {shown}"
            + (f" and {more} more" if more > 0 else "")
        )
    for failure in report.failures[:20]:
        say(f"failed: {failure}")
    problem = report.problem()
    if problem is None:
        return 0
    say(f"follow-etl: error: {problem}", sys.stderr)
    return problem.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    """Show the latest run of a job."""
    engine = _engine(_settings())
    db.require_schema(engine)
    with engine.connect() as conn:
        doc = checkpoint.status_document(conn, args.job)
    if args.json:
        say(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    run = doc["run"]
    if run is None:
        say(f"job {args.job!r} has no runs yet")
        return 0
    lists = run["lists"]
    say(f"job {args.job!r}, run {run['id']}: {run['status']}")
    say(f"  started   {run['started_at']}")
    say(f"  finished  {run['finished_at'] or '-'}")
    say(f"  last move {run['last_activity'] or '-'}")
    say(
        f"  lists     {lists['done']}/{lists['total']} done, {lists['skipped']} skipped, "
        f"{lists['failed']} failed, {lists['running']} half done, {lists['pending']} pending"
    )
    say(f"  stored    {run['pages']} pages, {run['items']} items, {run['requests']} requests")
    for error in run["errors"]:
        kind = TYPE_NAMES.get(error["follow_type"], error["follow_type"])
        say(f"  {error['status']:8}  {error['account']}/{kind}: {error['error']}")
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
        say(f"sandbox: {args.users} users (seed {args.seed}) at {url}; Ctrl-C stops it")
        say(f"  export IM_BASE_URL={url} IM_SDKAPPID={config.sdkappid} IM_ADMIN={config.admin}")
        if not settings.secret_key:
            say(f"  export IM_SECRET_KEY={key}   # the sandbox's public default key")
        say(f"  accounts: curl -s {url}/sandbox/accounts")
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
    say(f"database: {db.describe(settings.database_url)} (migrated)")
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
        say(f"sandbox: {args.users} users at {server.url}{changed}")
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
    say(f"accounts with edges: {accounts}")
    for follow_type, name in TYPE_NAMES.items():
        say(f"  {name:8} {by_type.get(follow_type, 0):>9} edges")
    say(f"profiles: {users} users, {snapshots} snapshots")
    say(f"time: {seconds:.1f} s")
