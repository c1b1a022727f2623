"""The filter compiler: values never reach SQL or jsonpath text; errors for bad input."""

from __future__ import annotations

import pytest
from bson import ObjectId
from bson.int64 import Int64

from heliosdb.errors import HeliosError
from heliosdb.services.documents.filters import (
    Params,
    compile_filter,
    compile_order,
    compile_sort,
)


def test_values_are_parameters() -> None:
    params = Params()
    sql = compile_filter({"name": "x'; DROP TABLE t; --", "n": {"$gt": 5}}, params)
    assert "DROP" not in sql
    assert "DROP" not in str(params.values[1:])  # a parameter of its own
    assert params.values[:2] == ["x'; DROP TABLE t; --", {"v1": 5}]


def test_field_names_are_quoted_in_the_path() -> None:
    params = Params()
    compile_filter({'we"ird': {"$gt": 1}}, params)
    assert params.values[1] == (
        'exists($."we\\"ird" ? ((@ > $v1 || @."$numberDouble" == "Infinity")'
        ' && @.type() != "array"))'
    )
    assert "(doc -> 'it''s') = $1::jsonb" in compile_filter({"it's": 1}, Params())


def test_top_level_scalar_equality_is_plain_sql() -> None:
    # The field is the value, or an array holding it (not a nested array: MongoDB's rule).
    params = Params()
    sql = compile_filter({"k": "x", "n": 2.5, "b": True}, params)
    assert "jsonb_path_match" not in sql
    assert "(doc -> 'k') @> jsonb_build_array($1::jsonb)" in sql
    assert params.values == ["x", 2.5, True]
    # Dotted paths, null and other kinds of values keep the path predicates.
    for spec in ({"a.b": 1}, {"a": None}, {"a": [1]}, {"a": {"x": 1}}, {"a": float("nan")}):
        assert "jsonb_path_match" in compile_filter(spec, Params()) or "EXISTS" in compile_filter(
            spec, Params()
        )


def test_path_tests_skip_arrays_nested_in_arrays() -> None:
    # In lax mode the filter unwraps [[5]] once and the comparison unwraps [5] again:
    # each test drops array items (MongoDB never looks into an array in an array).
    params = Params()
    compile_filter({"k": Int64(5), "a.b": {"$lt": 2}}, params)
    assert params.values[1] == (
        '(exists($."k" ? ((@ == $v1) && @.type() != "array")) && '
        'exists($."a"."b" ? ((@ < $v2 || @."$numberDouble" == "-Infinity")'
        ' && @.type() != "array")))'
    )
    assert params.values[0] == {"v1": 5, "v2": 2}


def test_elem_match_operators_see_each_element_as_it_is() -> None:
    # ``k ? (...)`` (not ``k[*] ? (...)``, which unwraps an element that is an array);
    # an operand test on the element itself refuses arrays before its own filter.
    params = Params()
    compile_filter({"k": {"$elemMatch": {"$eq": 5}}}, params)
    assert params.values[1] == (
        '($."k".type() == "array" && exists($."k" ? '
        '((@.type() != "array" && exists(@ ? (@ == $v1))))))'
    )
    # an array operand: compared member by member, each value a variable
    params = Params()
    compile_filter({"k": {"$elemMatch": {"$eq": [5, "x'"]}}}, params)
    assert "x'" not in params.values[1]
    assert '@[1].type() == "string" && @[1] == $v3' in params.values[1]
    assert params.values[0] == {"v1": 2, "v2": 5, "v3": "x'"}


def test_elem_match_document_operand_is_exact() -> None:
    # No key beyond the operand's (each key name a variable), then each value by type.
    params = Params()
    compile_filter({"e": {"$elemMatch": {"$eq": {"a'": 1, "b": {}}}}}, params)
    jp = params.values[1]
    assert "!exists(@.keyvalue() ? (@.key != $v1 && @.key != $v2))" in jp
    assert '(@."a\'".type() == "number" && @."a\'" == $v3)' in jp
    assert '!exists(@."b".keyvalue() ? ((1 == 1)))' in jp
    assert params.values[0] == {"v1": "a'", "v2": "b", "v3": 1}


def test_null_equality_counts_an_object_lacking_the_next_field() -> None:
    params = Params()
    compile_filter({"a.b.c": None, "k": None, "x.0.y": None}, params)
    jp = params.values[1]
    assert 'exists($."a" ? (@.type() == "object" && !exists(@."b")))' in jp
    assert 'exists($."a"."b" ? (@.type() == "object" && !exists(@."c")))' in jp
    assert jp.count("!exists(@.") == 2  # not for one-field paths nor positions


def test_id_equality_uses_the_primary_key() -> None:
    params = Params()
    oid = ObjectId()
    assert compile_filter({"_id": oid}, params) == "_id = $1::jsonb"
    assert params.values == [{"$oid": str(oid)}]


def test_indexed_paths_add_an_implied_condition() -> None:
    params = Params()
    sql = compile_filter({"a": 3}, params, {"a": "(doc -> 'a')"})
    assert sql.startswith("(((doc -> 'a') = $2::jsonb) OR (jsonb_typeof((doc -> 'a')) = 'array'))")


def test_indexed_ranges_keep_both_bounds_in_one_conjunction() -> None:
    # Both bounds ANDed (one index range scan); the infinity on the side of a one-sided
    # numeric range ORed beside them (an infinity's query form is an object).
    a = {"a": "(doc -> 'a')"}
    both = compile_filter({"a": {"$gt": 5, "$lt": 9}}, Params(), a)
    assert both.startswith(
        "(((doc -> 'a') > $3::jsonb AND (doc -> 'a') < 'false'::jsonb AND (doc -> 'a') < $4::jsonb)"
        " OR (jsonb_typeof"
    )
    above = compile_filter({"a": {"$gte": 5}}, Params(), a)
    assert """ OR (doc -> 'a') = '{"$numberDouble": "Infinity"}'::jsonb OR """ in above
    below = compile_filter({"a": {"$lt": 5}}, Params(), a)
    assert """ OR (doc -> 'a') = '{"$numberDouble": "-Infinity"}'::jsonb OR """ in below
    assert "Infinity" not in compile_filter({"a": {"$lt": "x"}}, Params(), a).split(" AND jsonb")[0]


@pytest.mark.parametrize(
    "spec",
    [
        {"a": {"$bogus": 1}},
        {"$foo": []},
        {"a": {"$size": -1}},
        {"a": {"$mod": [0, 1]}},
        {"a": {"$type": "nope"}},
        {"$or": []},
        {"a": {"$in": 5}},
        {"a": {"$regex": 5}},
    ],
)
def test_bad_filters(spec: dict[str, object]) -> None:
    with pytest.raises(HeliosError):
        compile_filter(spec, Params())


def test_sort_terms() -> None:
    params = Params()
    assert "ASC" in compile_sort({"a.b": 1}, params)
    # the path, its prefix (an array there), and its two names (the SQL walk through one)
    assert params.values == [["a", "b"], ["a"], "a", "b"]
    # _id: MongoDB's order of types, and the primary key's order for sorted_select
    order = compile_order({"_id": -1, "n": 1}, params)
    assert order.terms.startswith("(CASE jsonb_typeof((doc -> '_id'))")
    assert order.by_id.startswith("_id DESC, ") and order.by_id.endswith(order.terms[-40:])
    assert compile_order({"n": 1, "_id": 1}, params).by_id == ""
    statement = order.select("bson", "t", "a OR b", "", "$9::bigint")
    assert statement.count("WHERE a OR b ORDER BY") == 2  # both branches
    assert statement.count(" THEN $9::bigint ") == 1 and statement.count(" THEN 0 ") == 1
    with pytest.raises(HeliosError):
        compile_sort({"a": 2}, Params())


@pytest.mark.parametrize(
    "spec",
    [
        {"a": {"x": 1, "y": 2}},
        {"a": {"$in": [1, [{"o": {"x": 1, "y": 2}}]]}},
        {"a": {"$elemMatch": {"b": {"x": 1, "y": 2}}}},
        {"n": {"$type": "int"}},
        {"n": {"$type": [2, 18]}},
        {"a": {"$gt": {"x": 1}}},  # BSON order of documents: field by field
        {"_id": {"$lte": {"x": 1}}},
        {"v": {"$lt": [1, 2]}},  # arrays whole and array elements
        {"a": {"$elemMatch": {"$gte": {"x": 1}}}},
    ],
)
def test_filters_the_query_form_cannot_answer_exactly_are_checked_again(
    spec: dict[str, object],
) -> None:
    params = Params()
    compile_filter(spec, params)
    assert params.recheck


@pytest.mark.parametrize(
    "spec",
    [
        {"a": {"x": 1}},
        {"a": [1, {"x": [2]}]},
        {"n": {"$type": "number"}},
        {"_id": {"a": 1, "b": 2}},
    ],
)
def test_other_filters_are_exact(spec: dict[str, object]) -> None:
    params = Params()
    compile_filter(spec, params)
    assert not params.recheck


def test_a_negated_loose_test_selects_every_candidate() -> None:
    # NOT (equal without field order) would drop {a: {y: 2, x: 1}}, which $ne matches:
    # the negated test is left out, and the rows are checked again
    for spec in (
        {"a": {"$ne": {"x": 1, "y": 2}}},
        {"a": {"$nin": [{"x": 1, "y": 2}]}},
        {"$nor": [{"a": {"x": 1, "y": 2}}]},
        {"n": {"$not": {"$type": "double"}}},
        {"a": {"$not": {"$gt": {"x": 1}}}},
    ):
        params = Params()
        sql = compile_filter(spec, params)
        assert params.recheck
        assert params.values[-1] == "!((1 == 2))", spec
        assert sql.startswith("jsonb_path_match(doc"), spec
