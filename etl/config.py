"""Settings: the only module that reads the environment, once, into a frozen object."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from etl import holds
from etl.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///follow_etl.db"
DEFAULT_ADMIN = "administrator"
DEFAULT_RATE = 150.0  # calls/s: under the documented 200/s per app, leaving room for the app
DEFAULT_TIMEOUT = 10.0  # seconds: the service gives up at 3 s, so wait longer than that

# Regional domains and their backups, from the reference.
REGIONS: dict[str, tuple[str, str]] = {
    "china": ("console.tim.qq.com", "adminapi.my-imcloud.com"),
    "singapore": ("adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com"),
    "seoul": ("adminapikr.im.qcloud.com", "adminapikr.my-imcloud.com"),
    "tokyo": ("adminapijpn.im.qcloud.com", "adminapijpn.my-imcloud.com"),
    "frankfurt": ("adminapiger.im.qcloud.com", "adminapiger.my-imcloud.com"),
    "mumbai": ("adminapiind.im.qcloud.com", "adminapiind.my-imcloud.com"),
    "silicon-valley": ("adminapiusa.im.qcloud.com", "adminapiusa.my-imcloud.com"),
    "jakarta": ("adminapiidn.im.qcloud.com", "adminapiidn.my-imcloud.com"),
}


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call only where it is sent or used to sign."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client retries a transient error."""

    attempts: int = 8
    max_seconds: float = 300.0
    initial_wait: float = 0.5
    max_wait: float = 30.0


@dataclass(frozen=True)
class ApiSettings:
    """Everything needed to call the follow API."""

    sdkappid: int
    admin: str
    base_urls: tuple[str, ...]
    secret_key: Secret | None
    usersig: Secret | None
    rate: float
    timeout: float
    retry: RetryPolicy


@dataclass(frozen=True)
class Settings:
    """The whole configuration, read once at the edge."""

    database_url: URL
    admin: str
    sdkappid: int | None
    secret_key: Secret | None
    usersig: Secret | None
    region: str | None
    base_url: str | None
    rate: float
    timeout: float
    retry: RetryPolicy
    db_retry_seconds: float = 180.0  # a lost database is waited for this long, reconnecting
    accounts_database_url: URL | None = None  # where --accounts-query runs (None: database_url)
    schema: str | None = None  # FOLLOW_ETL_SCHEMA: the PostgreSQL schema of this app's tables
    # FOLLOW_ETL_HOLD_MIN_EDGES, FOLLOW_ETL_HOLD_SHARE: when a crawl's removals are held until
    # confirmed (etl.holds); `sync --hold-min-edges/--hold-share` override them.
    holds: holds.Thresholds = field(default_factory=holds.Thresholds)
    # IM_CALLBACK_TOKEN: the callback token of the Chat console; `listen` checks each
    # callback's Sign with it (required unless the listener is bound to loopback).
    callback_token: Secret | None = None

    def api(self) -> ApiSettings:
        """The API settings, or a ConfigError naming what is missing."""
        if self.sdkappid is None:
            raise ConfigError("IM_SDKAPPID is not set (the app's SDKAppID)")
        if self.secret_key is None and self.usersig is None:
            raise ConfigError("set IM_SECRET_KEY (preferred) or IM_USERSIG")
        if self.base_url:
            base_urls: tuple[str, ...] = (self.base_url,)
        elif self.region:
            base_urls = tuple(f"https://{domain}" for domain in REGIONS[self.region])
        else:
            raise ConfigError("set IM_REGION (one of " + ", ".join(REGIONS) + ") or IM_BASE_URL")
        return ApiSettings(
            sdkappid=self.sdkappid,
            admin=self.admin,
            base_urls=base_urls,
            secret_key=self.secret_key,
            usersig=self.usersig,
            rate=self.rate,
            timeout=self.timeout,
            retry=self.retry,
        )


def database_url(raw: str, *, name: str = "DATABASE_URL") -> URL:
    """Parse a SQLAlchemy URL; plain ``postgresql://`` and ``postgres://`` use psycopg 3.

    No error quotes the URL, and a URL whose password could be misread is refused: an ``@``
    anywhere but after the user and password (an unencoded ``@`` in the password, or a user
    that hides the ``user:password@`` part from the parser) would put the password's tail into
    the host or database name, which connection errors print. (A SQLite path may hold ``@``.)
    A ``?password=`` query parameter becomes the URL's password, which ``repr`` hides.
    """
    refused = ConfigError(
        f"{name} is not a database URL: write it as driver://user:password@host:port/database, "
        "with any @ : / ? # % or space in the user or password percent-encoded (%40 for @)"
    )
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise refused from None
    if url.get_backend_name() != "sqlite" and raw.count("@") > (url.username is not None):
        raise refused
    if "password" in url.query:  # libpq's ?password=: moved where every rendering hides it
        given = url.query["password"]
        password = given if isinstance(given, str) else given[-1]  # the last one, as libpq
        url = url.difference_update_query(["password"]).set(password=password)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigError(
            f"{name}: unsupported database {url.get_backend_name()!r} "
            "(use postgresql:// or sqlite:///)"
        )
    return url


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _schema(raw: str, url: URL) -> str | None:
    """FOLLOW_ETL_SCHEMA: a plain lower-case PostgreSQL identifier, or None for the default."""
    if not raw:
        return None
    if not _IDENTIFIER.fullmatch(raw) or raw.startswith("pg_"):
        raise ConfigError(
            f"FOLLOW_ETL_SCHEMA must be a lower-case identifier (letters, digits, _), got {raw!r}"
        )
    if url.get_backend_name() != "postgresql":
        raise ConfigError("FOLLOW_ETL_SCHEMA needs PostgreSQL: SQLite has no schemas")
    return raw


def base_url(raw: str) -> str:
    """Validate IM_BASE_URL: https anywhere, plain http only on loopback (the UserSig is in it)."""
    parts = urlsplit(raw)
    if "@" in parts.netloc:  # httpx would send and log them; the API wants only the UserSig
        raise ConfigError("IM_BASE_URL must not carry a user or password")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = "" if "@" in raw else f", got {raw!r}"  # an @ may follow a password
        raise ConfigError(f"IM_BASE_URL must be an http(s) URL with a host{shown}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            "IM_BASE_URL: plain http:// is refused except on loopback, "
            "because the UserSig travels in the query string; use https://"
        )
    if parts.query or parts.fragment:
        raise ConfigError("IM_BASE_URL must not carry a query string or fragment")
    return raw.rstrip("/")


@dataclass(frozen=True)
class Pushgateway:
    """Where metrics are pushed: the URL without credentials, and the basic-auth ones."""

    url: str  # what may be shown and logged: scheme, host, port and path only
    username: str | None = None
    password: Secret | None = None


def pushgateway(raw: str) -> Pushgateway:
    """Parse ``--pushgateway``: ``http(s)://[user:password@]host[:port][/path]`` (http:// when
    no scheme is given, as prometheus_client does), user and password percent-decoded.

    A ValueError that quotes nothing of ``raw``: a misread URL could put the password's tail
    into the host, port or path (an unencoded ``/``, ``?`` or ``#`` before an ``@``). An
    unencoded ``@`` is read as the password's: only the last one ends the user and password.
    """
    refused = ValueError(
        "not a Pushgateway URL: write it as http(s)://[user:password@]host[:port][/path], "
        "with any @ : / ? # % or space in the user or password percent-encoded (%40 for @)"
    )
    text = raw.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise refused from None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not hostport.isascii()
        or any(c.isspace() or not c.isprintable() for c in hostport)  # urllib would raise
        or text.count("@") > parts.netloc.count("@")  # one past a / ? or #: a password misread
        or parts.query
        or parts.fragment
    ):
        raise refused
    url = urlunsplit((parts.scheme, hostport, parts.path.rstrip("/"), "", ""))
    if not at:
        return Pushgateway(url)
    user, _, password = userinfo.partition(":")
    if ":" in unquote(user):  # basic auth ends the user at the first colon (RFC 7617)
        raise refused
    return Pushgateway(url, unquote(user), Secret(unquote(password)))


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_rate(value: float) -> bool:
    """True for a usable calls-per-second rate: positive, finite, and with a finite interval
    (any rate below 1/s included: 0.2 is a call every 5 s)."""
    return 0 < value < float("inf") and 1.0 / value < float("inf")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
    return value


def _holds(env: Mapping[str, str]) -> holds.Thresholds:
    """FOLLOW_ETL_HOLD_MIN_EDGES (a whole number >= 1) and FOLLOW_ETL_HOLD_SHARE (0..1)."""
    raw_min = env.get("FOLLOW_ETL_HOLD_MIN_EDGES", "").strip()
    if raw_min and not (raw_min.isascii() and raw_min.isdigit()):
        raise ConfigError(
            f"FOLLOW_ETL_HOLD_MIN_EDGES must be a whole number of edges >= 1, got {raw_min!r}"
        )
    min_edges = int(raw_min) if raw_min else holds.DEFAULT_MIN_EDGES
    share = _number(env, "FOLLOW_ETL_HOLD_SHARE", holds.DEFAULT_SHARE, minimum=0)
    problem = holds.invalid(min_edges, share)
    if problem:
        name = "FOLLOW_ETL_HOLD_MIN_EDGES" if min_edges < 1 else "FOLLOW_ETL_HOLD_SHARE"
        raise ConfigError(f"{name}: {problem}")
    return holds.Thresholds(min_edges, share)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    sdkappid: int | None = None
    if raw := env.get("IM_SDKAPPID", "").strip():
        if not raw.isdigit():
            raise ConfigError(f"IM_SDKAPPID must be a positive integer, got {raw!r}")
        sdkappid = int(raw)
    region = env.get("IM_REGION", "").strip().lower() or None
    if region is not None and region not in REGIONS:
        raise ConfigError(f"IM_REGION {region!r} is not one of: " + ", ".join(REGIONS))
    raw_base = env.get("IM_BASE_URL", "").strip()
    secret = env.get("IM_SECRET_KEY", "").strip()
    sig = env.get("IM_USERSIG", "").strip()
    token = env.get("IM_CALLBACK_TOKEN", "").strip()
    admin = env.get("IM_ADMIN", "").strip() or DEFAULT_ADMIN
    rate = _number(env, "IM_RATE", DEFAULT_RATE, minimum=0)
    if not is_rate(rate):
        raise ConfigError(
            f"IM_RATE must be a positive number of calls per second, got {env['IM_RATE']!r}"
        )
    store = database_url(env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL)
    return Settings(
        database_url=store,
        schema=_schema(env.get("FOLLOW_ETL_SCHEMA", "").strip(), store),
        admin=admin,
        sdkappid=sdkappid,
        secret_key=Secret(secret) if secret else None,
        usersig=Secret(sig) if sig else None,
        callback_token=Secret(token) if token else None,
        region=region,
        base_url=base_url(raw_base) if raw_base else None,
        rate=rate,
        timeout=_number(env, "IM_TIMEOUT", DEFAULT_TIMEOUT, minimum=3.5),
        retry=RetryPolicy(
            attempts=int(_number(env, "IM_RETRY_ATTEMPTS", 8, minimum=1)),
            max_seconds=_number(env, "IM_RETRY_MAX_SECONDS", 300.0, minimum=0),
            initial_wait=_number(env, "IM_RETRY_WAIT", 0.5, minimum=0),
        ),
        db_retry_seconds=_number(env, "DATABASE_RETRY_SECONDS", 180.0, minimum=0),
        holds=_holds(env),
        accounts_database_url=(
            database_url(raw_accounts, name="ACCOUNTS_DATABASE_URL")
            if (raw_accounts := env.get("ACCOUNTS_DATABASE_URL", "").strip())
            else None
        ),
    )
