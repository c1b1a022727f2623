"""Request bytes and streams a gRPC connection may make the node hold.

The front credits the flow-control windows as request bytes arrive, so it is the node's
own limit, not HTTP/2's, that bounds what one connection's unfinished calls hold: each
request message at most ``grpc.max_message_bytes``, and all of a connection's together
no more. Before, a client opening many streams, each with a message just under the limit
and never ending it, made the node hold all of them (40 streams of 10 MB grew its RSS by
360 MB). Open streams are bounded too: at most ``MAX_STREAMS`` (advertised in SETTINGS),
where before each new stream, a few bytes from a client whose headers HPACK indexes,
held about 670 bytes of the node's memory, without bound. The node here allows messages
of 1 MB.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from heliosdb.interfaces.grpc import http2 as h2
from heliosdb.interfaces.grpc.connection import MAX_STREAMS
from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import bearer
from tests.nodeproc import NodeProcess

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def small(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with a small message limit, on the session's engine."""
    data: Path = tmp_path_factory.mktemp("grpc-small") / "data"
    yield from node.running_beside(data, {"HELIOSDB_GRPC__MAX_MESSAGE_BYTES": str(LIMIT)})


def _call_headers(key: str) -> bytes:
    return h2.encode_headers(
        [(b":method", b"POST"), (b":scheme", b"http"),
         (b":path", b"/heliosdb.v1.HeliosDB/ExecuteQuery"), (b":authority", b"x"),
         (b"content-type", b"application/grpc"), (b"te", b"trailers"),
         (b"authorization", f"Bearer {key}".encode())]
    )  # fmt: skip


def _exchange(port: int, payload: bytes) -> list[tuple[int, int, int, bytes]]:
    """Send ``payload`` then a PING; the frames the node sent until its ACK (by then it
    has read everything before it)."""
    reader = h2.FrameReader(1 << 24)
    frames: list[tuple[int, int, int, bytes]] = []
    ping = h2.frame(h2.PING, 0, 0, b"12345678")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(h2.PREFACE + h2.settings_frame({}) + payload + ping)
        while True:
            chunk = sock.recv(65_536)
            assert chunk, "the node closed the connection"
            for frame in reader.feed(chunk):
                frames.append(frame)
                if frame[0] == h2.PING and frame[1] & h2.ACK:
                    return frames


def _statuses(port: int, key: str, streams: int, each: int) -> dict[int, bytes]:
    """Open ``streams`` ExecuteQuery calls on one connection, send ``each`` bytes of a
    request message declared a little under the limit on each, never end them, and
    return the grpc-status of every call the node answered meanwhile."""
    block = _call_headers(key)
    prefix = b"\x00" + (LIMIT - 1000).to_bytes(4, "big")
    frames = []
    for n in range(streams):
        stream_id = 1 + 2 * n
        frames.append(h2.frame(h2.HEADERS, h2.END_HEADERS, stream_id, block))
        body = prefix + b"\x00" * (each - len(prefix))
        for start in range(0, len(body), 16_000):
            frames.append(h2.frame(h2.DATA, 0, stream_id, body[start : start + 16_000]))
    decoder = h2.HeaderDecoder(1 << 16)
    statuses: dict[int, bytes] = {}
    for kind, _, stream_id, payload in _exchange(port, b"".join(frames)):
        if kind == h2.HEADERS:
            fields = dict(decoder.decode(payload))
            if b"grpc-status" in fields:
                statuses[stream_id] = fields[b"grpc-status"]
    return statuses


def test_unfinished_calls_of_one_connection_hold_at_most_the_message_limit(
    small: NodeProcess,
) -> None:
    assert small.admin_key is not None
    statuses = _statuses(small.ports["grpc"], small.admin_key, streams=6, each=400_000)
    # two calls' 800 kB fit; every later one would pass 1 MB together and is refused
    exhausted = str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]).encode()
    assert statuses == {5: exhausted, 7: exhausted, 9: exhausted, 11: exhausted}


def test_calls_of_one_connection_within_the_limit_are_all_taken(small: NodeProcess) -> None:
    assert small.admin_key is not None
    assert _statuses(small.ports["grpc"], small.admin_key, streams=2, each=400_000) == {}


async def test_the_node_goes_on_after_the_refusals(small: NodeProcess) -> None:
    assert small.admin_key is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small.ports['grpc']}") as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        request = pb.QueryRequest(sql="SELECT 1")
        response = await stub.ExecuteQuery(request, metadata=bearer(small.admin_key))
        assert len(response.rows) == 1


def test_streams_past_the_advertised_limit_are_refused(small: NodeProcess) -> None:
    assert small.admin_key is not None
    block = _call_headers(small.admin_key)
    opened = [
        h2.frame(h2.HEADERS, h2.END_HEADERS, 1 + 2 * n, block) for n in range(MAX_STREAMS + 2)
    ]
    frames = _exchange(small.ports["grpc"], b"".join(opened))
    settings = h2.parse_settings(next(p for k, f, _, p in frames if k == h2.SETTINGS and not f))
    assert settings[h2.MAX_CONCURRENT_STREAMS] == MAX_STREAMS
    refused = {i: int.from_bytes(p) for k, _, i, p in frames if k == h2.RST_STREAM}
    last = 1 + 2 * MAX_STREAMS
    assert refused == {last: h2.REFUSED_STREAM, last + 2: h2.REFUSED_STREAM}
