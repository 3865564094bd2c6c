"""uvicorn's HTTP/1.1 protocol with a deadline for each request's line and headers.

uvicorn's keep-alive timeout starts again with every byte received, and the app sees a
request only once its headers are complete, so a client trickling a header a byte at a
time would hold a connection for ever (Slowloris). Here each request must finish its
headers within ``HEADER_TIMEOUT_S`` of the connection opening or of the previous response
ending; a connection that misses it is closed. The body has its own deadline in the app.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a request line and headers.
HEADER_TIMEOUT_S = 10.0

_log = logging.getLogger("agelens.server")


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol that closes connections whose headers do not arrive in time."""

    header_timeout = HEADER_TIMEOUT_S
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

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
