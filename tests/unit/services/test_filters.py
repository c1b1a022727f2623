"""The filter compiler: allowed forms compile to parameterised SQL, everything else is refused."""

from __future__ import annotations

import pytest

from heliosdb.engine.quoting import quote_ident
from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.services.filters import TextLiteral, compile_filter, split_top_level
from heliosdb.services.postgrest import parse_condition, parse_order, parse_select

COLUMNS = {"id", "name", "age", "data", "tags", "created", "Weird Name"}


def resolve(name: str) -> str:
    if name not in COLUMNS:
        raise HeliosError(ErrorCode.INVALID_ARGUMENT, f"unknown column {name!r}")
    return quote_ident(name)


def compile_(text: str, offset: int = 0) -> tuple[str, list[object]]:
    compiled = compile_filter(text, resolve, param_offset=offset)
    return compiled.sql, compiled.params


def test_compile_comparison_makes_literal_a_parameter() -> None:
    sql, params = compile_("name = 'ann'")
    assert sql == '("name" = $1)'
    assert params == ["ann"]
    assert isinstance(params[0], TextLiteral)


def test_compile_numbers_keep_sql_constant_types() -> None:
    sql, params = compile_("age > 30 AND age < 2.5 OR id = 9999999999")
    assert "$1::integer" in sql and "$2::numeric" in sql and "$3::bigint" in sql
    assert params == [30, "2.5", 9999999999]


def test_compile_param_offset_numbers_from_offset() -> None:
    sql, params = compile_("name = 'a' AND age = 1", offset=3)
    assert "$4" in sql and "$5::integer" in sql and "$1" not in sql
    assert params == ["a", 1]


@pytest.mark.parametrize(
    "text",
    [
        "name LIKE 'a%' AND name NOT ILIKE '%b'",
        "age IN (1, 2, 3) AND age NOT IN (4)",
        "age BETWEEN 1 AND 5 AND age NOT BETWEEN 7 AND 9",
        "age IS NULL OR age IS NOT NULL",
        "(age > 1) IS TRUE AND (age > 1) IS NOT FALSE",
        "NOT (age <> 1) AND age != 2",
        "data->>'key' = 'v' AND data->'a'->>'b' = 'x' AND data->0 = '1'",
        "data @> '{\"a\": 1}' AND data ? 'a'",
        "lower(name) = 'ann' AND upper(name) = 'ANN' AND length(name) > 2",
        "coalesce(age, 0) = 0 AND abs(age) > 1 AND greatest(age, 1) > 0",
        "created > now() AND created < CURRENT_TIMESTAMP",
        "created::date = '2024-01-01' AND CAST(age AS text) = '1'",
        "age = ANY(ARRAY[1, 2])",
        "age IS DISTINCT FROM 3",
        '"Weird Name" = 1',
        "-age < -5",
        "name = 'it''s'",
    ],
)
def test_compile_allowed_forms(text: str) -> None:
    sql, _ = compile_(text)
    assert sql.startswith("(") or sql.startswith("pg_catalog")


def test_compile_functions_are_schema_qualified() -> None:
    sql, _ = compile_("lower(name) = 'a'")
    assert "pg_catalog.lower(" in sql


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("(SELECT 1) = 1", "subquery"),
        ("EXISTS (SELECT 1 FROM pg_authid)", "subquery"),
        ("age IN (SELECT 1)", "subquery"),
        ("pg_sleep(10) IS NULL", "pg_sleep"),
        ("pg_read_file('/etc/passwd') = ''", "pg_read_file"),
        ("public.lower(name) = 'a'", "public.lower"),
        ("count(*) > 1", "count"),
        ("name = 'a'; DROP TABLE t", "';'"),
        ("name = 'a' -- comment", "comments"),
        ("name = /* c */ 'a'", "comments"),
        ("id::regclass IS NOT NULL", "regclass"),
        ("'pg_authid'::regclass::oid > 0", "not allowed"),
        ("name::name = 'x'", "'name'"),
        ("age = $1", "$n"),
        ("nope = 1", "unknown column"),
        ("t.name = 'a'", "plain name"),
        ("name COLLATE \"C\" = 'a'", "COLLATE"),
        ("CASE WHEN age > 1 THEN true END", "CASE"),
        ("ROW(1, 2) = ROW(1, 2)", "row"),
        ("age OPERATOR(pg_catalog.=) 1", "OPERATOR"),
        ("name SIMILAR TO 'a'", "not allowed"),
        ("tags[1] = 'a'", "subscripting"),
        ("name = 'a' UNION SELECT 1", "not a statement"),
        ("true GROUP BY 1", "not a statement"),
        ("true ORDER BY 1", "not a statement"),
        ("true LIMIT 1", "not a statement"),
        ("1 = 1) OR (1 = 1", "not valid SQL"),
        ("name = 'unterminated", "not valid SQL"),
        ("", "non-empty"),
        ("age ## 1", "operator"),
        ("age @@ 1", "operator"),
        ("lower(name => 'a') = 'a'", "named argument"),
    ],
)
def test_compile_rejects(text: str, fragment: str) -> None:
    with pytest.raises(HeliosError) as info:
        compile_(text)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert fragment.lower() in info.value.message.lower()


@pytest.mark.parametrize(
    "value",
    [
        "'; DROP TABLE t; --",
        "x' OR '1'='1",
        "\\'; SELECT pg_sleep(10); --",
        '" OR 1=1 --',
        "$1",
        "\u2019 OR 1=1",
    ],
)
def test_compile_injection_strings_become_parameters(value: str) -> None:
    literal = "'" + value.replace("'", "''") + "'"
    sql, params = compile_(f"name = {literal}")
    assert sql == '("name" = $1)'
    assert params == [value]


def test_compile_rejects_deep_nesting() -> None:
    text = "lower(" * 100 + "name" + ")" * 100 + " = 'a'"
    with pytest.raises(HeliosError):
        compile_(text)


def test_compile_rejects_oversized_filters() -> None:
    with pytest.raises(HeliosError):
        compile_("age = 1 OR " * 5000 + "age = 2")


def test_postgrest_conditions_compile_values_as_parameters() -> None:
    node = parse_condition("age", "gt.30")
    from heliosdb.services.filters import compile_expression

    compiled = compile_expression(node, resolve)
    assert compiled.sql == '("age" > $1)'
    assert compiled.params == ["30"]


@pytest.mark.parametrize(
    ("name", "value", "sql"),
    [
        ("name", "eq.a", '("name" = $1)'),
        ("name", "neq.a", '("name" <> $1)'),
        ("age", "gte.1", '("age" >= $1)'),
        ("age", "lte.1", '("age" <= $1)'),
        ("age", "lt.1", '("age" < $1)'),
        ("name", "like.a*", '("name" ~~ $1)'),
        ("name", "ilike.*a*", '("name" ~~* $1)'),
        ("name", "not.eq.a", '(NOT ("name" = $1))'),
        ("age", "in.(1,2)", '("age" IN ($1, $2))'),
        ("age", "not.in.(1,2)", '(NOT ("age" IN ($1, $2)))'),
        ("age", "is.null", '("age" IS NULL)'),
        ("age", "not.is.null", '("age" IS NOT NULL)'),
        ("age", "is.true", '("age" IS TRUE)'),
        ("age", "not.is.false", '("age" IS NOT FALSE)'),
        ("data->a->>b", "eq.1", '((("data" -> $1::text) ->> $2::text) = $3)'),
        ("or", "(age.eq.1,name.eq.b)", '(("age" = $1) OR ("name" = $2))'),
        (
            "or",
            "(age.eq.1,and(name.eq.b,age.is.null))",
            '(("age" = $1) OR (("name" = $2) AND ("age" IS NULL)))',
        ),
        ("not.and", "(age.eq.1,age.eq.2)", '(NOT (("age" = $1) AND ("age" = $2)))'),
    ],
)
def test_postgrest_operators(name: str, value: str, sql: str) -> None:
    from heliosdb.services.filters import compile_expression

    assert compile_expression(parse_condition(name, value), resolve).sql == sql


def test_postgrest_like_star_becomes_percent() -> None:
    from heliosdb.services.filters import compile_expression

    assert compile_expression(parse_condition("name", "like.a*b*"), resolve).params == ["a%b%"]


def test_postgrest_in_accepts_quoted_values_with_commas() -> None:
    from heliosdb.services.filters import compile_expression

    compiled = compile_expression(parse_condition("name", 'in.("a,b",c)'), resolve)
    assert compiled.params == ["a,b", "c"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("age", "gt"),
        ("age", "zz.1"),
        ("age", "is.maybe"),
        ("age", "in.1,2"),
        ("age", "in.()"),
        ("or", "age.eq.1"),
        ("or", "(age.eq.1"),
        ("or", "(ageeq1)"),
        ("nope", "eq.1"),
        ("name; drop table t", "eq.1"),
    ],
)
def test_postgrest_rejects(name: str, value: str) -> None:
    from heliosdb.services.filters import compile_expression

    with pytest.raises(HeliosError) as info:
        compile_expression(parse_condition(name, value), resolve)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_postgrest_quoted_values_inside_groups() -> None:
    from heliosdb.services.filters import compile_expression

    node = parse_condition("or", '(name.eq."a,b)",name.like."x*")')
    assert compile_expression(node, resolve).params == ["a,b)", "x%"]


def test_parse_order_and_select() -> None:
    keys = parse_order("age.desc.nullslast,name")
    assert [(k.column, k.descending, k.nulls_first) for k in keys] == [
        ("age", True, False),
        ("name", False, None),
    ]
    assert parse_select("a, b,a") == ["a", "b"]
    assert parse_select("*") is None
    with pytest.raises(HeliosError):
        parse_order("age.sideways")
    with pytest.raises(HeliosError):
        parse_order(",".join(["age"] * 17))


def test_split_top_level_respects_quotes_and_parentheses() -> None:
    assert split_top_level('a,"b,c",f(d,e)', ",") == ["a", '"b,c"', "f(d,e)"]
    with pytest.raises(HeliosError):
        split_top_level("a,(b", ",")
