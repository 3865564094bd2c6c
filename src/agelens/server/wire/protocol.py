"""uvicorn's HTTP/1.1 protocol with a deadline for each request's line and headers, and a
cap on the connections one client address may hold open.

uvicorn's keep-alive timeout starts again with every byte received, and the app sees a
request only once its headers are complete, so a client trickling a header a byte at a
time would hold a connection for ever (Slowloris). Here each request must finish its
headers within ``HEADER_TIMEOUT_S`` of the connection opening or of the previous response
ending; a connection that misses it is closed. The body has its own deadline in the app.

The server's cap on connections (``--max-connections``) is kept here too, so that a
connection over it gets a JSON 503 like every other error, not uvicorn's plain text. The
cap is shared by every client: one
client re-opening idle connections as the deadlines close them could hold every slot,
and others would get 503. So one address may hold at most ``MAX_PER_CLIENT`` (by default
a quarter of the cap); its next connection is closed at once. Behind a reverse proxy
every client has the proxy's address: set ``AGELENS_MAX_CONNECTIONS_PER_CLIENT=0`` (off)
and let the proxy limit clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a request line and headers.
HEADER_TIMEOUT_S = 10.0
#: Connections one client address may hold open at once (0: no limit). Read from the
#: environment, as ``agelens serve`` sets it: its workers are processes of their own.
MAX_PER_CLIENT = int(os.environ.get("AGELENS_MAX_CONNECTIONS_PER_CLIENT", "16"))
#: Connections this process holds open at once; more are refused (``--max-connections``).
MAX_CONNECTIONS = int(os.environ.get("AGELENS_MAX_CONNECTIONS", "64"))


def _refusal(message: str) -> bytes:
    """A whole HTTP 503 answer, JSON as every other error, that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_log = logging.getLogger("agelens.server")


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol that closes connections whose headers do not arrive in time."""

    header_timeout = HEADER_TIMEOUT_S
    per_client = MAX_PER_CLIENT
    max_connections = MAX_CONNECTIONS
    _header_deadline: asyncio.TimerHandle | None = None
    _counted: str | None = None
    #: Open connections per client address, in this process.
    _open: ClassVar[Counter[str]] = Counter()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if self.max_connections and sum(self._open.values()) >= self.max_connections:
            self._refuse(f"the server holds {self.max_connections} connections: try again")
            return
        if self.per_client and address is not None and self._open[address] >= self.per_client:
            self._refuse(f"one address may hold {self.per_client} connections at once")
            return
        self._open[address or ""] += 1
        self._counted = address or ""
        self._arm()

    def _refuse(self, message: str) -> None:
        """Answer 503 at once, in JSON, and close: the client knows why it was refused."""
        _log.info("refused a connection: %s", message)
        self.transport.write(_refusal(message))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request's headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            self._open[self._counted] -= 1
            if not self._open[self._counted]:
                del self._open[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expire(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            _log.info("closed a connection whose headers took over %g s", self.header_timeout)
            self.transport.close()
