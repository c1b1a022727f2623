"""The WebSocket envelope: parsing requests, encoding answers and events."""

from __future__ import annotations

import json

import pytest

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
    message = json.loads(codec.encode_event("s-1", b'{"row": {"id": 1}}', {"row": True}))
    assert message == {
        "type": "event",
        "subscription_id": "s-1",
        "data": {"row": {"id": 1}},
        "filter_match": {"row": True},
    }
    assert "filter_match" not in json.loads(codec.encode_event("s", b"{}"))


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
