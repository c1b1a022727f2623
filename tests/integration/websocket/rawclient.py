"""A WebSocket client that stops reading when told: websockets' sans-IO protocol on a
plain socket whose receive buffer is kept small, so a test can play a slow consumer."""

from __future__ import annotations

import json
import socket
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri


class RawClient:
    def __init__(self, url: str) -> None:
        uri = parse_uri(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((uri.host, uri.port))
        self.sock.settimeout(60)
        self.protocol = ClientProtocol(
            uri, subprotocols=[Subprotocol("heliosdb.v1")], max_size=None
        )
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.pending: list[Any] = []
        while not any(isinstance(e, Response) for e in self.pending):
            self._read()
        self.pending = [e for e in self.pending if not isinstance(e, Response)]

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.protocol.receive_eof()
        else:
            self.protocol.receive_data(data)
        self.pending.extend(self.protocol.events_received())
        self._flush()  # pongs, close frames

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def receive(self) -> dict[str, Any]:
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    message: dict[str, Any] = json.loads(bytes(event.data))
                    return message
                if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    raise ConnectionError("the server closed the connection")
            self._read()

    def skip_events(self) -> tuple[int, dict[str, Any]]:
        """Read past the events waiting here: (how many there were, the first message
        that is not one)."""
        seen = 0
        while (message := self.receive())["type"] == "event":
            seen += 1
        return seen, message

    def close(self) -> None:
        self.sock.close()
