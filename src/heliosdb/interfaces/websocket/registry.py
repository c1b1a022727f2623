"""The action table: name -> handler, whether it needs an authenticated connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heliosdb.interfaces.websocket.commands import query, session, subscriptions

if TYPE_CHECKING:
    from heliosdb.interfaces.websocket.codec import Request
    from heliosdb.interfaces.websocket.connection import Connection

Handler = Callable[["Connection", "Request"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Action:
    handler: Handler
    needs_auth: bool
    help: str


ACTIONS: dict[str, Action] = {
    "authenticate": Action(session.authenticate, False, "present an API key (again to refresh)"),
    "ping": Action(session.ping, False, "keep-alive; answers pong"),
    "subscribe": Action(subscriptions.subscribe, True, "receive a table's committed changes"),
    "unsubscribe": Action(subscriptions.unsubscribe, True, "stop a subscription"),
    "query": Action(query.query, True, "run one SQL statement with $1..$n params"),
}
