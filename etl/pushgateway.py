"""The push to a Pushgateway: besides etl.tencent, the one HTTP client in etl.

prometheus_client's ``push_to_gateway``, with basic auth from the gateway's URL (the
credentials never in the URL pushed to or logged) and the handler that sends it injected:
``handler`` replaces prometheus_client's own (tests capture the request with it). A failing
push is logged with the URL, never raised: nothing here can stop a sync.
"""

from __future__ import annotations

import base64
import http.client
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.exposition import default_handler

from etl.config import Pushgateway

log = logging.getLogger("etl.metrics")  # the logger its warnings always had

# prometheus_client's handler: (url, method, timeout, headers, data) -> the call that sends.
Handler = Callable[[str, str, float | None, list[tuple[str, str]], bytes], Callable[[], None]]

PUSH_TIMEOUT = 5.0


def authenticated(gateway: Pushgateway, send: Handler = default_handler) -> Handler:
    """``send``, adding basic auth when the gateway has credentials (``send`` itself without)."""
    if gateway.username is None or gateway.password is None:
        return send
    username, password = gateway.username, gateway.password

    def handler(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        def handle() -> None:
            # As prometheus_client's basic_auth_handler, but sent through ``send``.
            token = base64.b64encode(f"{username}:{password.reveal()}".encode())
            headers.append(("Authorization", b"Basic " + token))  # type: ignore[arg-type]
            send(url, method, timeout, headers, data)()

        return handle

    return handler


class Pusher:
    """Pushes a registry to one gateway under a job and instance; ``handler`` sends it."""

    def __init__(
        self,
        gateway: Pushgateway,
        job: str,
        instance: str,
        *,
        handler: Handler = default_handler,
        timeout: float = PUSH_TIMEOUT,
    ) -> None:
        self.gateway, self.job, self.instance, self.timeout = gateway, job, instance, timeout
        self._handler = authenticated(gateway, handler)

    def push(self, registry: CollectorRegistry) -> None:
        """Replace the job and instance's metrics on the gateway; a failure is logged."""
        try:
            push_to_gateway(
                self.gateway.url,
                job=self.job,
                registry=registry,
                grouping_key={"instance": self.instance},
                timeout=self.timeout,
                handler=self._handler,
            )
        # URLError, a refused connection, a timeout; a peer that speaks no HTTP (BadStatusLine).
        except (OSError, http.client.HTTPException) as exc:
            # The URL without credentials; urllib's errors name no URL ("HTTP Error 401").
            log.warning("metrics: cannot push to the Pushgateway at %s: %s", self.gateway.url, exc)
