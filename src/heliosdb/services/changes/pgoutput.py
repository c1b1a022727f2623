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

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

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

    def int64(self) -> int:
        (value,) = struct.unpack_from("!q", self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> str:
        end = self.data.index(b"\x00", self.pos)
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value

    def tuple_data(self) -> tuple[TupleValue, ...]:
        count = self.int16()
        values: list[TupleValue] = []
        for _ in range(count):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED)
            elif kind == "t":
                length = self.int32()
                values.append(self.data[self.pos : self.pos + length].decode())
                self.pos += length
            else:
                raise ProtocolError(f"unknown tuple value kind {kind!r}")
        return tuple(values)


def parse_message(data: bytes) -> Message:
    """One pgoutput message from its bytes."""
    if not data:
        raise ProtocolError("empty message")
    reader = _Reader(bytes(data))
    kind = reader.byte()
    try:
        return _PARSERS[kind](reader) if kind in _PARSERS else Ignored(kind)
    except (IndexError, struct.error, ValueError) as exc:
        raise ProtocolError(f"malformed {kind!r} message: {exc}") from None


def _begin(r: _Reader) -> Begin:
    return Begin(final_lsn=r.int64(), commit_time_us=r.int64(), xid=r.uint32())


def _commit(r: _Reader) -> Commit:
    r.int8()  # flags, unused
    return Commit(commit_lsn=r.int64(), end_lsn=r.int64(), commit_time_us=r.int64())


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


def _insert(r: _Reader) -> Insert:
    oid = r.uint32()
    if r.byte() != "N":
        raise ProtocolError("Insert without a new tuple")
    return Insert(oid, r.tuple_data())


def _update(r: _Reader) -> Update:
    oid = r.uint32()
    marker = r.byte()
    old: tuple[TupleValue, ...] | None = None
    key_only = False
    if marker in ("K", "O"):
        key_only = marker == "K"
        old = r.tuple_data()
        marker = r.byte()
    if marker != "N":
        raise ProtocolError("Update without a new tuple")
    return Update(oid, old, r.tuple_data(), key_only)


def _delete(r: _Reader) -> Delete:
    oid = r.uint32()
    marker = r.byte()
    if marker not in ("K", "O"):
        raise ProtocolError("Delete without an old tuple")
    return Delete(oid, r.tuple_data(), marker == "K")


def _truncate(r: _Reader) -> Truncate:
    count = r.int32()
    r.int8()  # options: CASCADE / RESTART IDENTITY
    return Truncate(tuple(r.uint32() for _ in range(count)))


_PARSERS: dict[str, Callable[[_Reader], Message]] = {
    "B": _begin,
    "C": _commit,
    "R": _relation,
    "I": _insert,
    "U": _update,
    "D": _delete,
    "T": _truncate,
}


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)
