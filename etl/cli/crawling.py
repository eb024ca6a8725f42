"""What a crawling command (sync, worker, demo) runs inside: its Prometheus metrics, Ctrl-C
and SIGTERM as a graceful stop, the progress display, and the summary of a crawl that raises.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from etl import api
from etl.cli import output
from etl.cli.progress import progress_mode, progress_reporter
from etl.cli.signals import graceful
from etl.config import Settings
from etl.console import CONTEXT
from etl.errors import Interrupted, RunIncomplete
from etl.metrics import Metrics
from etl.results import Progress, SyncReport
from etl.session import exit_code
from etl.store import db


@contextmanager
def crawling(
    args: argparse.Namespace,
    settings: Settings,
    job: str,
    *,
    worker: bool = False,
    metrics: bool = True,
) -> Iterator[tuple[api.StopRequest, Callable[[Progress], None] | None]]:
    """Where the crawling commands crawl: Prometheus metrics if asked for (``metrics=False``:
    the command has no metrics options), Ctrl-C / SIGTERM as a graceful stop, the progress
    display, and the summary of a crawl that raises (RunIncomplete, Interrupted). Yields
    ``(stop, on_progress)`` for the crawl; a crawl that returns has its summary printed by the
    caller (inside the block, or, for demo, after the sandbox stops)."""
    gauges: AbstractContextManager[Metrics | None] = (
        _metrics(args, settings, job) if metrics else nullcontext()
    )
    with (
        gauges as sink,
        graceful() as stop,
        _progress(args, sink) as on_progress,
        _reported(worker),
    ):
        yield stop, on_progress


def on_run(run_id: int) -> None:
    """From now on, every JSON log record carries the run's id."""
    CONTEXT["run_id"] = run_id


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
        db.make_engine(settings.database_url, schema=settings.schema),
        job,
        textfile=Path(args.metrics_file) if args.metrics_file else None,
        pushgateway=args.pushgateway,
        every=args.metrics_every,
    )
    metrics.start()
    code = 0
    try:
        yield metrics
    except BaseException as exc:
        code = exit_code(exc)
        raise
    finally:
        metrics.close(code)


@contextmanager
def _reported(worker: bool = False) -> Iterator[None]:
    """The summary of a sync that raised (RunIncomplete, Interrupted) before its error line."""
    try:
        yield
    except (RunIncomplete, Interrupted) as exc:
        if isinstance(exc.result, SyncReport):
            output.sync_report(exc.result, worker)
        raise
