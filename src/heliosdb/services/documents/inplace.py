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
FUNCTION_DDL = rf"""
CREATE OR REPLACE FUNCTION {SCHEMA}.bson_update(
    b bytea, d jsonb, ops text, keys text[], elems bytea[], vals jsonb[],
    OUT nb bytea, OUT nd jsonb
) LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    i int; p int; t int; ke int; vs int; ve int; j int; w int;
    kb bytea; kl int; el bytea; op text; hit boolean;
    cur numeric; res numeric; r bigint;
BEGIN
    nb := b; nd := d;
    IF octet_length(b) > 1048576 THEN nb := NULL; RETURN; END IF;
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        kb := convert_to(keys[i], 'UTF8'); kl := octet_length(kb);
        el := elems[i]; op := substr(ops, i, 1);
        p := 4; hit := false;
        LOOP
            t := get_byte(nb, p);
            EXIT WHEN t = 0;
            ke := p + 1;
            WHILE get_byte(nb, ke) <> 0 LOOP ke := ke + 1; END LOOP;
            vs := ke + 1;
            IF t IN (1, 9, 17, 18) THEN ve := vs + 8;
            ELSIF t = 16 THEN ve := vs + 4;
            ELSIF t = 7 THEN ve := vs + 12;
            ELSIF t = 8 THEN ve := vs + 1;
            ELSIF t IN (6, 10, 127, 255) THEN ve := vs;
            ELSIF t = 19 THEN ve := vs + 16;
            ELSIF t IN (2, 3, 4, 5, 12, 13, 14, 15) THEN
                -- (every operator but arithmetic binds alike: parenthesise each shift)
                ve := vs + (get_byte(nb, vs) | (get_byte(nb, vs + 1) << 8)
                            | (get_byte(nb, vs + 2) << 16) | (get_byte(nb, vs + 3) << 24));
                IF t IN (2, 13, 14) THEN ve := ve + 4;
                ELSIF t = 5 THEN ve := ve + 5;
                ELSIF t = 12 THEN ve := ve + 16;
                END IF;
            ELSIF t = 11 THEN
                ve := vs;
                WHILE get_byte(nb, ve) <> 0 LOOP ve := ve + 1; END LOOP;
                ve := ve + 1;
                WHILE get_byte(nb, ve) <> 0 LOOP ve := ve + 1; END LOOP;
                ve := ve + 1;
            ELSE
                nb := NULL; RETURN;
            END IF;
            IF ke - p - 1 = kl AND substring(nb FROM p + 2 FOR kl) = kb THEN
                hit := true;
                EXIT;
            END IF;
            p := ve;
        END LOOP;
        IF hit AND op = 'i' THEN
            IF t NOT IN (16, 18) THEN nb := NULL; RETURN; END IF;
            cur := 0;
            FOR j IN REVERSE (CASE WHEN t = 16 THEN 3 ELSE 7 END) .. 0 LOOP
                cur := cur * 256 + get_byte(nb, vs + j);
            END LOOP;
            IF t = 16 AND cur >= 2147483648 THEN cur := cur - 4294967296;
            ELSIF t = 18 AND cur >= 9223372036854775808 THEN cur := cur - 18446744073709551616;
            END IF;
            res := cur + (vals[i])::numeric;
            IF res < -9223372036854775808 OR res > 9223372036854775807 THEN
                nb := NULL; RETURN;
            END IF;
            w := CASE WHEN t = 18 OR get_byte(el, 0) = 18
                      OR res < -2147483648 OR res > 2147483647 THEN 8 ELSE 4 END;
            r := res::bigint;
            el := set_byte('\x00'::bytea, 0, CASE WHEN w = 8 THEN 18 ELSE 16 END)
                  || kb || '\x00'::bytea
                  || CASE WHEN w = 8 THEN '\x0000000000000000'::bytea ELSE '\x00000000'::bytea END;
            FOR j IN 0 .. w - 1 LOOP
                el := set_byte(el, kl + 2 + j, ((r >> (8 * j)) & 255)::int);
            END LOOP;
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
    j := octet_length(nb);
    IF j > 16777216 THEN nb := NULL; RETURN; END IF;
    FOR i IN 0 .. 3 LOOP nb := set_byte(nb, i, (j >> (8 * i)) & 255); END LOOP;
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
    elements: list[bytes]
    values: list[str]  # JSON text of each query-form value (an SQL NULL is no JSON null)


def plan(update: Any) -> InPlace | None:
    """The in-engine form of ``update``, or None when it needs the general path."""
    if not isinstance(update, dict) or not update:
        return None
    ops: list[str] = []
    keys: list[str] = []
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
            elements.append(bsonform.encode({key: value})[4:-1])
            form = int(value) if code == "i" else bsonform.query_form(value)
            values.append(orjson.dumps(form).decode())
    return InPlace("".join(ops), keys, elements, values)


def statement(target: str, where: str, first: int) -> str:
    """Lock the first matching row, compute its new forms, write them if they changed;
    (matched, modified, unsupported). ``first`` is the number of the first of the four
    parameters that carry the ``InPlace`` arguments (the filter's come before)."""
    args = (
        f"${first}::text, ${first + 1}::text[], ${first + 2}::bytea[], "
        f"${first + 3}::text[]::jsonb[]"
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
