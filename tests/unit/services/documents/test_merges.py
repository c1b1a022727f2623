"""$merge's stage parsing and what a matched document becomes (merges.py), and a view's
definition checks and the stages a find or count on it runs (views.py)."""

from __future__ import annotations

from typing import Any

import pytest

from heliosdb.errors import HeliosError
from heliosdb.services.documents import merges, views


def kind_of(run: Any) -> str:
    with pytest.raises(HeliosError) as raised:
        run()
    kind: str = raised.value.details["kind"]
    return kind


def test_parse_short_and_full_forms() -> None:
    assert merges.parse("out", "db") == merges.MergeSpec("db", "out")
    spec = merges.parse(
        {"into": {"db": "other", "coll": "c"}, "on": ["a", "b"], "whenNotMatched": "discard"},
        "db",
    )
    assert (spec.db, spec.coll, spec.on, spec.when_matched, spec.when_not_matched) == (
        "other",
        "c",
        ["a", "b"],
        "merge",
        "discard",
    )


@pytest.mark.parametrize(
    ("stage", "kind"),
    [
        ({"on": "_id"}, "missing_field"),
        ({"into": "c", "extra": 1}, "unknown_field"),
        ({"into": 5}, "type_mismatch"),
        ({"into": "c", "on": []}, "type_mismatch"),
        ({"into": "c", "on": ["a", "a"]}, "bad_value"),
        ({"into": "c", "whenMatched": "sometimes"}, "bad_value"),
        ({"into": "c", "whenNotMatched": "never"}, "bad_value"),
        ({"into": "c", "let": {"x": 1}}, "let_not_allowed"),
        ({"into": "a$b"}, "invalid_namespace"),
        (5, "type_mismatch"),
    ],
)
def test_parse_refuses(stage: Any, kind: str) -> None:
    assert kind_of(lambda: merges.parse(stage, "db")) == kind


def test_key_of_refuses_missing_null_and_array_values() -> None:
    assert merges.key_of({"a": {"b": 1}}, ["a.b"]) == {"a.b": {"$eq": 1}}
    assert kind_of(lambda: merges.key_of({"b": 1}, ["a"])) == "merge_on_field_missing"
    assert kind_of(lambda: merges.key_of({"a": None}, ["a"])) == "merge_on_field_missing"
    assert kind_of(lambda: merges.key_of({"a": [1]}, ["a"])) == "merge_on_field_array"


def test_matched_update_by_mode() -> None:
    existing = {"_id": 1, "a": 1, "b": 2}
    new = {"_id": 1, "b": 3, "c": 4}

    def spec(how: Any, let: Any = None) -> merges.MergeSpec:
        return merges.MergeSpec("db", "c", when_matched=how, let=let)

    assert merges.matched_update(spec("keepExisting"), existing, new) is None
    assert merges.matched_update(spec("replace"), existing, new) == {"b": 3, "c": 4}
    assert merges.matched_update(spec("merge"), existing, new) == {"a": 1, "b": 3, "c": 4}
    assert kind_of(lambda: merges.matched_update(spec("fail"), existing, new)) == "duplicate_key"
    other = {"_id": 2, "b": 3}
    assert kind_of(lambda: merges.matched_update(spec("merge"), existing, other)) == (
        "immutable_field"
    )
    stages = [{"$set": {"b": "$$new.c", "d": "$$twice"}}]
    update = merges.matched_update(spec(stages, {"twice": {"$add": ["$c", "$c"]}}), existing, new)
    assert update == [{"$set": {"b": {"$literal": 4}, "d": {"$literal": 8}}}]


def test_view_definitions() -> None:
    assert views.check_definition("src", None) == []
    assert views.check_definition("src", [{"$match": {}}]) == [{"$match": {}}]
    assert kind_of(lambda: views.check_definition(5, [])) == "type_mismatch"
    assert kind_of(lambda: views.check_definition("src", {"$match": {}})) == "type_mismatch"
    assert kind_of(lambda: views.check_definition("src", [{"$out": "x"}])) == (
        "option_not_supported_on_view"
    )
    assert kind_of(lambda: views.check_definition("src", [{"$match": {}, "$limit": 1}])) == (
        "failed_to_parse"
    )


def test_find_and_count_stages_follow_the_view_pipeline() -> None:
    view = views.Resolved("db", "v", "src", [{"$match": {"a": 1}}])
    assert views.find_stages(view, {"b": 2}, {"c": 1}, 3, 4, {"d": 1}) == [
        {"$match": {"a": 1}},
        {"$match": {"b": 2}},
        {"$sort": {"c": 1}},
        {"$skip": 3},
        {"$limit": 4},
        {"$project": {"d": 1}},
    ]
    assert views.count_stages(view, None, 0, -2) == [
        {"$match": {"a": 1}},
        {"$limit": 2},
        {"$count": "n"},
    ]
