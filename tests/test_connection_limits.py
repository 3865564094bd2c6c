"""A real uvicorn server: clients that send their headers too slowly are cut off."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from agelens.server.wire.protocol import HeaderDeadlineProtocol


class _QuickDeadline(HeaderDeadlineProtocol):
    header_timeout = 0.5


def _serve(protocol: type[H11Protocol], app: FastAPI | None = None) -> Iterator[int]:
    """A real uvicorn server on a free port, with ``protocol``; by default a tiny app."""
    if app is None:
        app = FastAPI()

        @app.get("/healthz")
        def health() -> dict[str, str]:
            return {"status": "ok"}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=protocol, timeout_keep_alive=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(params=[_QuickDeadline, H11Protocol], ids=["deadline", "uvicorn"])
def served(request) -> Iterator[tuple[type, int]]:
    for port in _serve(request.param):
        yield request.param, port


def _trickle_headers(port: int, seconds: float) -> bool:
    """Send a header a byte every 0.1 s for ``seconds``; True if the server closed on us."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                client.sendall(b"X")
                time.sleep(0.1)
                client.setblocking(False)
                try:
                    if client.recv(1) == b"":
                        return True
                except BlockingIOError:
                    pass
                finally:
                    client.setblocking(True)
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def test_headers_sent_a_byte_at_a_time_lose_the_connection(served):
    protocol, port = served
    closed = _trickle_headers(port, seconds=2.5)
    # uvicorn's own protocol keeps such a client for ever; the deadline cuts it off.
    assert closed is (protocol is _QuickDeadline)


def test_prompt_requests_on_one_connection_each_get_a_fresh_deadline(served):
    protocol, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        for _ in range(3):
            time.sleep(0.3)  # 0.9 s in all: past one deadline, within each
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                chunk = client.recv(4096)
                assert chunk, f"{protocol.__name__} closed the connection"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:40]


class _FewPerClient(_QuickDeadline):
    per_client = 3


class _FewInAll(_QuickDeadline):
    max_connections = 4


def _refused_then_served(port: int, addresses: list[tuple[str, int]]) -> dict:
    """Hold a connection from each address, open one more from 127.0.0.1 and return its
    answer's JSON body (asserting a closing JSON 503); then, the held ones closed, check
    127.0.0.1 is served again."""
    held = [
        socket.create_connection(("127.0.0.1", port), timeout=5, source_address=address)
        for address in addresses
    ]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            answer = _whole_answer(extra)
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"application/json" in answer and b"connection: close" in answer
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        if len({a for a, _ in addresses}) == 1:  # another address is served meanwhile
            with socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
            ) as other:
                other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert other.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as again:
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert again.recv(100).startswith(b"HTTP/1.1 200")
    return body


def _whole_answer(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(4096):
        answer += chunk
    return answer


def test_a_connection_over_the_cap_gets_a_json_503_and_others_go_on():
    for port in _serve(_FewInAll):
        # Four addresses, one connection each: under any per-client limit, at the cap.
        body = _refused_then_served(port, [(f"127.0.0.{i}", 0) for i in range(2, 6)])
        assert "try again" in body["error"]


def test_one_client_cannot_hold_every_connection():
    for port in _serve(_FewPerClient):
        body = _refused_then_served(port, [("127.0.0.1", 0)] * 3)
        assert "one address" in body["error"]


def _status_and_headers(connection: socket.socket) -> tuple[bytes, bytes]:
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        if not chunk:
            break
        answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    return head.split(b"\r\n", 1)[0], head


@pytest.mark.parametrize(
    "request_head",
    [
        b"POST /v1/estimate HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 99999999\r\n\r\nabc",
        b"POST /v1/estimate HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"Content-Length: 900000\r\n\r\nabc",
        b"POST /v1/gate?over=nan HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 900000\r\n\r\nabc",
    ],
    ids=["declared too large", "unsupported type", "bad query"],
)
def test_an_error_before_the_body_is_read_says_the_connection_closes(request_head):
    from agelens.estimator import AgeEstimator
    from agelens.server import ServerSettings, create_app

    app = create_app(ServerSettings(), estimator=AgeEstimator())
    for port in _serve(HeaderDeadlineProtocol, app):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(request_head)
            status, head = _status_and_headers(client)
            assert status.split()[1].startswith(b"4") and b"connection: close" in head, head
            client.settimeout(10)
            while client.recv(65536):  # the server closes: recv ends, it does not hang
                pass
