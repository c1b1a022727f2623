"""POST /query by its two doors: the listener's lane and pure ASGI give the same answers.

A plain HTTP/1.1 request with a Content-Length takes the lane (interfaces/http/server.py);
a chunked body, HTTP/1.0, ``Expect: 100-continue`` or a request pipelined behind an
unfinished one goes through ASGI. Each case here is sent both ways and must get the same
status, error body and headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from tests.nodeproc import NodeProcess

CASES = [
    pytest.param(b'{"sql": "SELECT 1 AS one"}', 200, None, id="ok"),
    pytest.param(b"{", 400, "INVALID_ARGUMENT", id="malformed-json"),
    pytest.param(b"[1, 2]", 400, "INVALID_ARGUMENT", id="not-an-object"),
    pytest.param(b"", 400, "INVALID_ARGUMENT", id="empty"),
    pytest.param(b"\xff\xfe", 400, "INVALID_ARGUMENT", id="not-utf8"),
    pytest.param(b'{"sql": 1}', 400, "INVALID_ARGUMENT", id="sql-not-a-string"),
    pytest.param(b'{"sql": "SELECT $1::int", "params": 5}', 400, "INVALID_ARGUMENT", id="params"),
    pytest.param(b'{"sql": "SELECT 1", "row_format": "x"}', 400, "INVALID_ARGUMENT", id="format"),
    pytest.param(b'{"sql": "SELEC 1"}', 400, "INVALID_ARGUMENT", id="syntax-error"),
    pytest.param(b'{"sql": "SELECT * FROM no_such_table_x"}', 404, "NOT_FOUND", id="no-table"),
]


async def _one_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body  # an iterator body: httpx sends it chunked, which the lane leaves to ASGI


def _comparable(response: httpx.Response) -> tuple[int, object, dict[str, str]]:
    body = response.json()
    if response.status_code == 200:
        body["metrics"]["execution_time_ms"] = 0
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
    return response.status_code, body, headers


@pytest.mark.parametrize(("body", "status", "code"), CASES)
async def test_query_lane_and_asgi_answer_alike(
    api: httpx.AsyncClient, body: bytes, status: int, code: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    lane = await api.post("/query", content=body, headers=headers)
    asgi = await api.post("/query", content=_one_chunk(body), headers=headers)
    assert "transfer-encoding" not in lane.request.headers
    assert asgi.request.headers["transfer-encoding"] == "chunked"
    assert lane.status_code == status, lane.text
    if code is not None:
        assert lane.json()["error"]["code"] == code
    assert _comparable(lane) == _comparable(asgi)


@pytest.mark.parametrize(
    "auth",
    [{}, {"Authorization": "Bearer hdb_sk_nope"}, {"X-API-Key": "garbage"}],
    ids=["none", "bad-bearer", "bad-x-api-key"],
)
async def test_query_lane_and_asgi_refuse_credentials_alike(
    node: NodeProcess, auth: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=node.api, headers=auth) as client:
        body = b'{"sql": "SELECT 1"}'
        lane = await client.post("/query", content=body)
        asgi = await client.post("/query", content=_one_chunk(body))
    assert lane.status_code == 401
    assert lane.headers["www-authenticate"] == "Bearer"
    assert _comparable(lane) == _comparable(asgi)


async def _raw(node: NodeProcess, data: bytes, *, until_closed: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.ports["http"])
    try:
        writer.write(data)
        await writer.drain()
        if until_closed:
            return await asyncio.wait_for(reader.read(-1), 30)
        received = b""
        while received.count(b"HTTP/1.1 ") < data.count(b"POST ") or not _complete(received):
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            assert chunk, received
            received += chunk
        return received
    finally:
        writer.close()


def _complete(received: bytes) -> bool:
    """Whether the last response in ``received`` has all of its Content-Length body."""
    head, sep, body = received.rpartition(b"\r\n\r\n")
    if not sep:
        return False
    last_head = head.rsplit(b"HTTP/1.1 ", 1)[-1]
    for line in last_head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def _request(key: str, body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    lines = [
        b"POST /api/v1/query HTTP/" + version,
        b"Host: localhost",
        b"Authorization: Bearer " + key.encode(),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _bodies(received: bytes) -> list[object]:
    """The JSON bodies of consecutive responses, in order."""
    bodies = []
    rest = received
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        bodies.append(orjson.loads(rest[:length]))
        rest = rest[length:]
    return bodies


async def test_query_pipelined_requests_are_answered_in_order(
    node: NodeProcess, rw_key: str
) -> None:
    slow = _request(rw_key, b'{"sql": "SELECT 1 FROM pg_sleep(0.3)"}')
    fast = [_request(rw_key, b'{"sql": "SELECT %d"}' % n) for n in range(2, 5)]
    received = await _raw(node, slow + b"".join(fast))
    assert [body["rows"] for body in _bodies(received)] == [  # type: ignore[index]
        [[1]],
        [[2]],
        [[3]],
        [[4]],
    ]


async def test_query_connection_close_is_honoured(node: NodeProcess, rw_key: str) -> None:
    received = await _raw(
        node, _request(rw_key, b'{"sql": "SELECT 1"}', b"Connection: close"), until_closed=True
    )
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close" in head.lower()
    assert orjson.loads(body)["rows"] == [[1]]


async def test_query_http10_and_expect_continue_are_answered(
    node: NodeProcess, rw_key: str
) -> None:
    old = await _raw(
        node, _request(rw_key, b'{"sql": "SELECT 10"}', version=b"1.0"), until_closed=True
    )
    assert old.startswith(b"HTTP/1.1 200 ")
    assert orjson.loads(old.partition(b"\r\n\r\n")[2])["rows"] == [[10]]
    reader, writer = await asyncio.open_connection("127.0.0.1", node.ports["http"])
    try:
        body = b'{"sql": "SELECT 11"}'
        request = _request(rw_key, body, b"Expect: 100-continue")
        writer.write(request[: -len(body)])
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def test_query_lane_counts_in_metrics(node: NodeProcess, api: httpx.AsyncClient) -> None:
    def count() -> float:
        metrics = httpx.get(f"{node.api}/metrics").text
        line = 'heliosdb_requests_total{interface="http",route="/query",status="200"}'
        return sum(float(m.split()[-1]) for m in metrics.splitlines() if m.startswith(line))

    before = count()
    for _ in range(3):
        assert (await api.post("/query", json={"sql": "SELECT 1"})).status_code == 200
    assert count() == before + 3


async def test_query_expired_key_is_refused_though_just_used(
    node: NodeProcess, admin_api: httpx.AsyncClient
) -> None:
    """Verified keys are remembered for a moment (auth.py), never past their expiry."""
    # Long enough for its first use to arrive in time on a loaded machine (2 s was not).
    created = await admin_api.post("/keys", json={"name": "brief", "expires_in_seconds": 4})
    assert created.status_code in (200, 201), created.text
    headers = {"Authorization": f"Bearer {created.json()['key']}"}
    async with httpx.AsyncClient(base_url=node.api, headers=headers) as client:
        assert (await client.post("/query", json={"sql": "SELECT 1"})).status_code == 200
        deadline = asyncio.get_running_loop().time() + 30
        while (await client.post("/query", json={"sql": "SELECT 1"})).status_code == 200:
            assert asyncio.get_running_loop().time() < deadline, "the key never expired"
            await asyncio.sleep(0.1)
        refused = await client.post("/query", json={"sql": "SELECT 1"})
    assert refused.status_code == 401
