"""What the sandbox answers: ``SandboxResponse``, and the Tencent error a failed check becomes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from etl.sandbox.faults import JSON
from etl.sandbox.render import to_json

TRICKLE_PIECES = 40


@dataclass(frozen=True)
class SandboxResponse:
    """One answer; the transport waits ``delay`` seconds before sending it.

    ``truncated`` marks a body cut in half on purpose: the transport must announce the full
    length and break off, the way a dropped connection looks to a client. ``trickle`` spreads
    the sending of the answer over that many seconds, in TRICKLE_PIECES pieces.
    """

    status: int
    body: bytes
    content_type: str = JSON
    delay: float = 0.0
    truncated: bool = False
    full_length: int = 0
    trickle: float = 0.0


class BadRequest(Exception):
    """A check failed: answer HTTP 200 with this Tencent error code."""

    def __init__(self, code: int, info: str) -> None:
        super().__init__(info)
        self.code = code
        self.info = info


def error_body(code: int, info: str) -> bytes:
    """The body of a Tencent error answer (ActionStatus FAIL)."""
    fields = {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info, "ErrorDisplay": ""}
    return to_json(fields)


def trickled(response: SandboxResponse) -> Iterator[bytes]:
    """The body in TRICKLE_PIECES pieces, ``response.trickle`` seconds in all."""
    body, pause = response.body, response.trickle / TRICKLE_PIECES
    step = max(1, -(-len(body) // TRICKLE_PIECES))
    for start in range(0, len(body), step):
        time.sleep(pause)
        yield body[start : start + step]
