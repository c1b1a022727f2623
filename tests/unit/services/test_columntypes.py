"""Column types and defaults for POST /tables: allow-lists, and literals written safely."""

from __future__ import annotations

import pytest

from heliosdb.errors import HeliosError
from heliosdb.services.columntypes import compile_default, compile_type, quote_literal
from heliosdb.services.tables import compile_create


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("int", "integer"),
        ("INTEGER", "integer"),
        ("bigint", "bigint"),
        ("serial", "serial"),
        ("varchar(20)", "varchar(20)"),
        ("character varying ( 20 )", "varchar(20)"),
        ("numeric(10, 2)", "numeric(10,2)"),
        ("numeric", "numeric"),
        ("double precision", "double precision"),
        ("timestamp with time zone", "timestamptz"),
        ("jsonb", "jsonb"),
        ("text[]", "text[]"),
        ("uuid[]", "uuid[]"),
        ("vector(3)", "vector(3)"),
    ],
)
def test_compile_type_allowed(text: str, sql: str) -> None:
    assert compile_type(text) == sql


@pytest.mark.parametrize(
    "text",
    [
        "regclass",
        "oid",
        "money",
        "int; DROP TABLE t",
        'text" , evil int --',
        "varchar(0)",
        "varchar(1,2)",
        "numeric(2,5)",
        "vector",
        "vector(3)[]",
        "serial[]",
        "text[][]",
        "",
        None,
        42,
    ],
)
def test_compile_type_refused(text: object) -> None:
    with pytest.raises(HeliosError):
        compile_type(text)


@pytest.mark.parametrize(
    ("value", "sql"),
    [
        (None, "NULL"),
        (True, "true"),
        (42, "42"),
        (-1.5, "-1.5"),
        ("0", "0"),
        ("'active'", "E'active'"),
        ("'it''s'", "E'it''s'"),
        ("'back\\\\slash'", "E'back\\\\\\\\slash'"),
        ("'{}'::jsonb", "E'{}'::jsonb"),
        ("now()", "pg_catalog.now()"),
        ("CURRENT_TIMESTAMP", "CURRENT_TIMESTAMP"),
        ("gen_random_uuid()", "pg_catalog.gen_random_uuid()"),
    ],
)
def test_compile_default_allowed(value: object, sql: str) -> None:
    assert compile_default(value) == sql


@pytest.mark.parametrize(
    "value",
    [
        "active",
        "pg_sleep(1)",
        "now(1)",
        "public.now()",
        "(SELECT 1)",
        "1; DROP TABLE t",
        "'a' || 'b'",
        "'x'::regclass",
        "nextval('s')",
        float("inf"),
        [1],
        {"a": 1},
    ],
)
def test_compile_default_refused(value: object) -> None:
    with pytest.raises(HeliosError):
        compile_default(value)


def test_quote_literal_escapes_quotes_and_backslashes() -> None:
    assert quote_literal("a'b\\c") == "E'a''b\\\\c'"
    with pytest.raises(HeliosError):
        quote_literal("a\x00b")


def test_compile_create_quotes_every_name() -> None:
    statements, schema, name = compile_create(
        {
            "name": 'we"ird',
            "columns": [{"name": "a b", "type": "int", "primary_key": True}],
            "indexes": [{"columns": ["a b"], "name": 'i"x', "unique": True}],
        }
    )
    assert (schema, name) == ("public", 'we"ird')
    assert statements == [
        'CREATE TABLE "public"."we""ird" ("a b" integer, PRIMARY KEY ("a b"))',
        'CREATE UNIQUE INDEX "i""x" ON "public"."we""ird" USING btree ("a b")',
    ]
