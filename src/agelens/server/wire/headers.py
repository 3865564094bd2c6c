"""Security headers on every response, added as it leaves (a plain ASGI middleware)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The page may load only what this server serves: no CDN, no third party.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
#: Swagger UI starts from an inline script and styles; it too loads nothing from elsewhere.
DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """``nosniff`` everywhere; ``no-store`` on API answers, which describe someone's face;
    a content security policy and no framing on the page and the docs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if path.startswith("/v1/"):
                    headers["Cache-Control"] = "no-store"
                policy = {"/": PAGE_POLICY, "/docs": DOCS_POLICY}.get(path)
                if policy is not None:
                    headers["Content-Security-Policy"] = policy
                    headers["X-Frame-Options"] = "DENY"
            await send(message)

        await self.app(scope, receive, send_with_headers)
