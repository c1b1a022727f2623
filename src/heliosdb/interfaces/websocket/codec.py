"""The spec's JSON envelope, without I/O.

request   {"type": "request", "id": "sub-1", "action": "subscribe", "data": {...}}
response  {"type": "response", "id": "sub-1", "action": "subscribe", "success": true,
           "data": {...}}  or  "success": false, "error": {"code", "message", ...}
event     {"type": "event", "subscription_id": "sub-1", "data": {event_type, schema,
           table, row, old_row, timestamp, transaction_id, position}}
error     {"type": "error", "subscription_id": "sub-1", "error": {...}}
          (a subscription, or the connection, ended on the server's side)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from heliosdb.engine.codecs import json_default
from heliosdb.errors import invalid

MAX_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Request:
    id: str | None
    action: str
    data: dict[str, Any] = field(default_factory=dict)


def parse_request(text: str | bytes) -> Request:
    """One client message; INVALID_ARGUMENT (with whatever id could be read) otherwise."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise invalid("the message is not valid JSON") from None
    if not isinstance(message, dict):
        raise invalid("a message is a JSON object with type, id, action and data")
    request_id = message.get("id")
    if request_id is not None and not isinstance(request_id, str | int):
        raise invalid("id must be a string")
    request_id = None if request_id is None else str(request_id)[:MAX_ID_LENGTH]
    kind = message.get("type", "request")
    if kind != "request":
        raise invalid("clients send messages of type 'request'", id=request_id)
    action = message.get("action")
    if not isinstance(action, str) or not action:
        raise invalid("action must be a non-empty string", id=request_id)
    data = message.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise invalid("data must be a JSON object", id=request_id)
    return Request(request_id, action, data)


def encode_response(request_id: str | None, action: str | None, data: Any) -> str:
    return orjson.dumps(
        {"type": "response", "id": request_id, "action": action, "success": True, "data": data},
        default=json_default,
    ).decode()


def encode_failure(request_id: str | None, action: str | None, error: dict[str, Any]) -> str:
    return orjson.dumps(
        {"type": "response", "id": request_id, "action": action, "success": False, "error": error},
        default=json_default,
    ).decode()


_MATCH_TAILS = {
    None: b"}",
    (True, True): b',"filter_match":{"row":true,"old_row":true}}',
    (True, False): b',"filter_match":{"row":true,"old_row":false}}',
    (False, True): b',"filter_match":{"row":false,"old_row":true}}',
    (False, False): b',"filter_match":{"row":false,"old_row":false}}',
}


def encode_event(subscription_id: str, payload: bytes, match: tuple[bool, bool] | None) -> bytes:
    """An event around its pre-encoded ``data`` (encoded once for all subscribers).

    ``match`` (filtered UPDATEs): whether the filter matched the new and the old row."""
    return b"".join(
        (
            b'{"type":"event","subscription_id":',
            orjson.dumps(subscription_id),
            b',"data":',
            payload,
            _MATCH_TAILS[match],
        )
    )


def text_frame(data: bytes) -> bytes:
    """A whole unmasked server-to-client text frame (RFC 6455 section 5.2): what the
    ``websockets`` protocol would serialize, built once per event and subscription
    shape and written as is to every subscriber's transport."""
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + data
    return b"\x81\x7f" + size.to_bytes(8, "big") + data


def encode_error(subscription_id: str | None, error: dict[str, Any]) -> str:
    return orjson.dumps(
        {"type": "error", "subscription_id": subscription_id, "error": error}
    ).decode()
