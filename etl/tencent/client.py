"""The follow API client: the only module that speaks HTTP.

It signs each request, paces calls to the configured budget, retries what the reference calls
transient, and turns every answer into either a parsed body (for follow_get, a
``transform.Page``) or an exception from etl.errors. Nothing else escapes: a body that is not
JSON, or not a page, is a MalformedAnswer, and any httpx failure a TransientApiError, each
retried like 30006.

Every wait (pacing, retry backoff) wakes on the client's ``stop`` event and raises
``etl.errors.Stopped``, so a stop request never waits out a retry budget.

The UserSig never reaches httpx: requests are built without it, and ``SigningTransport`` adds
it below httpx's logging, exceptions and ``Response.request``. A host that logs httpx at INFO
or DEBUG sees no secret, whatever its logging configuration.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

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
    MalformedAnswer,
    RateLimitedError,
    RequestRejected,
    Stopped,
    TransientApiError,
)
from etl.tencent.page import Page, parse_page
from etl.tencent.usersig import UserSigSource

log = logging.getLogger(__name__)

T = TypeVar("T")

FOLLOW_GET = "v4/follow/follow_get"
FOLLOW_GET_INFO = "v4/follow/follow_get_info"

# Error codes by what a client should do about them (see the reference).
RETRY_CODES = frozenset({30006, 30007, 60008, 60014})
RATE_LIMIT_CODES = frozenset({60007, 60011, 60018, 60019})
USERSIG_EXPIRED = 70001
# A page of 1000 items with every profile field at Tencent's limits is a few MB; an answer past
# this is not a page (a proxy's error document, a runaway server) and is never held whole.
MAX_ANSWER_BYTES = 64 << 20
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

    Slowing down is bounded: calls are never spaced wider than SLOWEST, unless the target
    itself is wider (a rate below 1/s is kept exactly, 600xx or not). The pause after a
    600xx is ten intervals, at most PAUSE (but never shorter than one target interval).

    Its waits wake on ``stop`` and raise Stopped; ``sleep`` replaces them in tests.
    """

    SLOWEST = 1.0  # seconds between calls at most when slowed, unless the target is slower
    PAUSE = 10.0  # seconds without calls after a 600xx at most (unless the target is slower)

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if not 0 < rate < math.inf:
            raise ValueError(f"rate must be a positive finite number, got {rate}")
        self.target = 1.0 / rate
        self.interval = self.target
        self._clock = clock
        self._stop = stop or threading.Event()
        self._sleep = sleep or self._wait_on_stop
        self._next = 0.0
        self._lock = threading.Lock()

    def interrupt_on(self, stop: threading.Event) -> None:
        """Wake the waits on ``stop`` from now on."""
        self._stop = stop

    @property
    def rate(self) -> float:
        """Calls per second at the current pace."""
        return 1.0 / self.interval

    @property
    def slowest(self) -> float:
        """The widest spacing a slow-down may reach: SLOWEST, or the target if it is wider."""
        return max(self.SLOWEST, self.target)

    def set_rate(self, rate: float) -> None:
        """Change the target (the run's budget, shared by its live processes)."""
        if not 0 < rate < math.inf:
            raise ValueError(f"rate must be a positive finite number, got {rate}")
        with self._lock:
            slowed = self.interval / self.target
            self.target = 1.0 / rate
            self.interval = min(max(self.target, self.target * slowed), self.slowest)

    def wait(self) -> None:
        """Block until this caller's slot comes up; Stopped if a stop is requested first."""
        if self._stop.is_set():
            raise Stopped("pacing: stop requested")
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
            self.interval = min(self.interval * 2, self.slowest)
            pause = max(min(self.interval * 10, self.PAUSE), self.target)
            self._next = max(self._next, self._clock() + pause)

    def _wait_on_stop(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopped("pacing wait cut short: stop requested")


class SigningTransport(httpx.BaseTransport):
    """Adds ``usersig=`` to each request's query string on its way to ``inner``.

    httpx logs every request's URL at INFO (``HTTP Request: POST https://...``) and puts the
    request in its exceptions and responses; all of them see the request as the client built
    it, without the UserSig, since this transport signs a copy only as it hands it down.
    httpcore, below, logs no URL: only host and port, at DEBUG.
    """

    def __init__(self, inner: httpx.BaseTransport, usersig: Callable[[], str]) -> None:
        self.inner = inner
        self._usersig = usersig
        self._encoded = ("", b"")  # the last UserSig and its query pair: it changes once a day

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send a signed copy of ``request`` through the inner transport."""
        url = request.url
        signed = httpx.Request(
            request.method,
            url.copy_with(query=url.query + b"&" + self._pair() if url.query else self._pair()),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        if isinstance(request.stream, httpx.ByteStream):
            signed.read()  # the body in hand, as the client's own request has it (.content)
        return self.inner.handle_request(signed)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()

    def _pair(self) -> bytes:
        sig = self._usersig()
        last, pair = self._encoded  # one tuple, read and replaced whole: safe across threads
        if sig != last:
            pair = str(httpx.QueryParams({"usersig": sig})).encode()
            self._encoded = (sig, pair)
        return pair


def _signing_client(
    transport: httpx.BaseTransport | None, usersig: Callable[[], str], **options: Any
) -> httpx.Client:
    """An httpx.Client whose every transport is wrapped in a SigningTransport."""
    if transport is not None:
        return httpx.Client(transport=SigningTransport(transport, usersig), **options)
    # No transport given: httpx builds its own pool, honouring ``limits``, and a proxy's for
    # each HTTP(S)_PROXY / ALL_PROXY the environment names (NO_PROXY hosts mapped to None);
    # handing it a transport would turn both off, so its choices are wrapped where they lie.
    client = httpx.Client(**options)
    client._transport = SigningTransport(client._transport, usersig)
    client._mounts = {
        pattern: None if mounted is None else SigningTransport(mounted, usersig)
        for pattern, mounted in client._mounts.items()
    }
    return client


# orjson turns an integer literal outside [-2**63, 2**64) into a float, silently losing digits:
# a body with a run of 19 or more digits anywhere (a cheap C-level scan, about 5% of orjson's
# own time) goes to json instead, which keeps every integer exact.
_DIGITS_ONLY = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_NUMBER = b"0" * 19


def _int_or_digits(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:  # longer than sys.get_int_max_str_digits(): kept as its digits
        return text


def _float_or_text(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text  # 1e400: kept as written, not inf


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(
    parse_int=_int_or_digits, parse_float=_float_or_text, parse_constant=_not_json
)


def parse_json(content: bytes) -> Any:
    """JSON bytes -> Python, exactly; MalformedAnswer for anything that is not JSON.

    orjson first (several times faster on 1000-item pages); json for what orjson refuses or
    would round but the standard allows: integers beyond 64 bits, lone surrogate escapes
    (``\\ud83d``). An integer too long for ``int()`` is kept as its digit string, a float
    literal beyond the double range as its text. Bytes that are not UTF-8 become U+FFFD.
    NaN and Infinity, which are not JSON, are refused.
    """
    if content.translate(_DIGITS_ONLY).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    try:
        text = content.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = content.decode("utf-8", "replace")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"{exc.msg} at char {exc.pos}"
        raise MalformedAnswer(f"the answer is not JSON ({what})") from None
    except RecursionError:
        raise MalformedAnswer("the answer is not JSON we can read (nested too deeply)") from None
    except Exception as exc:  # noqa: BLE001 - whatever the decoder meets, it is a bad answer
        raise MalformedAnswer(f"the answer is not JSON ({type(exc).__name__})") from None


def _info_answer(body: dict[str, Any]) -> dict[str, Any]:
    """follow_get_info: an OK answer must carry its FollowInfo array."""
    if not isinstance(body.get("FollowInfo"), list):
        raise MalformedAnswer("FollowInfo is missing or not an array")
    return body


def _printable(text: str) -> str:
    """A service's own words, cut short and made safe for one log line."""
    return "".join(c if c.isprintable() else "?" for c in text[:200])


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
    ) -> FollowClient:
        """A client whose UserSig is derived from the secret key (renewed as it ages), or is
        the fixed UserSig when no key is configured; ``transport`` replaces httpx's own."""
        key, fixed = settings.secret_key, settings.usersig
        source = UserSigSource(
            sdkappid=settings.sdkappid,
            identifier=settings.admin,
            secret_key=key.reveal() if key else None,
            fixed=fixed.reveal() if fixed and not key else None,
            clock=clock,
        )
        return cls(settings, source, transport=transport)

    def __init__(
        self,
        settings: ApiSettings,
        usersig: UserSigSource,
        *,
        transport: httpx.BaseTransport | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._settings = settings
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
        self._http = _signing_client(
            transport,
            usersig.current,
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
            sleep=self._sleep,
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
        return self._call(FOLLOW_GET, body, label, parse_page)

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
        return self._call(FOLLOW_GET_INFO, body, label, _info_answer)

    def call(self, api: str, body: Mapping[str, Any], *, what: str = "") -> dict[str, Any]:
        """POST ``body`` to ``api`` with retries; return the body of an OK answer."""
        label = f"{api.rsplit('/', 1)[-1]} {what}".strip()
        return self._call(api, body, label, lambda answer: answer)

    def _call(
        self,
        api: str,
        body: Mapping[str, Any],
        label: str,
        parse: Callable[[dict[str, Any]], T],
    ) -> T:
        # ASCII: a cursor the service sent back may hold a lone surrogate, which UTF-8 cannot.
        payload = json.dumps(body, separators=(",", ":")).encode()
        # A copy per call: fetcher threads share the client, not the retry state.
        result: T = self._retrying.copy()(self._attempt, api, payload, label, parse)
        return result

    def _attempt(
        self, api: str, payload: bytes, label: str, parse: Callable[[dict[str, Any]], T]
    ) -> T:
        if self._stop.is_set():
            raise Stopped(f"{label}: stop requested")
        self._pacer.wait()
        base = self._settings.base_urls[self._base]
        # One URL string, parsed once by httpx (as params= it would be parsed twice).
        query = f"{self._query}&random={random.randint(0, 4294967295)}&contenttype=json"
        with self._lock:
            self.calls += 1
        try:
            status, content = self._send(f"{base}/{api}?{query}", payload)
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
        try:
            result = parse(self._classify(status, content, label))
        except MalformedAnswer as exc:  # raised without the label, by _classify or parse
            with self._lock:
                self.malformed += 1
                self.answers["malformed"] += 1
            raise MalformedAnswer(f"{label}: {exc}") from None
        except ApiError as exc:
            self._count(str(exc.code) if exc.code is not None else f"http_{status}")
            raise
        self._count("0")
        return result

    def _send(self, url: str, payload: bytes) -> tuple[int, bytes | None]:
        """POST; (status, body), the body None when it is larger than MAX_ANSWER_BYTES.

        The whole answer must arrive within the timeout, not only each read: a peer that
        trickles a byte now and then would otherwise hold a fetcher for ever. That, like
        httpx's own timeouts, raises httpx.ReadTimeout.
        """
        deadline = time.monotonic() + self._settings.timeout
        with self._http.stream("POST", url, content=payload) as response:
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > MAX_ANSWER_BYTES:
                return response.status_code, None
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    return response.status_code, None
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the whole answer took too long")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    def _classify(self, status: int, content: bytes | None, label: str) -> dict[str, Any]:
        """The body of an OK answer; MalformedAnswer (without the label) if there is none."""
        if status == 429:
            self._pacer.slow_down()
            raise RateLimitedError(f"{label}: HTTP 429 too many requests")
        if status >= 500:
            raise TransientApiError(f"{label}: HTTP {status}")
        if status != 200:
            raise FatalApiError(f"{label}: unexpected HTTP {status} (check IM_BASE_URL)")
        if content is None:
            raise MalformedAnswer(f"the answer is larger than {MAX_ANSWER_BYTES:,} bytes")
        body = parse_json(content)
        if not isinstance(body, dict):
            raise MalformedAnswer("the answer is not a JSON object")
        code = body.get("ErrorCode", 0)
        if type(code) is int and code != 0:
            info = body.get("ErrorInfo")
            raise self._error_for(code, _printable(info) if isinstance(info, str) else "", label)
        if code == 0 and type(code) is int and body.get("ActionStatus") == "OK":
            return body
        raise MalformedAnswer("the answer is neither OK nor an error code")

    def _error_for(self, code: int, info: str, label: str) -> ApiError:
        meaning = MESSAGES.get(code, info or "unknown error")
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

    def _sleep(self, seconds: float) -> None:
        """The retry backoff: wakes on stop."""
        if self._stop.wait(seconds):
            raise Stopped("retry backoff cut short: stop requested")
