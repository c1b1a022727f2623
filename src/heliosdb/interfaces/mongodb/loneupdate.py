"""The lone update: an ``update_one`` answered from the socket's read callback.

An ``update`` of one statement with a top-level ``$set``/``$inc`` (``update_one`` as
pymongo, the Node.js driver and mongosh send it outside a transaction) that arrives
alone while the connection is idle is started from MongoProtocol.data_received on the
documents service's pipelined engine connection (services/documents/updatelane.py),
and its reply, always of the shape

    {n: <int32>, nModified: <int32>, ok: 1.0}

is framed and written from the engine connection's read callback: no task, no
coroutine, no command table. Byte for byte it is what ``commands/crud.update`` answers
(tests/integration/mongodb/test_update_lane.py compares the two).

Only an uncompressed OP_MSG of flags 0 (so no ``moreToCome``, no checksum) with a body
section and at most one ``updates`` document sequence comes here, holding exactly one
statement of ``q``, ``u``, ``upsert`` (a bool) and ``multi: false``, on a body of the
keys in ``UPDATE_KEYS`` (no ``txnNumber``: a transaction's statement or a retryable
write goes through sessions; no ``let``, ``bypassDocumentValidation``, ``comment``),
from a read-write principal. Anything else, and whatever the documents service does not
start, goes on to hotpath.take_lone (the lone find) and then the connection's loop; an
update the service gives back (nothing written: an engine error, a type the engine
function leaves, an upsert that matched nothing) is handed to the loop, which runs it
through the command table and reports what it finds.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from heliosdb.interfaces.mongodb import errors, hotpath, write_concern
from heliosdb.services.documents import bsonform
from heliosdb.services.documents.updatelane import Outcome

if TYPE_CHECKING:
    from heliosdb.interfaces.mongodb.connection import MongoProtocol, Session

UPDATE_KEYS = frozenset({"update", "updates", "ordered", "lsid", "$db", "writeConcern"})
STATEMENT_KEYS = frozenset({"q", "u", "upsert", "multi"})
_UPDATE_FIRST = b"\x02update\x00"  # the body's first element: update: <string>
_SEQUENCE = b"\x01"  # section kind 1
_UPDATES = b"updates\x00"
_INT32 = struct.Struct("<i")
# {n: int32, nModified: int32, ok: 1.0}: the document's length, then its elements
_COUNTS = struct.Struct("<i3si11si")
_OK = b"\x01ok\x00" + struct.pack("<d", 1.0) + b"\x00"
_REPLY_SIZE = _COUNTS.size + len(_OK)


def take_lone(session: Session, protocol: MongoProtocol, data: bytes) -> bool:
    """MongoProtocol's ``lone``: start answering the whole message ``data`` from the
    read callback, an update here, a find in hotpath.take_lone; False: the connection's
    loop takes it as usual."""
    if data[25:33] == _UPDATE_FIRST:
        return _take_update(session, protocol, data)
    return hotpath.take_lone(session, protocol, data)


def _statement(data: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The body and the one update statement of an update message the lane takes."""
    (size,) = _INT32.unpack_from(data, 21)
    end = 21 + size
    body = bsonform.decode(data[21:end])  # as codec.parse_frame decodes it
    if end == len(data):
        statements = body.get("updates")
        if type(statements) is not list or len(statements) != 1:
            return None
        statement = statements[0]
    else:
        # one kind-1 section "updates" of one document, to the end of the message
        (length,) = _INT32.unpack_from(data, end + 1)
        start = end + 5 + len(_UPDATES)
        if (
            data[end : end + 1] != _SEQUENCE
            or end + 1 + length != len(data)
            or data[end + 5 : start] != _UPDATES
            or "updates" in body
            or start + 5 > len(data)
            or start + _INT32.unpack_from(data, start)[0] != len(data)
        ):
            return None
        statement = bsonform.decode(data[start:])
    if (
        type(statement) is not dict
        or not body.keys() <= UPDATE_KEYS
        or not statement.keys() <= STATEMENT_KEYS
        or type(statement.get("u")) is not dict
        or type(statement.get("q", {})) is not dict
        or type(statement.get("upsert", False)) is not bool
        or statement.get("multi", False) is not False
        or write_concern.refusal(body) is not None  # the loop answers it
    ):
        return None
    return body, statement


def _take_update(session: Session, protocol: MongoProtocol, data: bytes) -> bool:
    principal = session.principal
    if (
        principal is None
        or principal.read_only
        or len(data) < 38
        or not hotpath.lone_open(session, protocol, data)
    ):
        return False
    try:
        found = _statement(data)
    except Exception:  # noqa: BLE001 - the loop closes the connection as it must
        return False
    if found is None:
        return False
    body, statement = found
    coll, db = body["update"], body.get("$db")
    if type(coll) is not str or not coll or type(db) is not str:
        return False

    def answered(outcome: Outcome) -> None:
        if outcome is None:
            protocol.hand_back(data)
            return
        if isinstance(outcome, tuple):
            document = _counts(*outcome)
        else:  # as crud.update reports a HeliosError of its statement
            reply = {"n": 0, "nModified": 0, "writeErrors": [errors.write_error(0, outcome)]}
            document = bsonform.encode({**reply, "ok": 1.0})
        hotpath.lone_reply(session, protocol, data, "update", document)

    return session.state.services.documents.update_soon(
        principal,
        db,
        coll,
        statement.get("q") or {},
        statement["u"],
        statement.get("upsert", False),
        answered,
    )


def _counts(matched: int, modified: int) -> bytes:
    """``{n: matched, nModified: modified, ok: 1.0}`` as bson.encode writes it."""
    return _COUNTS.pack(_REPLY_SIZE, b"\x10n\x00", matched, b"\x10nModified\x00", modified) + _OK
