"""Updates the engine applies itself: ``update_one`` with ``$set``/``$inc`` on top-level
fields, in one statement.

The general path (store.py) reads the row, applies the operators in Python on the
decoded BSON and writes the row back: two round trips. The common case, a few top-level
fields set to given values or integers incremented, needs no Python: the function
below (created with the catalog, catalog.py) walks the top-level elements of the stored
BSON, replaces or appends the elements the node encoded, adds integers with MongoDB's
widening rule (anything with an int64 is int64), and sets the same fields in the JSONB
query form. It returns NULL for what it does not handle (a double or decimal to
increment, a value of another type, an int32 sum that overflows into an int64, a
document too big), and the store then takes the general path, which also produces
every error. (The overflow too: a long the node did not send would be one the
statement did not declare, catalog.NARROW.) Field order and types come out exactly as
the Python path makes them.

Its arguments are three scalars, no arrays (asyncpg's array encoder costs the node
more than the rest of the statement's parameters together): ``ops``, one letter per
field (``s`` set, ``i`` increment); ``elems``, each field's BSON element (type byte,
key, NUL, value) after its length as int32, one after another; ``vals``, a JSON array
of each field's query form (for an increment, the number to add).
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# fixed fragments; every value is a bind parameter.

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any

import orjson
from bson.int64 import Int64

from heliosdb.services.documents import bsonform

SCHEMA = "helios_documents"

# Top-level elements: type byte, key (cstring), value; the size of a value by its type.
# Written for few evaluations per element (each PL/pgSQL statement costs far more than
# the expression it runs): one key comparison, one NUL search, one CASE for the size.
_I32 = (
    "(get_byte({v}, {o}) | (get_byte({v}, {o} + 1) << 8) | (get_byte({v}, {o} + 2) << 16)"
    " | (get_byte({v}, {o} + 3) << 24))"
)
_I64 = " | ".join(
    f"(get_byte(nb, vs + {j})::bigint << {8 * j})" if j else "get_byte(nb, vs)::bigint"
    for j in range(8)
)
_SIZE = (
    "CASE t WHEN 2 THEN 4 + {i32} WHEN 16 THEN 4 WHEN 1 THEN 8 WHEN 18 THEN 8 WHEN 9 THEN 8 "
    "WHEN 17 THEN 8 WHEN 3 THEN {i32} WHEN 4 THEN {i32} WHEN 8 THEN 1 WHEN 7 THEN 12 "
    "WHEN 10 THEN 0 WHEN 19 THEN 16 WHEN 5 THEN 5 + {i32} WHEN 13 THEN 4 + {i32} "
    "WHEN 14 THEN 4 + {i32} WHEN 15 THEN {i32} WHEN 12 THEN 16 + {i32} WHEN 6 THEN 0 "
    "WHEN 127 THEN 0 WHEN 255 THEN 0 ELSE -1 END"
).format(i32=_I32.format(v="nb", o="vs"))


def _set_bytes(target: str, at: str, value: str, count: int) -> str:
    """One expression writing ``count`` little-endian bytes of ``value`` at ``at``."""
    out = target
    for j in range(count):
        out = f"set_byte({out}, {at} + {j}, (({value} >> {8 * j}) & 255)::int)"
    return out


FUNCTION_DDL = rf"""
CREATE OR REPLACE FUNCTION {SCHEMA}.bson_update(
    b bytea, d jsonb, ops text, elems bytea, vals jsonb, OUT nb bytea, OUT nd jsonb
) LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    i int; p int; q int; t int; vs int; ve int; w int; size int;
    kz bytea; kl int; el bytea; key text; val jsonb; hit boolean; res numeric; r bigint;
BEGIN
    nb := b; nd := d;
    IF octet_length(b) > 1048576 THEN nb := NULL; RETURN; END IF;
    q := 0;
    FOR i IN 1 .. length(ops) LOOP
        w := {_I32.format(v="elems", o="q")};
        el := substring(elems FROM q + 5 FOR w);
        q := q + 4 + w;
        kl := position('\x00'::bytea IN el) - 2;
        kz := substring(el FROM 2 FOR kl + 1);
        key := convert_from(substring(el FROM 2 FOR kl), 'UTF8');
        val := vals -> (i - 1);
        p := 4; hit := false;
        LOOP
            t := get_byte(nb, p);
            EXIT WHEN t = 0;
            IF substring(nb FROM p + 2 FOR kl + 1) = kz THEN
                hit := true; vs := p + kl + 2;
            ELSE
                vs := position('\x00'::bytea IN substring(nb FROM p + 2 FOR 1024));
                IF vs = 0 THEN nb := NULL; RETURN; END IF;
                vs := p + vs + 1;
            END IF;
            IF t = 11 THEN
                ve := vs + position('\x00'::bytea IN substring(nb FROM vs + 1));
                ve := ve + position('\x00'::bytea IN substring(nb FROM ve + 1));
            ELSE
                size := {_SIZE};
                IF size < 0 THEN nb := NULL; RETURN; END IF;
                ve := vs + size;
            END IF;
            EXIT WHEN hit;
            p := ve;
        END LOOP;
        IF hit AND substr(ops, i, 1) = 'i' THEN
            IF t = 16 THEN res := {_I32.format(v="nb", o="vs")};
            ELSIF t = 18 THEN res := {_I64};
            ELSE nb := NULL; RETURN;
            END IF;
            res := res + val::numeric;
            IF res < -9223372036854775808 OR res > 9223372036854775807 THEN
                nb := NULL; RETURN;
            END IF;
            r := res::bigint;
            IF t <> 18 AND get_byte(el, 0) <> 18 AND (res < -2147483648 OR res > 2147483647)
            THEN
                nb := NULL; RETURN;
            END IF;
            IF t = 18 OR get_byte(el, 0) = 18 THEN
                el := '\x12'::bytea || kz || '\x0000000000000000'::bytea;
                el := {_set_bytes("el", "kl + 2", "r", 8)};
            ELSE
                el := '\x10'::bytea || kz || '\x00000000'::bytea;
                el := {_set_bytes("el", "kl + 2", "r", 4)};
            END IF;
            nd := jsonb_set(nd, ARRAY[key], to_jsonb(res));
        ELSE
            nd := jsonb_set(nd, ARRAY[key], val);
        END IF;
        IF hit THEN
            IF substring(nb FROM p + 1 FOR ve - p) <> el THEN
                nb := substring(nb FROM 1 FOR p) || el || substring(nb FROM ve + 1);
            END IF;
        ELSE
            nb := substring(nb FROM 1 FOR octet_length(nb) - 1) || el || '\x00'::bytea;
        END IF;
    END LOOP;
    w := octet_length(nb);
    IF w > 16777216 THEN nb := NULL; RETURN; END IF;
    nb := {_set_bytes("nb", "0", "w", 4)};
END
$fn$;
"""

_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)
_OPS = {"$set": "s", "$inc": "i"}
_LENGTH = struct.Struct("<i")
_INT32_BYTES = struct.Struct("<i").pack
_INT64_BYTES = struct.Struct("<q").pack
_DOUBLE_BYTES = struct.Struct("<d").pack


class Refusals:
    """Collections whose plain ``UPDATE`` (``statement(plain=True)``) met a document the
    function gives up on: their next ``RETRY_AFTER`` in-place updates take the locking
    statement, which answers such a document without failing; then the plain one is
    tried again. A document still there costs one failed statement (nothing written,
    then the general path) per ``RETRY_AFTER`` updates; once it is gone (rewritten by
    the general path, deleted), the collection has its one-statement update back
    without a restart."""

    RETRY_AFTER = 256
    MAX_COLLECTIONS = 4096

    def __init__(self) -> None:
        self._left: dict[Any, int] = {}

    def refuse(self, key: Any) -> None:
        if len(self._left) >= self.MAX_COLLECTIONS:
            self._left.clear()
        self._left[key] = self.RETRY_AFTER

    def plain(self, key: Any) -> bool:
        """Whether the next in-place update of ``key`` may be the plain statement."""
        left = self._left.get(key)
        if left is None:
            return True
        if left <= 1:
            del self._left[key]
        else:
            self._left[key] = left - 1
        return False


@dataclass(frozen=True, slots=True)
class InPlace:
    """The arguments of ``bson_update`` for one update document."""

    ops: str  # one letter per field
    elements: bytes  # each field's BSON element after its length (int32)
    values: str  # a JSON array: each field's query form, or the number to add
    changes: bool  # a nonzero increment: the document surely changes (if handled)
    wide: bool = False  # a value is an Int64 or a Decimal128 (catalog.NARROW)


def plan(update: Any) -> InPlace | None:
    """The in-engine form of ``update``, or None when it needs the general path."""
    if type(update) is not dict or not update:
        return None
    ops: list[str] = []
    keys: list[str] = []
    elements: list[bytes] = []
    forms: list[Any] = []
    changes = False
    wide = False
    for op, fields in update.items():
        code = _OPS.get(op)
        if code is None or type(fields) is not dict or not fields:
            return None
        for key, value in fields.items():
            if (
                type(key) is not str
                or not key
                or key == "_id"
                or "." in key
                or key[0] == "$"
                or "\x00" in key
                or key in keys
            ):
                return None
            if code == "i" and not (
                type(value) is Int64 or (type(value) is int and value in _INT32)
            ):
                return None
            element = _element(key, value)
            changes = changes or (code == "i" and value != 0)
            ops.append(code)
            keys.append(key)
            elements.append(_LENGTH.pack(len(element)))
            elements.append(element)
            if code == "i":
                forms.append(int(value))
                wide = wide or type(value) is Int64
            else:
                form, holds = bsonform.wide_form(value)
                forms.append(form)
                wide = wide or holds
    values = orjson.dumps(forms).decode()
    return InPlace("".join(ops), b"".join(elements), values, changes, wide)


def _element(key: str, value: Any) -> bytes:
    """``key: value`` as a BSON element, as ``bsonform.encode`` writes it inside a
    document: the plain types here, everything else (and every error) by pymongo."""
    kind = type(value)
    try:
        name = key.encode() + b"\x00"
        if kind is int:
            if value in _INT32:
                return b"\x10" + name + _INT32_BYTES(value)
            if value in _INT64:
                return b"\x12" + name + _INT64_BYTES(value)
        elif kind is Int64:
            return b"\x12" + name + _INT64_BYTES(value)
        elif kind is str:
            data: bytes = value.encode()
            return b"\x02" + name + _INT32_BYTES(len(data) + 1) + data + b"\x00"
        elif kind is float:
            return b"\x01" + name + _DOUBLE_BYTES(value)
        elif kind is bool:
            return b"\x08" + name + (b"\x01" if value else b"\x00")
        elif value is None:
            return b"\x0a" + name
    except UnicodeEncodeError:
        pass
    return bsonform.encode({key: value})[4:-1]


BY_ID = "_id = $1::jsonb"  # filters.compile_filter's SQL for one plain _id


@functools.lru_cache(maxsize=1024)
def statement(target: str, where: str, first: int, plain: bool = False, wide: bool = False) -> str:
    """Lock the first matching row, compute its new forms, write them if they changed;
    (matched, modified, unsupported). ``first`` is the number of the first of the three
    parameters that carry the ``InPlace`` arguments (the filter's come before);
    ``wide``: they hold an Int64 or a Decimal128 (``InPlace.wide``, catalog.NARROW).

    ``plain`` (an update that surely changes the document, ``InPlace.changes``) with a
    filter of one plain ``_id`` (at most one row, by the primary key): one ``UPDATE``,
    the statement a hand-written counter update is. It does what the locking statement
    does (the row's newest version rewritten, the new forms computed from it, again if
    another writer got there first) with one scan of the key instead of two and no
    separate lock; a document the function does not handle (its NULL) fails the
    ``NOT NULL`` column, so nothing is written and the caller takes the general path
    (``NotNullViolationError``)."""
    args = f"${first}::text, ${first + 1}::bytea, ${first + 2}::text::jsonb"
    mark = "" if wide else bsonform.NARROW
    if plain and where == BY_ID:
        return (
            f"{mark}WITH w AS (UPDATE {target} AS t SET (bson, doc) = (SELECT f.nb, f.nd FROM "
            f"{SCHEMA}.bson_update(t.bson, t.doc, {args}) AS f) WHERE {where} RETURNING 1) "
            "SELECT count(*)::int AS matched, count(*)::int AS modified, 0 AS unsupported FROM w"
        )
    return (
        f"{mark}WITH m AS (SELECT _id, bson, doc FROM {target} WHERE {where} LIMIT 1 FOR UPDATE), "
        f"u AS (SELECT m._id, m.bson AS old, f.nb, f.nd FROM m, "
        f"LATERAL {SCHEMA}.bson_update(m.bson, m.doc, {args}) AS f), "
        f"w AS (UPDATE {target} AS t SET bson = u.nb, doc = u.nd FROM u "
        "WHERE t._id = u._id AND u.nb <> u.old RETURNING 1) "
        "SELECT (SELECT count(*) FROM m)::int AS matched, "
        "(SELECT count(*) FROM w)::int AS modified, "
        "(SELECT count(*) FROM u WHERE u.nb IS NULL)::int AS unsupported"
    )
