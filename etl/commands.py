"""What each command does, once the command line is parsed: build settings, engine and client,
call the library, print the outcome, return the exit code. Errors propagate to etl.cli.main."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from etl import checkpoint, db, verify
from etl.accounts import Accounts
from etl.client import FollowClient
from etl.config import ApiSettings, Secret, Settings, load_settings
from etl.console import CONTEXT, REDACTOR, error, say
from etl.errors import ConfigError, EtlError, Interrupted, Stopped, UsageError
from etl.metrics import Metrics
from etl.progress import progress_mode, progress_reporter
from etl.schema import sync_runs
from etl.sync import Progress, SyncReport, SyncRequest, sync, work
from etl.transform import TYPE_NAMES
from etl.usersig import UserSigSource, generate

log = logging.getLogger(__name__)


@contextmanager
def _progress(
    args: argparse.Namespace, metrics: Metrics | None = None
) -> Iterator[Callable[[Progress], None] | None]:
    """The progress display: a live bar on a terminal, periodic log lines elsewhere; the
    snapshots feed the metrics too, if any."""
    with progress_reporter(
        sys.stderr, mode=progress_mode(args.verbosity, args.log_format)
    ) as on_progress:
        if metrics is None:
            yield on_progress
            return
        display = on_progress

        def both(progress: Progress) -> None:
            metrics.on_progress(progress)
            if display is not None:
                display(progress)

        yield both


@contextmanager
def _metrics(args: argparse.Namespace, engine: sa.Engine, job: str) -> Iterator[Metrics | None]:
    """Prometheus metrics (--metrics-file, --pushgateway), written last with the exit code the
    command ends with."""
    if not (args.metrics_file or args.pushgateway):
        yield None
        return
    metrics = Metrics(
        engine,
        job,
        textfile=Path(args.metrics_file) if args.metrics_file else None,
        pushgateway=args.pushgateway,
        every=args.metrics_every,
    )
    metrics.start()
    code = None  # a normal end sets it through _ended
    try:
        yield metrics
    except EtlError as exc:
        code = exc.exit_code
        raise
    except BaseException as exc:
        code = 5 if db.is_database_error(exc) else 130 if isinstance(exc, KeyboardInterrupt) else 1
        raise
    finally:
        metrics.close(code if code is not None else (metrics.exit_code or 0))


def _ended(metrics: Metrics | None, code: int) -> int:
    """Note the exit code a command returns (not raises) for its last metrics."""
    if metrics is not None:
        metrics.exit_code = code
    return code


def _settings() -> Settings:
    settings = load_settings()
    REDACTOR.secrets = [
        s.reveal() for s in (settings.secret_key, settings.usersig) if s is not None
    ]
    return settings


def _engine(settings: Settings) -> sa.Engine:
    return db.make_engine(settings.database_url, schema=settings.schema)


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
    if settings.schema is not None and db.create_schema(engine, settings.schema):
        say(f"created schema {settings.schema}")
    before = db.current_revision(engine)
    db.upgrade(engine)
    after = db.current_revision(engine)
    where = db.describe(settings.database_url)
    if settings.schema is not None:
        where += f" (schema {settings.schema})"
    if before == after:
        say(f"{where}: already at revision {after}")
    else:
        say(f"{where}: migrated from {before or 'empty'} to {after}")
    return 0


def _requested_accounts(args: argparse.Namespace, settings: Settings) -> Accounts:
    """The accounts of --accounts (or --accounts-query) and --account, every one checked now,
    read again later."""
    query = None
    if args.accounts_query is not None:
        url = settings.accounts_database_url or settings.database_url
        query = (db.make_engine(url), args.accounts_query)
    accounts = Accounts(args.accounts, args.account or [], query=query)
    if not accounts.count:
        accounts.close()
        raise UsageError(
            "no accounts to sync: give --accounts FILE, --accounts-query SQL or --account ID"
        )
    return accounts


@contextmanager
def _graceful(stop: threading.Event) -> Iterator[list[int]]:
    """Ctrl-C / SIGTERM set ``stop`` (a second one ends the process at once); yields the
    signals received."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) > 1:
            # Forced: end now, with this signal's own code (the run stays resumable).
            raise Interrupted(
                f"stopped at once by a second signal ({signal.Signals(signum).name}); "
                "the run is resumable: run the same command again",
                signum=signum,
            )
        stop.set()
        name = signal.Signals(signum).name
        log.warning("%s: finishing the pages in flight, then stopping (again to force)", name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupted(received: list[int], report: SyncReport | None) -> None:
    """Raise Interrupted if a signal stopped the sync."""
    if received:
        what = f"run {report.run_id} is resumable" if report else "nothing was fetched"
        raise Interrupted(
            f"stopped by {signal.Signals(received[0]).name}; {what}: run the same command again",
            signum=received[0],
        )


def _on_run(run_id: int) -> None:
    """From now on, every JSON log record carries the run's id."""
    CONTEXT["run_id"] = run_id


def cmd_sync(args: argparse.Namespace) -> int:
    """Crawl the lists of the given accounts and load them."""
    settings = _settings()
    accounts = _requested_accounts(args, settings)
    api = settings.api()
    engine = _engine(settings)
    db.require_schema(engine)
    request = SyncRequest(
        job=args.job,
        accounts=accounts,
        types=args.types,
        page_size=args.page_size,
        restart=args.restart,
        rate=args.rate or api.rate,
        concurrency=args.concurrency,
        wait=args.wait,
        db_seconds=settings.db_retry_seconds,
    )
    stop = threading.Event()
    with (
        _metrics(args, engine, args.job) as metrics,
        closing(accounts),
        _client(api) as client,
        _graceful(stop) as received,
        _progress(args, metrics) as on_progress,
    ):
        try:
            report = sync(
                engine, client, request, on_progress=on_progress, stop=stop, on_run=_on_run
            )
        except Stopped:  # stopped while waiting for the job (--wait)
            _interrupted(received, None)
            raise
        code = _print_report(report)
        _interrupted(received, report)
        return _ended(metrics, code)


def cmd_worker(args: argparse.Namespace) -> int:
    """Join the job's unfinished run."""
    settings = _settings()
    engine = _engine(settings)
    db.require_schema(engine)
    stop = threading.Event()
    with (
        _metrics(args, engine, args.job) as metrics,
        _client(settings.api()) as client,
        _graceful(stop) as received,
        _progress(args, metrics) as on_progress,
    ):
        report = work(
            engine,
            client,
            args.job,
            on_progress=on_progress,
            stop=stop,
            db_seconds=settings.db_retry_seconds,
            on_run=_on_run,
        )
        if report is None:
            say(f"job {args.job!r} has no unfinished run: nothing to do")
            return 0
        code = _print_report(report, worker=True)
        _interrupted(received, report)
        return _ended(metrics, code)


def _print_report(report: SyncReport, worker: bool = False) -> int:
    """Print what a sync did; return its exit code."""
    lists = report.lists
    if worker:
        who = "worker on run"
        verb = "done (no list left)" if report.finished else "stopped"
    else:
        who = "run"
        verb = ("resumed, " if report.resumed else "") + (
            "finished" if report.finished else "stopped"
        )
    say(
        f"{who} {report.run_id} of job {report.job!r} {verb} in {report.seconds:.1f} s: "
        f"{lists['total']} lists ({lists['done']} done, {lists['skipped']} skipped, "
        f"{lists['failed']} failed), "
        f"{report.pages} pages and {report.items} items stored, "
        f"{report.requests} requests ({report.retries} retried), "
        f"{report.edges_removed} edges marked removed"
    )
    odd = {
        "malformed answers retried": report.malformed,
        "items quarantined": report.quarantined,
        "profile versions reused with other content": report.conflicts,
    }
    if any(odd.values()):
        say(
            "; ".join(f"{n} {what}" for what, n in odd.items() if n)
            + f" (see `status --job {report.job}`)"
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
    error(str(problem), problem.exit_code)
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
    for listed in run["errors"]:
        kind = TYPE_NAMES.get(listed["follow_type"], listed["follow_type"])
        say(f"  {listed['status']:8}  {listed['account']}/{kind}: {listed['error']}")
    quarantined = run["quarantined"]
    if quarantined["total"]:
        by_kind = quarantined["by_kind"]
        say(
            f"  quarantined {by_kind['unstorable']} unstorable items, {by_kind['conflict']} "
            "profile versions seen again with other content (table quarantined_items)"
        )
        for reason in quarantined["by_reason"][:10]:
            say(f"    {reason['count']:>6}  {reason['kind']}: {reason['reason']}")
    return 0


VERIFY_SHOWN = 20  # disagreeing lists and missing accounts printed; the rest are counted


def cmd_verify(args: argparse.Namespace) -> int:
    """Compare the job's stored list sizes with follow_get_info; --repair re-crawls those off."""
    settings = _settings()
    api = settings.api()
    engine = _engine(settings)
    db.require_schema(engine)
    with _client(api) as client:
        report = verify.verify(engine, client, args.job)
        if report is None:
            raise UsageError(f"job {args.job!r} has no runs: nothing to verify (sync it first)")
        repaired = None
        if args.repair and report.mismatches:
            repaired = verify.repair(engine, client, report)
    final = repaired.after if repaired else report
    if args.json:
        say(json.dumps(_verify_document(report, repaired), indent=2, ensure_ascii=False))
    else:
        _print_verify(report, "verified")
        if repaired:
            _print_repair(repaired)
            _print_verify(final, "re-verified the repaired lists of")
    problem = final.problem()
    if problem is None:
        return 0
    hint = "; `verify --repair` re-crawls them" if final.mismatches and not args.repair else ""
    error(f"{problem}{hint}", problem.exit_code)
    return problem.exit_code


def _print_verify(report: verify.VerifyReport, what: str) -> None:
    """The summary line of a verification, then what disagrees (capped)."""
    bad = len(report.mismatches)
    extra = ""
    if report.lists_not_checked:
        extra += f", {report.lists_not_checked} lists not checked (not crawled to the end)"
    if report.unchecked:
        extra += f", {len(report.unchecked)} accounts without counts"
    state = "" if report.run_status == "done" else f" ({report.run_status})"
    say(
        f"{what} run {report.run_id}{state} of job {report.job!r} in {report.seconds:.1f} s: "
        f"{report.accounts} accounts, {report.lists} lists ({report.lists - bad} agree, "
        f"{bad} disagree){extra}, {len(report.missing_accounts)} accounts do not exist "
        f"(30003), {report.requests} requests ({report.retries} retried)"
    )
    for mismatch in report.mismatches[:VERIFY_SHOWN]:
        say(f"disagrees: {mismatch.describe()}")
    if bad > VERIFY_SHOWN:
        say(f"disagrees: and {bad - VERIFY_SHOWN} more")
    for label, names in (
        ("accounts that do not exist (30003)", report.missing_accounts),
        ("no counts for", [f"{a} ({why})" for a, why in report.unchecked]),
    ):
        if names:
            more = len(names) - VERIFY_SHOWN
            shown = ", ".join(names[:VERIFY_SHOWN])
            say(f"{label}: {shown}" + (f" and {more} more" if more > 0 else ""))


def _print_repair(repaired: verify.RepairReport) -> None:
    """One line for the repair's runs (one per set of disagreeing follow types)."""
    runs = repaired.syncs
    ids = [run.run_id for run in runs]
    which = f"run {ids[0]}" if len(ids) == 1 else f"{len(ids)} runs ({ids[0]}-{ids[-1]})"
    total = {key: sum(run.lists[key] for run in runs) for key in ("total", "done", "skipped")}
    failed = total["total"] - total["done"] - total["skipped"]
    say(
        f"repair: {which} of job {repaired.job!r} re-crawled {total['total']} lists "
        f"({total['done']} done, {total['skipped']} skipped, {failed} failed or left), "
        f"{sum(run.requests for run in runs)} requests, "
        f"{sum(run.edges_removed for run in runs)} edges marked removed"
    )


def _verify_document(
    report: verify.VerifyReport, repaired: verify.RepairReport | None
) -> dict[str, Any]:
    """``verify --json``: the verification, and the repair runs and re-check if any."""
    doc: dict[str, Any] = {"verify": report.document(), "repair": None}
    if repaired:
        doc["repair"] = {
            "job": repaired.job,
            "runs": [
                {
                    "run_id": run.run_id,
                    "lists": run.lists,
                    "requests": run.requests,
                    "edges_removed": run.edges_removed,
                    "finished": run.finished,
                }
                for run in repaired.syncs
            ],
            "after": repaired.after.document(),
        }
    return doc


def _report_path(raw: str) -> Path:
    """Where the report goes, checked before the queries run: an existing, writable folder."""
    out = Path(raw)
    folder = out.parent
    if out.is_dir():
        raise UsageError(f"--out {raw}: is a directory; name the HTML file to write")
    if not folder.is_dir():
        raise UsageError(f"--out {raw}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {raw}: not writable")
    return out


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report (headline numbers, charts, latest runs) to --out."""
    from etl import report  # the report's SQL and SVG are not needed by the other commands

    out = _report_path(args.out)
    engine = _engine(_settings())
    db.require_schema(engine)
    with engine.connect() as conn:
        data = report.collect(conn, args.job)
    try:
        out.write_text(report.render(data), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc.strerror or exc}") from exc
    scope = f"job {args.job!r}" if args.job else "all jobs"
    say(
        f"report written to {out}: {data.accounts:,} accounts, "
        f"{sum(data.edges.values()):,} current edges, {data.runs_total:,} runs ({scope})"
    )
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
    overrides: dict[str, Any] = {"loop_accounts": tuple(args.loop_account)}
    if args.fault_kinds is not None:
        overrides["fault_kinds"] = args.fault_kinds
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
    graph = Graph(users=args.users, seed=args.seed, hostile=args.hostile)

    def ready(url: str) -> None:
        key = "$IM_SECRET_KEY" if settings.secret_key else config.secret_key
        say(f"sandbox: {args.users} users (seed {args.seed}) at {url}; Ctrl-C stops it")
        if args.hostile or config.loop_accounts or args.fault_kinds:
            kinds = ",".join(config.fault_kinds)
            loops = ",".join(config.loop_accounts) or "none"
            say(f"  hostile {args.hostile}, fault kinds {kinds}, looping accounts {loops}")
        say(f"  export IM_BASE_URL={url} IM_SDKAPPID={config.sdkappid} IM_ADMIN={config.admin}")
        if not settings.secret_key:
            say(f"  export IM_SECRET_KEY={key}   # the sandbox's public default key")
        say(f"  accounts: curl -s {url}/sandbox/accounts")
        sys.stdout.flush()

    sandbox = Sandbox(graph, config)
    sandbox.warm()  # render every profile before saying ready, not during the first crawl
    serve_forever(sandbox, args.host, args.port, on_ready=ready)
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
        stop = threading.Event()
        with _client(api) as client, _graceful(stop) as received, _progress(args) as on_progress:
            report = sync(engine, client, request, on_progress=on_progress, stop=stop)
    code = _print_report(report)
    _print_summary(engine, report.run_id, time.monotonic() - started)
    _interrupted(received, report)
    return code


def _print_summary(engine: sa.Engine, run_id: int, seconds: float) -> None:
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
        events: dict[str, int] = dict(
            conn.execute(
                sa.text(
                    "SELECT event, count(*) FROM follow_edge_events WHERE run_id = :run "
                    "GROUP BY event"
                ),
                {"run": run_id},
            ).all()
        )
    say(f"accounts with edges: {accounts}")
    for follow_type, name in TYPE_NAMES.items():
        say(f"  {name:8} {by_type.get(follow_type, 0):>9} edges")
    say(f"profiles: {users} users, {snapshots} snapshots")
    say(
        f"changes seen by this run: {events.get('added', 0)} edges added, "
        f"{events.get('removed', 0)} removed (follow_edge_events; the first run is the baseline)"
    )
    say(f"time: {seconds:.1f} s")
    say("next: python -m etl report --out report.html, then open report.html")
