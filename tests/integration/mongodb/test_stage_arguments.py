"""Bad arguments of ``$skip``, ``$limit``, ``$sample``, ``$unwind``, ``$replaceRoot`` and
``$replaceWith`` answer MongoDB's codes and messages, checked before any document is
read (an empty collection fails as a full one does)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

Docs = Collection[dict[str, Any]]


@pytest.fixture(scope="module")
def items(db: Database[dict[str, Any]]) -> Docs:
    db.items.insert_many([{"_id": 1, "a": {"x": 1}, "v": [1, 2]}, {"_id": 2, "a": 5, "v": 3}])
    return db.items


def failure(coll: Docs, stages: list[dict[str, Any]]) -> OperationFailure:
    with pytest.raises(OperationFailure) as raised:
        list(coll.aggregate(stages))
    return raised.value


@pytest.mark.parametrize(
    ("stage", "code", "message"),
    [
        ({"$limit": 0}, 15958, "the limit must be positive"),
        (
            {"$limit": -1},
            5107201,
            "invalid argument to $limit stage: Expected a non-negative number in: $limit: -1",
        ),
        (
            {"$limit": 1.5},
            5107201,
            "invalid argument to $limit stage: Expected an integer: $limit: 1.5",
        ),
        (
            {"$limit": "2"},
            5107201,
            'invalid argument to $limit stage: Expected a number in: $limit: "2"',
        ),
        (
            {"$skip": -1},
            5107200,
            "invalid argument to $skip stage: Expected a non-negative number in: $skip: -1",
        ),
        (
            {"$skip": 1e30},
            5107200,
            "invalid argument to $skip stage: Cannot represent as a 64-bit integer: $skip: 1e+30",
        ),
        ({"$sample": {"size": -1}}, 28747, "size argument to $sample must not be negative"),
        ({"$sample": {"size": "a"}}, 28746, "size argument to $sample must be a number"),
        ({"$sample": {}}, 28749, "$sample stage must specify a size"),
        ({"$sample": {"size": 1, "n": 2}}, 28748, "unrecognized option to $sample: n"),
        (
            {"$unwind": "v"},
            28818,
            "path option to $unwind stage should be prefixed with a '$': v",
        ),
        (
            {"$unwind": {"path": "v"}},
            28818,
            "path option to $unwind stage should be prefixed with a '$': v",
        ),
        ({"$unwind": {"includeArrayIndex": "i"}}, 28812, "no path specified to $unwind stage"),
        (
            {"$unwind": 1},
            15981,
            "expected either a string or an object as specification for $unwind stage, got int",
        ),
        ({"$replaceRoot": {}}, 40231, "no newRoot specified for the $replaceRoot stage"),
    ],
)
def test_a_bad_stage_argument_answers_mongodb_code(
    items: Docs, db: Database[dict[str, Any]], stage: dict[str, Any], code: int, message: str
) -> None:
    for coll in (items, db.nothing_here):
        error = failure(coll, [{"$match": {}}, stage])
        assert (error.code, error.details and error.details["errmsg"]) == (code, message)
    # after a stage the node runs, and inside a $facet, alike
    error = failure(items, [{"$group": {"_id": "$a"}}, stage])
    assert error.code == code
    assert failure(items, [{"$facet": {"f": [stage]}}]).code == code


def test_a_new_root_that_is_no_document(items: Docs) -> None:
    error = failure(items, [{"$sort": {"_id": -1}}, {"$replaceRoot": {"newRoot": "$a"}}])
    assert error.code == 40228
    assert error.details is not None
    assert error.details["errmsg"] == (
        "'newRoot' expression  must evaluate to an object, but resulting value was: 5. "
        "Type of resulting value: 'int'. Input document: {_id: 2, a: 5, v: 3}"
    )
    error = failure(items, [{"$replaceWith": "$missing"}])
    assert error.code == 40228
    assert error.details is not None
    assert error.details["errmsg"].startswith(
        "'replacement document' must evaluate to an object, but resulting value was: "
        "MISSING. Type of resulting value: 'missing'."
    )


def test_good_arguments_of_every_numeric_form(items: Docs) -> None:
    from bson.decimal128 import Decimal128
    from bson.int64 import Int64

    for limit in (1, 1.0, Int64(1), Decimal128("1")):
        assert [d["_id"] for d in items.aggregate([{"$sort": {"_id": 1}}, {"$limit": limit}])] == [
            1
        ]
    assert [d["_id"] for d in items.aggregate([{"$sort": {"_id": 1}}, {"$skip": 1.0}])] == [2]
    assert list(items.aggregate([{"$sample": {"size": 0}}])) == []
