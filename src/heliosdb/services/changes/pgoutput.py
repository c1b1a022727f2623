"""A sans-IO reader of the ``pgoutput`` logical decoding protocol, version 1.

Each row that ``pg_logical_slot_peek_binary_changes(..., 'proto_version', '1',
'publication_names', ...)`` returns carries one message; :func:`parse_message` turns its
bytes into one of the dataclasses below. Version 1 never streams a transaction that is
still in progress, so everything between a Begin and its Commit is committed work.

Column values arrive in the type's text form (``t``), as NULL (``n``), or as
``u``: an unchanged TOASTed value the WAL does not repeat on UPDATE (the capture fills it
in from the old row, which REPLICA IDENTITY FULL logs in full).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

UNCHANGED: Final = object()
"""The value of a column whose TOASTed datum an UPDATE did not change."""

TupleValue = str | None | object


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time_us: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time_us: int


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    old: tuple[TupleValue, ...] | None  # None unless REPLICA IDENTITY logged the old row
    new: tuple[TupleValue, ...]
    old_is_key_only: bool


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: tuple[TupleValue, ...]
    old_is_key_only: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    kind: str  # Origin, Type, Message: nothing a subscriber sees


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Ignored


class ProtocolError(ValueError):
    pass


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> str:
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def int8(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int16(self) -> int:
        (value,) = struct.unpack_from("!h", self.data, self.pos)
        self.pos += 2
        return int(value)

    def int32(self) -> int:
        (value,) = struct.unpack_from("!i", self.data, self.pos)
        self.pos += 4
        return int(value)

    def uint32(self) -> int:
        (value,) = struct.unpack_from("!I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def string(self) -> str:
        end = self.data.index(b"\x00", self.pos)
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value


# The messages every change brings (Begin, a row, Commit) are read with one struct each
# and without a reader object: at low write rates each captured transaction is parsed on
# a cold CPU cache, where every Python call counts.
_BEGIN = struct.Struct("!qqI")
_COMMIT = struct.Struct("!xqqq")  # flags (unused), commit LSN, end LSN, commit time
_OID = struct.Struct("!I")
_COUNT = struct.Struct("!h")
_LENGTH = struct.Struct("!i")
_TEXT, _NULL, _UNCHANGED = b"t"[0], b"n"[0], b"u"[0]
_NEW, _OLD, _KEY = b"N"[0], b"O"[0], b"K"[0]


def _tuple_data(data: bytes, pos: int) -> tuple[tuple[TupleValue, ...], int]:
    """A TupleData at ``pos``: its values and the position after it."""
    (count,) = _COUNT.unpack_from(data, pos)
    pos += 2
    values: list[TupleValue] = []
    for _ in range(count):
        kind = data[pos]
        pos += 1
        if kind == _TEXT:
            (length,) = _LENGTH.unpack_from(data, pos)
            pos += 4
            values.append(data[pos : pos + length].decode())
            pos += length
        elif kind == _NULL:
            values.append(None)
        elif kind == _UNCHANGED:
            values.append(UNCHANGED)
        else:
            raise ProtocolError(f"unknown tuple value kind {chr(kind)!r}")
    return tuple(values), pos


def parse_message(data: bytes) -> Message:
    """One pgoutput message from its bytes."""
    if not data:
        raise ProtocolError("empty message")
    data = bytes(data)
    kind = data[0]
    try:
        parse = _PARSERS.get(kind)
        if parse is not None:
            return parse(data)
        read = _READERS.get(kind)
        return read(_Reader(data, 1)) if read is not None else Ignored(chr(kind))
    except (IndexError, struct.error, ValueError) as exc:
        raise ProtocolError(f"malformed {chr(kind)!r} message: {exc}") from None


def _begin(data: bytes) -> Begin:
    final_lsn, commit_time_us, xid = _BEGIN.unpack_from(data, 1)
    return Begin(final_lsn, commit_time_us, xid)


def _commit(data: bytes) -> Commit:
    commit_lsn, end_lsn, commit_time_us = _COMMIT.unpack_from(data, 1)
    return Commit(commit_lsn, end_lsn, commit_time_us)


def _relation(r: _Reader) -> Relation:
    oid = r.uint32()
    schema, name = r.string(), r.string()
    identity = r.byte()
    columns = []
    for _ in range(r.int16()):
        flags = r.int8()
        column_name = r.string()
        type_oid = r.uint32()
        r.int32()  # type modifier
        columns.append(Column(column_name, type_oid, bool(flags & 1)))
    return Relation(oid, schema, name, identity, tuple(columns))


def _insert(data: bytes) -> Insert:
    (oid,) = _OID.unpack_from(data, 1)
    if data[5] != _NEW:
        raise ProtocolError("Insert without a new tuple")
    return Insert(oid, _tuple_data(data, 6)[0])


def _update(data: bytes) -> Update:
    (oid,) = _OID.unpack_from(data, 1)
    marker, pos = data[5], 6
    old: tuple[TupleValue, ...] | None = None
    key_only = False
    if marker in (_KEY, _OLD):
        key_only = marker == _KEY
        old, pos = _tuple_data(data, pos)
        marker = data[pos]
        pos += 1
    if marker != _NEW:
        raise ProtocolError("Update without a new tuple")
    return Update(oid, old, _tuple_data(data, pos)[0], key_only)


def _delete(data: bytes) -> Delete:
    (oid,) = _OID.unpack_from(data, 1)
    marker = data[5]
    if marker not in (_KEY, _OLD):
        raise ProtocolError("Delete without an old tuple")
    return Delete(oid, _tuple_data(data, 6)[0], marker == _KEY)


def _truncate(r: _Reader) -> Truncate:
    count = r.int32()
    r.int8()  # options: CASCADE / RESTART IDENTITY
    return Truncate(tuple(r.uint32() for _ in range(count)))


_PARSERS: dict[int, Callable[[bytes], Message]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
}
# The rarer ones (a table's first change after a (re)connect, TRUNCATE), with a reader.
_READERS: dict[int, Callable[[_Reader], Message]] = {ord("R"): _relation, ord("T"): _truncate}


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)
