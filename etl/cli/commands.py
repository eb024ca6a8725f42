"""What each command does, once the command line is parsed: call etl.api (or, for the
commands that are not part of the API, the library), print the outcome, return 0. Errors,
each with its exit code, propagate to etl.cli.main, which prints the one error line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from etl import api, verify
from etl.cli.progress import progress_mode, progress_reporter
from etl.config import Secret, Settings
from etl.console import CONTEXT, error, say
from etl.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    ConfigError,
    DatabaseError,
    EtlError,
    Interrupted,
    RunIncomplete,
    UsageError,
    VerifyMismatch,
)
from etl.metrics import Metrics
from etl.store import db
from etl.store.schema import sync_runs
from etl.sync import Progress, SyncReport
from etl.tencent.page import TYPE_NAMES
from etl.tencent.usersig import generate

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
def _metrics(args: argparse.Namespace, settings: Settings, job: str) -> Iterator[Metrics | None]:
    """Prometheus metrics (--metrics-file, --pushgateway), written last with the exit code the
    command ends with."""
    if not (args.metrics_file or args.pushgateway):
        yield None
        return
    metrics = Metrics(
        _engine(settings),
        job,
        textfile=Path(args.metrics_file) if args.metrics_file else None,
        pushgateway=args.pushgateway,
        every=args.metrics_every,
    )
    metrics.start()
    code = 0
    try:
        yield metrics
    except EtlError as exc:
        code = exc.exit_code
        raise
    except BaseException as exc:
        if db.is_database_error(exc):
            code = DatabaseError.exit_code
        elif isinstance(exc, KeyboardInterrupt):
            code = EXIT_INTERRUPTED
        else:
            code = EXIT_INTERNAL
        raise
    finally:
        metrics.close(code)


def _settings() -> Settings:
    return api.settings_from()


def _engine(settings: Settings) -> sa.Engine:
    return db.make_engine(settings.database_url, schema=settings.schema)


@contextmanager
def _at_once() -> Iterator[None]:
    """Ctrl-C / SIGTERM end the process at once with 130 / 143, after its one error line: for
    ``migrate``, whose work is one transaction. Unwinding instead would wait for the statement
    in flight (a DDL waiting for a lock: up to lock_timeout) and then fail to roll back a
    connection still busy with it; the database rolls back a transaction whose connection
    closes."""

    def handler(signum: int, frame: object) -> None:
        code = 128 + signum
        error(
            f"stopped by {signal.Signals(signum).name}; the migration is rolled back: "
            "run `migrate` again",
            code,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database to the newest schema."""
    settings = _settings()
    with _at_once():
        done = api.migrate(settings=settings)
    if done.created_schema:
        say(f"created schema {settings.schema}")
    where = db.describe(settings.database_url)
    if settings.schema is not None:
        where += f" (schema {settings.schema})"
    if done.changed:
        say(f"{where}: migrated from {done.before or 'empty'} to {done.after}")
    else:
        say(f"{where}: already at revision {done.after}")
    return 0


@contextmanager
def _graceful() -> Iterator[api.StopRequest]:
    """Ctrl-C / SIGTERM ask the crawl to stop (a second one ends the process at once)."""
    stop = api.StopRequest()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            # Forced: end now, with this signal's own code (the run stays resumable).
            raise Interrupted(
                f"stopped at once by a second signal ({signal.Signals(signum).name}); "
                "the run is resumable: run the same command again",
                signum=signum,
            )
        stop.request(signum)
        name = signal.Signals(signum).name
        log.warning("%s: finishing the pages in flight, then stopping (again to force)", name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _reported(worker: bool = False) -> Iterator[None]:
    """The summary of a sync that raised (RunIncomplete, Interrupted) before its error line."""
    try:
        yield
    except (RunIncomplete, Interrupted) as exc:
        if isinstance(exc.result, SyncReport):
            _print_report(exc.result, worker)
        raise


def _on_run(run_id: int) -> None:
    """From now on, every JSON log record carries the run's id."""
    CONTEXT["run_id"] = run_id


@contextmanager
def _crawling(
    args: argparse.Namespace,
    settings: Settings,
    job: str,
    *,
    worker: bool = False,
    metrics: bool = True,
) -> Iterator[tuple[api.StopRequest, Callable[[Progress], None] | None]]:
    """Where the crawling commands (sync, worker, demo) crawl: Prometheus metrics if asked for
    (``metrics=False``: the command has no metrics options), Ctrl-C / SIGTERM as a graceful
    stop, the progress display, and the summary of a crawl that raises (RunIncomplete,
    Interrupted). Yields ``(stop, on_progress)`` for the crawl; a crawl that returns has its
    summary printed by the caller (inside the block, or, for demo, after the sandbox stops)."""
    gauges: AbstractContextManager[Metrics | None] = (
        _metrics(args, settings, job) if metrics else nullcontext()
    )
    with (
        gauges as sink,
        _graceful() as stop,
        _progress(args, sink) as on_progress,
        _reported(worker),
    ):
        yield stop, on_progress


def cmd_sync(args: argparse.Namespace) -> int:
    """Crawl the lists of the given accounts and load them."""
    settings = _settings()
    with _crawling(args, settings, args.job) as (stop, on_progress):
        report = api.sync(
            args.account or [],
            accounts_file=args.accounts,
            accounts_query=args.accounts_query,
            job=args.job,
            types=args.types,
            page_size=args.page_size,
            restart=args.restart,
            rate=args.rate,
            concurrency=args.concurrency,
            wait=args.wait,
            keep_runs=args.keep_runs,
            hold_min_edges=args.hold_min_edges,
            hold_share=args.hold_share,
            settings=settings,
            stop=stop,
            on_progress=on_progress,
            on_run=_on_run,
        )
        _print_report(report)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Join the job's unfinished run."""
    settings = _settings()
    with _crawling(args, settings, args.job, worker=True) as (stop, on_progress):
        report = api.work(
            args.job, settings=settings, stop=stop, on_progress=on_progress, on_run=_on_run
        )
        if report is None:
            say(f"job {args.job!r} has no unfinished run: nothing to do")
            return 0
        _print_report(report, worker=True)
    return 0


def _print_report(report: SyncReport, worker: bool = False) -> None:
    """Print what a sync did (the error line, if any, comes from etl.cli)."""
    lists = report.lists
    if worker:
        who = "worker on run"
        verb = "done (no list left)" if report.finished else "stopped"
    else:
        who = "run"
        verb = ("resumed, " if report.resumed else "") + (
            "finished" if report.finished else "stopped"
        )
    if report.closed_by_other == "abandoned":
        verb = "stopped: another `sync --restart` abandoned the run"
    say(
        f"{who} {report.run_id} of job {report.job!r} {verb} in {report.seconds:.1f} s: "
        f"{lists['total']} lists ({lists['done']} done, {lists['skipped']} skipped, "
        f"{lists['failed']} failed, {lists.get('held', 0)} held), "
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
    # Counts and the first few: every one is in the run's checkpoints (status, last_error).
    where = f" (all in `status --job {report.job}`)"
    if report.missing_lists:
        shown = ", ".join(report.missing_accounts)
        say(
            f"{report.missing_lists} lists of accounts that do not exist (30003), skipped: "
            f"{shown}"
            + (" ..." if report.missing_lists > len(report.missing_accounts) else "")
            + where
        )
    for failure in report.failures:
        say(f"failed: {failure}")
    if report.failure_count > len(report.failures):
        say(f"failed: and {report.failure_count - len(report.failures)} more lists{where}")
    if lists.get("held"):
        say(
            f"{lists['held']} lists held for a mass removal: nothing of theirs removed "
            f"(see `status --job {report.job}`)"
        )


def cmd_status(args: argparse.Namespace) -> int:
    """Show the latest run of a job."""
    doc = api.status(args.job, settings=_settings())
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
        f"{lists['failed']} failed, {lists['held']} held, {lists['running']} half done, "
        f"{lists['pending']} pending"
    )
    say(f"  stored    {run['pages']} pages, {run['items']} items, {run['requests']} requests")
    held = run["held"]
    if held["count"]:
        say(f"  held      {held['count']} lists: their crawl would remove most of their edges")
        for h in held["lists"]:
            kind = TYPE_NAMES.get(h["follow_type"], h["follow_type"])
            then = "a second crawl confirms it" if h["confirming"] else "not confirmed"
            say(f"    {h['account']}/{kind}: {h['removed']} of {h['current']} edges; {then}")
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


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete the checkpoints of the job's (or every job's) runs but the last N."""
    with _graceful() as stop:
        pruned = api.prune(args.job, keep_runs=args.keep_runs, settings=_settings(), stop=stop)
    if args.json:
        say(json.dumps(pruned.document(), indent=2))
        return 0
    which = f"job {args.job!r}" if args.job is not None else "every job"
    say(
        f"pruned {which} to its last {args.keep_runs} runs: checkpoints of "
        f"{len(pruned.runs)} runs deleted ({pruned.checkpoints} rows), "
        f"{pruned.seen} sync_seen rows of ended runs"
    )
    return 0


def cmd_prune_events(args: argparse.Namespace) -> int:
    """Delete the follow_edge_events observed before a date."""
    with _graceful() as stop:
        deleted = api.prune_events(args.before, settings=_settings(), stop=stop)
    before = args.before.isoformat()
    if args.json:
        say(json.dumps({"before": before, "events_deleted": deleted}, indent=2))
        return 0
    say(f"deleted {deleted} follow_edge_events observed before {before}")
    return 0


VERIFY_SHOWN = 20  # disagreeing lists and missing accounts printed; the rest are counted


def cmd_verify(args: argparse.Namespace) -> int:
    """Compare the job's stored list sizes with follow_get_info; --repair re-crawls those off."""
    try:
        with _graceful() as stop:
            result = api.verify(args.job, repair=args.repair, settings=_settings(), stop=stop)
    except (VerifyMismatch, RunIncomplete) as exc:
        if isinstance(exc.result, verify.Verification):
            _print_verification(exc.result, args.json)
            if exc.result.final.disagree and not args.repair:
                raise VerifyMismatch(f"{exc}; `verify --repair` re-crawls them") from exc
        raise
    _print_verification(result, args.json)
    return 0


def _print_verification(result: verify.Verification, as_json: bool) -> None:
    if as_json:
        say(json.dumps(result.document(), indent=2, ensure_ascii=False))
        return
    _print_verify(result.report, "verified")
    if result.repaired:
        _print_repair(result.repaired)
        _print_verify(result.final, "re-verified the repaired lists of")


def _print_verify(report: verify.VerifyReport, what: str) -> None:
    """The summary line of a verification, then what disagrees (capped)."""
    bad = report.disagree
    extra = ""
    if report.lists_not_checked:
        extra += f", {report.lists_not_checked} lists not checked (not crawled to the end)"
    if report.without_counts:
        extra += f", {report.without_counts} accounts without counts"
    state = "" if report.run_status == "done" else f" ({report.run_status})"
    say(
        f"{what} run {report.run_id}{state} of job {report.job!r} in {report.seconds:.1f} s: "
        f"{report.accounts} accounts, {report.lists} lists ({report.lists - bad} agree, "
        f"{bad} disagree){extra}, {report.missing} accounts do not exist "
        f"(30003), {report.requests} requests ({report.retries} retried)"
    )
    for mismatch in report.mismatches[:VERIFY_SHOWN]:
        say(f"disagrees: {mismatch.describe()}")
    if bad > min(len(report.mismatches), VERIFY_SHOWN):
        shown = min(len(report.mismatches), VERIFY_SHOWN)
        say(f"disagrees: and {bad - shown} more (all in table verify_mismatches)")
    for label, names, total in (
        ("accounts that do not exist (30003)", report.missing_accounts, report.missing),
        (
            "no counts for",
            [f"{a} ({why})" for a, why in report.unchecked],
            report.without_counts,
        ),
    ):
        if names:
            shown_names = names[:VERIFY_SHOWN]
            more = total - len(shown_names)
            say(f"{label}: {', '.join(shown_names)}" + (f" and {more} more" if more > 0 else ""))


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
    from etl import report

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
    degree = {} if args.degree is None else {"degree": args.degree}
    graph = Graph(
        users=args.users,
        seed=args.seed,
        hostile=args.hostile,
        big_lists=args.big_lists,
        **degree,
    )

    def ready(url: str) -> None:
        key = "$IM_SECRET_KEY" if settings.secret_key else config.secret_key
        say(f"sandbox: {args.users} users (seed {args.seed}) at {url}; Ctrl-C stops it")
        if args.hostile or config.loop_accounts or args.fault_kinds:
            kinds = ",".join(config.fault_kinds)
            loops = ",".join(config.loop_accounts) or "none"
            say(f"  hostile {args.hostile}, fault kinds {kinds}, looping accounts {loops}")
        if graph.big_accounts:
            big = ", ".join(f"{a} +{n}" for a, n in graph.big_accounts.items())
            say(f"  big lists (synthetic fans): {big}")
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
        sandboxed = dataclasses.replace(
            settings,
            sdkappid=config.sdkappid,
            admin=config.admin,
            base_url=server.url,
            secret_key=Secret(config.secret_key),
            usersig=None,
            rate=args.rate,
        )
        with _crawling(args, sandboxed, "demo", metrics=False) as (stop, on_progress):
            report = api.sync(
                graph.accounts,
                job="demo",
                settings=sandboxed,
                stop=stop,
                on_progress=on_progress,
            )
    _print_report(report)
    _print_summary(engine, report.run_id, time.monotonic() - started)
    return 0


def _print_summary(engine: sa.Engine, run_id: int, seconds: float) -> None:
    """The demo's last lines: what the store holds now, and what this run changed."""
    from etl import report

    with engine.connect() as conn:
        store = report.store_summary(conn, run_id)
    say(f"accounts with edges: {store.accounts}")
    for follow_type, name in TYPE_NAMES.items():
        say(f"  {name:8} {store.edges.get(follow_type, 0):>9} edges")
    say(f"profiles: {store.profiles} users, {store.snapshots} snapshots")
    say(
        f"changes seen by this run: {store.added} edges added, "
        f"{store.removed} removed (follow_edge_events; the first run is the baseline)"
    )
    say(f"time: {seconds:.1f} s")
    say("next: python -m etl report --out report.html, then open report.html")
