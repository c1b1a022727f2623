"""The gRPC port's HTTP/2 front (front.py): native unary calls at their edges, and the
streams it relays to grpc.aio. Real grpcio clients, and raw sockets for bad input."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import grpc
import pytest

from heliosdb.interfaces.grpc import http2 as h2
from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import bearer, query, trailers, values

Stub = heliosdb_pb2_grpc.HeliosDBStub

RUNNING = (
    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
    "AND state IN ('active', 'idle in transaction') AND query LIKE $1"
)


async def _wait_statement_gone(stub: Stub, key: str, marker: str) -> None:
    for _ in range(300):  # until the engine has let go of it; no assumption on how fast
        response = await query(stub, key, RUNNING, [pb.Value(string_value=f"%{marker}%")])
        if values(response.rows[0]) == [0]:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the abandoned call's statement still runs on the engine")


async def test_unary_deadline_exceeded_cancels_the_statement(stub: Stub, rw_key: str) -> None:
    marker = f"deadline_{uuid.uuid4().hex}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ExecuteQuery(
            pb.QueryRequest(sql=f"SELECT pg_sleep(30), '{marker}'"),
            metadata=bearer(rw_key),
            timeout=0.5,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _wait_statement_gone(stub, rw_key, marker)


async def test_unary_cancelled_by_client_cancels_the_statement(stub: Stub, rw_key: str) -> None:
    marker = f"cancelled_{uuid.uuid4().hex}"
    call = stub.ExecuteQuery(
        pb.QueryRequest(sql=f"SELECT pg_sleep(30), '{marker}'"), metadata=bearer(rw_key)
    )
    for _ in range(100):
        response = await query(stub, rw_key, RUNNING, [pb.Value(string_value=f"%{marker}%")])
        if values(response.rows[0]) == [1]:
            break
        await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _wait_statement_gone(stub, rw_key, marker)


async def test_unary_response_larger_than_client_window(stub: Stub, rw_key: str) -> None:
    # 3 MB: many frames, more than the client's first windows, so it waits for credit.
    response = await query(
        stub, rw_key, "SELECT repeat('x', $1::int) AS big", [pb.Value(int_value=3_000_000)]
    )
    assert response.rows[0].values[0].string_value == "x" * 3_000_000


async def test_unary_request_of_many_frames(stub: Stub, rw_key: str) -> None:
    text = "y" * 2_500_000
    response = await query(stub, rw_key, "SELECT length($1::text)", [pb.Value(string_value=text)])
    assert values(response.rows[0]) == [2_500_000]


async def test_many_concurrent_calls_on_one_channel(stub: Stub, rw_key: str) -> None:
    calls = [query(stub, rw_key, "SELECT $1::int * 2", [pb.Value(int_value=i)]) for i in range(200)]
    responses = await asyncio.gather(*calls)
    assert [values(r.rows[0])[0] for r in responses] == [i * 2 for i in range(200)]


async def test_failing_and_succeeding_calls_with_one_header_block(stub: Stub, rw_key: str) -> None:
    # Calls sent with the same metadata share one call context in the front: each must
    # still end with its own status and its own error details.
    async def one(i: int) -> Any:
        sql = "SELECT 10 / $1::int" if i % 3 else "SELECT $1::int / 0"
        try:
            return values((await query(stub, rw_key, sql, [pb.Value(int_value=i + 1)])).rows[0])
        except grpc.aio.AioRpcError as exc:
            return exc.code(), trailers(exc)["heliosdb-error-code"]

    results = await asyncio.gather(*(one(i) for i in range(90)))
    for i, result in enumerate(results):
        if i % 3:
            assert result == [10 // (i + 1)]
        else:
            assert result == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")


async def test_compressed_call_relayed_to_grpc_aio(stub: Stub, rw_key: str) -> None:
    response = await stub.ExecuteQuery(
        pb.QueryRequest(sql="SELECT 'gzip' AS way"),
        metadata=bearer(rw_key),
        compression=grpc.Compression.Gzip,
    )
    assert values(response.rows[0]) == ["gzip"]


async def test_unknown_method_unimplemented(channel: grpc.aio.Channel) -> None:
    method = channel.unary_unary("/heliosdb.v1.HeliosDB/NoSuchCall", None, None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_malformed_request_message_internal(channel: grpc.aio.Channel, rw_key: str) -> None:
    method = channel.unary_unary("/heliosdb.v1.HeliosDB/ExecuteQuery", None, None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(b"\xff\xff\xff", metadata=bearer(rw_key))
    assert caught.value.code() == grpc.StatusCode.INTERNAL


async def test_errors_on_native_calls_carry_metadata_and_rich_status(
    stub: Stub, rw_key: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query(stub, rw_key, "SELECT 1/0 AS ünïcode")
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "division by zero" in (error.details() or "")
    metadata: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    assert metadata["heliosdb-error-code"] == "INVALID_ARGUMENT"
    assert isinstance(metadata["grpc-status-details-bin"], bytes)


def _raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        try:
            while chunk := sock.recv(65_536):
                received += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread: what came before the reset still counts
    return received


async def test_not_http2_closed_with_goaway(grpc_target: str, stub: Stub, rw_key: str) -> None:
    port = int(grpc_target.rsplit(":", 1)[1])
    received = await asyncio.to_thread(_raw_exchange, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    kinds = [kind for kind, *_ in h2.FrameReader(1 << 24).feed(received)]
    assert h2.GOAWAY in kinds
    assert values((await query(stub, rw_key, "SELECT 1")).rows[0]) == [1]  # still serving


async def test_protocol_error_mid_connection_goaway(
    grpc_target: str, stub: Stub, rw_key: str
) -> None:
    port = int(grpc_target.rsplit(":", 1)[1])
    bad = h2.PREFACE + h2.settings_frame({}) + h2.frame(h2.CONTINUATION, 0, 1, b"??")
    received = await asyncio.to_thread(_raw_exchange, port, bad)
    frames = h2.FrameReader(1 << 24).feed(received)
    goaways = [payload for kind, _, _, payload in frames if kind == h2.GOAWAY]
    assert goaways and int.from_bytes(goaways[0][4:8]) == h2.PROTOCOL_ERROR
    assert values((await query(stub, rw_key, "SELECT 2")).rows[0]) == [2]


async def test_stream_larger_than_windows_read_slowly(stub: Stub, rw_key: str) -> None:
    # 40 MB in 400 rows of 100 kB: far past every window, so the server waits on the
    # client's credit again and again; each row must still arrive, whole and in order.
    call = stub.ExecuteQueryStream(
        pb.QueryRequest(
            sql="SELECT g, repeat(chr(64 + g % 26), 100000) FROM generate_series(1, 400) g"
        ),
        metadata=bearer(rw_key),
    )
    seen = 0
    async for row in call:
        seen += 1
        number, text = values(row)
        assert number == seen and text == chr(64 + seen % 26) * 100_000
        if seen % 100 == 0:
            await asyncio.sleep(0.2)
    assert seen == 400


async def test_stream_deadline_exceeded_mid_way(stub: Stub, rw_key: str) -> None:
    call = stub.ExecuteQueryStream(
        pb.QueryRequest(
            sql="SELECT g, CASE WHEN g > 100 THEN pg_sleep(5) END FROM generate_series(1, 100000) g"
        ),
        metadata=bearer(rw_key),
        timeout=1.5,
    )
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            received += 1
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_endless_header_block_closed(grpc_target: str, stub: Stub, rw_key: str) -> None:
    port = int(grpc_target.rsplit(":", 1)[1])
    flood = [h2.frame(h2.HEADERS, 0, 1, b"\x00" * 16_000)]
    flood += [h2.frame(h2.CONTINUATION, 0, 1, b"\x00" * 16_000) for _ in range(8)]
    payload = h2.PREFACE + h2.settings_frame({}) + b"".join(flood)
    received = await asyncio.to_thread(_raw_exchange, port, payload)
    frames = h2.FrameReader(1 << 24).feed(received)
    goaways = [payload for kind, _, _, payload in frames if kind == h2.GOAWAY]
    assert goaways and int.from_bytes(goaways[0][4:8]) == h2.ENHANCE_YOUR_CALM
    assert values((await query(stub, rw_key, "SELECT 3")).rows[0]) == [3]


async def test_data_past_the_stream_window_closed(
    grpc_target: str, stub: Stub, rw_key: str
) -> None:
    port = int(grpc_target.rsplit(":", 1)[1])
    block = h2.encode_headers(
        [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/grpc.health.v1.Health/Watch"),
         (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    )  # fmt: skip
    frames = [h2.frame(h2.HEADERS, h2.END_HEADERS, 1, block)]
    frames += [h2.frame(h2.DATA, 0, 1, b"\x00" * 16_000) for _ in range(70)]  # 1.12 MB
    payload = h2.PREFACE + h2.settings_frame({}) + h2.window_update(0, 1 << 24) + b"".join(frames)
    received = await asyncio.to_thread(_raw_exchange, port, payload)
    found = h2.FrameReader(1 << 24).feed(received)
    goaways = [payload for kind, _, _, payload in found if kind == h2.GOAWAY]
    assert goaways and int.from_bytes(goaways[0][4:8]) == h2.FLOW_CONTROL_ERROR
    assert values((await query(stub, rw_key, "SELECT 4")).rows[0]) == [4]


def _raw_calls(port: int, payload: bytes, streams: set[int]) -> list[tuple[int, int, int, bytes]]:
    """Send ``payload`` and read frames until every stream in ``streams`` has ended."""
    reader = h2.FrameReader(1 << 24)
    frames: list[tuple[int, int, int, bytes]] = []
    open_streams = set(streams)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        while open_streams:
            chunk = sock.recv(65_536)
            assert chunk, "connection closed before every call ended"
            for kind, flags, stream_id, body in reader.feed(chunk):
                frames.append((kind, flags, stream_id, body))
                if kind in (h2.HEADERS, h2.DATA) and flags & h2.END_STREAM:
                    open_streams.discard(stream_id)
    return frames


async def test_padded_and_prioritised_frames_answered_as_plain_ones(
    grpc_target: str, rw_key: str
) -> None:
    # Stream 1 plain; stream 3 the same call with PADDED|PRIORITY HEADERS and PADDED
    # DATA: the front strips padding only from frames flagged so, and both answer alike.
    port = int(grpc_target.rsplit(":", 1)[1])
    block = h2.encode_headers(
        [(b":method", b"POST"), (b":scheme", b"http"),
         (b":path", b"/heliosdb.v1.HeliosDB/ExecuteQuery"), (b":authority", b"x"),
         (b"content-type", b"application/grpc"), (b"te", b"trailers"),
         (b"authorization", f"Bearer {rw_key}".encode())]
    )  # fmt: skip
    message = pb.QueryRequest(
        sql="SELECT $1::int8 * 2 AS twice", params=[pb.Value(int_value=21)]
    ).SerializeToString()
    body = b"\x00" + len(message).to_bytes(4) + message
    pad = 7
    padded_block = bytes([pad]) + b"\x00\x00\x00\x00\x10" + block + b"\x00" * pad
    frames = [
        h2.frame(h2.HEADERS, h2.END_HEADERS, 1, block),
        h2.frame(h2.DATA, h2.END_STREAM, 1, body),
        h2.frame(h2.HEADERS, h2.END_HEADERS | h2.PADDED | h2.PRIORITY_FLAG, 3, padded_block),
        h2.frame(h2.DATA, h2.END_STREAM | h2.PADDED, 3, bytes([pad]) + body + b"\x00" * pad),
    ]
    payload = h2.PREFACE + h2.settings_frame({}) + b"".join(frames)
    received = await asyncio.to_thread(_raw_calls, port, payload, {1, 3})
    data = {sid: body for kind, _, sid, body in received if kind == h2.DATA and sid in (1, 3)}
    trailers = {
        sid: block
        for kind, flags, sid, block in received
        if kind == h2.HEADERS and flags & h2.END_STREAM and sid in (1, 3)
    }
    assert set(data) == {1, 3} and set(trailers) == {1, 3}
    for sid in (1, 3):
        assert dict(h2.HeaderDecoder(65_536).decode(trailers[sid]))[b"grpc-status"] == b"0"
        reply = pb.QueryResponse.FromString(data[sid][5:])
        assert values(reply.rows[0]) == [42]
        assert [c.name for c in reply.columns] == ["twice"]
