"""What a listener takes and gives: its settings (the app's SDKAppID and callback token from
etl.config's Settings, and the options of ``listen``, checked once into a frozen
ListenSettings) and what it did (ListenReport)."""

from __future__ import annotations

from dataclasses import dataclass

from etl.config import Secret, Settings, is_loopback
from etl.errors import ConfigError, UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_PATH = "/"
DEFAULT_MAX_BODY = 1024 * 1024  # bytes: a callback is well under 1 KiB per To_Account
DEFAULT_ACK_TIMEOUT = 10.0  # seconds a callback may wait for its commit before a 503
REPLAY_SECONDS = 60  # a RequestTime further than this from now, either side, is a replay
RESERVED_PATHS = ("/healthz", "/metrics")


@dataclass(frozen=True)
class ListenReport:
    """What a listener did, from start to stop."""

    url: str
    seconds: float
    received: int  # POSTs to the callback path
    acknowledged: int  # answered 200: committed
    rejected: int  # refused with a 4xx
    unacknowledged: int  # answered 503 or 500: not acknowledged


@dataclass(frozen=True)
class ListenSettings:
    """One listener's settings."""

    sdkappid: int
    token: Secret | None  # None: no Sign is checked (a loopback listener only)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    max_body: int = DEFAULT_MAX_BODY
    ack_timeout: float = DEFAULT_ACK_TIMEOUT
    replay_seconds: int = REPLAY_SECONDS


def listen_settings(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    path: str = DEFAULT_PATH,
    max_body: int = DEFAULT_MAX_BODY,
    ack_timeout: float = DEFAULT_ACK_TIMEOUT,
) -> ListenSettings:
    """The listener's settings; UsageError for an option out of range, ConfigError without
    IM_SDKAPPID, or without IM_CALLBACK_TOKEN on a host that is not loopback."""
    problem = _option_problem(port, path, max_body, ack_timeout)
    if problem:
        raise UsageError(problem)
    if settings.sdkappid is None:
        raise ConfigError("IM_SDKAPPID is not set (the app whose callbacks `listen` accepts)")
    if settings.callback_token is None and not is_loopback(host):
        raise ConfigError(
            f"IM_CALLBACK_TOKEN is not set: a listener on {host or 'every interface'} must check "
            "each callback's Sign (set the token of the Chat console's callback configuration), "
            "or bind to 127.0.0.1"
        )
    return ListenSettings(
        sdkappid=settings.sdkappid,
        token=settings.callback_token,
        host=host,
        port=port,
        path=path,
        max_body=max_body,
        ack_timeout=ack_timeout,
    )


def _option_problem(port: int, path: str, max_body: int, ack_timeout: float) -> str | None:
    """What is wrong with the options, in one line, or None."""
    if not 0 <= port <= 65535:
        return f"--port must be from 0 to 65535, got {port}"
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        return f"--path must start with / and hold no space, ? or #, got {path!r}"
    if path in RESERVED_PATHS:
        return f"--path {path} is the listener's own route: choose another"
    if max_body < 1:
        return f"--max-body must be at least 1 byte, got {max_body}"
    if not 0 < ack_timeout < float("inf"):
        return f"--ack-timeout must be a positive number of seconds, got {ack_timeout}"
    return None
