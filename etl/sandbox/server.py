"""The sandbox over real HTTP: one thread, a selector loop, keep-alive HTTP/1.1.

Why not ``http.server``: its header parsing and response building cost about 0.4 ms of CPU per
call, and a thread per connection adds a GIL hand-off per request; together several times what
answering a small follow_get costs, which made the sandbox, not the client, the bottleneck of
a benchmark. This loop parses only what a client of this API sends (etl.sandbox.connection),
answers in arrival order per connection, and never blocks: latency and "slow" faults are
timers, so a delayed answer holds up nobody else.

A "truncated" fault announces the full body length, sends half of it and closes the connection:
the client sees an incomplete read (httpx raises ``RemoteProtocolError``), which is what a
connection dropped mid-answer looks like. Idle connections are closed after 60 s.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from etl.sandbox.app import Sandbox
from etl.sandbox.connection import TEXT, Connection, Heads, Reject, split_target
from etl.sandbox.response import SandboxResponse

_IDLE_TIMEOUT = 60.0  # drop idle keep-alive connections; well above httpx's 5 s pool expiry


class SandboxServer:
    """A single-threaded HTTP server answering with a Sandbox; ``url`` is its base address."""

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sandbox = sandbox
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.setblocking(False)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._connections: dict[socket.socket, Connection] = {}
        self._timers: list[tuple[float, int, Connection]] = []
        self._order = itertools.count()
        self._heads = Heads()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        host, port = self.server_address
        return f"http://{host}:{port}"

    def start(self) -> SandboxServer:
        """Serve in a background daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"sandbox-server-{self.server_address[1]}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, join the serving thread, close every socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def shutdown(self) -> None:
        """Ask ``serve_forever`` to return, and wait until it has."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket and every connection; stop the sandbox's webhook."""
        self.sandbox.close()
        for conn in list(self._connections.values()):
            self._close(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
        self._selector.close()

    def serve_forever(self) -> None:
        """Run the loop until ``shutdown`` (or KeyboardInterrupt, which propagates)."""
        next_sweep = time.monotonic() + 1.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = min(next_sweep, self._timers[0][0] if self._timers else next_sweep)
                for key, events in self._selector.select(max(0.0, timeout - now)):
                    self._on_event(key.fileobj, events)  # type: ignore[arg-type]
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    self._on_timer(heapq.heappop(self._timers)[2])
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 1.0
        finally:
            self._stopped.set()

    # ---- events --------------------------------------------------------------------------

    def _on_event(self, sock: socket.socket, events: int) -> None:
        if sock is self._listener:
            self._accept()
            return
        if sock is self._wake_r:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(64)
            return
        conn = self._connections.get(sock)
        if conn is None:
            return
        try:
            if events & selectors.EVENT_WRITE:
                self._flush(conn)
            reading = events & selectors.EVENT_READ and sock in self._connections
            if reading and not conn.receive():
                self._close(conn)  # the client hung up, or is not a client of ours
                return
            if sock in self._connections:
                self._serve_buffered(conn)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(conn)

    def _on_timer(self, conn: Connection) -> None:
        if conn.sock not in self._connections:
            return
        try:
            self._release(conn)
            self._flush(conn)
            if conn.sock in self._connections:
                self._serve_buffered(conn)
        except OSError:
            self._close(conn)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # nothing more to accept now (or out of descriptors: next event)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connections[sock] = Connection(sock)
            self._selector.register(sock, selectors.EVENT_READ)

    def _serve_buffered(self, conn: Connection) -> None:
        """Answer the complete requests waiting in the buffer, one at a time, in order.

        The next request is read only once the previous answer has left: a client of this API
        waits for an answer before asking again, and a delayed answer keeps its place.
        """
        while conn.inbuf and not (conn.closing or conn.answers or conn.out):
            try:
                request = conn.next_request()
            except Reject as exc:
                body = f"{exc.status} {exc}\n".encode()
                conn.queue(0.0, self._heads.head(exc.status, TEXT, len(body), True), body, True)
            else:
                if request is None:
                    break
                self._answer(conn, *request)
            self._release(conn)
            self._flush(conn)
            if conn.sock not in self._connections:
                return
        if conn.out:
            self._flush(conn)  # a "100 Continue"

    def _answer(self, conn: Connection, method: str, target: str, body: bytes, close: bool) -> None:
        path, query = split_target(target)
        try:
            response = self.sandbox.handle(method, path, query, body)
        except Exception:  # noqa: BLE001 (a sandbox bug: show it on stderr, answer 500, go on)
            traceback.print_exc(file=sys.stderr)
            response = SandboxResponse(500, b"sandbox error\n", TEXT.decode())
            close = True
        conn.answer(self._heads, response, close, head_only=method == "HEAD")

    # ---- answers -------------------------------------------------------------------------

    def _release(self, conn: Connection) -> None:
        """Move the answers that are due to the output; arm a timer for the next one."""
        due = conn.release()
        if due is not None:
            heapq.heappush(self._timers, (due, next(self._order), conn))

    def _flush(self, conn: Connection) -> None:
        """Send what the socket takes now; close when a closing connection is drained."""
        drained = conn.send()
        if drained and conn.closing:
            self._close(conn)
            return
        events = 0 if drained else selectors.EVENT_WRITE
        if not conn.closing:
            events |= selectors.EVENT_READ
        if self._selector.get_key(conn.sock).events != events:
            self._selector.modify(conn.sock, events)

    def _close(self, conn: Connection) -> None:
        if self._connections.pop(conn.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _sweep(self, now: float) -> None:
        """Close connections idle past the timeout."""
        for conn in list(self._connections.values()):
            if conn.idle_for(now) > _IDLE_TIMEOUT:
                self._close(conn)


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
    """Serve in the foreground until KeyboardInterrupt, then close the sockets and return."""
    server = SandboxServer(sandbox, host, port)
    try:
        if on_ready is not None:
            on_ready(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
