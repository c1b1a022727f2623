"""Unique indexes as MongoDB enforces them: every key of every document, arrays too.

MongoDB's unique index holds one key per value a document gives its key pattern: each
element of an array (``{k: [1, 2]}`` keys 1 and 2, so ``{k: [2, 3]}`` beside it is a
duplicate key, while a document's own repeats ``{k: [1, 1]}`` are one key), each
element's value through an array of documents (``"a.b"`` over ``{a: [{b: 1}, {b: 2}]}``
keys 1 and 2), ``undefined`` for an empty array, null for a missing field. A compound
index keys the product of its paths' values, where at most one array may be expanded
(paths through the same array pair its elements); two arrays are "parallel" (171). An
engine index holds one entry per row, so it cannot hold these.

So each unique index has a key table ``helios_documents."<engine name>"`` of rows
``(key, ord, _id)``: ``key`` the JSONB array of the key's values in their query form
(numbers equal across types), ``ord`` the field order of the embedded documents in them
(catalog.ORDER_DDL's ``field_order``, as the unique expression index held it before),
with a unique index on ``(key, ord)``. Statement-level triggers on the collection table,
whatever writes it (the MongoDB port, SQL through REST or the PostgreSQL port), keep it:
after an INSERT the new rows' keys go in, after a DELETE the old rows' keys go, after an
UPDATE the keys that changed (rows paired by ``_id``) go and come, a TRUNCATE empties it.
A document whose key paths meet no array (the common case) has one key, computed in
the trigger's statement itself; the others call ``index_keys``, MongoDB's key
generation (its BtreeKeyGenerator) in PL/pgSQL.

Locking: the key table's unique index is the one place two documents' keys meet, so the
engine's own unique check decides, exactly as for a unique column: a second transaction
inserting a key that a first one inserted (or deleted) and has not committed waits for
it, then fails (or goes in). Whatever the snapshot (REPEATABLE READ transactions too),
two concurrent writers of one key cannot both commit; a scalar and an array element meet
there as well, since both are rows of the same table. The collection keeps a plain
expression index on the key paths for finds.

Collections without a unique index have no trigger and pay nothing.
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# fixed fragments; every value is a bind parameter.

from __future__ import annotations

import re
from typing import Any

import orjson

from heliosdb.engine.quoting import qualified, quote_ident, quote_literal
from heliosdb.services.documents import catalog
from heliosdb.services.documents.catalog import CATALOG_SCHEMA, IndexSpec

# The SQLSTATE ``index_keys`` raises for two arrays in one compound key (MongoDB's 171).
PARALLEL_ARRAYS = "HX171"
# A key value for an empty array: MongoDB indexes ``[]`` as undefined, which equals no
# other value (not null, not an array holding ``[]``).
UNDEFINED = '{"$undefined": true}'
_UNDEFINED = orjson.loads(UNDEFINED)

# ``index_tuples(st)``: the keys of one document, MongoDB's key generation. ``st`` has
# a state per key path: ``{v, r, p}`` (the value reached, the path's remaining parts,
# the BSON path there), or final: ``{k, p}`` (the key value, its BSON path for
# field_order) or ``{m: true}`` (missing: a null key). Each unfinished path walks on
# through documents; a part that is a number reads an array's element at that position;
# an array met on the way or at the end stops it. All paths stopped at one array (the
# same BSON path) are expanded together, one recursion per element (the element is the
# key where the path ends there, an array element included: nested arrays are not
# expanded; a scalar where it goes on is missing); two arrays raise PARALLEL_ARRAYS; an
# empty array is undefined where the path ends at it, else missing. ``index_keys``:
# the distinct ``(key, ord)`` of those tuples; a sparse index skips a tuple whose every
# path is missing.
KEYS_DDL = rf"""
CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.index_tuples(st jsonb)
RETURNS SETOF jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE ROWS 4 AS $fn$
DECLARE
    f jsonb; v jsonb; r jsonb; p jsonb; part text; pos boolean; elem boolean;
    arr jsonb; loc jsonb; members int[] := '{{}}'; nxt jsonb; i int; j int;
BEGIN
    FOR i IN 0 .. jsonb_array_length(st) - 1 LOOP
        f := st -> i;
        CONTINUE WHEN f ? 'k' OR f ? 'm';
        v := f -> 'v'; r := f -> 'r'; p := f -> 'p';
        pos := false; elem := f ? 'e';
        LOOP
            IF jsonb_array_length(r) = 0 THEN
                IF jsonb_typeof(v) <> 'array' OR elem THEN
                    f := jsonb_build_object('k', v, 'p', p);
                ELSIF pos THEN  -- an array reached by a position is the key itself
                    f := jsonb_build_object(
                        'k', CASE WHEN v = '[]' THEN '{UNDEFINED}'::jsonb ELSE v END, 'p', p);
                ELSE
                    f := jsonb_build_object('a', true, 'v', v, 'r', r, 'p', p);
                END IF;
                EXIT;
            END IF;
            part := r ->> 0;
            IF jsonb_typeof(v) = 'object' THEN
                v := v -> part;
                IF v IS NULL THEN f := '{{"m": true}}'; EXIT; END IF;
                p := p || to_jsonb(part); r := r - 0; pos := false; elem := false;
            ELSIF jsonb_typeof(v) = 'array' THEN
                IF part ~ '^[0-9]{{1,9}}$' AND part::int < jsonb_array_length(v) THEN
                    v := v -> part::int; p := p || to_jsonb(part); r := r - 0;
                    pos := true; elem := false;
                ELSIF elem THEN
                    f := '{{"m": true}}'; EXIT;  -- an array in an array is not expanded
                ELSE
                    f := jsonb_build_object('a', true, 'v', v, 'r', r, 'p', p); EXIT;
                END IF;
            ELSE
                f := '{{"m": true}}'; EXIT;
            END IF;
        END LOOP;
        st := jsonb_set(st, ARRAY[i::text], f);
        IF f ? 'a' THEN
            IF loc IS NULL THEN
                loc := p; arr := v;
            ELSIF loc <> p THEN
                RAISE EXCEPTION 'cannot index parallel arrays [%] [%]', p ->> -1, loc ->> -1
                    USING ERRCODE = '{PARALLEL_ARRAYS}';
            END IF;
            members := members || i;
        END IF;
    END LOOP;
    IF loc IS NULL THEN
        RETURN NEXT st;
        RETURN;
    END IF;
    IF jsonb_array_length(arr) = 0 THEN
        FOREACH i IN ARRAY members LOOP
            f := st -> i;
            st := jsonb_set(st, ARRAY[i::text], CASE WHEN jsonb_array_length(f -> 'r') = 0
                THEN jsonb_build_object('k', '{UNDEFINED}'::jsonb, 'p', f -> 'p')
                ELSE '{{"m": true}}'::jsonb END);
        END LOOP;
        RETURN NEXT st;
        RETURN;
    END IF;
    FOR j IN 0 .. jsonb_array_length(arr) - 1 LOOP
        nxt := st;
        FOREACH i IN ARRAY members LOOP
            f := st -> i;
            nxt := jsonb_set(nxt, ARRAY[i::text], jsonb_build_object(
                'v', arr -> j, 'r', f -> 'r', 'p', (f -> 'p') || to_jsonb(j::text), 'e', true));
        END LOOP;
        RETURN QUERY SELECT * FROM {CATALOG_SCHEMA}.index_tuples(nxt);
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.index_keys(
    doc jsonb, nb bytea, paths text[], sparse boolean
) RETURNS TABLE(key jsonb, ord bytea) LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 4 AS $fn$
    SELECT DISTINCT
        (SELECT jsonb_agg(COALESCE(f -> 'k', 'null'::jsonb) ORDER BY n)
         FROM jsonb_array_elements(t) WITH ORDINALITY AS x(f, n)),
        (SELECT string_agg(
             CASE WHEN jsonb_typeof(f -> 'k') IN ('object', 'array')
                       AND strpos((f -> 'k')::text, ',') > 0
                  THEN {CATALOG_SCHEMA}.field_order(
                      nb, ARRAY(SELECT jsonb_array_elements_text(f -> 'p')))
                  ELSE '\x'::bytea END, '\x'::bytea ORDER BY n)
         FROM jsonb_array_elements(t) WITH ORDINALITY AS x(f, n))
    FROM {CATALOG_SCHEMA}.index_tuples((
        SELECT jsonb_agg(jsonb_build_object(
            'v', doc, 'r', to_jsonb(string_to_array(path, '.')), 'p', '[]'::jsonb) ORDER BY n)
        FROM unnest(paths) WITH ORDINALITY AS u(path, n)
    )) AS t
    WHERE NOT sparse OR EXISTS (SELECT 1 FROM jsonb_array_elements(t) AS f WHERE f ? 'k')
$fn$;
"""


def key_table(spec: IndexSpec) -> str:
    return qualified(CATALOG_SCHEMA, spec.engine_name)


def unique_name(spec: IndexSpec) -> str:
    """The name of the key table's unique index: a duplicate key's constraint name."""
    return spec.engine_name + "_u"


def _function(spec: IndexSpec) -> str:
    return qualified(CATALOG_SCHEMA, spec.engine_name + "_t")


def _one_key(spec: IndexSpec, row: str) -> tuple[str, str, str, str]:
    """For the row ``row`` (an alias or OLD/NEW): its key and ``ord`` where no key path
    meets an array, the test that one does (then ``index_keys`` has its keys), and the
    test that it has a key there at all (a sparse index skips a row missing every
    path)."""
    paths = list(spec.key)
    values = ", ".join(
        f"COALESCE({catalog.key_expression(p, row + '.')}, 'null'::jsonb)" for p in paths
    )
    orders = " || ".join(catalog.order_expression(p, row + ".") for p in paths)
    arrays = " OR ".join(catalog.array_predicate(p, row + ".") for p in paths)
    present = "true"
    if spec.options.get("sparse"):
        present = " OR ".join(f"{catalog.key_expression(p, row + '.')} IS NOT NULL" for p in paths)
    return f"jsonb_build_array({values})", orders, f"COALESCE({arrays}, false)", present


def _all_keys(spec: IndexSpec, row: str) -> str:
    """The call of ``index_keys`` for the row ``row``."""
    names = "ARRAY[" + ", ".join(quote_literal(p) for p in spec.key) + "]::text[]"
    sparse = "true" if spec.options.get("sparse") else "false"
    return f"{CATALOG_SCHEMA}.index_keys({row}.doc, {row}.bson, {names}, {sparse})"


def _changed(spec: IndexSpec) -> str:
    """The UPDATE trigger's condition: the row's keys may have changed (its ``_id`` did,
    the value under a key path's first field did, or it holds embedded documents whose
    field order may have); an update of other fields calls no function."""
    tests = ["OLD._id IS DISTINCT FROM NEW._id"]
    for first in dict.fromkeys(p.split(".")[0] for p in spec.key):
        old, new = catalog.key_expression(first, "OLD."), catalog.key_expression(first, "NEW.")
        tests.append(f"{old} IS DISTINCT FROM {new}")
        tests.append(
            f"(jsonb_typeof({new}) IN ('object', 'array') AND strpos({new}::text, ',') > 0)"
        )
    return " OR ".join(tests)


def _trigger_body(spec: IndexSpec) -> str:
    """Row by row: the old row's keys go, the new row's come. Each statement here is
    planned once per session (a VALUES or a call with the row's values as parameters);
    the IF tests run as plain expressions."""
    keys = key_table(spec)
    old_key, old_ord, old_arrays, old_present = _one_key(spec, "OLD")
    new_key, new_ord, new_arrays, new_present = _one_key(spec, "NEW")
    return f"""
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM {keys};
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        IF {old_arrays} THEN
            DELETE FROM {keys} AS t USING {_all_keys(spec, "OLD")} AS k
            WHERE t.key = k.key AND t.ord = k.ord;
        ELSIF {old_present} THEN
            DELETE FROM {keys} WHERE key = {old_key} AND ord = {old_ord};
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF {new_arrays} THEN
            INSERT INTO {keys} (key, ord, _id)
            SELECT k.key, k.ord, NEW._id FROM {_all_keys(spec, "NEW")} AS k;
        ELSIF {new_present} THEN
            INSERT INTO {keys} (key, ord, _id) VALUES ({new_key}, {new_ord}, NEW._id);
        END IF;
    END IF;
    RETURN NULL;
END
"""


def _dollar_quoted(body: str) -> str:
    """``body`` between dollar quotes it does not contain: the key paths in it are the
    client's field names (quoted as literals, which a ``$tag$`` inside would end)."""
    n = 0
    while f"$k{n}$" in body:
        n += 1
    return f"$k{n}${body}$k{n}$"


def create_ddl(db: str, collection: str, spec: IndexSpec) -> list[str]:
    """The statements that give the unique index ``spec`` its key table, filled from
    the collection's rows (a duplicate key fails the index build: 23505), and the
    triggers that keep it. The collection is locked against writes first."""
    target = catalog.table(db, collection)
    keys = key_table(spec)
    key, ord_, arrays, present = _one_key(spec, "n")
    function = _function(spec)
    trigger = spec.engine_name
    return [
        f"LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE",
        f"CREATE TABLE {keys} (key jsonb NOT NULL, ord bytea NOT NULL, _id jsonb NOT NULL)",
        f"INSERT INTO {keys} (key, ord, _id) SELECT {key}, {ord_}, n._id FROM {target} AS n "
        f"WHERE NOT {arrays} AND ({present})",
        f"INSERT INTO {keys} (key, ord, _id) SELECT k.key, k.ord, n._id FROM {target} AS n "
        f"CROSS JOIN LATERAL {_all_keys(spec, 'n')} AS k WHERE {arrays}",
        f"CREATE UNIQUE INDEX {quote_ident(unique_name(spec))} ON {keys} (key, ord)",
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS "
        f"{_dollar_quoted(_trigger_body(spec))}",
        f"CREATE TRIGGER {quote_ident(trigger + '_i')} AFTER INSERT ON {target} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {quote_ident(trigger + '_u')} AFTER UPDATE ON {target} "
        f"FOR EACH ROW WHEN ({_changed(spec)}) EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {quote_ident(trigger + '_d')} AFTER DELETE ON {target} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {quote_ident(trigger + '_t')} AFTER TRUNCATE ON {target} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


def drop_ddl(spec: IndexSpec) -> list[str]:
    """The statements that take the key table and its triggers away (none for an index
    that is not unique; harmless where they are gone already)."""
    if not spec.unique:
        return []
    return [
        f"DROP FUNCTION IF EXISTS {_function(spec)}() CASCADE",
        f"DROP TABLE IF EXISTS {key_table(spec)}",
    ]


def spec_for(specs: list[IndexSpec], constraint: str) -> IndexSpec | None:
    """The unique index whose key table's constraint ``constraint`` is."""
    return next((s for s in specs if s.unique and unique_name(s) == constraint), None)


_DETAIL = re.compile(r"^Key \(key, ord\)=\((.*), \\x[0-9a-f]*\) (?:already exists|is duplicated)\.")


def key_value(spec: IndexSpec, document: dict[str, Any], detail: str | None) -> dict[str, Any]:
    """MongoDB's ``keyValue`` for a duplicate key the key table refused: the engine's
    detail names the key (query forms); each value is shown as ``document`` holds it
    where one of the values its path reaches has that form, else as the form."""
    from heliosdb.services.documents import bsonform
    from heliosdb.services.documents.values import candidates

    match = _DETAIL.match(detail or "")
    try:
        forms = orjson.loads(match.group(1)) if match else None
    except orjson.JSONDecodeError:
        forms = None
    out: dict[str, Any] = {}
    for i, path in enumerate(spec.key):
        if not isinstance(forms, list) or i >= len(forms) or forms[i] in (None, _UNDEFINED):
            out[path] = None  # BSON's undefined reads as None in the drivers
            continue
        out[path] = next(
            (c for c in candidates(document, path) if bsonform.query_form(c) == forms[i]),
            forms[i],
        )
    return out
