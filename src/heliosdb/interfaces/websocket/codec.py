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


def encode_event(subscription_id: str, payload: bytes, match: Any = None) -> bytes:
    """An event around its pre-encoded ``data`` (encoded once for all subscribers).

    UTF-8 bytes, sent as a text frame without decoding them again."""
    head = b'{"type":"event","subscription_id":' + orjson.dumps(subscription_id)
    tail = b',"filter_match":' + orjson.dumps(match) if match is not None else b""
    return head + b',"data":' + payload + tail + b"}"


def encode_error(subscription_id: str | None, error: dict[str, Any]) -> str:
    return orjson.dumps(
        {"type": "error", "subscription_id": subscription_id, "error": error}
    ).decode()
