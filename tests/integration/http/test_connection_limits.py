"""How many connections the REST listener holds, and for how long.

At most ``http.max_connections`` are open at once: past it a new connection is answered
``503`` with the spec's error body, ``Retry-After`` and ``Connection: close``, and closed;
the open ones go on, and once one closes a new one is accepted again. A connection with no
request in progress closes after ``http.keep_alive_timeout`` (before, one that never sent
a byte stayed open), and one whose request stalls after ``http.read_timeout`` (before, a
client sending a header line now and then, or a body that never ends, held its
connection for ever). Nodes here allow 3 connections, and 1-second timeouts.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.nodeproc import NodeProcess

LIMIT = 3


@pytest.fixture(scope="module")
def limited(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node that holds 3 HTTP connections (kept alive long enough for the test)."""
    data: Path = tmp_path_factory.mktemp("http-limited") / "data"
    process = node.beside(
        data,
        {"HELIOSDB_HTTP__MAX_CONNECTIONS": str(LIMIT), "HELIOSDB_HTTP__KEEP_ALIVE_TIMEOUT": "300"},
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def hasty(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node that closes idle and stalled connections after a second."""
    data: Path = tmp_path_factory.mktemp("http-hasty") / "data"
    process = node.beside(
        data,
        {"HELIOSDB_HTTP__KEEP_ALIVE_TIMEOUT": "1", "HELIOSDB_HTTP__READ_TIMEOUT": "1"},
    )
    yield process
    process.stop()


def _accepted_again(url: str) -> httpx.Response:
    """GET ``url`` on new connections until one is not refused: the node sees a client's
    close a moment after the client made it."""
    for _ in range(200):
        response = httpx.get(url, timeout=30)
        if response.status_code != 503:
            return response
        time.sleep(0.05)
    raise AssertionError("no connection accepted after one closed")


def test_connections_past_the_limit_get_503_and_are_closed(limited: NodeProcess) -> None:
    health = f"{limited.api}/health"
    held = [httpx.Client(timeout=30) for _ in range(LIMIT)]
    try:
        for client in held:  # each holds one kept-alive connection
            assert client.get(health).status_code == 200

        refused = httpx.get(health, timeout=30)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert refused.json() == {
            "error": {
                "code": "RESOURCE_EXHAUSTED",
                "message": f"the node holds its maximum of {LIMIT} open HTTP connections; "
                "retry later",
                "limit": LIMIT,
                "retry_after": 1,
            }
        }

        # The open connections go on; one closing makes room for a new one.
        for client in held:
            assert client.get(health).status_code == 200
        held.pop().close()
        assert _accepted_again(health).status_code == 200
        assert held[0].get(health).status_code == 200
    finally:
        for client in held:
            client.close()

    refusals = limited.metric(r'heliosdb_refused_connections_total\{interface="http"\}')
    assert refusals is not None and refusals >= 1
    assert limited.metric(r'heliosdb_open_connections\{interface="http"\}') is not None


def test_connection_past_the_limit_answers_a_request_sent_late(limited: NodeProcess) -> None:
    """The refusal is written at once; a client that sends its request after it still
    reads it whole (the node reads and drops the request instead of resetting)."""
    health = f"{limited.api}/health"
    held = [httpx.Client(timeout=30) for _ in range(LIMIT)]
    try:
        for client in held:
            assert client.get(health).status_code == 200
        with socket.create_connection(("127.0.0.1", limited.ports["http"]), timeout=30) as sock:
            sock.sendall(
                b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
            )
            sock.sendall(b"x" * 100_000)
            reply = b""
            while chunk := sock.recv(65_536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b'"code":"RESOURCE_EXHAUSTED"' in reply
    finally:
        for client in held:
            client.close()


def _closed_by_node(sock: socket.socket, keep_sending: bytes = b"") -> bool:
    """Whether the node closes ``sock`` while the client sends ``keep_sending`` (if any)
    every tenth of a second; False after 30 seconds of it staying open."""
    sock.settimeout(0.1)
    for _ in range(300):
        try:
            if keep_sending:
                sock.sendall(keep_sending)
            if sock.recv(65_536) == b"":
                return True
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def test_connection_with_no_request_in_progress_is_closed(hasty: NodeProcess) -> None:
    """Idle from the start (before, such a connection stayed open), or after answers."""
    with socket.create_connection(("127.0.0.1", hasty.ports["http"]), timeout=30) as sock:
        assert _closed_by_node(sock)
    with socket.create_connection(("127.0.0.1", hasty.ports["http"]), timeout=30) as sock:
        for _ in range(3):
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65_536).startswith(b"HTTP/1.1 200 OK\r\n")
        assert _closed_by_node(sock)


def test_request_head_sent_a_line_at_a_time_is_closed(hasty: NodeProcess) -> None:
    """Slowloris: a header line every tenth of a second, the head never complete."""
    with socket.create_connection(("127.0.0.1", hasty.ports["http"]), timeout=30) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_node(sock, keep_sending=b"X-Slow: 1\r\n")


def test_request_body_pauses_are_bounded_not_the_body(hasty: NodeProcess, rw_key: str) -> None:
    """A body arriving a byte at a time, each within the read timeout, is answered like
    any other; a body that stops closes the connection."""
    body = b'{"sql": "SELECT 1 AS one"}'
    head = (
        b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + rw_key.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", hasty.ports["http"]), timeout=30) as sock:
        sock.sendall(head)
        for byte in body:
            time.sleep(0.1)
            sock.sendall(bytes((byte,)))
        assert sock.recv(65_536).startswith(b"HTTP/1.1 200 OK\r\n")

        sock.sendall(head + body[:5])
        assert _closed_by_node(sock)
