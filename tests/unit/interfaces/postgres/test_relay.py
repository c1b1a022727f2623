"""Session relay: which chunks count as the client's goodbye (Terminate last)."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest

from heliosdb.interfaces.postgres.codec import TERMINATE
from heliosdb.interfaces.postgres.relay import _ClientSide


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _side() -> tuple[Any, bytearray]:
    written = bytearray()
    session = SimpleNamespace(
        bytes_in=0, round_trips=0, awaiting=False, said_goodbye=False,
        server=SimpleNamespace(write=written.extend),
    )  # fmt: skip
    return _ClientSide(session), written  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "chunk",
    [
        TERMINATE,
        _msg(b"Q", b"SELECT 1\0") + TERMINATE,
        _msg(b"S") + TERMINATE,
        _msg(b"S"),  # ends in 4, as Terminate does
        _msg(b"Q", b"SELECT 1\0"),
        _msg(b"d", b"X\0\0\0"),  # ends in Terminate's first four bytes, then 0
        _msg(b"d", b"\0X\0\0\0\x04"),  # a row that ends with Terminate's bytes
        b"\x04",
    ],
)
def test_goodbye_is_a_chunk_ending_with_terminate(chunk: bytes) -> None:
    side, written = _side()
    side.data_received(chunk)
    assert side.session.said_goodbye is chunk.endswith(TERMINATE)
    assert bytes(written) == chunk and side.session.bytes_in == len(chunk)
