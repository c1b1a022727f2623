"""MongoProtocol cuts received bytes into whole messages: any split of the stream gives
the same messages, a bad length ends the stream, and too much queued pauses reading."""

from __future__ import annotations

import asyncio
import struct

import pytest

from heliosdb.interfaces.mongodb import connection
from heliosdb.interfaces.mongodb.connection import MongoProtocol


class Transport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def is_closing(self) -> bool:
        return False


def frame(size: int, fill: int) -> bytes:
    return struct.pack("<iiii", size, fill, 0, 2013) + bytes([fill]) * (size - 16)


def protocol() -> MongoProtocol:
    loop = asyncio.get_running_loop()
    made = MongoProtocol(asyncio.StreamReader(loop=loop), loop=loop)
    made.connection_made(Transport())  # type: ignore[arg-type]
    return made


@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 16, 17, 40, 1000])
async def test_any_split_gives_the_same_messages(chunk: int) -> None:
    frames = [frame(16, 1), frame(21, 2), frame(300, 3), frame(17, 4)]
    stream = b"".join(frames)
    made = protocol()
    for start in range(0, len(stream), chunk):
        made.data_received(stream[start : start + chunk])
    assert list(made.messages) == frames
    assert made.queued == len(stream) and not made.ended


async def test_a_waiting_loop_wakes_for_a_message_and_at_the_end() -> None:
    made = protocol()
    waiter = made.wait()
    made.data_received(frame(20, 7)[:10])
    assert not waiter.done()
    made.data_received(frame(20, 7)[10:])
    assert waiter.done() and len(made.messages) == 1
    waiter = made.wait()
    made.eof_received()
    assert waiter.done() and made.ended and made.bad is None


@pytest.mark.parametrize("length", [0, 15, -1, 48_000_001])
async def test_a_length_out_of_bounds_ends_the_stream(length: int) -> None:
    made = protocol()
    good = frame(16, 1)
    made.data_received(good + struct.pack("<i", length) + b"\x00" * 20)
    assert list(made.messages) == [good]  # what came before is still served
    assert made.ended and made.bad is not None and str(length) in made.bad
    made.data_received(frame(16, 2))
    assert len(made.messages) == 1


async def test_too_much_queued_pauses_reading_until_half_is_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "QUEUED_LIMIT_BYTES", 100)
    made = protocol()
    transport = made.transport
    for _ in range(6):
        made.data_received(frame(20, 1))  # 120 bytes queued
    assert transport.paused and transport.pauses == 1
    for _ in range(3):
        made.taken(len(made.messages.popleft()))
    assert transport.paused  # 60 bytes queued: above half the limit
    made.taken(len(made.messages.popleft()))
    assert not transport.paused and made.queued == 40
