"""Where collections and indexes live: names, engine DDL and the catalog tables.

A MongoDB database is an engine schema of the same name; a collection is a table
``"<db>"."<collection>" (_id jsonb PRIMARY KEY, bson bytea, doc jsonb)``. The catalog
(schema ``helios_documents``, created on first use by the read-write engine role so it
owns it and read-only principals can read it) records which tables are collections
and each index's MongoDB key pattern and options (as BSON: key order matters).

An index ``{a: 1, "b.c": -1}`` is an engine expression index
``((doc -> 'a'), (doc -> 'b' -> 'c') DESC)``; a unique one indexes
``COALESCE(<expr>, 'null')`` (a missing field counts as null, as in MongoDB) and is
enforced by its key table (keytables.py), which holds each key of each document as
MongoDB's multikey index does, with the field order of the embedded documents in it
(``ORDER_DDL``'s ``field_order``): the query form keeps no field order, and MongoDB's
equality (a unique index's) tells ``{a: 1, b: 2}`` from ``{b: 2, a: 1}``.
"""

# ruff: noqa: S608 - SQL here is composed from quote_ident()/quote_literal() names and
# fixed fragments; every value is a bind parameter.

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from heliosdb.engine import roles
from heliosdb.engine.quoting import qualified, quote_ident, quote_literal
from heliosdb.errors import ErrorCode, HeliosError, invalid
from heliosdb.services.documents import bsonform, inplace
from heliosdb.services.documents.filters import TYPE_RANK, Params
from heliosdb.services.documents.inplace import _SIZE as SIZE_SQL  # a BSON value's size

log = logging.getLogger("heliosdb.services.documents")

CATALOG_SCHEMA = "helios_documents"
_RESERVED_DBS = {"helios", CATALOG_SCHEMA, "information_schema", "pg_catalog", "pg_toast"}
_BAD_DB_CHARS = re.compile(r'[/\\. "$*<>:|?\x00]')
MAX_NAME_BYTES = 63

CATALOG_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {CATALOG_SCHEMA};
CREATE TABLE IF NOT EXISTS {CATALOG_SCHEMA}.collections (
    db text NOT NULL,
    name text NOT NULL,
    uuid uuid NOT NULL DEFAULT gen_random_uuid(),
    options bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (db, name)
);
CREATE TABLE IF NOT EXISTS {CATALOG_SCHEMA}.indexes (
    db text NOT NULL,
    collection text NOT NULL,
    name text NOT NULL,
    key bytea NOT NULL,
    options bytea NOT NULL,
    engine_name text NOT NULL,
    ttl_seconds bigint,
    PRIMARY KEY (db, collection, name)
);
ALTER TABLE {CATALOG_SCHEMA}.collections ADD COLUMN IF NOT EXISTS form smallint;
ALTER TABLE {CATALOG_SCHEMA}.collections
    ADD COLUMN IF NOT EXISTS wide boolean NOT NULL DEFAULT true;
"""

# ``wide``: the collection may hold an Int64 or a Decimal128 element, the number types
# the query form does not keep, so an engine-run $group must read each row's BSON for
# them (pushdown.py); false, it reads none. A collection starts false (create_collection;
# rows from before the column are true) and once true stays so. The node's own writes
# start with NARROW where no document they write holds such a number (the encoder's
# pass tells: bsonform.wide_form); every other write to the table (one of the node's
# that holds one, SQL through REST /query or the PostgreSQL port, COPY, an older node)
# lacks it, and the statement trigger WIDEN_TRIGGER sets the flag in that write's own
# transaction. So the flag is in the engine, read by the $group statement itself
# (``wide_sql``): right across worker processes and nodes. A statement that starts with
# NARROW claims to write no such number: SQL that copies it claims that too.
NARROW = bsonform.NARROW
WIDEN_TRIGGER = "helios_documents_widen"
WIDEN_DDL = f"""
CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.widen() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
    UPDATE {CATALOG_SCHEMA}.collections SET wide = true
    WHERE db = TG_TABLE_SCHEMA AND name = TG_TABLE_NAME AND NOT wide;
    RETURN NULL;
END
$fn$;
"""


def narrow(sql: str, wide: bool = False) -> str:
    """``sql``, a write of the node's, marked as holding no Int64 or Decimal128 unless
    ``wide`` (see NARROW)."""
    return sql if wide else NARROW + sql


def wide_sql(db: str, collection: str, params: Params) -> str:
    """SQL true where ``db.collection`` may hold an Int64 or a Decimal128 (true for a
    name the catalog does not hold): an uncorrelated subquery, so the engine reads it
    once per statement (an InitPlan), with the names as ``params``."""
    return (
        f"COALESCE((SELECT c.wide FROM {CATALOG_SCHEMA}.collections AS c "
        f"WHERE c.db = {params.add(db, 'text')} AND c.name = {params.add(collection, 'text')}), "
        "true)"
    )


# Reading BSON in the engine, for what the query form does not keep (field order),
# in PL/pgSQL whose every statement costs far more than the expression it runs (so
# these snippets are written into each function, not called). ``_ELEMENT`` reads the
# element at offset ``p`` of the bytes ``nb`` whose type ``t`` is not 0 (a document's
# end): ``n``, its name's length with the NUL, ``vs``, where its value starts, and
# ``ve``, where it ends (-1: a type of unknown size). ``_FIND`` walks ``path`` (names
# through documents and arrays, whose names are positions) to the element there: its
# type ``t`` (0: none), ``vs``, and ``p`` = ``vs + 4``, where a document's or array's
# first element starts.
_ELEMENT = rf"""
        n := position('\x00'::bytea IN substring(nb FROM p + 2 FOR 64));
        IF n = 0 THEN n := position('\x00'::bytea IN substring(nb FROM p + 2)); END IF;
        vs := p + 1 + n;
        IF t = 11 THEN
            ve := vs + position('\x00'::bytea IN substring(nb FROM vs + 1));
            ve := ve + position('\x00'::bytea IN substring(nb FROM ve + 1));
        ELSE
            size := {SIZE_SQL};
            ve := CASE WHEN size < 0 THEN -1 ELSE vs + size END;
        END IF;
"""
_FIND = rf"""
    p := 4; t := 3;
    FOR i IN 1 .. cardinality(path) LOOP
        IF t <> 3 AND t <> 4 THEN t := 0; EXIT; END IF;
        kz := convert_to(path[i], 'UTF8') || '\x00'::bytea;
        LOOP
            t := get_byte(nb, p);
            EXIT WHEN t = 0;
            {_ELEMENT}
            EXIT WHEN substring(nb FROM p + 2 FOR n) = kz;
            IF ve < 0 THEN t := 0; EXIT; END IF;
            p := ve;
        END LOOP;
        EXIT WHEN t = 0;
        p := vs + 4;
    END LOOP;
"""

# ``bson_type(bson, path)``: the BSON type of the element at ``path`` (0: none), for
# what the query form does not tell (pushdown.py: longs and decimals in a $group).
# ``field_order(bson, path)``: the names of the fields of every embedded document in
# the value at ``path``, each with its NUL, in the order the BSON holds them, depth
# first ('' when that is no document or array). Two values with equal query forms are
# equal in MongoDB exactly when these are equal too: the form fixes each document's
# field names and what lies under each, so the sequence reads back into one order of
# fields only (array positions are the form's: not recorded). Unique indexes hold its
# results (order_expression), so it is IMMUTABLE and never changes what it returns:
# other behaviour needs another name. ``sort_key(form, bson, path)`` (sorts,
# filters.order_by): the document at ``path`` as nested arrays that the engine's jsonb
# order puts in MongoDB's order of documents: per field in the BSON's order a cell
# ``[type, name, value, next]`` (``[type, value, next]`` in an array), its type
# MongoDB's canonical one (TYPE_RANK's whole part), its value the cells of an embedded
# document or array, or ``[TYPE_RANK, query form]``; ``next`` null after the last
# field (null sorts below an array: a document that is a prefix of another first).
# ``array_sort_key(doc, path, descending)`` (sorts, filters.order_by, for rows where
# an array on the way leaves ``doc #> path`` null, on paths of three parts or more):
# ``[rank, value]`` of MongoDB's sort key, the smallest (the largest when descending)
# in TYPE_RANK's then jsonb's order of the values ``sort_candidates`` yields for the
# path: an array's elements at its end (SQL NULL for an empty one, ranked 1.5: below
# null), each element's value through an array on the way (null where an element is
# no document or lacks the rest, or the array is empty), positions where a part is a
# number (values.path_sort_key is the node's side).
# Functions are schema-qualified inside: index builds run with a bare search_path. A
# read-only key's sorts call sort_key: the read-write role, which owns these, grants
# no EXECUTE to PUBLIC (engine/roles.py).
ORDER_DDL = rf"""
CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.field_order(nb bytea, path text[])
RETURNS bytea LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    p int; t int; n int; i int; vs int; ve int; size int; kz bytea; kinds text;
    names bytea := ''::bytea;
BEGIN
    {_FIND}
    IF t <> 3 AND t <> 4 THEN RETURN names; END IF;
    kinds := CASE t WHEN 3 THEN 'd' ELSE 'a' END;
    LOOP
        t := get_byte(nb, p);
        IF t = 0 THEN
            kinds := left(kinds, -1);
            EXIT WHEN kinds = '';
            p := p + 1;
            CONTINUE;
        END IF;
        {_ELEMENT}
        IF right(kinds, 1) = 'd' THEN names := names || substring(nb FROM p + 2 FOR n); END IF;
        IF t = 3 OR t = 4 THEN
            kinds := kinds || CASE t WHEN 3 THEN 'd' ELSE 'a' END;
            p := vs + 4;
        ELSIF ve < 0 THEN
            RETURN names;
        ELSE
            p := ve;
        END IF;
    END LOOP;
    RETURN names;
END
$fn$;

CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.bson_type(nb bytea, path text[])
RETURNS int LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    p int; t int; n int; i int; vs int; ve int; size int; kz bytea;
BEGIN
    {_FIND}
    RETURN t;
END
$fn$;

CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.type_rank(x jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT {TYPE_RANK.format(x="x")} $fn$;

CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.sort_cells(nb bytea, p int, x jsonb, doc boolean)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    t int; n int; vs int; ve int; size int; i int := 0; name text; v jsonb; r numeric;
    ranks numeric[] := '{{}}'; names text[] := '{{}}'; keys jsonb[] := '{{}}';
    res jsonb := 'null'::jsonb;
BEGIN
    LOOP
        t := get_byte(nb, p);
        EXIT WHEN t = 0;
        {_ELEMENT}
        name := convert_from(substring(nb FROM p + 2 FOR n - 1), 'UTF8');
        v := CASE WHEN doc THEN x -> name ELSE x -> i END;
        IF t = 3 OR t = 4 THEN
            ranks := array_append(ranks, (t + 2)::numeric);
            keys := array_append(keys, {CATALOG_SCHEMA}.sort_cells(nb, vs + 4, v, t = 3));
        ELSE
            r := {CATALOG_SCHEMA}.type_rank(v);
            ranks := array_append(ranks, CASE WHEN r > 2 AND r < 4 THEN 3 ELSE floor(r) END);
            keys := array_append(keys, jsonb_build_array(r, v));
        END IF;
        names := array_append(names, name);
        EXIT WHEN ve < 0;
        p := ve;
        i := i + 1;
    END LOOP;
    FOR i IN REVERSE cardinality(ranks) .. 1 LOOP
        res := CASE WHEN doc THEN jsonb_build_array(ranks[i], names[i], keys[i], res)
            ELSE jsonb_build_array(ranks[i], keys[i], res) END;
    END LOOP;
    RETURN res;
END
$fn$;

CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.sort_key(x jsonb, nb bytea, path text[])
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    p int; t int; n int; i int; vs int; ve int; size int; kz bytea;
BEGIN
    {_FIND}
    IF t <> 3 THEN RETURN NULL; END IF;
    RETURN {CATALOG_SCHEMA}.sort_cells(nb, p, x, true);
END
$fn$;

CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.sort_candidates(v jsonb, path text[])
RETURNS SETOF jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    f jsonb := v -> path[1]; rest text[] := path[2:]; e jsonb;
BEGIN
    IF jsonb_typeof(v) IS DISTINCT FROM 'object' OR f IS NULL THEN
        RETURN NEXT 'null'::jsonb;
        RETURN;
    END IF;
    WHILE cardinality(rest) > 0 AND jsonb_typeof(f) = 'array' AND rest[1] ~ '^[0-9]+$' LOOP
        f := COALESCE(f -> rest[1]::int, 'null'::jsonb);
        rest := rest[2:];
    END LOOP;
    IF cardinality(rest) = 0 THEN
        IF jsonb_typeof(f) <> 'array' THEN
            RETURN NEXT f;
        ELSIF jsonb_array_length(f) = 0 THEN
            RETURN NEXT NULL;
        ELSE
            RETURN QUERY SELECT jsonb_array_elements(f);
        END IF;
    ELSIF jsonb_typeof(f) <> 'array' THEN
        RETURN QUERY SELECT {CATALOG_SCHEMA}.sort_candidates(f, rest);
    ELSIF jsonb_array_length(f) = 0 THEN
        RETURN NEXT 'null'::jsonb;
    ELSE
        FOR e IN SELECT jsonb_array_elements(f) LOOP
            RETURN QUERY SELECT {CATALOG_SCHEMA}.sort_candidates(e, rest);
        END LOOP;
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.array_sort_key(
    doc jsonb, path text[], descending boolean
) RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    WITH c AS (
        SELECT k, CASE WHEN k IS NULL THEN 1.5 ELSE {CATALOG_SCHEMA}.type_rank(k) END AS r
        FROM {CATALOG_SCHEMA}.sort_candidates(doc, path) AS k
    )
    SELECT jsonb_build_array(r, k) FROM c
    ORDER BY CASE WHEN descending THEN r END DESC, CASE WHEN descending THEN k END DESC, r, k
    LIMIT 1
$fn$;

GRANT EXECUTE ON FUNCTION {CATALOG_SCHEMA}.sort_key(jsonb, bytea, text[]),
    {CATALOG_SCHEMA}.bson_type(bytea, text[]),
    {CATALOG_SCHEMA}.sort_cells(bytea, int, jsonb, boolean), {CATALOG_SCHEMA}.type_rank(jsonb),
    {CATALOG_SCHEMA}.sort_candidates(jsonb, text[]),
    {CATALOG_SCHEMA}.array_sort_key(jsonb, text[], boolean)
    TO {quote_ident(roles.RO)};
"""

# A collection's table dropped by SQL (``DROP TABLE``, ``DROP SCHEMA ... CASCADE``) takes
# its catalog rows and its unique indexes' key tables (keytables.py) with it, so the
# name is free and the next write creates it again (a view on it stays, as MongoDB keeps
# a view on a missing collection). ``forget_collection`` does that; the ``sql_drop``
# event trigger ``helios_documents_drops`` calls it for every table a statement drops,
# and each node start (ensure_catalog) for every catalog row whose table is gone (drops
# from before the trigger, or by the engine superuser). The event trigger's function
# belongs to the engine superuser, in the ``helios`` schema no client may touch; it is
# not SECURITY DEFINER and acts only when the dropping role is the read-write one: the
# catalog and ``forget_collection`` belong to that role, whose clients run SQL, so the
# superuser never runs what they could have changed (a trigger on a catalog table).
FORGET_DDL = f"""
CREATE OR REPLACE FUNCTION {CATALOG_SCHEMA}.forget_collection(d text, c text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
DECLARE
    k text;
BEGIN
    DELETE FROM {CATALOG_SCHEMA}.collections WHERE db = d AND name = c;
    FOR k IN DELETE FROM {CATALOG_SCHEMA}.indexes WHERE db = d AND collection = c
             RETURNING engine_name LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS {CATALOG_SCHEMA}.%I() CASCADE', k || '_t');
        EXECUTE format('DROP TABLE IF EXISTS {CATALOG_SCHEMA}.%I', k);
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION {CATALOG_SCHEMA}.forget_collection(text, text) FROM PUBLIC;
"""
# The orphans a node start finds (see FORGET_DDL).
_FORGET_ORPHANS = (
    f"SELECT {CATALOG_SCHEMA}.forget_collection(db, name) FROM {CATALOG_SCHEMA}.collections "
    "WHERE to_regclass(format('%I.%I', db, name)) IS NULL"
)
DROP_TRIGGER = "helios_documents_drops"
_DROP_FUNCTION = f"""
CREATE OR REPLACE FUNCTION helios.documents_drops() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
DECLARE
    o record;
BEGIN
    IF current_user <> {quote_literal(roles.RW)}
       OR to_regprocedure('{CATALOG_SCHEMA}.forget_collection(text, text)') IS NULL THEN
        RETURN;
    END IF;
    FOR o IN SELECT DISTINCT schema_name, object_name FROM pg_event_trigger_dropped_objects()
             WHERE object_type = 'table' AND NOT is_temporary
               AND schema_name <> {quote_literal(CATALOG_SCHEMA)} LOOP
        PERFORM {CATALOG_SCHEMA}.forget_collection(o.schema_name, o.object_name);
    END LOOP;
END
$fn$
"""


async def follow_drops(conn: asyncpg.Connection) -> None:
    """The ``sql_drop`` event trigger of FORGET_DDL (idempotent), on a connection of the
    engine superuser; logged and left out where the engine refuses it."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('helios_documents.drops'))")
            await conn.execute(_DROP_FUNCTION)
            await conn.execute("REVOKE ALL ON FUNCTION helios.documents_drops() FROM PUBLIC")
            if not await conn.fetchval(
                "SELECT 1 FROM pg_event_trigger WHERE evtname = $1", DROP_TRIGGER
            ):
                await conn.execute(
                    f"CREATE EVENT TRIGGER {DROP_TRIGGER} ON sql_drop "
                    "EXECUTE FUNCTION helios.documents_drops()"
                )
    except asyncpg.PostgresError:
        log.warning("a collection dropped through SQL stays in the catalog", exc_info=True)


# The version of the query form (bsonform) a collection's ``doc`` and ``_id`` columns
# hold, which ``upgrade_forms`` brings collections to once. Before 3 (NULL): NUL in a
# string was U+FFFD and U+0001 itself, a double past 2**53 its shortest decimal text,
# a Decimal128's NaN or infinity ``{"$numberDecimal": "NaN"}`` (now a double's). Before
# 4: an ``_id`` holding a document of two or more fields was its query form in ``_id``
# (now its ordered form, bsonform.id_form), and a Decimal128 no double equals was its
# nearest double (now bsonform.decimal_form). Before 5: a unique index had no
# field_order terms (order_expression), so it refused ``{k: {b: 2, a: 1}}`` beside
# ``{k: {a: 1, b: 2}}``; the forms did not change, the unique indexes are made again.
# Before 6: a unique index was a unique expression index, which took an array as one
# value; now its key table (keytables.py) holds each key, and the expression index is a
# plain one. A collection whose rows hold duplicate keys under the new rules keeps its
# old unique index and stays at 5 (logged; tried again at the next start).
FORM_VERSION = 6
# the first version whose rows _upgrade_collection need not look at
_ROWS_VERSION = 4
# The rows whose query form may differ from the current one: one whose form shows
# U+FFFD, U+0001 (as jsonb text writes it), "$numberDecimal", a number past 2**53 or
# one that is not an integer, or whose ``_id`` is an object with a comma in its text.
_STALE_FORM = (
    "(jsonb_typeof(_id) = 'object' AND strpos(_id::text, ',') > 0) "
    "OR strpos(doc::text, $1) > 0 OR strpos(doc::text, $2) > 0 OR strpos(doc::text, $3) > 0 "
    'OR jsonb_path_exists(doc, \'lax $.** ? (@.type() == "number" && '
    "(@ >= 9007199254740992 || @ <= -9007199254740992 || @.floor() != @))')"
)


def invalid_namespace(message: str) -> HeliosError:
    return invalid(message, kind="invalid_namespace")


_GOOD_DB_NAMES: set[str] = set()


def check_db_name(name: Any) -> str:
    if isinstance(name, str) and name in _GOOD_DB_NAMES:  # checked again by every statement
        return str(name)
    _check_db_name(name)
    if len(_GOOD_DB_NAMES) < 10_000:
        _GOOD_DB_NAMES.add(name)
    return str(name)


def _check_db_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise invalid_namespace("database names cannot be empty")
    if _BAD_DB_CHARS.search(name):
        raise invalid_namespace(f"Invalid database name: '{name}'")
    if name in _RESERVED_DBS or name.startswith("pg_"):
        raise invalid_namespace(f"database name '{name}' is reserved")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise invalid_namespace(f"database name is longer than {MAX_NAME_BYTES} bytes: {name}")


def check_collection_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise invalid_namespace("Invalid namespace specified: collection name is empty")
    if "$" in name or "\x00" in name or name.startswith("."):
        raise invalid_namespace(f"Invalid collection name: {name}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise invalid_namespace(
            f"collection name is longer than {MAX_NAME_BYTES} bytes: {name[:70]}"
        )
    return name


@functools.lru_cache(maxsize=4096)
def table(db: str, collection: str) -> str:
    """The collection's quoted table name (cached: every statement asks for it). A name
    no collection can have answers InvalidNamespace here, so a read of it answers as a
    write does (not the engine's "identifier longer than 63 bytes" for a long one)."""
    return qualified(db, check_collection_name(collection))


def key_expression(path: str, row: str = "") -> str:
    """``doc``'s value at ``path`` (of the row ``row``, a table alias with its dot)."""
    parts = path.split(".")
    return f"({row}doc" + "".join(f" -> {quote_literal(p)}" for p in parts) + ")"


@dataclass(slots=True)
class IndexSpec:
    name: str
    key: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    engine_name: str = ""

    @property
    def unique(self) -> bool:
        return bool(self.options.get("unique"))

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": 2, "key": self.key, "name": self.name}
        out.update(self.options)
        return out


ID_INDEX = IndexSpec("_id_", {"_id": 1})


def engine_index_name(db: str, collection: str, name: str) -> str:
    digest = hashlib.sha256(f"{db}\x00{collection}\x00{name}".encode()).hexdigest()[:24]
    return f"hx_{digest}"


def default_index_name(key: dict[str, Any]) -> str:
    return "_".join(f"{k}_{v}" for k, v in key.items())


def index_expression(path: str, unique: bool) -> str:
    """The indexed expression for one key path; filters.py compares against the same text."""
    expr = key_expression(path)
    return f"(COALESCE({expr}, 'null'::jsonb))" if unique else expr


def order_expression(path: str, row: str = "") -> str:
    """A unique key's term for the field order in the value at ``path`` (ORDER_DDL).
    Only an object or array whose text has a comma can hold a document of two or more
    fields: any other value (every scalar, ObjectId, date...) is '' without calling
    the function. Equal query forms take the same branch."""
    expr = key_expression(path, row)
    names = "ARRAY[" + ", ".join(quote_literal(p) for p in path.split(".")) + "]::text[]"
    return (
        f"(CASE WHEN jsonb_typeof({expr}) IN ('object', 'array') AND strpos({expr}::text, ',') > 0"
        f" THEN {CATALOG_SCHEMA}.field_order({row}bson, {names}) ELSE '\\x'::bytea END)"
    )


def array_predicate(path: str, row: str = "") -> str:
    """True where the path meets an array: such documents need MongoDB's array rules,
    so a partial index over exactly this predicate lets a query find them cheaply."""
    parts = path.split(".")
    tests = [
        f"jsonb_typeof({key_expression('.'.join(parts[: i + 1]), row)}) = 'array'"
        for i in range(len(parts))
    ]
    return "(" + " OR ".join(tests) + ")"


def multikey_index_name(engine_name: str) -> str:
    return engine_name + "_m"


def index_ddl(db: str, collection: str, spec: IndexSpec) -> list[str]:
    """The statements that create the index ``spec``: an expression index on its key
    paths (for finds) and a partial one over the documents where the leading path
    meets an array; a unique index's enforcement is its key table's (keytables.py)."""
    from heliosdb.services.documents import keytables

    terms = []
    for path, direction in spec.key.items():
        expr = index_expression(path, spec.unique)
        order = " DESC" if isinstance(direction, (int, float)) and direction < 0 else ""
        terms.append(expr + order)
    where = ""
    if spec.options.get("sparse"):
        where = " WHERE " + " OR ".join(f"{key_expression(p)} IS NOT NULL" for p in spec.key)
    leading = next(iter(spec.key))
    enforce = keytables.create_ddl(db, collection, spec) if spec.unique else []
    return [
        *enforce,
        f"CREATE INDEX {quote_ident(spec.engine_name)} ON {table(db, collection)} "
        f"({', '.join(terms)}){where}",
        f"CREATE INDEX {quote_ident(multikey_index_name(spec.engine_name))} ON "
        f"{table(db, collection)} ((1)) WHERE {array_predicate(leading)}",
    ]


def leading_keys(specs: list[IndexSpec]) -> dict[str, str]:
    """Indexed expression by leading key path, for filters.py's index-friendly conditions."""
    out: dict[str, str] = {}
    for spec in specs:
        if spec.options.get("sparse"):
            continue
        path = next(iter(spec.key))
        out.setdefault(path, index_expression(path, spec.unique))
    return out


async def ensure_catalog(conn: asyncpg.Connection) -> None:
    from heliosdb.services.documents import keytables, views

    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('helios_documents.catalog'))")
        await conn.execute(CATALOG_DDL)
        await conn.execute(inplace.FUNCTION_DDL)
        await conn.execute(ORDER_DDL)
        await conn.execute(keytables.KEYS_DDL)
        await conn.execute(views.DDL)
        await conn.execute(FORGET_DDL)
        await conn.execute(WIDEN_DDL)
        await conn.execute(_FORGET_ORPHANS)
        await upgrade_forms(conn)


async def upgrade_forms(conn: asyncpg.Connection) -> int:
    """Bring every collection's query forms to FORM_VERSION (inside the caller's
    transaction); the number of rows rewritten.

    Only the rows ``_STALE_FORM`` finds can differ: their forms are made again from
    the stored BSON and written back where they differ; then the collection is marked.
    A collection that fails (each in a savepoint of its own) is logged and left for the
    next node start: its documents stay readable as before."""
    rewritten = 0
    stale = await conn.fetch(
        f"SELECT db, name, form FROM {CATALOG_SCHEMA}.collections "
        "WHERE form IS DISTINCT FROM $1::smallint",
        FORM_VERSION,
    )
    for row in stale:
        try:
            async with conn.transaction():
                rows = row["form"] is None or row["form"] < _ROWS_VERSION
                rewritten += await _upgrade_collection(conn, row["db"], row["name"], rows)
        except (asyncpg.PostgresError, HeliosError, ValueError, TypeError):
            log.warning("query forms of %s.%s not upgraded", row["db"], row["name"], exc_info=True)
    return rewritten


async def _upgrade_collection(conn: asyncpg.Connection, db: str, name: str, rows_too: bool) -> int:
    rewritten = 0
    target = qualified(db, name)
    exists = await conn.fetchval("SELECT to_regclass($1)", target) is not None
    if exists and rows_too:
        rows = await conn.fetch(
            f"SELECT _id, bson, doc FROM {target} WHERE {_STALE_FORM}",
            "\ufffd",
            "\\u0001",
            '"$numberDecimal"',
        )
        for found in rows:
            document = bsonform.decode(found["bson"])
            form = bsonform.query_form(document)
            identifier = bsonform.id_form(document.get("_id"))
            if form == found["doc"] and identifier == bsonform.id_bind(found["_id"]):
                continue  # a big int64, say: its form was right already
            await conn.execute(  # the stored BSON stays: narrow
                narrow(
                    f"UPDATE {target} SET _id = $2::jsonb, doc = $3::jsonb WHERE _id = $1::jsonb"
                ),
                bsonform.id_bind(found["_id"]),
                identifier,
                form,
            )
            rewritten += 1
    form = FORM_VERSION
    if exists:
        # Each unique index again, with its key table; rows that hold a duplicate key
        # under MongoDB's array rules fail the build: that index stays as it was.
        for spec in await indexes(conn, db, name):
            if spec.unique and not await _rebuild_unique(conn, db, name, spec):
                form = FORM_VERSION - 1
    await conn.execute(
        f"UPDATE {CATALOG_SCHEMA}.collections SET form = $3::smallint WHERE db = $1 AND name = $2",
        db,
        name,
        form,
    )
    return rewritten


async def _rebuild_unique(conn: asyncpg.Connection, db: str, name: str, spec: IndexSpec) -> bool:
    """Build the unique index ``spec`` again as index_ddl makes it (in a savepoint);
    False, logged, where the rows there hold a duplicate key (or parallel arrays)."""
    from heliosdb.services.documents import keytables

    try:
        async with conn.transaction():
            for old in (spec.engine_name, multikey_index_name(spec.engine_name)):
                await conn.execute(f"DROP INDEX IF EXISTS {qualified(db, old)}")
            for statement in keytables.drop_ddl(spec) + index_ddl(db, name, spec):
                await conn.execute(statement)
    except asyncpg.PostgresError:
        log.warning(
            "unique index %s of %s.%s kept as it was: its documents hold a duplicate key "
            "or parallel arrays",
            spec.name,
            db,
            name,
            exc_info=True,
        )
        return False
    return True


async def create_collection(
    conn: asyncpg.Connection, db: str, collection: str, options: dict[str, Any] | None = None
) -> bool:
    """Create the table and catalog row if missing (inside the caller's transaction; a
    catalog row whose table is gone counts as missing: FORGET_DDL). A
    view of that name answers CommandNotSupportedOnView: a write, an index or an ``$out``
    never makes a collection where a view is (views.py)."""
    from heliosdb.services.documents import views

    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))", f"helios_documents:{db}.{collection}"
    )
    exists = await conn.fetchval(
        f"SELECT to_regclass($3) IS NOT NULL FROM {CATALOG_SCHEMA}.collections "
        "WHERE db = $1 AND name = $2",
        db,
        collection,
        table(db, collection),
    )
    if exists:
        return False
    if exists is not None:  # its table is gone (renamed through SQL, say): forgotten first
        await conn.execute(f"SELECT {CATALOG_SCHEMA}.forget_collection($1, $2)", db, collection)
    if await views.is_view(conn, db, collection):
        raise views.not_on_view(db, collection)
    # a table there already (made through SQL) may hold anything: wide
    wide = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table(db, collection))
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(db)}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table(db, collection)} "
        "(_id jsonb PRIMARY KEY, bson bytea NOT NULL, doc jsonb NOT NULL)"
    )
    await conn.execute(
        f"CREATE OR REPLACE TRIGGER {WIDEN_TRIGGER} AFTER INSERT OR UPDATE "
        f"ON {table(db, collection)} FOR EACH STATEMENT "
        f"WHEN (NOT starts_with(current_query(), {quote_literal(NARROW)})) "
        f"EXECUTE FUNCTION {CATALOG_SCHEMA}.widen()"
    )
    await conn.execute(
        f"INSERT INTO {CATALOG_SCHEMA}.collections (db, name, options, form, wide) "
        "VALUES ($1, $2, $3, $4::smallint, $5)",
        db,
        collection,
        bsonform.encode(options or {}),
        FORM_VERSION,
        wide,
    )
    return True


async def rename_indexes(conn: asyncpg.Connection, db: str, collection: str) -> None:
    """After a rename (inside its transaction, the catalog updated): give the indexes of
    the collection now ``db.collection`` the engine names that name makes, so the old
    one is free for a new collection; a unique index's key table and triggers are made
    again under the new name (a pass over the documents)."""
    from heliosdb.services.documents import keytables

    for spec in await indexes(conn, db, collection):
        name = engine_index_name(db, collection, spec.name)
        if name == spec.engine_name:
            continue
        for old, new in (
            (spec.engine_name, name),
            (multikey_index_name(spec.engine_name), multikey_index_name(name)),
        ):
            await conn.execute(
                f"ALTER INDEX IF EXISTS {qualified(db, old)} RENAME TO {quote_ident(new)}"
            )
        if spec.unique:
            renamed = IndexSpec(spec.name, spec.key, spec.options, name)
            for statement in keytables.drop_ddl(spec) + keytables.create_ddl(
                db, collection, renamed
            ):
                await conn.execute(statement)
        await conn.execute(
            f"UPDATE {CATALOG_SCHEMA}.indexes SET engine_name = $4 "
            "WHERE db = $1 AND collection = $2 AND name = $3",
            db,
            collection,
            spec.name,
            name,
        )


async def indexes(conn: asyncpg.Connection, db: str, collection: str) -> list[IndexSpec]:
    rows = await conn.fetch(
        f"SELECT name, key, options, engine_name FROM {CATALOG_SCHEMA}.indexes "
        "WHERE db = $1 AND collection = $2 ORDER BY name",
        db,
        collection,
    )
    return [
        IndexSpec(
            r["name"], bsonform.decode(r["key"]), bsonform.decode(r["options"]), r["engine_name"]
        )
        for r in rows
    ]


def not_found(message: str) -> HeliosError:
    return HeliosError(ErrorCode.NOT_FOUND, message, kind="namespace_not_found")
