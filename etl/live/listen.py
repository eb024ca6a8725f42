"""``etl.api.listen``: the library call behind `follow-etl listen` (etl.api re-exports it), one
``etl.session.session`` like every other api call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from etl.config import Settings
from etl.live import settings as listening
from etl.live.settings import ListenReport
from etl.session import session, settings_from


def listen(
    *,
    host: str = listening.DEFAULT_HOST,
    port: int = listening.DEFAULT_PORT,
    path: str = listening.DEFAULT_PATH,
    max_body: int = listening.DEFAULT_MAX_BODY,
    ack_timeout: float = listening.DEFAULT_ACK_TIMEOUT,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    ready: Callable[[str], None] | None = None,
) -> ListenReport:
    """Apply Tencent's follow callbacks POSTed to http://HOST:PORT/PATH (etl.live), each
    acknowledged once committed, until ``stop`` (or, in the main thread, SIGINT or SIGTERM);
    ``ready`` gets the URL once it serves. ConfigError without IM_SDKAPPID, or without
    IM_CALLBACK_TOKEN off loopback; UsageError for an address it cannot bind."""
    from etl.live.server import serve  # uvicorn is imported by `listen` alone, when called

    settings = settings or settings_from(env)
    checked = listening.listen_settings(settings, host, port, path, max_body, ack_timeout)
    with session(settings) as engine:
        return serve(engine, checked, stop=stop, ready=ready)
