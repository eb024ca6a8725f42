"""The sandbox's page cursors: opaque to clients, tamper-evident, bound to one list.

A cursor is ``base64url(payload) "." base64url(mac)`` where the payload is compact JSON
``{"a": account, "t": follow type, "k": last To_Account served, "i": issued at}`` and the MAC is
a truncated HMAC-SHA256 under a key derived from the app's secret key. Keying on the last
To_Account (keyset paging) keeps paging correct when the list changes between pages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

_MAC_BYTES = 12


class InvalidCursor(ValueError):
    """The cursor was not issued by this sandbox, or was altered."""


@dataclass(frozen=True)
class CursorFields:
    """What a cursor carries."""

    account: str
    follow_type: int
    last: str
    issued_at: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Issues and opens cursors under a key derived from the secret key."""

    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(b"sandbox-cursor|" + secret_key.encode()).digest()

    def _mac(self, raw: bytes) -> bytes:
        return hmac.new(self._key, raw, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, account: str, follow_type: int, last: str, now: float) -> str:
        """A cursor that resumes the list after ``last``."""
        payload = {"a": account, "t": follow_type, "k": last, "i": round(now, 3)}
        # ASCII escapes: an id may hold a lone surrogate, which UTF-8 cannot carry.
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return f"{_b64(raw)}.{_b64(self._mac(raw))}"

    def open(self, cursor: str) -> CursorFields:
        """The fields of a cursor this codec issued; InvalidCursor otherwise."""
        try:
            raw_b64, mac_b64 = cursor.split(".")
            raw, mac = _unb64(raw_b64), _unb64(mac_b64)
        except (ValueError, binascii.Error) as exc:
            raise InvalidCursor("cursor is malformed") from exc
        if not hmac.compare_digest(mac, self._mac(raw)):
            raise InvalidCursor("cursor signature does not match")
        payload = json.loads(raw)  # ours: the MAC vouches for it
        return CursorFields(
            str(payload["a"]), int(payload["t"]), str(payload["k"]), float(payload["i"])
        )
