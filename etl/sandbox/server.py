"""The sandbox over real HTTP: a stdlib threading server in front of ``Sandbox.handle``.

HTTP/1.1 with exact Content-Length so clients keep connections alive, Nagle off so small
answers are not held back, no access log. A "truncated" fault announces the full body length,
sends half of it and closes the connection: the client sees an incomplete read (httpx raises
``RemoteProtocolError``), which is what a connection dropped mid-answer looks like.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from etl.sandbox.app import Sandbox

_IDLE_TIMEOUT = 60.0  # drop idle keep-alive connections; well above httpx's 5 s pool expiry


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = _IDLE_TIMEOUT
    server: SandboxServer

    def _serve(self) -> None:
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, "bad Content-Length")
            return
        body = self.rfile.read(length) if length else b""
        response = self.server.sandbox.handle(self.command, split.path, query, body)
        if response.delay > 0:
            time.sleep(response.delay)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        announced = response.full_length if response.truncated else len(response.body)
        self.send_header("Content-Length", str(announced))
        self.end_headers()
        self.wfile.write(response.body)
        if response.truncated:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request access log."""


class SandboxServer(ThreadingHTTPServer):
    """A threaded HTTP server answering with a Sandbox; ``url`` is its base address."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.sandbox = sandbox
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        host, port = self.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else host
        return f"http://{host_text}:{port}"

    def start(self) -> SandboxServer:
        """Serve in a background daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-server-{self.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and join the serving thread."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def handle_error(self, request: object, client_address: object) -> None:
        """Ignore clients that hang up (timeouts, retries); report anything else."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextlib.contextmanager
def serve_in_thread(
    sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0
) -> Iterator[SandboxServer]:
    """Run the sandbox on a background thread for the ``with`` block (port 0: any free port)."""
    server = SandboxServer(sandbox, host, port).start()
    try:
        yield server
    finally:
        server.stop()


def serve_forever(
    sandbox: Sandbox,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until KeyboardInterrupt, then close the socket and return."""
    server = SandboxServer(sandbox, host, port)
    try:
        if on_ready is not None:
            on_ready(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
