"""One bounded, sanitised line per request: method, path, status, time and sizes.

The server's own access log replaces uvicorn's, which writes the request line whole: a
client with no key could grow the log by whatever it puts in a URL (60 kB a request),
and a URL can carry anything. The query string is never logged, only its length; the
path is cut and stripped of control characters; no image data is ever logged.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("agelens.access")

#: The most characters of a path that are logged.
MAX_LOGGED_PATH = 120


def _printable(text: str) -> str:
    """``text`` cut to :data:`MAX_LOGGED_PATH`, with control and non-ASCII characters replaced."""
    cut = text[:MAX_LOGGED_PATH] + ("..." if len(text) > MAX_LOGGED_PATH else "")
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in cut)


class AccessLog:
    """Logs each HTTP request as it ends, at INFO on ``agelens.access``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, sent = [0], [0]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            declared = dict(scope.get("headers") or []).get(b"content-length", b"-")
            log.info(
                "%s %s (query %d chars) %s %.0f ms, in %s B, out %d B",
                _printable(str(scope.get("method", "?")))[:10],
                _printable(scope.get("path", "")),
                len(scope.get("query_string", b"")),
                status[0] or "-",
                (time.perf_counter() - started) * 1000,
                _printable(declared.decode("latin-1"))[:20],
                sent[0],
            )
