"""The terminal side of the edge: logging set-up (text or JSON lines), printing, and the filter
that keeps secrets (the secret key, any UserSig) out of both."""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from rich.console import Console
from rich.text import Text

LogFormat = Literal["text", "json"]

_USERSIG_IN_URL = re.compile(r"(usersig=)[^&\s'\"]+", re.IGNORECASE)
# What every LogRecord carries; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


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

    def redact_value(self, value: Any) -> Any:
        """A JSON-ready copy of *value*: strings redacted, containers walked, objects as str."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {self.redact(str(k)): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_value(v) for v in value]
        return self.redact(str(value))

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


REDACTOR = Redactor()  # the process's one filter; commands add the configured secrets

# Fields every JSON log record carries once they are known (commands set job and pid at
# start, run_id as soon as the run is opened).
CONTEXT: dict[str, Any] = {}


class TextFormatter(logging.Formatter):
    """``12:00:01 WARNING message``, as always; a logged traceback is redacted too."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        self.redactor = redactor

    def formatException(self, ei: Any) -> str:
        return self.redactor.redact(super().formatException(ei))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the ``extra`` fields, and a
    logged exception as one line (type, message, innermost frame), never a traceback."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redactor.redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in doc:
                doc[key] = self.redactor.redact_value(value)
        for key, value in CONTEXT.items():
            doc.setdefault(key, self.redactor.redact_value(value))
        if record.exc_info and record.exc_info[1] is not None:
            doc["exception"] = self.redactor.redact(_one_line(record.exc_info[1]))
        if record.stack_info:
            doc["stack"] = self.redactor.redact(" | ".join(record.stack_info.splitlines()))
        return json.dumps(doc, ensure_ascii=False)


def _one_line(exc: BaseException) -> str:
    """``ValueError: bad thing (at sync.py:120 in run)``."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text


class _LogHandler(logging.Handler):
    """Writes to stderr, or through a rich console while that console shows a live display,
    so that log lines scroll above the display instead of tearing it."""

    def __init__(self) -> None:
        super().__init__()
        self.console: Console | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            console = self.console
            if console is not None:
                console.print(Text(line), soft_wrap=True, highlight=False)
            else:
                # Resolved per record, so a test's capture (or a redirect) of stderr is honoured.
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        except Exception:  # noqa: BLE001 (logging's contract: report, never raise)
            self.handleError(record)


_HANDLER = _LogHandler()
_HANDLER.addFilter(REDACTOR)


_FORMAT: list[LogFormat] = ["text"]  # the format stderr speaks, for error() as well


def setup_logging(verbosity: int, log_format: LogFormat = "text") -> None:
    """Log to stderr through the redactor: -1 warnings, 0 info, 1 debug; text or JSON lines."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    _FORMAT[0] = log_format
    _HANDLER.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [_HANDLER]
    root.setLevel(level)
    # httpx logs a line per request at INFO: noise at hundreds of calls a second (the URL it
    # logs holds no UserSig: etl.client adds that below httpx).
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def logs_through(console: Console) -> Iterator[None]:
    """While inside, log lines print through *console* (above its live display, if any)."""
    previous, _HANDLER.console = _HANDLER.console, console
    try:
        yield
    finally:
        _HANDLER.console = previous


def say(text: str, stream: TextIO | None = None) -> None:
    """Print a line for the user (stdout by default), secrets masked."""
    print(REDACTOR.redact(text), file=stream or sys.stdout)


def error(message: str, exit_code: int, *, prefix: str = "follow-etl: error: ") -> None:
    """The process's one final error line on stderr: ``follow-etl: error: ...`` as text, or,
    with JSON logs, one JSON object like every other stderr line, carrying ``exit_code``."""
    text = REDACTOR.redact(f"{prefix}{message}")
    if _FORMAT[0] == "json":
        doc: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": "error",
            "logger": "follow-etl",
            "message": text,
            "exit_code": exit_code,
        }
        for key, value in CONTEXT.items():
            doc.setdefault(key, REDACTOR.redact_value(value))
        text = json.dumps(doc, ensure_ascii=False)
    print(text, file=sys.stderr)
