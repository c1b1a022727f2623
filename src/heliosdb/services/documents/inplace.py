"""Updates the engine applies itself: ``update_one`` with ``$set``/``$inc`` on top-level
fields, in one statement.

The general path (store.py) reads the row, applies the operators in Python on the
decoded BSON and writes the row back: two round trips. The common case, a few top-level
fields set to given values or integers incremented, needs no Python: the function
below (created with the catalog, catalog.py) walks the top-level elements of the stored
BSON, replaces or appends the elements the node encoded, adds integers with MongoDB's
widening rule (int32 + int32 stays int32 unless it overflows, anything with an int64
is int64), and sets the same fields in the JSONB query form. It returns NULL for what
it does not handle (a double or decimal to increment, a value of another type, a
document too big), and the store then takes the general path, which also produces
every error. Field order and types come out exactly as the Python path makes them.
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# fixed fragments; every value is a bind parameter.

from __future__ import annotations

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
    "(get_byte(nb, {o}) | (get_byte(nb, {o} + 1) << 8) | (get_byte(nb, {o} + 2) << 16)"
    " | (get_byte(nb, {o} + 3) << 24))"
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
).format(i32=_I32.format(o="vs"))


def _set_bytes(target: str, at: str, value: str, count: int) -> str:
    """One expression writing ``count`` little-endian bytes of ``value`` at ``at``."""
    out = target
    for j in range(count):
        out = f"set_byte({out}, {at} + {j}, (({value} >> {8 * j}) & 255)::int)"
    return out


FUNCTION_DDL = rf"""
CREATE OR REPLACE FUNCTION {SCHEMA}.bson_update(
    b bytea, d jsonb, ops text, keys text[], kzs bytea[], elems bytea[], vals jsonb[],
    OUT nb bytea, OUT nd jsonb
) LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    i int; p int; t int; vs int; ve int; w int; size int;
    kz bytea; kl int; el bytea; hit boolean; res numeric; r bigint;
BEGIN
    nb := b; nd := d;
    IF octet_length(b) > 1048576 THEN nb := NULL; RETURN; END IF;
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        kz := kzs[i]; kl := octet_length(kz) - 1; el := elems[i];
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
            IF t = 16 THEN res := {_I32.format(o="vs")};
            ELSIF t = 18 THEN res := {_I64};
            ELSE nb := NULL; RETURN;
            END IF;
            res := res + (vals[i])::numeric;
            IF res < -9223372036854775808 OR res > 9223372036854775807 THEN
                nb := NULL; RETURN;
            END IF;
            r := res::bigint;
            IF t = 18 OR get_byte(el, 0) = 18 OR res < -2147483648 OR res > 2147483647 THEN
                el := '\x12'::bytea || kz || '\x0000000000000000'::bytea;
                el := {_set_bytes("el", "kl + 2", "r", 8)};
            ELSE
                el := '\x10'::bytea || kz || '\x00000000'::bytea;
                el := {_set_bytes("el", "kl + 2", "r", 4)};
            END IF;
            nd := jsonb_set(nd, ARRAY[keys[i]], to_jsonb(res));
        ELSE
            nd := jsonb_set(nd, ARRAY[keys[i]], vals[i]);
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
_OPS = {"$set": "s", "$inc": "i"}


@dataclass(frozen=True, slots=True)
class InPlace:
    """The arguments of ``bson_update`` for one update document."""

    ops: str
    keys: list[str]
    keys_z: list[bytes]  # each key's UTF-8 bytes and the NUL that ends it in BSON
    elements: list[bytes]
    values: list[str]  # JSON text of each query-form value (an SQL NULL is no JSON null)


def plan(update: Any) -> InPlace | None:
    """The in-engine form of ``update``, or None when it needs the general path."""
    if not isinstance(update, dict) or not update:
        return None
    ops: list[str] = []
    keys: list[str] = []
    keys_z: list[bytes] = []
    elements: list[bytes] = []
    values: list[Any] = []
    for op, fields in update.items():
        code = _OPS.get(op)
        if code is None or not isinstance(fields, dict) or not fields:
            return None
        for key, value in fields.items():
            if (
                not isinstance(key, str)
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
            ops.append(code)
            keys.append(key)
            keys_z.append(key.encode() + b"\x00")
            elements.append(bsonform.encode({key: value})[4:-1])
            form = int(value) if code == "i" else bsonform.query_form(value)
            values.append(orjson.dumps(form).decode())
    return InPlace("".join(ops), keys, keys_z, elements, values)


def statement(target: str, where: str, first: int) -> str:
    """Lock the first matching row, compute its new forms, write them if they changed;
    (matched, modified, unsupported). ``first`` is the number of the first of the five
    parameters that carry the ``InPlace`` arguments (the filter's come before)."""
    args = (
        f"${first}::text, ${first + 1}::text[], ${first + 2}::bytea[], ${first + 3}::bytea[], "
        f"${first + 4}::text[]::jsonb[]"
    )
    return (
        f"WITH m AS (SELECT _id, bson, doc FROM {target} WHERE {where} LIMIT 1 FOR UPDATE), "
        f"u AS (SELECT m._id, m.bson AS old, f.nb, f.nd FROM m, "
        f"LATERAL {SCHEMA}.bson_update(m.bson, m.doc, {args}) AS f), "
        f"w AS (UPDATE {target} AS t SET bson = u.nb, doc = u.nd FROM u "
        "WHERE t._id = u._id AND u.nb <> u.old RETURNING 1) "
        "SELECT (SELECT count(*) FROM m)::int AS matched, "
        "(SELECT count(*) FROM w)::int AS modified, "
        "(SELECT count(*) FROM u WHERE u.nb IS NULL)::int AS unsupported"
    )
