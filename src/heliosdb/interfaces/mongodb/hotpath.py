"""The find hot path: a plain ``find`` from the parsed message to the reply's bytes.

Most finds a driver sends are ``find_one``/``find`` with a filter and perhaps a limit,
a batch size or ``singleBatch``, and nothing else: no sort, skip, projection, session
transaction or option this path does not know. ``answer_find`` takes exactly those
(keys of the body from ``FIND_KEYS``, values of the plain types) and runs the same
service call as ``commands/crud.find`` without the generic layers: no Request, no
command table, no parsing of absent options, and, when the result fits in the first
batch, no cursor store and no BSON encoder walk over RawBSONDocuments: the reply is
the stored documents' bytes framed as

    {cursor: {firstBatch: [...], id: Int64(0), ns: "<db>.<coll>"}, ok: 1.0}

byte for byte what the normal path encodes (tests/integration/mongodb/test_hotpath.py
compares the two). Anything else, a compressed message included, returns None and the
normal path answers; errors become the same error document as there.

``take_lone`` goes further for the commonest find of all, from the socket's read
callback (MongoProtocol.data_received) while the connection is idle: an uncompressed
OP_MSG of flags 0 and one body section, a body ``eligible`` would take, and a result
that is sure to fit the first batch (a plain ``_id`` filter, or a limit of at most the
batch size). The documents service starts its statement on a pipelined engine
connection (services/documents/pipelined.py) and the reply is framed and written from
the statement's completion callback: no task, no coroutine. When the service cannot
start it at once, the message goes the ways above; when the answer is anything but
rows that fit (an error, a timeout, too many bytes), the message is handed back to the
connection's loop, which answers it as above (running the find again).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from heliosdb.interfaces.mongodb import codec, errors
from heliosdb.interfaces.mongodb.cursors import DEFAULT_FIRST_BATCH, MAX_BATCH_BYTES
from heliosdb.services.documents import FindQuery, bsonform
from heliosdb.services.documents.filters import plain_id

if TYPE_CHECKING:
    from heliosdb.interfaces.mongodb.connection import MongoProtocol, Session

# What pymongo, the Node.js driver and mongosh send with a plain find on a standalone
# server ($readPreference only with a read preference; $clusterTime never from us).
FIND_KEYS = frozenset(
    {"find", "filter", "limit", "singleBatch", "batchSize", "lsid", "$db", "$readPreference"}
)
_INT32 = struct.Struct("<i")
_OP_MSG_HEAD = struct.Struct("<iiiiIB")  # header, flagBits 0, section kind 0
_INDEX_KEYS = [b"\x03%d\x00" % i for i in range(1024)]  # array element i: type document
_ID_ZERO_NS = b"\x12id\x00" + bytes(8) + b"\x02ns\x00"  # id: Int64(0), then ns: string
_OK = b"\x01ok\x00" + struct.pack("<d", 1.0) + b"\x00"
_LONE_HEAD = struct.pack("<i", codec.OP_MSG) + bytes(5)  # opCode, flagBits 0, kind 0
# A reply bigger than this waits for the loop's drain: the lone path does not await.
LONE_WRITE_BUFFER = 64 * 1024


def eligible(session: Session, message: codec.Message) -> bool:
    body = message.body
    return (
        message.op_code == codec.OP_MSG
        and message.compressor is None
        and not message.sequences
        and session.principal is not None
        and next(iter(body), None) == "find"
        and body.keys() <= FIND_KEYS
    )


def _plain(body: dict[str, Any]) -> tuple[str, str, Any, int, int, bool] | None:
    """(collection, database, filter, limit, batch size, singleBatch) of a find body whose
    values are of the plain types, else None."""
    coll = body["find"]
    db = body.get("$db")
    spec = body.get("filter")
    limit = body.get("limit", 0)
    batch = body.get("batchSize", DEFAULT_FIRST_BATCH)
    single = body.get("singleBatch", False)
    if (
        type(coll) is not str
        or not coll
        or type(db) is not str
        or (spec is not None and type(spec) is not dict)
        or type(limit) is not int
        or type(batch) is not int
        or batch <= 0
        or type(single) is not bool
    ):
        return None
    return coll, db, spec, limit, batch, single


async def answer_find(session: Session, message: codec.Message, request_id: int) -> bytes | None:
    """The reply to a plain find (see the module docstring), or None for the normal path."""
    plain = _plain(message.body)
    if plain is None:
        return None
    coll, db, spec, limit, batch, single = plain
    state = session.state
    state.opcounters["command"] += 1
    state.opcounters["query"] += 1
    namespace = f"{db}.{coll}"
    try:
        items = await state.services.documents.find(
            session.principal,  # type: ignore[arg-type]  # eligible() checked it
            db,
            coll,
            FindQuery(filter=spec, limit=abs(limit)),
        )
    except Exception as exc:  # noqa: BLE001 - answered as dispatch() answers it
        reply = errors.reply_for("find", exc)
    else:
        if len(items) <= batch and len(items) <= len(_INDEX_KEYS):
            data = _first_batch(items, namespace)
            if data is not None:
                return _frame(request_id, message.request_id, data)
        first, cursor_id = state.cursors.open(
            namespace, session.owner, items, batch, single or limit < 0
        )
        reply = {"cursor": {"firstBatch": first, "id": cursor_id, "ns": namespace}, "ok": 1.0}
    return codec.encode_reply(request_id, message.request_id, reply, codec.OP_MSG)


def _first_batch(items: list[Any], namespace: str) -> bytes | None:
    """The reply document with every item (raw BSON) in its first batch and cursor id 0,
    or None when an item is not raw or they exceed one batch's bytes."""
    if len(items) == 1:  # find_one's: one pack and one join (the same bytes as below)
        item = items[0]
        if type(item) is not bytes:
            return None
        tail = _TAILS.get(namespace)
        if tail is None:
            tail = _tail(namespace)
        size = len(item)
        document = _ONE_HEAD.size + size + len(tail)
        head = _ONE_HEAD.pack(
            document, _CURSOR, document - _CURSOR_OUTSIDE, _FIRST_BATCH, size + 8, _ITEM_0
        )
        return b"".join((head, item, tail))
    parts: list[bytes] = []
    total = 0
    for index, item in enumerate(items):
        if type(item) is not bytes:
            return None
        total += len(item)
        parts.append(_INDEX_KEYS[index])
        parts.append(item)
    if total > MAX_BATCH_BYTES and len(items) > 1:
        return None
    array = b"".join(parts)
    ns = namespace.encode()
    cursor_body = (
        b"\x04firstBatch\x00"
        + _INT32.pack(len(array) + 5)
        + array
        + b"\x00"
        + _ID_ZERO_NS
        + _INT32.pack(len(ns) + 1)
        + ns
        + b"\x00"
    )
    return (
        _INT32.pack(len(cursor_body) + 17 + len(_OK))
        + b"\x03cursor\x00"
        + _INT32.pack(len(cursor_body) + 5)
        + cursor_body
        + b"\x00"
        + _OK
    )


# One item's reply document up to the item: its length, ``cursor: {`` and its length,
# ``firstBatch: [`` and its length, element "0" of type document.
_CURSOR, _FIRST_BATCH, _ITEM_0 = b"\x03cursor\x00", b"\x04firstBatch\x00", b"\x030\x00"
_ONE_HEAD = struct.Struct(f"<i{len(_CURSOR)}si{len(_FIRST_BATCH)}si{len(_ITEM_0)}s")
# the reply document's bytes outside the cursor's: its length, the cursor's key, ``ok``
_CURSOR_OUTSIDE = 4 + len(_CURSOR) + len(_OK)
_TAILS: dict[str, bytes] = {}  # by namespace: what follows the one item
# a lone reply of one item up to the item: the message's header, then _ONE_HEAD's
_ONE_MESSAGE = struct.Struct(_OP_MSG_HEAD.format + _ONE_HEAD.format[1:])


def _tail(namespace: str) -> bytes:
    """After one item: the array's end, ``id: Int64(0), ns: <namespace>``, the cursor's
    end, ``ok: 1.0`` and the document's end (kept per namespace)."""
    ns = namespace.encode()
    tail = b"\x00" + _ID_ZERO_NS + _INT32.pack(len(ns) + 1) + ns + b"\x00\x00" + _OK
    if len(_TAILS) >= 4096:
        _TAILS.clear()
    _TAILS[namespace] = tail
    return tail


def _frame(request_id: int, response_to: int, document: bytes) -> bytes:
    return (
        _OP_MSG_HEAD.pack(21 + len(document), request_id, response_to, codec.OP_MSG, 0, 0)
        + document
    )


def lone_open(session: Session, protocol: MongoProtocol, data: bytes) -> bool:
    """Whether the whole message ``data`` may be answered from the read callback at all
    (the lone find's and loneupdate.py's common ground): an authenticated connection
    whose replies are not backed up, and an uncompressed OP_MSG of flags 0 that starts
    with its body section."""
    transport = protocol.transport
    return (
        session.principal is not None
        and data[12:21] == _LONE_HEAD
        and transport is not None
        and transport.get_write_buffer_size() <= LONE_WRITE_BUFFER
    )


def lone_reply(
    session: Session,
    protocol: MongoProtocol,
    data: bytes,
    kind: str,
    document: bytes,
    item: bytes | None = None,
) -> None:
    """Count the command (and ``opcounters[kind]``), write ``document`` as the reply to
    the lone message ``data`` unless the connection is closing, and end it. With
    ``item``: the reply is that one item's first batch (``_first_batch``'s), and
    ``document`` the tail that follows it (``_tail``): the message's header and the
    document's head are packed at once and the whole message joined once."""
    state = session.state
    counters = state.opcounters
    counters["command"] += 1
    counters[kind] += 1
    transport = protocol.transport
    if transport is not None and not transport.is_closing():
        response_to = _INT32.unpack_from(data, 4)[0]
        request_id = next(state.request_ids)
        if item is None:
            head = _OP_MSG_HEAD.pack(  # _frame's, one call less
                21 + len(document), request_id, response_to, codec.OP_MSG, 0, 0
            )
            transport.write(head + document)
        else:
            size = len(item)
            whole = _ONE_HEAD.size + size + len(document)
            head = _ONE_MESSAGE.pack(
                21 + whole, request_id, response_to, codec.OP_MSG, 0, 0,
                whole, _CURSOR, whole - _CURSOR_OUTSIDE, _FIRST_BATCH, size + 8, _ITEM_0,
            )  # fmt: skip
            transport.write(b"".join((head, item, document)))
    protocol.lone_done()


# -- a find body seen before on the connection, read without decoding all of it -------
#
# A driver's finds on one connection differ in their filter's values: the body's other
# elements (``find``, then after ``filter`` the limit, singleBatch, lsid and ``$db``)
# come as the same bytes each time. ``_learn`` keeps, per connection, what those bytes
# decoded to the first time (only for a body ``find``, ``filter``, then the rest, none of
# them again, all of them plain); ``_known`` then cuts a message into those bytes and the
# filter document, and decodes the filter alone (a document of one string element
# directly, with the checks bson makes, anything else with bsonform.decode): the same
# ``_plain`` tuple a full decode gives, at a third of the cost.

_FIND_HEAD = b"\x02find\x00"  # the body's first element: find: <string>
_FILTER = b"\x03filter\x00"  # its second: filter: <document>
MAX_KNOWN = 64  # known bodies per connection
Known = dict[tuple[bytes, bytes], tuple[str, str, int, int, bool]]


def _cut(data: bytes) -> tuple[int, int, int] | None:
    """Where the filter element starts, where its document starts and where it ends, in
    a message whose body starts with ``find: <string>, filter: <document>``."""
    if data[25:31] != _FIND_HEAD or len(data) < 48:
        return None
    at = 35 + _INT32.unpack_from(data, 31)[0]  # after the collection's name
    if at < 37 or data[at : at + 8] != _FILTER or at + 13 > len(data):
        return None
    start = at + 8
    end = start + _INT32.unpack_from(data, start)[0]
    if end <= start + 4 or end >= len(data):
        return None
    return at, start, end


def _known(known: Known, data: bytes) -> tuple[str, str, Any, int, int, bool] | None:
    """``_plain`` of the body of ``data`` if its bytes but the filter's were seen (and
    learned) before on this connection and its filter decodes, else None."""
    cut = _cut(data)
    if cut is None:
        return None
    at, start, end = cut
    seen = known.get((data[25:at], data[end:]))
    if seen is None:
        return None
    spec = _filter(data[start:end])
    if spec is None:
        return None
    coll, db, limit, batch, single = seen
    return coll, db, spec, limit, batch, single


def _filter(document: bytes) -> dict[str, Any] | None:
    """The filter document decoded as bsonform.decode decodes it (None: it does not)."""
    size = len(document)
    if document[4] == 2 and document[-1] == 0:  # one string element, the commonest
        name_end = document.find(b"\x00", 5)
        value_end = size - 2
        if (
            name_end > 0
            and name_end + 6 <= value_end
            and name_end + 5 + _INT32.unpack_from(document, name_end + 1)[0] == size - 1
            and document[value_end] == 0
        ):
            try:
                return {document[5:name_end].decode(): document[name_end + 5 : value_end].decode()}
            except UnicodeDecodeError:
                return None
    try:
        return bsonform.decode(document)
    except Exception:  # noqa: BLE001 - the whole body's decode says what is wrong
        return None


def _learn(known: Known, data: bytes, plain: tuple[str, str, Any, int, int, bool]) -> None:
    """Keep what the bytes of ``data``'s body around its filter decoded to (``plain``,
    from the whole body), when they hold no second ``find`` or ``filter``."""
    cut = _cut(data)
    if cut is None:
        return
    at, _, end = cut
    tail = data[end:]
    try:
        rest = bsonform.decode(_INT32.pack(len(tail) + 4) + tail)
    except Exception:  # noqa: BLE001 - not a document by itself: not learned
        return
    if "find" in rest or "filter" in rest or len(known) >= MAX_KNOWN:
        return
    coll, db, _, limit, batch, single = plain
    known[(data[25:at], tail)] = (coll, db, limit, batch, single)


def take_lone(session: Session, protocol: MongoProtocol, data: bytes) -> bool:
    """Start answering the whole message ``data`` from the read callback (see the module
    docstring); False: the connection's loop takes it as usual."""
    principal = session.principal
    if (
        principal is None
        or len(data) < 26
        or not lone_open(session, protocol, data)
        or _INT32.unpack_from(data, 21)[0] != len(data) - 21
    ):
        return False
    plain = _known(session.finds, data)
    if plain is None:
        try:
            body = bsonform.decode(data[21:])  # as codec.parse_frame decodes it
        except Exception:  # noqa: BLE001 - the loop closes the connection as it must
            return False
        if next(iter(body), None) != "find" or not body.keys() <= FIND_KEYS:
            return False
        plain = _plain(body)
        if plain is None:
            return False
        _learn(session.finds, data, plain)
    coll, db, spec, limit, batch, _ = plain
    limit = abs(limit)
    if not (
        0 < limit <= batch
        or (limit == 0 and spec and list(spec) == ["_id"] and plain_id(spec["_id"]))
    ):
        return False  # the result might not fit the first batch: it may need a cursor

    def answered(items: list[bytes] | None) -> None:
        if items is not None:
            if len(items) == 1:  # find_one's
                namespace = f"{db}.{coll}"
                tail = _TAILS.get(namespace)
                if tail is None:
                    tail = _tail(namespace)
                lone_reply(session, protocol, data, "query", tail, items[0])
                return
            if len(items) <= len(_INDEX_KEYS):
                document = _first_batch(items, f"{db}.{coll}")  # type: ignore[arg-type]
                if document is not None:
                    lone_reply(session, protocol, data, "query", document)
                    return
        protocol.hand_back(data)

    documents = session.state.services.documents
    return documents.find_soon(principal, db, coll, spec, limit, answered)
