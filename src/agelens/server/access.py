"""Who may call ``/v1``: the API key, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from agelens.server.uploads import UploadError


def api_key_guard(api_key: str | None) -> Callable[[Request], None]:
    """A dependency that refuses ``/v1`` calls without ``api_key``; None lets everyone in."""

    def require_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key", "")
        bearer = request.headers.get("authorization", "")
        if not given and bearer.lower().startswith("bearer "):
            given = bearer[7:]
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise UploadError(401, "missing or wrong API key (send it as X-API-Key)")

    return require_key
