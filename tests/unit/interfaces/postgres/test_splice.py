"""The session relay over real sockets, spliced and counted: the same bytes either way,
the kernel's counters match the counted ones, and a spliced client that leaves is told
apart from one that vanished mid-statement."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from heliosdb.engine import Access
from heliosdb.engine.relay import EngineSession
from heliosdb.interfaces.postgres import relay
from heliosdb.interfaces.postgres.codec import TERMINATE, CancelKey
from heliosdb.interfaces.postgres.relay import Session
from heliosdb.interfaces.postgres.traffic import SocketTraffic, Traffic, parse_tcp_info
from heliosdb.security.principals import Principal, PrincipalKind


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


QUERY = _msg(b"Q", b"SELECT abalance FROM pgbench_accounts WHERE aid = 7;\0")
REPLY = _msg(b"D", b"\0\x01\0\0\0\x010") + _msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"I")


@dataclass
class Relayed:
    session: Session
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    backend: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ended: list[bool] = field(default_factory=list)  # abrupt, per end


@pytest.fixture
async def relayed(request: pytest.FixtureRequest) -> AsyncIterator[Relayed]:
    """A client (TCP) relayed to a backend (Unix socket) by a Session; param: splice."""
    directory = Path(tempfile.mkdtemp(dir="/tmp"))
    backends: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_backend(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await backends.put((r, w))

    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    engine_server = await asyncio.start_unix_server(on_backend, str(directory / "engine"))
    front = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]
    client = await asyncio.open_connection("127.0.0.1", port)
    _, gateway_writer = await accepted.get()
    engine_reader, engine_writer = await asyncio.open_unix_connection(str(directory / "engine"))
    backend = await backends.get()
    principal = Principal(id="p", name="p", kind=next(iter(PrincipalKind)), access=Access.READ_ONLY)
    ended: list[bool] = []
    session = Session(
        None,  # type: ignore[arg-type]  # no cancel is sent here
        principal,
        CancelKey(1, b"k"),
        EngineSession(engine_reader, engine_writer, 1, b"k"),
        gateway_writer.transport,  # type: ignore[arg-type]
        lambda _session, abrupt: ended.append(abrupt),
    )
    session.start(b"", splice=request.param)
    try:
        yield Relayed(session, client, backend, ended)
    finally:
        for _, writer in (client, backend):
            writer.transport.abort()
        session.terminate()
        engine_server.close()
        front.close()
        await asyncio.sleep(0)
        shutil.rmtree(directory)


async def _settled(session: Session, bytes_in: int, bytes_out: int) -> Traffic:
    """The session's counters once they reach what was sent (a kernel's acknowledgements
    may trail the bytes by a moment)."""
    for _ in range(200):
        traffic = session.traffic()
        if traffic.bytes_in >= bytes_in and traffic.bytes_out >= bytes_out:
            return traffic
        await asyncio.sleep(0.01)
    return session.traffic()


@pytest.mark.parametrize("relayed", [True, False], ids=["spliced", "counted"], indirect=True)
async def test_relay_passes_bytes_and_counts_them(
    relayed: Relayed, request: pytest.FixtureRequest
) -> None:
    spliced = "spliced" in request.node.callspec.id
    assert (relayed.session.kernel_traffic is not None) is spliced
    (client_reader, client_writer), (backend_reader, backend_writer) = (
        relayed.client,
        relayed.backend,
    )
    for round_trip in range(1, 4):
        client_writer.write(QUERY)
        assert await backend_reader.readexactly(len(QUERY)) == QUERY
        backend_writer.write(REPLY)
        assert await client_reader.readexactly(len(REPLY)) == REPLY
        traffic = await _settled(relayed.session, round_trip * len(QUERY), round_trip * len(REPLY))
        assert traffic.bytes_in == round_trip * len(QUERY)
        assert traffic.bytes_out == round_trip * len(REPLY)
        assert traffic.round_trips == round_trip
    assert relayed.ended == []


@pytest.mark.parametrize("relayed", [True, False], ids=["spliced", "counted"], indirect=True)
async def test_relay_large_reply_arrives_whole(relayed: Relayed) -> None:
    """4 MiB from the backend, read slowly: backpressure, nothing lost or reordered."""
    (client_reader, _), (_, backend_writer) = relayed.client, relayed.backend
    payload = bytes(range(256)) * (4 * 4096)
    backend_writer.write(payload)
    received = bytearray()
    while len(received) < len(payload):
        received += await client_reader.read(65536)
        await asyncio.sleep(0)
    assert bytes(received) == payload


@pytest.mark.parametrize("relayed", [True, False], ids=["spliced", "counted"], indirect=True)
async def test_client_terminate_then_close_is_not_abrupt(relayed: Relayed) -> None:
    (_, client_writer), (backend_reader, backend_writer) = relayed.client, relayed.backend
    client_writer.write(TERMINATE)
    assert await backend_reader.readexactly(len(TERMINATE)) == TERMINATE
    client_writer.close()
    backend_writer.close()  # a backend ends at a Terminate
    await asyncio.wait_for(relayed.session.done, 5)
    assert relayed.ended == [False]


@pytest.mark.parametrize("relayed", [True, False], ids=["spliced", "counted"], indirect=True)
async def test_client_vanishing_mid_statement_is_abrupt(relayed: Relayed) -> None:
    """The backend runs a statement (reads nothing, stays open): its client is gone."""
    (_, client_writer), (backend_reader, _) = relayed.client, relayed.backend
    client_writer.write(QUERY)
    assert await backend_reader.readexactly(len(QUERY)) == QUERY
    client_writer.transport.abort()
    await asyncio.wait_for(relayed.session.done, 5)
    assert relayed.ended == [True]
    assert await backend_reader.read() == b""  # the engine socket is closed after


@pytest.mark.parametrize("relayed", [True], ids=["spliced"], indirect=True)
async def test_spliced_idle_backend_ending_at_eof_is_not_abrupt(
    relayed: Relayed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spliced, the client closed without a Terminate: the backend, idle, reads the end
    of its input and closes, well within the grace period: nothing to cancel."""
    monkeypatch.setattr(relay, "GRACE_SECONDS", 30.0)
    (_, client_writer), (backend_reader, backend_writer) = relayed.client, relayed.backend
    client_writer.close()
    assert await asyncio.wait_for(backend_reader.read(), 5) == b""
    backend_writer.close()
    await asyncio.wait_for(relayed.session.done, 5)
    assert relayed.ended == [False]


async def test_kernel_counters_of_a_loopback_connection() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    counters = SocketTraffic.of(receiver)
    assert counters is not None
    try:
        sender.sendall(b"x" * 1000)
        assert receiver.recv(1000, socket.MSG_WAITALL) == b"x" * 1000
        receiver.sendall(b"y" * 300)
        assert sender.recv(300, socket.MSG_WAITALL) == b"y" * 300
        for _ in range(200):
            traffic = counters.read()
            assert traffic is not None
            if traffic.bytes_out == 300:
                break
            await asyncio.sleep(0.01)
        assert traffic == (1000, 300, 1)
        receiver.close()  # the duplicate still reads, until closed
        assert counters.read() == (1000, 300, 1)
    finally:
        counters.close()
        for sock in (sender, receiver, listener):
            sock.close()
    assert counters.read() == (1000, 300, 1)  # the last counts, once closed


def test_kernel_counters_need_tcp() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert SocketTraffic.of(left) is None
    assert parse_tcp_info(b"\0" * 100) is None
