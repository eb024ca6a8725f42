"""The follow API client: FollowClient, the one caller of Tencent's HTTP endpoint.

It signs each request (etl.tencent.signing), paces calls to the configured budget
(etl.tencent.pacer), retries what the code table calls transient (etl.tencent.codes), and
turns every answer into either a parsed body (for follow_get, an ``etl.tencent.page.Page``) or
an exception from etl.errors. Nothing else escapes: a body that is not JSON, or not a page, is
a MalformedAnswer, and any httpx failure a TransientApiError, each retried like 30006.

Every wait (pacing, retry backoff) wakes on the client's ``stop`` event and raises
``etl.errors.Stopped``, so a stop request never waits out a retry budget.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
)

from etl.config import ApiSettings, RetryPolicy
from etl.errors import ApiError, MalformedAnswer, RateLimitedError, Stopped, TransientApiError
from etl.tencent.codes import USERSIG_EXPIRED, answer_body
from etl.tencent.pacer import Pacer
from etl.tencent.page import Page, decode_page, parse_page
from etl.tencent.signing import signing_client
from etl.tencent.usersig import UserSigSource

log = logging.getLogger(__name__)

T = TypeVar("T")

FOLLOW_GET = "v4/follow/follow_get"
FOLLOW_GET_INFO = "v4/follow/follow_get_info"
# A page of 1000 items with every profile field at Tencent's limits is a few MB; an answer past
# this is not a page (a proxy's error document, a runaway server) and is never held whole.
MAX_ANSWER_BYTES = 64 << 20


def _info_answer(body: dict[str, Any]) -> dict[str, Any]:
    """follow_get_info: an OK answer must carry its FollowInfo array."""
    if not isinstance(body.get("FollowInfo"), list):
        raise MalformedAnswer("FollowInfo is missing or not an array")
    return body


def _wait_seconds(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """Full-jitter exponential backoff; a rate-limit answer waits four times longer."""

    def wait(state: RetryCallState) -> float:
        ceiling = min(policy.max_wait, policy.initial_wait * 2.0 ** (state.attempt_number - 1))
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError):
            ceiling = min(policy.max_wait, ceiling * 4)
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    return wait


def usersig_source(settings: ApiSettings, clock: Callable[[], float]) -> UserSigSource:
    """The settings' UserSig: derived from the secret key (renewed as it ages), or the fixed
    one when no key is configured."""
    key, fixed = settings.secret_key, settings.usersig
    return UserSigSource(
        sdkappid=settings.sdkappid,
        identifier=settings.admin,
        secret_key=key.reveal() if key else None,
        fixed=fixed.reveal() if fixed and not key else None,
        clock=clock,
    )


def _retrying(
    policy: RetryPolicy,
    before_sleep: Callable[[RetryCallState], None],
    sleep: Callable[[float], None],
) -> Retrying:
    """Retries of what is transient, capped in attempts and in total time."""
    return Retrying(
        retry=retry_if_exception_type(TransientApiError),
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.max_seconds),
        wait=_wait_seconds(policy),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )


def _read(
    http: httpx.Client, url: str, payload: bytes, timeout: float, max_bytes: int
) -> tuple[int, bytes | None]:
    """POST; (status, body), the body None when it is larger than ``max_bytes``.

    The whole answer must arrive within ``timeout``, not only each read: a peer that trickles
    a byte now and then would otherwise hold a fetcher for ever. That, like httpx's own
    timeouts, raises httpx.ReadTimeout.
    """
    deadline = time.monotonic() + timeout
    with http.stream("POST", url, content=payload) as response:
        announced = response.headers.get("Content-Length", "")
        if announced.isdigit() and int(announced) > max_bytes:
            return response.status_code, None
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                return response.status_code, None
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the whole answer took too long")
            chunks.append(chunk)
        return response.status_code, b"".join(chunks)


@dataclass(frozen=True)
class Reading(Generic[T]):
    """How an answer becomes a call's value: ``parse`` takes the body of an OK answer;
    ``decode``, when given, first tries the answer's bytes (None: ``parse`` decides)."""

    parse: Callable[[dict[str, Any]], T]
    decode: Callable[[bytes], T | None] | None = None


class FollowClient:
    """Calls the follow API for one app, paced, signed and retried.

    ``calls``, ``retries`` and ``malformed`` (answers that were HTTP 200 but not usable) count
    what this client did, across its threads; ``counters()`` reads them together. Setting
    ``stop`` (or the event given to ``interrupt_on``) cuts every wait short: the call in
    progress raises Stopped, and so does every call after it.
    """

    @classmethod
    def from_settings(
        cls,
        settings: ApiSettings,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> FollowClient:
        """A client whose UserSig is derived from the secret key (renewed as it ages), or is
        the fixed UserSig when no key is configured; ``transport`` replaces httpx's own."""
        source = usersig_source(settings, clock)
        return cls(settings, source, transport=transport, max_answer_bytes=max_answer_bytes)

    def __init__(
        self,
        settings: ApiSettings,
        usersig: UserSigSource,
        *,
        transport: httpx.BaseTransport | None = None,
        stop: threading.Event | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._settings = settings
        self._max = max_answer_bytes  # an answer past this is malformed, and never held whole
        self._usersig = usersig
        self._own_stop = stop or threading.Event()
        self._stop = self._own_stop
        self._pacer = Pacer(settings.rate, stop=self._stop)
        self._base = 0  # index into settings.base_urls; moves to the backup on network errors
        self._query = str(
            httpx.QueryParams({"sdkappid": str(settings.sdkappid), "identifier": settings.admin})
        )
        self._lock = threading.Lock()
        self.calls = 0
        self.retries = 0
        self.malformed = 0
        # Answers by code: "0" (OK), a Tencent ErrorCode, "http_503", "timeout", "network",
        # "http_error", "malformed" (for metrics).
        self.answers: collections.Counter[str] = collections.Counter()
        self._http = signing_client(
            transport,
            usersig.current,
            timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 5.0)),
            limits=httpx.Limits(max_keepalive_connections=128, keepalive_expiry=30.0),
            headers={"Content-Type": "application/json", "User-Agent": "follow-etl"},
        )
        self._retrying = _retrying(settings.retry, self._before_sleep, self._sleep)

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

    def counters(self) -> dict[str, int]:
        """calls, retries and malformed, read together."""
        with self._lock:
            return {"calls": self.calls, "retries": self.retries, "malformed": self.malformed}

    def answered(self) -> dict[str, int]:
        """How many answers of each code (see ``answers``) this client has had."""
        with self._lock:
            return dict(self.answers)

    def _count(self, code: str) -> None:
        with self._lock:
            self.answers[code] += 1

    def interrupt_on(self, stop: threading.Event | None) -> None:
        """Make ``stop`` the event every wait wakes on (None: back to the constructor's)."""
        self._stop = stop or self._own_stop
        self._pacer.interrupt_on(self._stop)

    def follow_get(self, account: str, follow_type: int, cursor: str, want: int) -> Page:
        """One page of a follow list; an answer that is not a page is retried like 30006."""
        body = {
            "From_Account": account,
            "FollowType": follow_type,
            "StartCursor": cursor,
            "WantNum": want,
        }
        label = f"follow_get {account}/{follow_type}"
        return self._call(FOLLOW_GET, body, label, Reading(parse_page, decode_page))

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
        label = f"follow_get_info {accounts[0]}{more}"
        return self._call(FOLLOW_GET_INFO, body, label, Reading(_info_answer))

    def call(self, api: str, body: Mapping[str, Any], *, what: str = "") -> dict[str, Any]:
        """POST ``body`` to ``api`` with retries; return the body of an OK answer."""
        label = f"{api.rsplit('/', 1)[-1]} {what}".strip()
        return self._call(api, body, label, Reading(lambda answer: answer))

    def _call(self, api: str, body: Mapping[str, Any], label: str, reading: Reading[T]) -> T:
        # ASCII: a cursor the service sent back may hold a lone surrogate, which UTF-8 cannot.
        payload = json.dumps(body, separators=(",", ":")).encode()
        # A copy per call: fetcher threads share the client, not the retry state.
        result: T = self._retrying.copy()(self._attempt, api, payload, label, reading)
        return result

    def _attempt(self, api: str, payload: bytes, label: str, reading: Reading[T]) -> T:
        if self._stop.is_set():
            raise Stopped(f"{label}: stop requested")
        self._pacer.wait()
        base = self._settings.base_urls[self._base]
        # One URL string, parsed once by httpx (as params= it would be parsed twice).
        query = f"{self._query}&random={random.randint(0, 4294967295)}&contenttype=json"
        with self._lock:
            self.calls += 1
        try:
            status, content = _read(
                self._http, f"{base}/{api}?{query}", payload, self._settings.timeout, self._max
            )
        except httpx.TimeoutException as exc:
            self._count("timeout")
            self._fail_over()
            raise TransientApiError(f"{label}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            self._count("network")
            self._fail_over()
            raise TransientApiError(f"{label}: network error ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:  # DecodingError and the rest; str(exc) may hold the URL
            self._count("http_error")
            raise TransientApiError(f"{label}: HTTP error ({type(exc).__name__})") from None
        # The common answer straight from its bytes; anything else the exact path decides.
        if reading.decode is not None and status == 200 and content is not None:
            decoded = reading.decode(content)
            if decoded is not None:
                self._count("0")
                return decoded
        try:
            renewable = self._usersig.renewable
            body = answer_body(status, content, label, max_bytes=self._max, renewable=renewable)
            result = reading.parse(body)
        except MalformedAnswer as exc:  # raised without the label, by answer_body or parse
            with self._lock:
                self.malformed += 1
                self.answers["malformed"] += 1
            raise MalformedAnswer(f"{label}: {exc}") from None
        except ApiError as exc:
            if isinstance(exc, RateLimitedError):
                self._pacer.slow_down()  # the service said we call too often
            elif exc.code == USERSIG_EXPIRED and isinstance(exc, TransientApiError):
                self._usersig.renew()  # retried with the new one
            self._count(str(exc.code) if exc.code is not None else f"http_{status}")
            raise
        self._count("0")
        return result

    def _fail_over(self) -> None:
        with self._lock:
            self._base = (self._base + 1) % len(self._settings.base_urls)

    def _before_sleep(self, state: RetryCallState) -> None:
        with self._lock:
            self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s; retry %d in %.1fs", exc, state.attempt_number, wait)

    def _sleep(self, seconds: float) -> None:
        """The retry backoff: wakes on stop."""
        if self._stop.wait(seconds):
            raise Stopped("retry backoff cut short: stop requested")
