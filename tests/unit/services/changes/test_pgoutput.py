"""pgoutput messages from bytes, and column text to JSON forms."""

from __future__ import annotations

import struct

import orjson
import pytest

from heliosdb.services.changes import pgoutput
from heliosdb.services.changes.values import BUILTIN_TYPES, TypeInfo, convert


def _tuple(*values: object) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is pgoutput.UNCHANGED:
            out += b"u"
        else:
            data = str(value).encode()
            out += b"t" + struct.pack("!i", len(data)) + data
    return out


def test_begin_commit_relation_and_changes() -> None:
    begin = pgoutput.parse_message(b"B" + struct.pack("!qqI", 100, 5_000_000, 42))
    assert begin == pgoutput.Begin(final_lsn=100, commit_time_us=5_000_000, xid=42)
    commit = pgoutput.parse_message(b"C\x00" + struct.pack("!qqq", 100, 120, 5_000_000))
    assert commit == pgoutput.Commit(commit_lsn=100, end_lsn=120, commit_time_us=5_000_000)
    relation = pgoutput.parse_message(
        b"R" + struct.pack("!I", 16384) + b"public\x00orders\x00f" + struct.pack("!h", 2)
        + b"\x01id\x00" + struct.pack("!Ii", 23, -1) + b"\x00body\x00" + struct.pack("!Ii", 25, -1)
    )  # fmt: skip
    assert isinstance(relation, pgoutput.Relation)
    assert (relation.schema, relation.name, relation.replica_identity) == ("public", "orders", "f")
    assert relation.columns[0] == pgoutput.Column("id", 23, True)
    insert = pgoutput.parse_message(b"I" + struct.pack("!I", 16384) + b"N" + _tuple(1, "x"))
    assert insert == pgoutput.Insert(16384, ("1", "x"))
    update = pgoutput.parse_message(
        b"U" + struct.pack("!I", 16384) + b"O" + _tuple(1, "x") + b"N"
        + _tuple(1, pgoutput.UNCHANGED)
    )  # fmt: skip
    assert isinstance(update, pgoutput.Update)
    assert update.old == ("1", "x") and update.new[1] is pgoutput.UNCHANGED
    delete = pgoutput.parse_message(b"D" + struct.pack("!I", 16384) + b"K" + _tuple(1, None))
    assert delete == pgoutput.Delete(16384, ("1", None), True)
    truncate = pgoutput.parse_message(b"T" + struct.pack("!ib", 2, 0) + struct.pack("!II", 1, 2))
    assert truncate == pgoutput.Truncate((1, 2))
    assert isinstance(pgoutput.parse_message(b"Yanything"), pgoutput.Ignored)


def test_update_and_delete_old_tuple_markers() -> None:
    oid = struct.pack("!I", 7)
    key_only = pgoutput.parse_message(b"U" + oid + b"K" + _tuple(1) + b"N" + _tuple(1, "y"))
    assert key_only == pgoutput.Update(7, ("1",), ("1", "y"), True)
    no_old = pgoutput.parse_message(b"U" + oid + b"N" + _tuple(None, pgoutput.UNCHANGED))
    assert no_old == pgoutput.Update(7, None, (None, pgoutput.UNCHANGED), False)
    full = pgoutput.parse_message(b"D" + oid + b"O" + _tuple(1, "\u00e9t\u00e9"))
    assert full == pgoutput.Delete(7, ("1", "\u00e9t\u00e9"), False)


_OID = struct.pack("!I", 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"B\x00",
        b"I" + _OID + b"X",
        b"Iabcd",
        b"C\x00" + struct.pack("!qq", 1, 2),  # no commit time
        b"U" + _OID + b"X" + _tuple(1),  # neither an old nor a new tuple
        b"U" + _OID + b"O" + _tuple(1),  # an old tuple, no new one
        b"D" + _OID + b"N" + _tuple(1),  # a delete must carry the old row
        b"I" + _OID + b"N" + struct.pack("!h", 1) + b"x",  # unknown value kind
        b"I" + _OID + b"N" + struct.pack("!h", 2) + b"n",  # fewer values than counted
    ],
)
def test_malformed_messages(data: bytes) -> None:
    with pytest.raises(pgoutput.ProtocolError):
        pgoutput.parse_message(data)


def test_lsn_text() -> None:
    assert pgoutput.format_lsn(0x16B3748) == "0/16B3748"
    assert pgoutput.parse_lsn("1/16B3748") == (1 << 32) | 0x16B3748


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (23, "42", 42),
        (20, "-9007199254740993", -9007199254740993),
        (701, "1.5", 1.5),
        (701, "NaN", "NaN"),
        (1700, "19.90", "19.90"),
        (16, "t", True),
        (16, "f", False),
        (3802, '{"a": [1, 2]}', {"a": [1, 2]}),
        (17, "\\x6869", "aGk="),
        (1184, "2026-01-04 12:00:00.5+00", "2026-01-04T12:00:00.500000+00:00"),
        (1184, "infinity", "infinity"),
        (1082, "2026-01-04", "2026-01-04"),
        (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (1007, "{1,2,NULL}", [1, 2, None]),
        (1009, '{a,"b c","q\\"x",NULL,"NULL"}', ["a", "b c", 'q"x', None, "NULL"]),
        (1007, "{{1,2},{3,4}}", [[1, 2], [3, 4]]),
        (1007, "[0:1]={5,6}", [5, 6]),
        (1009, "{}", []),
        (3807, '{"{\\"a\\": 1}","[2]"}', [{"a": 1}, [2]]),
    ],
)
def test_convert(oid: int, text: str, expected: object) -> None:
    # What an event carries is the value's JSON.
    assert orjson.loads(orjson.dumps(convert(text, BUILTIN_TYPES[oid]))) == expected


def test_jsonb_numbers_pass_through_exactly() -> None:
    # Parsed and encoded again, a jsonb number past 64 bits or 17 digits came out
    # rounded to a double.
    text = '{"big": 123456789012345678901234567890, "fine": 0.1000000000000000055511151231257827}'
    assert orjson.dumps(convert(text, BUILTIN_TYPES[3802])) == text.encode()


def test_convert_unknown_and_null() -> None:
    assert convert("(1,2)", TypeInfo("point")) == "(1,2)"
    assert convert(None, BUILTIN_TYPES[23]) is None
    assert convert("[1,2.5]", TypeInfo("vector")) == [1, 2.5]
