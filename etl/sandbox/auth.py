"""The sandbox's auth checks, in the service's order: URL parameters (60009), SDKAppID (60005),
UserSig (700xx), then App administrator (30004).

A UserSig is verified once (zlib + JSON + HMAC) and then only its expiry is checked, so the
check costs next to nothing on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from etl.sandbox.config import SandboxConfig
from etl.sandbox.response import BadRequest
from etl.tencent import usersig

_MAX_RANDOM = 4294967295
_VERIFIED_LIMIT = 64  # UserSigs remembered as verified; a client renews its own once a day
_PARAMETERS = ("sdkappid", "identifier", "usersig", "random", "contenttype")


def _is_uint(text: str) -> bool:
    # Length-capped so int() never meets a string past Python's digit limit.
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


class Auth:
    """Checks a call's URL parameters and UserSig against the sandbox's credentials."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        # (usersig, identifier, sdkappid) -> expiry of a UserSig whose HMAC has been checked:
        # the zlib + JSON + HMAC work is done once per UserSig, not once per call.
        self._verified: dict[tuple[str, str, int], int] = {}

    def check(self, query: Mapping[str, str]) -> None:
        """Raise BadRequest (60009, 60005, 700xx or 30004) unless the call may go on."""
        for name in _PARAMETERS:
            if name not in query:
                raise BadRequest(60009, f"missing URL parameter: {name}")
        if not _is_uint(query["sdkappid"]):
            raise BadRequest(60009, "invalid URL parameter: sdkappid must be an integer")
        if not _is_uint(query["random"]) or int(query["random"]) > _MAX_RANDOM:
            raise BadRequest(60009, "invalid URL parameter: random must be in 0..4294967295")
        if query["contenttype"] != "json":
            raise BadRequest(60009, "invalid URL parameter: contenttype must be json")
        sdkappid = int(query["sdkappid"])
        if sdkappid != self._config.sdkappid:
            raise BadRequest(60005, "SDKAppID is invalid")
        try:
            self._check_usersig(query["usersig"], query["identifier"], sdkappid)
        except usersig.UserSigRejected as exc:
            raise BadRequest(exc.code, f"UserSig rejected: {exc}") from exc
        if query["identifier"] != self._config.admin:
            raise BadRequest(30004, "this API needs App administrator permission")

    def _check_usersig(self, sig: str, identifier: str, sdkappid: int) -> None:
        now = int(self._clock())
        key = (sig, identifier, sdkappid)
        expires_at = self._verified.get(key)
        if expires_at is None:
            fields = usersig.verify(
                sig,
                sdkappid=sdkappid,
                identifier=identifier,
                secret_key=self._config.secret_key,
                now=now,
            )
            if len(self._verified) >= _VERIFIED_LIMIT:
                self._verified.clear()
            self._verified[key] = fields.expires_at
        elif now > expires_at:
            raise usersig.UserSigRejected(usersig.EXPIRED, "UserSig has expired")
