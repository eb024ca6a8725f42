"""The sandbox over real HTTP: one thread, a selector loop, keep-alive HTTP/1.1.

Why not ``http.server``: its header parsing and response building cost about 0.4 ms of CPU per
call, and a thread per connection adds a GIL hand-off per request; together several times what
answering a small follow_get costs, which made the sandbox, not the client, the bottleneck of
a benchmark. This loop parses only what a client of this API sends (request line,
Content-Length, Connection, Expect), answers in arrival order per connection, and never blocks:
latency and "slow" faults are timers, so a delayed answer holds up nobody else.

A "truncated" fault announces the full body length, sends half of it and closes the connection:
the client sees an incomplete read (httpx raises ``RemoteProtocolError``), which is what a
connection dropped mid-answer looks like. Idle connections are closed after 60 s.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import heapq
import http
import itertools
import selectors
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from urllib.parse import unquote_plus, urlsplit

from etl.sandbox.app import Sandbox
from etl.sandbox.response import TRICKLE_PIECES, SandboxResponse

_IDLE_TIMEOUT = 60.0  # drop idle keep-alive connections; well above httpx's 5 s pool expiry
_MAX_HEAD = 65536  # request line and headers; a UserSig is a few hundred bytes
_MAX_BODY = 16 << 20
_RECV = 262144
_HEAD = b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
_PHRASES = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_TEXT = b"text/plain; charset=utf-8"


class _Reject(Exception):
    """A request this server will not answer: reply with ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _query(text: str) -> dict[str, str]:
    """URL parameters, last one wins; what ``dict(parse_qsl(text, keep_blank_values=True))``
    gives, without its cost when nothing is escaped (the usual case, a few fields per call)."""
    query = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        query[name] = value
    return query


class _Date:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._text = email.utils.formatdate(second, usegmt=True).encode()
            self._second = second
        return self._text


class _Connection:
    """One client connection: bytes in, answers queued in arrival order, bytes out."""

    __slots__ = ("answers", "closing", "continued", "inbuf", "last_active", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.answers: collections.deque[tuple[float, list[bytes], bool]] = collections.deque()
        self.out: collections.deque[memoryview] = collections.deque()
        self.closing = False  # close once everything queued has been sent
        self.continued = False  # "100 Continue" already sent for the request being read
        self.last_active = time.monotonic()


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
        self._connections: dict[socket.socket, _Connection] = {}
        self._timers: list[tuple[float, int, _Connection]] = []
        self._order = itertools.count()
        self._date = _Date()
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
        """Close the listening socket and every connection."""
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
            if events & selectors.EVENT_READ and sock in self._connections:
                data = sock.recv(_RECV)
                if not data:
                    self._close(conn)  # the client hung up
                    return
                conn.last_active = time.monotonic()
                conn.inbuf += data
                if len(conn.inbuf) > _MAX_HEAD + _MAX_BODY:
                    self._close(conn)  # pipelining far past any answer: not a client of ours
                    return
            if sock in self._connections:
                self._serve_buffered(conn)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(conn)

    def _on_timer(self, conn: _Connection) -> None:
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
            self._connections[sock] = _Connection(sock)
            self._selector.register(sock, selectors.EVENT_READ)

    def _serve_buffered(self, conn: _Connection) -> None:
        """Answer the complete requests waiting in the buffer, one at a time, in order.

        The next request is read only once the previous answer has left: a client of this API
        waits for an answer before asking again, and a delayed answer keeps its place.
        """
        while conn.inbuf and not (conn.closing or conn.answers or conn.out):
            try:
                request = self._next_request(conn)
            except _Reject as exc:
                body = f"{exc.status} {exc}\n".encode()
                self._queue(conn, 0.0, self._head(exc.status, _TEXT, len(body), True), body, True)
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

    def _answer(
        self, conn: _Connection, method: str, target: str, body: bytes, close: bool
    ) -> None:
        if target.startswith("/"):
            path, _, query = target.partition("?")
            path = path.partition("#")[0]
        else:  # absolute form, http://host/path?query
            split = urlsplit(target)
            path, query = split.path, split.query
        try:
            response = self.sandbox.handle(method, path, _query(query.partition("#")[0]), body)
        except Exception:  # noqa: BLE001 (a sandbox bug: show it on stderr, answer 500, go on)
            traceback.print_exc(file=sys.stderr)
            response = SandboxResponse(500, b"sandbox error\n", _TEXT.decode())
            close = True
        close = close or response.truncated
        announced = response.full_length if response.truncated else len(response.body)
        head = self._head(response.status, response.content_type.encode(), announced, close)
        payload = b"" if method == "HEAD" else response.body
        due = time.monotonic() + response.delay if response.delay > 0 else 0.0
        if response.trickle > 0:
            self._trickle(conn, head + payload, response.trickle, close)
        else:
            self._queue(conn, due, head, payload, close)

    def _next_request(self, conn: _Connection) -> tuple[str, str, bytes, bool] | None:
        """(method, target, body, close after) of the next complete request, or None."""
        buf = conn.inbuf
        while buf[:2] == b"\r\n":
            del buf[:2]  # stray empty lines between requests are tolerated (RFC 9112 2.2)
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                raise _Reject(431, "request head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _Reject(400, "malformed request line")
        length, close, expect = 0, parts[2] == b"HTTP/1.0", False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise _Reject(400, "malformed header line")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                if not value.isdigit() or len(value) > 12:
                    raise _Reject(400, "bad Content-Length")
                length = int(value)
            elif name == b"connection":
                tokens = {token.strip() for token in value.lower().split(b",")}
                close = b"close" in tokens or (close and b"keep-alive" not in tokens)
            elif name == b"transfer-encoding":
                raise _Reject(411, "send a Content-Length, not a chunked body")
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
        if length > _MAX_BODY:
            raise _Reject(413, "body too large")
        start = end + 4
        if len(buf) - start < length:
            if expect and not conn.continued:
                conn.continued = True
                conn.out.append(memoryview(b"HTTP/1.1 100 Continue\r\n\r\n"))
            return None
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        conn.continued = False
        method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
        return method, target, body, close

    # ---- answers -------------------------------------------------------------------------

    def _head(self, status: int, content_type: bytes, length: int, close: bool) -> bytes:
        connection = b"Connection: close\r\n" if close else b""
        phrase = _PHRASES.get(status, b"Unknown")
        return _HEAD % (status, phrase, self._date.now(), content_type, length, connection)

    def _queue(self, conn: _Connection, due: float, head: bytes, body: bytes, close: bool) -> None:
        parts = [head + body] if len(body) < 65536 else [head, body]
        conn.answers.append((due, parts, close))

    def _trickle(self, conn: _Connection, answer: bytes, seconds: float, close: bool) -> None:
        """Queue ``answer`` in TRICKLE_PIECES pieces, due one after another over ``seconds``."""
        step = max(1, -(-len(answer) // TRICKLE_PIECES))
        starts = range(0, len(answer), step)
        now, pause = time.monotonic(), seconds / TRICKLE_PIECES
        for i, start in enumerate(starts):
            last = start + step >= len(answer)
            conn.answers.append((now + i * pause, [answer[start : start + step]], close and last))

    def _release(self, conn: _Connection) -> None:
        """Move the answers that are due to the output; arm a timer for the next one."""
        now = time.monotonic()
        while conn.answers and conn.answers[0][0] <= now:
            _, parts, close = conn.answers.popleft()
            conn.out.extend(memoryview(part) for part in parts)
            if close:
                conn.closing = True
                conn.answers.clear()
        if conn.answers:
            heapq.heappush(self._timers, (conn.answers[0][0], next(self._order), conn))

    def _flush(self, conn: _Connection) -> None:
        """Send what the socket takes now; close when a closing connection is drained."""
        out = conn.out
        try:
            while out:
                sent = conn.sock.send(out[0])
                if sent < len(out[0]):
                    out[0] = out[0][sent:]
                    break
                out.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        if not out:
            conn.last_active = time.monotonic()
            if conn.closing:
                self._close(conn)
                return
        events = selectors.EVENT_WRITE if out else 0
        if not conn.closing:
            events |= selectors.EVENT_READ
        if self._selector.get_key(conn.sock).events != events:
            self._selector.modify(conn.sock, events)

    def _close(self, conn: _Connection) -> None:
        if self._connections.pop(conn.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _sweep(self, now: float) -> None:
        """Close connections idle past the timeout."""
        for conn in list(self._connections.values()):
            idle = not conn.answers and not conn.out
            if idle and now - conn.last_active > _IDLE_TIMEOUT:
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
