"""What a sync in flight shows: a live bar on a terminal, a log record every few seconds
elsewhere (text or JSON, as logging is set up), or nothing under ``-q``.

The sync engine calls ``on_progress`` from its writer thread about twice a second, so every
callback here is a few attribute reads and writes; printing happens on a timer or on rich's
refresh thread, never in bulk on the caller's.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from etl.console import LogFormat, logs_through
from etl.results import Progress

Mode = Literal["auto", "live", "lines", "off"]
OnProgress = Callable[[Progress], None]

log = logging.getLogger("etl.cli.progress")


def progress_mode(verbosity: int, log_format: LogFormat) -> Mode:
    """The display a sync gets: none under -q, log records under JSON logging, else auto."""
    if verbosity < 0:
        return "off"
    return "lines" if log_format == "json" else "auto"


@contextmanager
def progress_reporter(
    stream: TextIO,
    *,
    mode: Mode = "auto",
    every: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    console: Console | None = None,
) -> Iterator[OnProgress]:
    """Yield the ``on_progress`` callback of a sync and show what it receives.

    ``auto`` is ``live`` when *stream* is a terminal and ``lines`` otherwise. ``live`` draws a
    bar on *stream* (or on *console*) and routes log lines above it; ``lines`` logs a record on
    ``etl.progress`` every *every* seconds of *clock* and once at the end; ``off`` shows nothing.
    """
    if mode == "auto":
        mode = "live" if stream.isatty() and not Console(file=stream).is_dumb_terminal else "lines"
    if mode == "off":
        yield _ignore
    elif mode == "live":
        display = _LiveDisplay()
        console = console or Console(file=stream)
        live = Live(
            console=console,
            get_renderable=display.render,
            refresh_per_second=4,
            # Our log handler prints through the console; swapping sys.stdout/err is not needed.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        with logs_through(console), live:
            yield display.update
    else:
        lines = _Lines(every, clock)
        try:
            yield lines.update
        finally:
            lines.close()


def _ignore(snapshot: Progress) -> None:
    """The ``off`` callback."""


def describe(p: Progress) -> str:
    """``run 3 of job 'nightly': 120/600 lists, 45,000 items, ..., ETA 0:04:40``."""
    parts = [
        f"{p.lists_settled:,}/{p.lists_total:,} lists",
        *_stats(p),
    ]
    return f"run {p.run_id} of job {p.job!r}: " + ", ".join(parts)


def _stats(p: Progress) -> list[str]:
    """Everything but the list count, in the order both displays show it."""
    stats = [
        _count(p.items, "item"),
        _count(p.pages, "page"),
        f"{p.calls_per_second:.1f} calls/s",
        _count(p.retries, "retry", "retries"),
        _count(p.workers, "worker"),
        f"elapsed {clock_time(p.elapsed)}",
    ]
    if not p.final:  # once this process has stopped, its ETA means nothing
        eta = "unknown" if p.eta_seconds is None else clock_time(p.eta_seconds)
        stats.append(f"ETA {eta}")
    return stats


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def clock_time(seconds: float) -> str:
    """Seconds as ``H:MM:SS`` (hours unbounded: ``26:00:00``)."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}"


class _Lines:
    """A log record every *every* seconds, and one for the final snapshot. A sync that fails
    sends no final snapshot, and nothing more is logged: its one error line says it all."""

    def __init__(self, every: float, clock: Callable[[], float]) -> None:
        self.every = every
        self.clock = clock
        self.due = clock() + every
        self.closed = False
        self.lock = threading.Lock()

    def update(self, snapshot: Progress) -> None:
        with self.lock:
            if self.closed:
                return
            now = self.clock()
            if snapshot.final:
                self.closed = True
            elif now < self.due:
                return
            self.due = now + self.every
            self._log(snapshot)

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def _log(self, snapshot: Progress) -> None:
        fields = dataclasses.asdict(snapshot)
        fields["elapsed"] = round(snapshot.elapsed, 1)
        fields["calls_per_second"] = round(snapshot.calls_per_second, 1)
        if snapshot.eta_seconds is not None:
            fields["eta_seconds"] = round(snapshot.eta_seconds, 1)
        log.info("%s", describe(snapshot), extra={"event": "progress", **fields})


class _LiveDisplay:
    """The latest snapshot, drawn by rich's refresh thread whenever it asks."""

    def __init__(self) -> None:
        self.latest: Progress | None = None

    def update(self, snapshot: Progress) -> None:
        self.latest = snapshot  # one reference swap: safe from any thread, and cheap

    def render(self) -> RenderableType:
        p = self.latest
        if p is None:
            return Text("sync: starting", style="dim")
        top = Table.grid(padding=(0, 1), expand=True)
        top.add_column(no_wrap=True)
        top.add_column(ratio=1)
        top.add_column(no_wrap=True, justify="right")
        share = p.lists_settled / p.lists_total if p.lists_total else 0.0
        top.add_row(
            Text(f"run {p.run_id} of job {p.job!r}", style="bold"),
            ProgressBar(total=max(p.lists_total, 1), completed=p.lists_settled),
            f"{share:4.0%}  {p.lists_settled:,}/{p.lists_total:,} lists",
        )
        return Group(top, Text(" · ".join(_stats(p)), no_wrap=True, overflow="ellipsis"))
