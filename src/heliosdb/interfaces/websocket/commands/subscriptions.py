"""subscribe and unsubscribe."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from heliosdb.errors import ErrorCode, HeliosError, invalid, not_found

if TYPE_CHECKING:
    from heliosdb.interfaces.websocket.codec import Request
    from heliosdb.interfaces.websocket.connection import Connection


async def subscribe(conn: Connection, request: Request) -> dict[str, Any]:
    data = request.data
    subscription_id = request.id or f"sub-{uuid.uuid4().hex[:12]}"
    if subscription_id in conn.subscriptions:
        raise HeliosError(
            ErrorCode.ALREADY_EXISTS, f"subscription {subscription_id!r} already exists"
        )
    if len(conn.subscriptions) >= conn.settings.max_subscriptions:
        raise HeliosError(
            ErrorCode.RESOURCE_EXHAUSTED,
            f"this connection already holds {conn.settings.max_subscriptions} subscriptions",
        )
    table = data.get("table")
    if not isinstance(table, str) or not table:
        raise invalid("data.table must name a table, such as 'orders' or 'sales.orders'")
    filter_text = data.get("filter")
    if filter_text is not None and not isinstance(filter_text, str):
        raise invalid("filter must be a string such as \"status = 'active'\"")
    from_position = data.get("from_position")
    if from_position is not None and (
        not isinstance(from_position, int) or isinstance(from_position, bool) or from_position < 0
    ):
        raise invalid("from_position must be a non-negative integer")
    assert conn.principal is not None
    sub = await conn.services.changes.subscribe(
        conn.principal,
        conn,
        subscription_id=subscription_id,
        table=table,
        events=data.get("events"),
        filter_text=filter_text,
        from_position=from_position,
    )
    conn.subscriptions[subscription_id] = sub
    return {
        "subscription_id": subscription_id,
        "table": f"{sub.schema}.{sub.table}",
        "events": sorted(sub.events),
        "filter": filter_text,
        "position": sub.cursor,
    }


async def unsubscribe(conn: Connection, request: Request) -> dict[str, Any]:
    subscription_id = request.data.get("subscription_id")
    if not isinstance(subscription_id, str):
        raise invalid("data.subscription_id must be the id of a subscription")
    sub = conn.subscriptions.pop(subscription_id, None)
    if sub is None:
        raise not_found(f"no subscription {subscription_id!r} on this connection")
    conn.services.changes.unsubscribe(sub)
    return {"subscription_id": subscription_id, "unsubscribed": True}
