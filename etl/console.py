"""The terminal side of the edge: logging set-up, printing, and the filter that keeps
secrets (the secret key, any UserSig) out of both."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from typing import TextIO

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


REDACTOR = Redactor()  # the process's one filter; commands add the configured secrets


def setup_logging(verbosity: int) -> None:
    """Log to stderr through the redactor: -1 warnings, 0 info, 1 debug."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO, and the URL carries the UserSig.
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def say(text: str, stream: TextIO | None = None) -> None:
    """Print a line for the user (stdout by default), secrets masked."""
    print(REDACTOR.redact(text), file=stream or sys.stdout)
