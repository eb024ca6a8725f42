"""TLSSigAPIv2 UserSig: generate and verify, as pure functions with the clock passed in.

The algorithm is the one in ``shared/reference/follow-api.md``: an HMAC-SHA256 over a fixed
text, carried in a zlib-compressed JSON document, base64 with a URL-safe-ish alphabet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_EXPIRE = 180 * 86400  # the reference implementation's default

# Error codes the service answers for each way a UserSig can be wrong (see the reference).
EXPIRED = 70001
EMPTY = 70002
INVALID = 70003
WRONG_KEY = 70009
WRONG_IDENTIFIER = 70013
WRONG_APPID = 70014

_TO_SIG = str.maketrans({"+": "*", "/": "-", "=": "_"})
_FROM_SIG = str.maketrans({"*": "+", "-": "/", "_": "="})


class UserSigRejected(ValueError):
    """A UserSig that does not verify; ``code`` is the error code the service would answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class UserSigFields:
    """The decoded content of a UserSig."""

    identifier: str
    sdkappid: int
    time: int
    expire: int
    sig: str

    @property
    def expires_at(self) -> int:
        """Unix second after which the service rejects it."""
        return self.time + self.expire


def hmac_sig(sdkappid: int, identifier: str, secret_key: str, now: int, expire: int) -> str:
    """The ``TLS.sig`` field: base64 of HMAC-SHA256 over the documented content lines."""
    content = (
        f"TLS.identifier:{identifier}\n"
        f"TLS.sdkappid:{sdkappid}\n"
        f"TLS.time:{now}\n"
        f"TLS.expire:{expire}\n"
    )
    digest = hmac.new(secret_key.encode(), content.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def generate(
    sdkappid: int, identifier: str, secret_key: str, *, now: int, expire: int = DEFAULT_EXPIRE
) -> str:
    """Return a UserSig for ``identifier``, valid from ``now`` for ``expire`` seconds."""
    doc = {
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire,
        "TLS.time": now,
        "TLS.sig": hmac_sig(sdkappid, identifier, secret_key, now, expire),
    }
    packed = zlib.compress(json.dumps(doc, separators=(",", ":")).encode())
    return base64.b64encode(packed).decode().translate(_TO_SIG)


def decode(usersig: str) -> UserSigFields:
    """Unpack a UserSig without checking its signature; raise UserSigRejected if malformed."""
    if not usersig:
        raise UserSigRejected(EMPTY, "UserSig is empty")
    try:
        packed = base64.b64decode(usersig.translate(_FROM_SIG), validate=True)
        doc = json.loads(zlib.decompress(packed))
        return UserSigFields(
            identifier=str(doc["TLS.identifier"]),
            sdkappid=int(doc["TLS.sdkappid"]),
            time=int(doc["TLS.time"]),
            expire=int(doc["TLS.expire"]),
            sig=str(doc["TLS.sig"]),
        )
    except (binascii.Error, zlib.error, ValueError, KeyError, TypeError) as exc:
        raise UserSigRejected(INVALID, "UserSig cannot be decoded") from exc


def verify(
    usersig: str, *, sdkappid: int, identifier: str, secret_key: str, now: int
) -> UserSigFields:
    """Check a UserSig as the service does; return its fields or raise UserSigRejected."""
    fields = decode(usersig)
    if fields.sdkappid != sdkappid:
        raise UserSigRejected(WRONG_APPID, "UserSig was made for another SDKAppID")
    if fields.identifier != identifier:
        raise UserSigRejected(WRONG_IDENTIFIER, "UserSig was made for another identifier")
    expected = hmac_sig(fields.sdkappid, fields.identifier, secret_key, fields.time, fields.expire)
    if not hmac.compare_digest(expected, fields.sig):
        raise UserSigRejected(WRONG_KEY, "UserSig signature does not match the secret key")
    if now > fields.expires_at:
        raise UserSigRejected(EXPIRED, "UserSig has expired")
    return fields


class UserSigSource:
    """The UserSig to send: a fixed string, or one derived from the secret key and renewed.

    A derived UserSig is renewed once less than a tenth of its lifetime is left, and on demand
    (``renew``) when the service answers 70001. Thread-safe.
    """

    def __init__(
        self,
        *,
        sdkappid: int,
        identifier: str,
        secret_key: str | None = None,
        fixed: str | None = None,
        expire: int = 86400,
        clock: Callable[[], float],
    ) -> None:
        if (secret_key is None) == (fixed is None):
            raise ValueError("give exactly one of secret_key and fixed")
        self._sdkappid = sdkappid
        self._identifier = identifier
        self._secret_key = secret_key
        self._expire = expire
        self._clock = clock
        self._lock = threading.Lock()
        self._sig = fixed or ""
        self._renew_at = float("inf") if fixed else 0.0

    @property
    def renewable(self) -> bool:
        """True when a fresh UserSig can be made (a secret key is configured)."""
        return self._secret_key is not None

    def current(self) -> str:
        """The UserSig to use now, renewed first if it is close to expiry."""
        with self._lock:
            if self._clock() >= self._renew_at:
                self._renew_locked()
            return self._sig

    def renew(self) -> None:
        """Make a fresh UserSig now (after the service said 70001); no-op when fixed."""
        with self._lock:
            if self.renewable:
                self._renew_locked()

    def _renew_locked(self) -> None:
        assert self._secret_key is not None
        now = int(self._clock())
        self._sig = generate(
            self._sdkappid, self._identifier, self._secret_key, now=now, expire=self._expire
        )
        self._renew_at = now + self._expire * 0.9

    def __repr__(self) -> str:
        kind = "derived" if self.renewable else "fixed"
        return f"UserSigSource({kind}, identifier={self._identifier!r}, usersig=***)"
