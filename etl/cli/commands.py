"""What each command does once the command line is parsed: call etl.api, print the outcome
(etl.cli.output), return 0. Errors, each with its exit code, propagate to etl.cli.main, which
prints the one error line."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from etl import api
from etl.cli import output
from etl.cli.crawling import crawling, on_run
from etl.cli.signals import at_once, graceful
from etl.config import Settings
from etl.errors import RunIncomplete, VerifyMismatch
from etl.results import Verification


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database to the newest schema."""
    settings = api.settings_from()
    with at_once():
        done = api.migrate(settings=settings)
    output.migration(done, settings)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Crawl the lists of the given accounts and load them."""
    settings = api.settings_from()
    with crawling(args, settings, args.job) as (stop, on_progress):
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
            changed_first=args.changed_first,
            settings=settings,
            stop=stop,
            on_progress=on_progress,
            on_run=on_run,
        )
        output.sync_report(report)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Join the job's unfinished run."""
    settings = api.settings_from()
    with crawling(args, settings, args.job, worker=True) as (stop, on_progress):
        report = api.work(
            args.job, settings=settings, stop=stop, on_progress=on_progress, on_run=on_run
        )
        if report is None:
            output.no_unfinished_run(args.job)
            return 0
        output.sync_report(report, worker=True)
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    """Receive the follow callbacks until SIGTERM or Ctrl-C."""
    report = api.listen(
        host=args.host,
        port=args.port,
        path=args.path,
        max_body=args.max_body,
        ack_timeout=args.ack_timeout,
        settings=api.settings_from(),
        ready=output.listening,
    )
    output.listen_report(report)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show the latest run of a job."""
    doc = api.status(args.job, settings=api.settings_from())
    if args.json:
        output.document(doc)
    else:
        output.status(args.job, doc)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete the checkpoints of the job's (or every job's) runs but the last N."""
    with graceful() as stop:
        pruned = api.prune(
            args.job, keep_runs=args.keep_runs, settings=api.settings_from(), stop=stop
        )
    if args.json:
        output.document(pruned.document(), ascii_only=True)
    else:
        output.pruned(args.job, args.keep_runs, pruned)
    return 0


def cmd_prune_events(args: argparse.Namespace) -> int:
    """Delete the follow_edge_events observed before a date."""
    with graceful() as stop:
        deleted = api.prune_events(args.before, settings=api.settings_from(), stop=stop)
    before = args.before.isoformat()
    if args.json:
        output.document({"before": before, "events_deleted": deleted}, ascii_only=True)
    else:
        output.events_pruned(before, deleted)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Compare the job's stored list sizes with follow_get_info; --repair re-crawls those off."""
    try:
        with graceful() as stop:
            result = api.verify(
                args.job, repair=args.repair, settings=api.settings_from(), stop=stop
            )
    except (VerifyMismatch, RunIncomplete) as exc:
        if isinstance(exc.result, Verification):
            output.verification(exc.result, args.json)
            if exc.result.final.disagree and not args.repair:
                raise VerifyMismatch(f"{exc}; `verify --repair` re-crawls them") from exc
        raise
    output.verification(result, args.json)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report (headline numbers, charts, latest runs) to --out."""
    data = api.report(args.out, args.job)
    output.report_written(Path(args.out), args.job, data)
    return 0


def cmd_usersig(args: argparse.Namespace) -> int:
    """Print a UserSig for IM_ADMIN made from IM_SECRET_KEY."""
    output.usersig(api.usersig(args.expire))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the sandbox and a listener, migrate the database, sync every sandbox account, print
    a summary; then a live follow into the tables, and the next sync's reconciliation."""
    started = time.monotonic()
    settings = api.settings_from()
    with api.demo(args.users, seed=args.seed, rate=args.rate, settings=settings) as demo:
        output.demo_started(demo, args.users)
        with crawling(args, demo.settings, demo.job, metrics=False) as (stop, on_progress):
            report = api.sync(
                demo.accounts,
                job=demo.job,
                settings=demo.settings,
                stop=stop,
                on_progress=on_progress,
            )
        output.sync_report(report)
        output.demo_summary(api.demo_summary(report.run_id, settings=settings))
        live = demo.follow()
        output.demo_live(live, demo.listener)
        pair = [live.account, live.to_account]
        again = api.sync(pair, job=demo.live_job, settings=demo.settings)
        output.demo_reconciliation(again, api.status(demo.live_job, settings=settings))
    output.demo_end(time.monotonic() - started)
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Serve the stand-in follow API in the foreground until Ctrl-C."""
    from etl.sandbox import Graph, Sandbox
    from etl.sandbox.server import serve_forever

    settings = api.settings_from()
    config = _sandbox_config(settings, args)
    degree = {} if args.degree is None else {"degree": args.degree}
    graph = Graph(
        users=args.users, seed=args.seed, hostile=args.hostile, big_lists=args.big_lists, **degree
    )
    sandbox = Sandbox(graph, config)
    sandbox.warm()  # render every profile before saying ready, not during the first crawl
    serve_forever(
        sandbox,
        args.host,
        args.port,
        on_ready=lambda url: output.sandbox_ready(url, args, settings, graph, config),
    )
    return 0


def _sandbox_config(settings: Settings, args: argparse.Namespace) -> Any:
    """The sandbox's config from ``sandbox``'s options; the app's credentials, if configured."""
    from etl.sandbox import SandboxConfig
    from etl.sandbox.webhook import WebhookConfig

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
    if args.webhook_url is not None:
        overrides["webhook"] = WebhookConfig(
            url=args.webhook_url,
            token=settings.callback_token,  # IM_CALLBACK_TOKEN, the listener's too
            drops=args.webhook_drops,
            duplicates=args.webhook_duplicates,
            reorder=args.webhook_reorder,
            delay_ms=args.webhook_delay_ms,
            seed=args.seed,
        )
    return dataclasses.replace(config, **overrides)
