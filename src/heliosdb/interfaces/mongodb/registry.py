"""The command table: name, whether it needs an authenticated principal, whether it
writes, one line of help. Command modules register themselves with ``@command``."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heliosdb.interfaces.mongodb.connection import Request, Session

Handler = Callable[["Session", "Request"], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Handler
    auth: bool
    writes: bool
    help: str


COMMANDS: dict[str, Command] = {}
_FAMILIES = (
    "handshake",
    "auth",
    "admin",
    "crud",
    "aggregate",
    "indexes",
    "sessions",
    "operations",
)


def command(
    name: str, *aliases: str, auth: bool = True, writes: bool = False, help: str = ""
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        entry = Command(name, handler, auth, writes, help or (handler.__doc__ or "").strip())
        for each in (name, *aliases):
            COMMANDS[each] = entry
        return handler

    return register


def load() -> dict[str, Command]:
    for family in _FAMILIES:
        importlib.import_module(f"heliosdb.interfaces.mongodb.commands.{family}")
    return COMMANDS


def lookup(name: str) -> Command | None:
    if not COMMANDS:
        load()
    found = COMMANDS.get(name)
    if found is None and name.lower() in ("ismaster", "buildinfo"):
        found = COMMANDS.get(name.lower())
    return found
