"""The WebSocket envelope: parsing requests, encoding answers and events."""

from __future__ import annotations

import json

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from heliosdb.errors import HeliosError
from heliosdb.interfaces.websocket import codec


def test_parse_request() -> None:
    request = codec.parse_request('{"type": "request", "id": "a", "action": "ping"}')
    assert request == codec.Request("a", "ping", {})
    assert codec.parse_request('{"action": "ping", "id": 5, "data": null}').id == "5"


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[]",
        "{}",
        '{"action": ""}',
        '{"action": "x", "data": 1}',
        '{"type": "event", "action": "x"}',
        '{"action": "x", "id": {}}',
    ],
)
def test_parse_request_refuses(text: str) -> None:
    with pytest.raises(HeliosError):
        codec.parse_request(text)


def test_encode_event_wraps_the_shared_payload() -> None:
    message = json.loads(codec.encode_event("s-1", b'{"row": {"id": 1}}', (True, False)))
    assert message == {
        "type": "event",
        "subscription_id": "s-1",
        "data": {"row": {"id": 1}},
        "filter_match": {"row": True, "old_row": False},
    }
    assert "filter_match" not in json.loads(codec.encode_event("s", b"{}", None))
    assert json.loads(codec.encode_event('"\\', b"{}", None))["subscription_id"] == '"\\'


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_is_what_websockets_serializes(size: int) -> None:
    data = b"x" * size
    expected = Frame(Opcode.TEXT, data).serialize(mask=False)
    assert codec.text_frame(data) == expected
    # and websockets' own reader takes it back as one whole text frame
    reader = StreamReader()
    reader.feed_data(codec.text_frame(data))
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == data


def test_encode_responses() -> None:
    ok = json.loads(codec.encode_response("a", "ping", {"pong": True}))
    assert ok == {
        "type": "response",
        "id": "a",
        "action": "ping",
        "success": True,
        "data": {"pong": True},
    }
    failed = json.loads(codec.encode_failure(None, None, {"code": "X", "message": "m"}))
    assert failed["success"] is False and failed["error"]["code"] == "X"
