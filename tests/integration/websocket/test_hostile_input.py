"""Messages sent to a connection busy with a request: how many the node holds.

A connection handles its requests in order; what arrives meanwhile waits in a queue of
frames, past which the node stops reading the socket. That queue holds about 16 MiB of
the largest messages (``websocket.max_message_bytes``, 1 MiB by default). Before, it held
64 of them: ten connections each running a slow query and sending 1 MB messages grew
the node's RSS by 605 MB.
"""

from __future__ import annotations

import asyncio
import select

from tests.integration.websocket.rawclient import RawClient
from tests.integration.websocket.wsclient import connect, request

MESSAGE = 1_000_000


def _sent_while_busy(url: str, key: str) -> int:
    """Bytes of 1 MB messages the node takes from a connection running pg_sleep, sent
    until its socket stays full for a second (the node has stopped reading)."""
    client = RawClient(url)
    try:
        client.send(
            {"type": "request", "id": "a", "action": "authenticate", "data": {"token": key}}
        )
        assert client.receive()["success"] is True
        client.send(
            {
                "type": "request",
                "id": "q",
                "action": "query",
                "data": {"sql": "SELECT pg_sleep(10)"},
            }
        )
        client.protocol.send_text(b'"' + b"x" * (MESSAGE - 2) + b'"')
        frame = b"".join(client.protocol.data_to_send())
        client.sock.setblocking(False)
        sent = 0
        while sent < 100 * MESSAGE:
            _, writable, _ = select.select([], [client.sock], [], 1.0)
            if not writable:
                return sent
            view, done = memoryview(frame), 0
            while done < len(frame):
                try:
                    done += client.sock.send(view[done:])
                except BlockingIOError:
                    if not select.select([], [client.sock], [], 1.0)[1]:
                        return sent + done
            sent += done
        return sent
    finally:
        client.close()


async def test_a_busy_connection_stops_being_read(ws_url: str, rw_key: str) -> None:
    sent = await asyncio.to_thread(_sent_while_busy, ws_url, rw_key)
    # 16 MiB queued, plus what the socket buffers on both sides hold
    assert sent < 40 * MESSAGE
    async with connect(ws_url, rw_key) as other:  # the node answers others meanwhile
        answer = await request(other, "query", {"sql": "SELECT 1 AS n"})
        assert answer["data"]["rows"] == [[1]]
