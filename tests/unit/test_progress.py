"""What a sync in flight shows: log lines on a timer, JSON records, a live bar, or nothing."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from rich.console import Console

from etl.cli.progress import clock_time, describe, progress_mode, progress_reporter
from etl.console import setup_logging
from etl.results import Progress

SAMPLE = Progress(
    run_id=3,
    job="nightly",
    lists_total=600,
    lists_settled=120,
    pages=830,
    items=45_000,
    calls=12_000,
    retries=3,
    elapsed=70.2,
    calls_per_second=182.04,
    eta_seconds=280.0,
    workers=2,
)
SAMPLE_LINE = (
    "run 3 of job 'nightly': 120/600 lists, 45,000 items, 830 pages, 182.0 calls/s, "
    "3 retries, 2 workers, elapsed 0:01:10, ETA 0:04:40"
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def at(t: float, **changes: object) -> Progress:
    """The sample snapshot as it stood *t* seconds in, with *t* lists settled."""
    return dataclasses.replace(SAMPLE, elapsed=t, lists_settled=int(t), **changes)  # type: ignore[arg-type]


def messages(err: str) -> list[str]:
    """The messages of text log lines, without their ``HH:MM:SS INFO`` prefix."""
    return [re.sub(r"^\d\d:\d\d:\d\d INFO ", "", line) for line in err.splitlines()]


def test_describe_reads_like_the_readme() -> None:
    """The plain line names every number of the snapshot."""
    assert describe(SAMPLE) == SAMPLE_LINE
    assert describe(dataclasses.replace(SAMPLE, eta_seconds=None, retries=1, workers=1)) == (
        SAMPLE_LINE.replace("3 retries, 2 workers", "1 retry, 1 worker").replace(
            "ETA 0:04:40", "ETA unknown"
        )
    )
    assert clock_time(93_784.4) == "26:03:04"


def test_lines_come_every_interval_and_once_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    """Fed twice a second for 25 s with every=10: a line at 10 s, at 20 s, and the final one."""
    setup_logging(0)
    clock = FakeClock()
    with progress_reporter(io.StringIO(), mode="lines", every=10.0, clock=clock) as on_progress:
        for tick in range(51):  # 0.0, 0.5, ..., 25.0
            clock.now = 1000.0 + tick / 2
            on_progress(at(tick / 2, final=tick == 50))
    assert messages(capsys.readouterr().err) == [
        describe(at(10.0)),
        describe(at(20.0)),
        "run 3 of job 'nightly': 25/600 lists, 45,000 items, 830 pages, 182.0 calls/s, "
        "3 retries, 2 workers, elapsed 0:00:25",
    ]


def test_a_failing_sync_adds_no_line_to_its_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A sync that fails (no final snapshot) logs nothing more than its periodic lines."""
    setup_logging(0)
    clock = FakeClock()

    def interrupted_sync() -> None:
        with progress_reporter(io.StringIO(), every=10.0, clock=clock) as on_progress:  # no tty
            on_progress(at(1.0))
            clock.now += 3
            on_progress(at(4.0))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_sync()
    assert messages(capsys.readouterr().err) == []


def test_json_progress_is_a_record_with_the_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    """Under --log-format json the progress goes out as an ``event: progress`` JSON record."""
    setup_logging(0, "json")
    clock = FakeClock()
    mode = progress_mode(0, "json")
    with progress_reporter(io.StringIO(), mode=mode, every=5.0, clock=clock) as on_progress:
        clock.now += 5
        on_progress(SAMPLE)
    [doc] = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert doc["logger"] == "etl.cli.progress"
    assert doc["message"] == SAMPLE_LINE
    assert doc["event"] == "progress"
    assert {k: doc[k] for k in ("run_id", "job", "lists_total", "lists_settled", "items")} == {
        "run_id": 3,
        "job": "nightly",
        "lists_total": 600,
        "lists_settled": 120,
        "items": 45_000,
    }
    assert (doc["calls_per_second"], doc["eta_seconds"], doc["workers"]) == (182.0, 280.0, 2)
    assert doc["final"] is False


def test_off_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """-q turns the display off: no line, not even the final one."""
    setup_logging(-1)
    stream = io.StringIO()
    clock = FakeClock()
    with progress_reporter(stream, mode=progress_mode(-1, "text"), clock=clock) as on_progress:
        clock.now += 60
        on_progress(SAMPLE)
        on_progress(dataclasses.replace(SAMPLE, final=True))
    assert capsys.readouterr() == ("", "")
    assert stream.getvalue() == ""


def test_modes_follow_the_options() -> None:
    """-q means off, json logging means log records, otherwise the terminal decides."""
    assert progress_mode(-1, "json") == "off"
    assert progress_mode(0, "json") == "lines"
    assert progress_mode(1, "text") == "auto"


def test_live_display_draws_the_numbers_with_logs_above(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a terminal the bar shows every number, and a warning logged meanwhile prints above it."""
    setup_logging(0)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    with progress_reporter(out, mode="live", console=console) as on_progress:
        on_progress(SAMPLE)
        logging.getLogger("etl.tencent.client").warning("rate limited (60007): pausing 2.0 s")
        on_progress(dataclasses.replace(SAMPLE, lists_settled=300, items=60_500))
    drawn = out.getvalue()
    assert capsys.readouterr().err == ""  # the warning went through the console, not stderr
    warning = drawn.index("WARNING rate limited (60007): pausing 2.0 s")
    last_frame = drawn[warning:]
    for shown in ("run 3 of job 'nightly'", "50%", "300/600 lists", "60,500 items", "830 pages"):
        assert shown in last_frame
    for shown in ("182.0 calls/s", "3 retries", "2 workers", "elapsed 0:01:10", "ETA 0:04:40"):
        assert shown in last_frame
    assert "━" in last_frame
