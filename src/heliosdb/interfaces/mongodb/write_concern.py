"""The write concerns a standalone accepts.

HeliosDB answers as one ``mongod`` that is no replica set member (see docs/mongodb.md,
Transactions): ``w: 0``, ``w: 1`` and ``w: "majority"`` (the one member is a majority)
are met by the write itself; a number above one or a tag cannot be, and a standalone
refuses the command before it writes anything, with code 2 (BadValue) and mongod's own
message, rather than acknowledge a replication that never happens.
"""

from __future__ import annotations

from typing import Any

from heliosdb.interfaces.mongodb.errors import CommandError

# commands that take a writeConcern besides those the command table marks as writes
WITH_WRITE_CONCERN = frozenset({"aggregate", "commitTransaction", "abortTransaction"})


def refusal(body: dict[str, Any]) -> CommandError | None:
    """The error a standalone answers to ``body``'s ``writeConcern``, None if it meets it."""
    concern = body.get("writeConcern")
    if type(concern) is not dict:
        return None
    w = concern.get("w")
    if isinstance(w, (int, float)) and not isinstance(w, bool) and w > 1:
        return CommandError(2, "cannot use 'w' > 1 when a host is not replicated")
    if isinstance(w, str) and w != "majority":
        return CommandError(
            2,
            f"cannot use non-majority 'w' mode \"{w}\" when a host is not a member of a "
            "replica set",
        )
    return None
