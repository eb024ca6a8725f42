"""The answer's code table: what each code means, and which are transient. Pure.

``answer_body`` reads one HTTP answer into the body of an OK answer or the exception of
etl.errors its status or ErrorCode stands for (see the reference); the client reacts to them
(a rate-limit answer slows its pacer, an expired UserSig it can renew is renewed) and retries
what is transient.
"""

from __future__ import annotations

from typing import Any

from etl.errors import (
    AccountNotFound,
    ApiError,
    FatalApiError,
    MalformedAnswer,
    RateLimitedError,
    RequestRejected,
    TransientApiError,
)
from etl.tencent.exact_json import parse_json

# Error codes by what a client should do about them (see the reference).
RETRY_CODES = frozenset({30006, 30007, 60008, 60014})
RATE_LIMIT_CODES = frozenset({60007, 60011, 60018, 60019})
USERSIG_EXPIRED = 70001
NOT_FOUND = 30003  # the account does not exist (also a follow_get_info ResultCode)
REJECTED = 30001
MESSAGES: dict[int, str] = {
    30001: "request parameter error",
    30002: "SDKAppID does not match",
    30003: "the account does not exist",
    30004: "the identifier needs App administrator permission (check IM_ADMIN)",
    30005: "the follow feature is not enabled for this app (needs Pro, Pro-plus or Enterprise)",
    30006: "server internal error",
    30007: "network timeout inside the service",
    60004: "identifier or UserSig rejected",
    60005: "SDKAppID invalid (check IM_SDKAPPID)",
    60006: "SDKAppID disabled",
    60007: "call frequency over the limit",
    60008: "service timeout",
    60010: "the identifier is not an App administrator (check IM_ADMIN)",
    60011: "call frequency over the limit",
    60014: "service timeout",
    60016: "request disabled for this app",
    60017: "request disabled for this app",
    60018: "call frequency over the limit",
    60019: "call frequency over the limit",
    60020: "the app's package has expired or is not active yet: tell the operator",
    60021: "calls from this IP address are not allowed",
    70001: "UserSig expired",
    70002: "UserSig is empty",
    70003: "UserSig invalid",
    70005: "UserSig invalid",
    70009: "UserSig does not match the secret key (check IM_SECRET_KEY)",
    70013: "UserSig was made for another identifier (check IM_ADMIN)",
    70014: "UserSig was made for another SDKAppID (check IM_SDKAPPID)",
    70052: "UserSig has been invalidated",
}


def answer_body(
    status: int, content: bytes | None, label: str, *, max_bytes: int, renewable: bool
) -> dict[str, Any]:
    """The body of an OK answer; the ApiError its status or code stands for otherwise.

    A MalformedAnswer is raised without the label; ``content`` None means the answer was
    larger than ``max_bytes``; ``renewable`` says whether an expired UserSig can be renewed.
    """
    if status == 429:
        raise RateLimitedError(f"{label}: HTTP 429 too many requests")
    if status >= 500:
        raise TransientApiError(f"{label}: HTTP {status}")
    if status != 200:
        raise FatalApiError(f"{label}: unexpected HTTP {status} (check IM_BASE_URL)")
    if content is None:
        raise MalformedAnswer(f"the answer is larger than {max_bytes:,} bytes")
    body = parse_json(content)
    if not isinstance(body, dict):
        raise MalformedAnswer("the answer is not a JSON object")
    code = body.get("ErrorCode", 0)
    if type(code) is int and code != 0:
        info = body.get("ErrorInfo")
        meaning = printable(info) if isinstance(info, str) else ""
        raise error_for(code, meaning, label, renewable=renewable)
    if code == 0 and type(code) is int and body.get("ActionStatus") == "OK":
        return body
    raise MalformedAnswer("the answer is neither OK nor an error code")


def error_for(code: int, info: str, label: str, *, renewable: bool) -> ApiError:
    """The exception for ErrorCode ``code`` (``info``: the service's own words, if any)."""
    meaning = MESSAGES.get(code, info or "unknown error")
    message = f"{label}: {meaning} ({code})"
    if code in RATE_LIMIT_CODES:
        return RateLimitedError(message, code=code)
    if code in RETRY_CODES:
        return TransientApiError(message, code=code)
    if code == USERSIG_EXPIRED and renewable:
        return TransientApiError(message + "; made a new one", code=code)
    if code == USERSIG_EXPIRED:
        return FatalApiError(message + "; set IM_SECRET_KEY so it is renewed", code=code)
    if code == NOT_FOUND:
        return AccountNotFound(message, code=code)
    if code == REJECTED:
        return RequestRejected(message, code=code)
    return FatalApiError(message, code=code)


def printable(text: str) -> str:
    """A service's own words, cut short and made safe for one log line."""
    return "".join(c if c.isprintable() else "?" for c in text[:200])
