"""Write concerns as a standalone mongod answers them: ``w: 0``, ``w: 1`` and ``w:
"majority"`` are met; ``w`` above one or a tag is refused with BadValue (2) before
anything is written, by every write command."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

Docs = Collection[dict[str, Any]]

NOT_REPLICATED = "cannot use 'w' > 1 when a host is not replicated"
NO_TAGS = "cannot use non-majority 'w' mode \"dc1\" when a host is not a member of a replica set"


@pytest.fixture
def items(db: Database[dict[str, Any]]) -> Docs:
    db.items.drop()
    db.items.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}])
    return db.items


@pytest.mark.parametrize(
    "write",
    [
        lambda c: c.insert_one({"_id": 3}),
        lambda c: c.insert_many([{"_id": 3}, {"_id": 4}]),
        lambda c: c.update_one({"_id": 1}, {"$set": {"n": 10}}),
        lambda c: c.update_many({}, {"$inc": {"n": 1}}),
        lambda c: c.replace_one({"_id": 1}, {"n": 10}),
        lambda c: c.delete_one({"_id": 1}),
        lambda c: c.delete_many({}),
        lambda c: c.find_one_and_update({"_id": 1}, {"$set": {"n": 10}}),
        lambda c: c.find_one_and_delete({"_id": 1}),
        lambda c: c.create_index("n"),
    ],
)
@pytest.mark.parametrize(("w", "message"), [(2, NOT_REPLICATED), ("dc1", NO_TAGS)])
def test_a_write_concern_a_standalone_cannot_meet_is_refused(
    items: Docs, write: Any, w: Any, message: str
) -> None:
    with pytest.raises(OperationFailure) as raised:
        write(items.with_options(write_concern=WriteConcern(w=w)))
    assert raised.value.code == 2
    assert raised.value.details is not None
    assert raised.value.details["errmsg"] == message
    assert sorted(items.find(), key=lambda d: d["_id"]) == [
        {"_id": 1, "n": 1},
        {"_id": 2, "n": 2},
    ]  # nothing written


def test_a_standalone_meets_w_0_1_and_majority(items: Docs) -> None:
    for w in (1, "majority"):
        concerned = items.with_options(write_concern=WriteConcern(w=w, wtimeout=1000))
        assert concerned.update_one({"_id": 1}, {"$inc": {"n": 1}}).modified_count == 1
        concerned.insert_one({"w": w})
        assert concerned.delete_one({"w": w}).deleted_count == 1
    items.with_options(write_concern=WriteConcern(w=0)).insert_one({"_id": 9})
    assert items.find_one({"_id": 1}) == {"_id": 1, "n": 3}
    assert items.find_one({"_id": 9}) == {"_id": 9}


def test_an_out_with_a_write_concern_above_one_is_refused(items: Docs) -> None:
    with pytest.raises(OperationFailure) as raised:
        items.database.command(
            "aggregate", "items", pipeline=[{"$out": "copy"}], cursor={}, writeConcern={"w": 3}
        )
    assert raised.value.code == 2
    assert "copy" not in items.database.list_collection_names()
