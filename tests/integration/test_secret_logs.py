"""A host that logs everything at DEBUG never sees the UserSig or the secret key."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator

import httpx
import pytest
import sqlalchemy as sa

from etl.errors import TransientApiError
from etl.sandbox import Graph, SandboxServer
from etl.tencent.usersig import UserSigSource
from tests.conftest import api_settings, free_port, make_client, sync_with

Start = Callable[..., SandboxServer]


class Everything(logging.Handler):
    """Formats every record it gets, traceback included, as a host's handler would."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def host_logs() -> Iterator[Everything]:
    """The root logger at DEBUG with a handler of its own; httpx and httpcore left on."""
    root = logging.getLogger()
    handler, level = Everything(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.NOTSET)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)


def secrets_of(server: SandboxServer, now: float) -> list[str]:
    """The secret key and the UserSig a client made from it at ``now``, as is and as a query
    string holds it (its ``*`` percent-encoded)."""
    config = server.sandbox.config
    sig = UserSigSource(
        sdkappid=config.sdkappid,
        identifier=config.admin,
        secret_key=config.secret_key,
        clock=lambda: now,
    ).current()
    in_url = str(httpx.QueryParams({"usersig": sig})).removeprefix("usersig=")
    return [config.secret_key, sig, in_url]


def test_a_sync_logged_at_debug_shows_no_secret(
    engine: sa.Engine, running_sandbox: Start, host_logs: Everything
) -> None:
    """Every record of an in-process sync, httpx's request lines included, lacks the UserSig
    and the secret key."""
    graph = Graph(users=8, seed=15)
    server = running_sandbox(graph)
    now = time.time()
    with make_client(api_settings(server), clock=lambda: now) as client:
        report = sync_with(engine, client, graph.accounts)
    assert report.finished
    assert sum("HTTP Request: POST" in line for line in host_logs.lines) >= report.requests
    assert any(line.startswith("httpcore") for line in host_logs.lines)
    for secret in secrets_of(server, now):
        assert not [line for line in host_logs.lines if secret in line]


@pytest.mark.parametrize("failure", ["refused", "http_503"])
def test_a_failed_request_shows_no_secret(
    running_sandbox: Start, host_logs: Everything, failure: str
) -> None:
    """A refused connection or a 5xx, retried and given up, names no secret in the error,
    its traceback or any log record."""
    server = running_sandbox(Graph(users=2, seed=1))
    api = api_settings(server)
    if failure == "refused":
        api = api_settings(server, base_urls=(f"http://127.0.0.1:{free_port()}",))
    else:
        server.sandbox.set_outage(status=503)
    now = time.time()
    with make_client(api, clock=lambda: now) as client, pytest.raises(TransientApiError) as caught:
        client.follow_get("user_1", 1, "", 10)
    text = "".join(traceback.format_exception(caught.value, chain=True))
    context = caught.value.__context__
    if context is not None:  # an httpx error, suppressed from the traceback but kept
        text += repr(context) + str(getattr(context, "request", ""))
        text += "".join(traceback.format_exception(context))
    assert "HTTP 503" in text if failure == "http_503" else "network error" in text
    for secret in secrets_of(server, now):
        assert secret not in text
        assert not [line for line in host_logs.lines if secret in line]
