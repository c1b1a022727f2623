"""The command table: name, arity, flags, key positions and the handler, declared once.

Arity follows Redis: ``n > 0`` exactly n words including the name, ``n < 0`` at least -n.
Flags:
    write     changes data: refused for read-only principals, runs in a write transaction
    read      reads data: runs on the principal's engine connection
    noauth    allowed before authentication (AUTH, HELLO, QUIT, RESET)
    pubsub    allowed in RESP2 subscriber mode
    noqueue   not queued inside MULTI (EXEC, DISCARD, MULTI, WATCH, QUIT, RESET)
    blocking  may wait for another client (BLPOP & co.)
    batched   a write the service batches itself (INCR & co.), not run in a group transaction
    admin     changes the server or other clients
    fast      O(1)-ish (COMMAND INFO shows it)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from heliosdb.engine import Access
from heliosdb.interfaces.redis.errors import wrong_arity
from heliosdb.services.keyvalue import KeyValue, Tx

if TYPE_CHECKING:
    from heliosdb.interfaces.redis.connection import Client, Server, Session

Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arity: int
    flags: frozenset[str]
    handler: Handler
    first_key: int = 0
    last_key: int = 0
    step: int = 0
    help: str = ""

    @property
    def writes(self) -> bool:
        return "write" in self.flags

    def arity_ok(self, argc: int) -> bool:
        return argc == self.arity if self.arity > 0 else argc >= -self.arity

    def check_arity(self, argc: int) -> None:
        if not self.arity_ok(argc):
            raise wrong_arity(self.name)


@dataclass(slots=True)
class Call:
    """One command being run: its words, its client, and (lazily) its engine transaction."""

    command: Command
    args: list[bytes]
    client: Client
    server: Server
    stack: AsyncExitStack | None = None
    shared_tx: Tx | None = None  # set inside EXEC: every command shares one transaction
    session: Session | None = None
    _tx: Tx | None = field(default=None)

    @property
    def kv(self) -> KeyValue:
        return self.server.kv

    @property
    def in_exec(self) -> bool:
        return self.shared_tx is not None

    @property
    def access(self) -> Access:
        principal = self.client.principal
        return principal.access if principal is not None else Access.READ_WRITE

    async def tx(self) -> Tx:
        if self.shared_tx is not None:
            self.shared_tx.db = self.client.db
            return self.shared_tx
        if self._tx is None:
            assert self.stack is not None
            access = Access.READ_WRITE if self.command.writes else self.access
            self._tx = await self.stack.enter_async_context(
                self.kv.transaction(access, self.client.db, write=self.command.writes)
            )
        return self._tx


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    arity: int,
    flags: str = "",
    keys: tuple[int, int, int] = (0, 0, 0),
    help: str = "",
) -> Callable[[Handler], Handler]:
    """Register a handler; ``keys`` is (first, last, step) for COMMAND INFO and WATCH."""

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, arity, frozenset(flags.split()), handler, *keys, help=help)
        return handler

    return register


def lookup(name: bytes) -> Command | None:
    try:
        return COMMANDS.get(name.decode("ascii").lower())
    except UnicodeDecodeError:
        return None
