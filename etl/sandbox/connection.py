"""One HTTP/1.1 client connection of the sandbox server: bytes in, requests out, answers queued.

Only what a client of this API sends is parsed: the request line, Content-Length, Connection
and Expect. A chunked body, a head past 64 KiB or a body past 16 MiB is refused (``Reject``).
Answers leave in arrival order; each has a due time, so a delayed answer is a timer, not a
sleep, and a "trickle" answer is many small pieces due one after another.
"""

from __future__ import annotations

import collections
import email.utils
import http
import socket
import time
from urllib.parse import unquote_plus, urlsplit

from etl.sandbox.response import TRICKLE_PIECES, SandboxResponse

MAX_HEAD = 65536  # request line and headers; a UserSig is a few hundred bytes
MAX_BODY = 16 << 20
TEXT = b"text/plain; charset=utf-8"
_RECV = 262144
_HEAD = b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
_PHRASES = {status.value: status.phrase.encode() for status in http.HTTPStatus}


class Reject(Exception):
    """A request this server will not answer: reply with ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def parse_query(text: str) -> dict[str, str]:
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


def split_target(target: str) -> tuple[str, dict[str, str]]:
    """(path, URL parameters) of a request target, origin form or absolute form."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        path = path.partition("#")[0]
    else:  # absolute form, http://host/path?query
        split = urlsplit(target)
        path, query = split.path, split.query
    return path, parse_query(query.partition("#")[0])


class Heads:
    """Response heads, with the Date header formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def head(self, status: int, content_type: bytes, length: int, close: bool) -> bytes:
        """The status line and headers of an answer of ``length`` bytes."""
        second = int(time.time())
        if second != self._second:
            self._text = email.utils.formatdate(second, usegmt=True).encode()
            self._second = second
        connection = b"Connection: close\r\n" if close else b""
        phrase = _PHRASES.get(status, b"Unknown")
        return _HEAD % (status, phrase, self._text, content_type, length, connection)


class Connection:
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

    def idle_for(self, now: float) -> float:
        """Seconds since the last byte in or out, while nothing waits to be sent; else 0."""
        return 0.0 if self.answers or self.out else now - self.last_active

    def receive(self) -> bool:
        """Read what the socket has; False if the client hung up or sent far too much."""
        data = self.sock.recv(_RECV)
        if not data:
            return False
        self.last_active = time.monotonic()
        self.inbuf += data
        # Pipelining far past any answer: not a client of ours.
        return len(self.inbuf) <= MAX_HEAD + MAX_BODY

    def next_request(self) -> tuple[str, str, bytes, bool] | None:
        """(method, target, body, close after) of the next complete request, or None."""
        buf = self.inbuf
        while buf[:2] == b"\r\n":
            del buf[:2]  # stray empty lines between requests are tolerated (RFC 9112 2.2)
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise Reject(431, "request head too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise Reject(400, "malformed request line")
        length, close, expect = 0, parts[2] == b"HTTP/1.0", False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise Reject(400, "malformed header line")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                if not value.isdigit() or len(value) > 12:
                    raise Reject(400, "bad Content-Length")
                length = int(value)
            elif name == b"connection":
                tokens = {token.strip() for token in value.lower().split(b",")}
                close = b"close" in tokens or (close and b"keep-alive" not in tokens)
            elif name == b"transfer-encoding":
                raise Reject(411, "send a Content-Length, not a chunked body")
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
        if length > MAX_BODY:
            raise Reject(413, "body too large")
        start = end + 4
        if len(buf) - start < length:
            if expect and not self.continued:
                self.continued = True
                self.out.append(memoryview(b"HTTP/1.1 100 Continue\r\n\r\n"))
            return None
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        self.continued = False
        method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
        return method, target, body, close

    def answer(
        self, heads: Heads, response: SandboxResponse, close: bool, *, head_only: bool
    ) -> None:
        """Queue a response: after its delay, in pieces if it trickles, cut if truncated."""
        close = close or response.truncated
        announced = response.full_length if response.truncated else len(response.body)
        head = heads.head(response.status, response.content_type.encode(), announced, close)
        payload = b"" if head_only else response.body
        due = time.monotonic() + response.delay if response.delay > 0 else 0.0
        if response.trickle > 0:
            self.trickle(head + payload, TRICKLE_PIECES, response.trickle, close)
        else:
            self.queue(due, head, payload, close)

    def queue(self, due: float, head: bytes, body: bytes, close: bool) -> None:
        """Queue an answer to leave at ``due`` (monotonic; 0: at once)."""
        parts = [head + body] if len(body) < 65536 else [head, body]
        self.answers.append((due, parts, close))

    def trickle(self, answer: bytes, pieces: int, seconds: float, close: bool) -> None:
        """Queue ``answer`` in ``pieces`` pieces, due one after another over ``seconds``."""
        step = max(1, -(-len(answer) // pieces))
        starts = range(0, len(answer), step)
        now, pause = time.monotonic(), seconds / pieces
        for i, start in enumerate(starts):
            last = start + step >= len(answer)
            self.answers.append((now + i * pause, [answer[start : start + step]], close and last))

    def release(self) -> float | None:
        """Move the answers that are due to the output; when the next one is due, if any."""
        now = time.monotonic()
        while self.answers and self.answers[0][0] <= now:
            _, parts, close = self.answers.popleft()
            self.out.extend(memoryview(part) for part in parts)
            if close:
                self.closing = True
                self.answers.clear()
        return self.answers[0][0] if self.answers else None

    def send(self) -> bool:
        """Send what the socket takes now; True when the output is drained."""
        out = self.out
        try:
            while out:
                sent = self.sock.send(out[0])
                if sent < len(out[0]):
                    out[0] = out[0][sent:]
                    break
                out.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        if out:
            return False
        self.last_active = time.monotonic()
        return True
