"""The follow API client: the only module that speaks HTTP.

It signs each request, paces calls to the configured budget, retries what the reference calls
transient, and turns every answer into either a parsed body or an exception from etl.errors.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from etl.config import ApiSettings, RetryPolicy
from etl.errors import (
    AccountNotFound,
    ApiError,
    FatalApiError,
    RateLimitedError,
    RequestRejected,
    TransientApiError,
)
from etl.usersig import UserSigSource

log = logging.getLogger(__name__)

FOLLOW_GET = "v4/follow/follow_get"

# Error codes by what a client should do about them (see the reference).
RETRY_CODES = frozenset({30006, 30007, 60008, 60014})
RATE_LIMIT_CODES = frozenset({60007, 60011, 60018, 60019})
USERSIG_EXPIRED = 70001
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


class Pacer:
    """Spaces calls evenly so that at most ``rate`` start in any second; thread-safe.

    A frequency-limit answer (600xx) halves the pace at once; it then creeps back to the
    target by 1% per call (about 70 calls to recover), the classic additive-ish recovery that
    keeps a client from hammering a service that just said "too fast".
    """

    SLOWEST = 1.0  # seconds between calls at most, however often we are told to slow down

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.target = 1.0 / rate
        self.interval = self.target
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        """Calls per second at the current pace."""
        return 1.0 / self.interval

    def set_rate(self, rate: float) -> None:
        """Change the target (the run's budget, shared by its live processes)."""
        with self._lock:
            slowed = self.interval / self.target
            self.target = 1.0 / rate
            self.interval = min(max(self.target, self.target * slowed), self.SLOWEST)

    def wait(self) -> None:
        """Block until this caller's slot comes up."""
        with self._lock:
            now = self._clock()
            slot = max(self._next, now)
            self._next = slot + self.interval
            if self.interval > self.target:
                self.interval = max(self.target, self.interval * 0.99)
        if slot > now:
            self._sleep(slot - now)

    def hold(self, seconds: float) -> None:
        """Start no call for ``seconds``."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)

    def slow_down(self) -> None:
        """The service said we call too often: halve the pace and pause a moment."""
        with self._lock:
            self.interval = min(self.interval * 2, self.SLOWEST)
            self._next = max(self._next, self._clock() + self.interval * 10)


def _parse(content: bytes) -> Any:
    """JSON -> Python; orjson is several times faster on 1000-item pages, and json takes what
    orjson refuses but the standard allows (integers beyond 64 bits)."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)


def _wait_seconds(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """Full-jitter exponential backoff; a rate-limit answer waits four times longer."""

    def wait(state: RetryCallState) -> float:
        ceiling = min(policy.max_wait, policy.initial_wait * 2.0 ** (state.attempt_number - 1))
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError):
            ceiling = min(policy.max_wait, ceiling * 4)
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    return wait


class FollowClient:
    """Calls the follow API for one app, paced, signed and retried."""

    def __init__(
        self,
        settings: ApiSettings,
        usersig: UserSigSource,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._usersig = usersig
        self._pacer = Pacer(settings.rate)
        self._base = 0  # index into settings.base_urls; moves to the backup on network errors
        self._lock = threading.Lock()
        self.calls = 0
        self.retries = 0
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 5.0)),
            limits=httpx.Limits(max_keepalive_connections=128, keepalive_expiry=30.0),
            headers={"Content-Type": "application/json", "User-Agent": "follow-etl"},
        )
        self._retrying = Retrying(
            retry=retry_if_exception_type(TransientApiError),
            stop=stop_after_attempt(settings.retry.attempts)
            | stop_after_delay(settings.retry.max_seconds),
            wait=_wait_seconds(settings.retry),
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def __enter__(self) -> FollowClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pacer(self) -> Pacer:
        """The client's pacing (etl.sync shares the run's budget through it)."""
        return self._pacer

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def follow_get(self, account: str, follow_type: int, cursor: str, want: int) -> dict[str, Any]:
        """One page of a follow list, as the parsed response body."""
        body = {
            "From_Account": account,
            "FollowType": follow_type,
            "StartCursor": cursor,
            "WantNum": want,
        }
        return self.call(FOLLOW_GET, body, what=f"{account}/{follow_type}")

    def follow_get_info(
        self, accounts: list[str], *, from_account: str | None = None
    ) -> dict[str, Any]:
        """Fans, follows and mutual counts of up to 20 accounts, as the parsed response body.

        From_Account ("the user who initiated the pull") defaults to the first account, as in
        the documented sample request.
        """
        if not 1 <= len(accounts) <= 20:
            raise ValueError(f"follow_get_info takes 1 to 20 accounts, not {len(accounts)}")
        body = {"From_Account": from_account or accounts[0], "To_Account": list(accounts)}
        more = f" and {len(accounts) - 1} more" if len(accounts) > 1 else ""
        return self.call("v4/follow/follow_get_info", body, what=f"{accounts[0]}{more}")

    def call(self, api: str, body: Mapping[str, Any], *, what: str = "") -> dict[str, Any]:
        """POST ``body`` to ``api`` with retries; return the body of an OK answer."""
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        label = f"{api.rsplit('/', 1)[-1]} {what}".strip()
        # A copy per call: fetcher threads share the client, not the retry state.
        result: dict[str, Any] = self._retrying.copy()(self._attempt, api, payload, label)
        return result

    def _attempt(self, api: str, payload: bytes, label: str) -> dict[str, Any]:
        self._pacer.wait()
        base = self._settings.base_urls[self._base]
        params = {
            "sdkappid": str(self._settings.sdkappid),
            "identifier": self._settings.admin,
            "usersig": self._usersig.current(),
            "random": str(random.randint(0, 4294967295)),
            "contenttype": "json",
        }
        with self._lock:
            self.calls += 1
        try:
            response = self._http.post(f"{base}/{api}", params=params, content=payload)
        except httpx.TimeoutException as exc:
            self._fail_over()
            raise TransientApiError(f"{label}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            self._fail_over()
            raise TransientApiError(f"{label}: network error ({type(exc).__name__})") from None
        return self._classify(response, label)

    def _classify(self, response: httpx.Response, label: str) -> dict[str, Any]:
        status = response.status_code
        if status == 429:
            self._pacer.slow_down()
            raise RateLimitedError(f"{label}: HTTP 429 too many requests")
        if status >= 500:
            raise TransientApiError(f"{label}: HTTP {status}")
        if status != 200:
            raise FatalApiError(f"{label}: unexpected HTTP {status} (check IM_BASE_URL)")
        try:
            body = _parse(response.content)
        except ValueError:
            raise TransientApiError(f"{label}: the answer is not valid JSON") from None
        if not isinstance(body, dict):
            raise TransientApiError(f"{label}: the answer is not a JSON object")
        code = body.get("ErrorCode", 0)
        if body.get("ActionStatus") == "OK" and code == 0:
            return body
        if not isinstance(code, int):
            raise TransientApiError(f"{label}: the answer has no ErrorCode")
        raise self._error_for(code, str(body.get("ErrorInfo", "")), label)

    def _error_for(self, code: int, info: str, label: str) -> ApiError:
        meaning = MESSAGES.get(code, info[:200] or "unknown error")
        message = f"{label}: {meaning} ({code})"
        if code in RATE_LIMIT_CODES:
            self._pacer.slow_down()
            return RateLimitedError(message, code=code)
        if code in RETRY_CODES:
            return TransientApiError(message, code=code)
        if code == USERSIG_EXPIRED and self._usersig.renewable:
            self._usersig.renew()
            return TransientApiError(message + "; made a new one", code=code)
        if code == USERSIG_EXPIRED:
            return FatalApiError(message + "; set IM_SECRET_KEY so it is renewed", code=code)
        if code == 30003:
            return AccountNotFound(message, code=code)
        if code == 30001:
            return RequestRejected(message, code=code)
        return FatalApiError(message, code=code)

    def _fail_over(self) -> None:
        with self._lock:
            self._base = (self._base + 1) % len(self._settings.base_urls)

    def _before_sleep(self, state: RetryCallState) -> None:
        with self._lock:
            self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s; retry %d in %.1fs", exc, state.attempt_number, wait)
