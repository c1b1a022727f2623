"""One module per command family; importing this package registers every command."""

from heliosdb.interfaces.redis.commands import (
    hashes,
    keys,
    lists,
    pubsub,
    scripting,
    server,
    sets,
    strings,
    transactions,
    zsets,
)

__all__ = [
    "hashes", "keys", "lists", "pubsub", "scripting", "server", "sets", "strings",
    "transactions", "zsets",
]  # fmt: skip
