"""Signing below httpx: the UserSig is added to each request as it leaves, never before.

Requests are built without the UserSig, and ``SigningTransport`` adds it below httpx's
logging, exceptions and ``Response.request``. A host that logs httpx at INFO or DEBUG sees no
secret, whatever its logging configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx


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


def signing_client(
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
