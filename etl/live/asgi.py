"""The little of ASGI the listener speaks, without a web framework: reading a request body
under a size cap, and sending a whole response."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"


class Disconnected(Exception):
    """The client went away before its body was read."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it is over ``limit`` bytes (the rest unread);
    Disconnected if the client hangs up first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """One whole response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def answer(error_code: int = 0, info: str = "") -> bytes:
    """Tencent's answer shape: ``{"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}``, or
    FAIL with the HTTP status as ErrorCode and the reason in ErrorInfo."""
    status = "OK" if error_code == 0 else "FAIL"
    doc = {"ActionStatus": status, "ErrorCode": error_code, "ErrorInfo": info}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()


OK = answer()


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's first value, as text."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def client(scope: Scope) -> str:
    """The peer's address, ``host:port``."""
    peer = scope.get("client")
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"
