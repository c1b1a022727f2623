"""Unique indexes over arrays, as MongoDB enforces them (multikey).

Each element of an array is a key of its own: ``{k: [1, 2]}`` then ``{k: [2, 3]}`` is a
duplicate key (11000, ``keyValue`` the element), while a document's own repeats are
one key. A scalar meets an array's element; numbers are equal across types; a path
through an array of documents reaches each element's value; a missing field is null, an
empty array undefined. A compound index keys the product over its one array path, and
two arrays are "parallel" (171). The engine enforces it (keytables.py), so a SQL write
and concurrent writers are held to it too.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import asyncpg
import bson
import httpx
import orjson
import pytest
from bson.int64 import Int64
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, WriteError

from heliosdb.engine.codecs import register_codecs
from heliosdb.engine.quoting import qualified
from heliosdb.services.documents import bsonform, catalog, keytables
from tests.integration.mongodb.conftest import found
from tests.integration.mongodb.test_document_order import refused
from tests.nodeproc import NodeProcess


def fresh(db: Database[dict[str, Any]], *keys: str, **options: Any) -> Collection[dict[str, Any]]:
    coll = db[f"mk_{uuid.uuid4().hex[:8]}"]
    coll.create_index([(k, 1) for k in keys], unique=True, **options)
    return coll


def test_insert_each_element_is_a_key(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "k")
    coll.insert_one({"_id": 1, "k": [1, 2]})
    details = refused(coll, {"_id": 2, "k": [2, 3]})
    assert details["keyPattern"] == {"k": 1}
    assert details["keyValue"] == {"k": 2}
    assert "index: k_1 dup key: { k: 2 }" in details["errmsg"]
    coll.insert_one({"_id": 3, "k": [4, 4]})  # a document's own repeats are one key
    refused(coll, {"_id": 4, "k": 1})  # a scalar meets an element, and back
    refused(coll, {"_id": 5, "k": [5, 4.0]})
    coll.insert_one({"_id": 6, "k": 6})
    assert refused(coll, {"_id": 7, "k": [Int64(6)]})["keyValue"] == {"k": 6}
    coll.insert_one({"_id": 8, "k": [[1, 2]]})  # a nested array is one key: the array
    refused(coll, {"_id": 9, "k": [[1, 2.0]]})
    assert sorted(d["_id"] for d in coll.find()) == [1, 3, 6, 8]


def test_missing_null_and_empty_arrays(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "k")
    coll.insert_one({"_id": 1})
    assert refused(coll, {"_id": 2, "k": None})["keyValue"] == {"k": None}
    refused(coll, {"_id": 3, "k": [None, 5]})
    coll.insert_one({"_id": 4, "k": []})  # undefined: not null
    refused(coll, {"_id": 5, "k": []})
    coll.insert_one({"_id": 6, "k": [[]]})  # the empty array as a value
    assert coll.count_documents({}) == 3


def test_sparse_index_skips_missing_fields(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "a.b", sparse=True)
    coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3, "a": [{"c": 1}]}, {"_id": 4, "a": []}])
    coll.insert_one({"_id": 5, "a": [{"b": None}, 7]})
    refused(coll, {"_id": 6, "a": {"b": None}})


def test_insert_many_write_errors(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "k")
    coll.insert_one({"_id": 0, "k": [0]})
    batch: list[dict[str, Any]] = [
        {"_id": 1, "k": [10, 11]},
        {"_id": 2, "k": [11]},
        {"_id": 3, "k": 12},
        {"_id": 4, "k": [0, 13]},
        {"_id": 5, "k": [14]},
    ]
    with pytest.raises(BulkWriteError) as unordered:
        coll.insert_many(batch, ordered=False)
    errors = unordered.value.details["writeErrors"]
    assert [(e["index"], e["code"], e["keyValue"]) for e in errors] == [
        (1, 11000, {"k": 11}),
        (3, 11000, {"k": 0}),
    ]
    assert unordered.value.details["nInserted"] == 3
    assert sorted(d["_id"] for d in coll.find()) == [0, 1, 3, 5]
    coll.delete_many({"_id": {"$ne": 0}})
    with pytest.raises(BulkWriteError) as ordered:
        coll.insert_many(batch, ordered=True)
    errors = ordered.value.details["writeErrors"]
    assert [(e["index"], e["keyValue"]) for e in errors] == [(1, {"k": 11})]
    assert ordered.value.details["nInserted"] == 1
    assert sorted(d["_id"] for d in coll.find()) == [0, 1]


def test_updates_replacements_and_upserts(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "k")
    coll.insert_many([{"_id": 1, "k": [1, 2]}, {"_id": 2, "k": [3]}])
    with pytest.raises(DuplicateKeyError) as pushed:
        coll.update_one({"_id": 2}, {"$push": {"k": 2}})
    assert found(pushed.value.details)["keyValue"] == {"k": 2}
    coll.update_one({"_id": 2}, {"$push": {"k": 4}})
    coll.update_one({"_id": 2}, {"$set": {"other": 1}})
    with pytest.raises(DuplicateKeyError):
        coll.replace_one({"_id": 2}, {"k": [9, 1]})
    with pytest.raises(DuplicateKeyError):
        coll.find_one_and_update({"_id": 2}, {"$addToSet": {"k": 1}})
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 3}, {"$set": {"k": [5, 4]}}, upsert=True)
    # keys a document gives up are free again
    coll.update_one({"_id": 1}, {"$pull": {"k": 2}})
    coll.replace_one({"_id": 3}, {"k": [2, 5]}, upsert=True)
    coll.find_one_and_update({"_id": 1}, {"$set": {"k": [6]}})
    coll.insert_one({"_id": 4, "k": 1})
    assert found(coll.find_one({"_id": 2}))["k"] == [3, 4]
    assert coll.count_documents({}) == 4


def test_create_index_over_duplicate_keys_fails(db: Database[dict[str, Any]]) -> None:
    coll = db[f"mk_{uuid.uuid4().hex[:8]}"]
    coll.insert_many([{"_id": 1, "k": [1, 2]}, {"_id": 2, "k": [2, 3]}])
    with pytest.raises(OperationFailure) as failure:
        coll.create_index("k", unique=True)
    assert failure.value.code == 11000
    assert found(failure.value.details)["keyValue"] == {"k": 2}
    assert list(coll.index_information()) == ["_id_"]
    coll.update_one({"_id": 2}, {"$pull": {"k": 2}})
    coll.create_index("k", unique=True)
    refused(coll, {"_id": 3, "k": 3})


def test_compound_index_keys_the_product(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "a", "b")
    coll.insert_one({"_id": 1, "a": 1, "b": [1, 2]})
    assert refused(coll, {"_id": 2, "a": [0, 1], "b": 2})["keyValue"] == {"a": 1, "b": 2}
    coll.insert_one({"_id": 3, "a": [0, 1], "b": 3})
    coll.insert_one({"_id": 4, "a": 2, "b": 1})
    refused(coll, {"_id": 5, "b": 3, "a": 0})


def test_parallel_arrays_are_refused(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "a", "b")
    with pytest.raises(WriteError) as failure:
        coll.insert_one({"_id": 1, "a": [1, 2], "b": [1]})
    assert failure.value.code == 171
    assert "cannot index parallel arrays" in str(failure.value)
    with pytest.raises(BulkWriteError) as batch:
        coll.insert_many([{"_id": 2, "a": 1, "b": 1}, {"_id": 3, "a": [], "b": []}], ordered=False)
    assert [(e["index"], e["code"]) for e in batch.value.details["writeErrors"]] == [(1, 171)]
    with pytest.raises(WriteError) as updated:
        coll.update_one({"_id": 2}, {"$set": {"a": [1, 3], "b": [2]}})
    assert updated.value.code == 171
    assert found(coll.find_one({"_id": 2}))["a"] == 1
    # two paths through the same array pair its elements: not parallel
    paired = fresh(db, "x.y", "x.z")
    paired.insert_one({"_id": 1, "x": [{"y": 1, "z": 1}, {"y": 2}]})
    paired.insert_one({"_id": 2, "x": [{"y": 1, "z": 2}]})
    refused(paired, {"_id": 3, "x": [{"y": 2}]})
    # an index build over parallel arrays fails the same way
    other = db[f"mk_{uuid.uuid4().hex[:8]}"]
    other.insert_one({"a": [1], "b": [2]})
    with pytest.raises(OperationFailure) as build:
        other.create_index([("a", 1), ("b", 1)], unique=True)
    assert build.value.code == 171


def test_dotted_paths_through_arrays_of_documents(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "a.b")
    coll.insert_one({"_id": 1, "a": [{"b": 1}, {"b": 2}]})
    coll.insert_one({"_id": 2, "a": [{"b": 3}]})  # each element's b is a key of its own
    assert refused(coll, {"_id": 3, "a": {"b": 2}})["keyValue"] == {"a.b": 2}
    refused(coll, {"_id": 4, "a": [{"b": [5, 1]}]})
    coll.insert_one({"_id": 5, "a": [{"c": 1}]})  # b missing in an element: null
    refused(coll, {"_id": 6})
    refused(coll, {"_id": 7, "a": [5]})
    deep = fresh(db, "a.b.c")
    deep.insert_one({"_id": 1, "a": [{"b": [{"c": 1}, {"c": 2}]}, {"b": {"c": 3}}]})
    refused(deep, {"_id": 2, "a": {"b": [{"c": 3}]}})
    deep.insert_one({"_id": 3, "a": {"b": [{"c": 4}]}})


def test_embedded_documents_keep_their_field_order(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "k")
    coll.insert_one({"_id": 1, "k": [{"a": 1, "b": 2}]})
    coll.insert_one({"_id": 2, "k": [{"b": 2, "a": 1}, {"c": 1}]})
    refused(coll, {"_id": 3, "k": {"a": 1.0, "b": Int64(2)}})
    refused(coll, {"_id": 4, "k": [{"c": 1}]})


async def test_sql_writes_are_held_to_the_index(
    db: Database[dict[str, Any]], api: httpx.AsyncClient
) -> None:
    coll = fresh(db, "k")
    coll.insert_one({"_id": 1, "k": [1, 2]})
    sql = (
        f"INSERT INTO {catalog.table(db.name, coll.name)} (_id, bson, doc) "
        "VALUES (to_jsonb($1::text), decode($2, 'hex'), $3::text::jsonb)"
    )

    async def insert(document: dict[str, Any]) -> httpx.Response:
        params = [
            document["_id"],
            bson.encode(document).hex(),
            orjson.dumps(bsonform.query_form(document)).decode(),
        ]
        return await api.post("/query", json={"sql": sql, "params": params})

    refused_row = await insert({"_id": "sql", "k": [7, 2]})
    assert refused_row.status_code == 409, refused_row.text
    assert refused_row.json()["error"]["sqlstate"] == "23505"
    accepted = await insert({"_id": "sql", "k": [7, 8]})
    assert accepted.status_code == 200, accepted.text
    refused(coll, {"_id": 2, "k": 8})


def test_concurrent_colliding_inserts(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "k")
    start = threading.Barrier(8)
    won: list[int] = []
    lost: list[int] = []

    def insert(i: int) -> None:
        start.wait()
        try:
            coll.insert_one({"_id": i, "k": [100 + i, 7]})
            won.append(i)
        except DuplicateKeyError:
            lost.append(i)

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(lost) == 7
    assert coll.count_documents({}) == 1


async def test_drop_index_and_collection_remove_the_key_table(
    node: NodeProcess, db: Database[dict[str, Any]]
) -> None:
    coll = fresh(db, "k")
    coll.insert_one({"_id": 1, "k": [1, 2]})
    key_table = catalog.engine_index_name(db.name, coll.name, "k_1")
    conn = await asyncpg.connect(node.engine_url)
    try:
        exists = "SELECT to_regclass($1) IS NOT NULL"
        assert await conn.fetchval(exists, qualified(catalog.CATALOG_SCHEMA, key_table))
        coll.drop_index("k_1")
        assert not await conn.fetchval(exists, qualified(catalog.CATALOG_SCHEMA, key_table))
        coll.insert_one({"_id": 2, "k": 2})  # no longer refused
        coll.create_index("k", unique=False)
        coll.delete_one({"_id": 2})
        coll.create_index("j", unique=True)
        other = catalog.engine_index_name(db.name, coll.name, "j_1")
        assert await conn.fetchval(exists, qualified(catalog.CATALOG_SCHEMA, other))
        coll.drop()
        assert not await conn.fetchval(exists, qualified(catalog.CATALOG_SCHEMA, other))
        functions = await conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname = $1", other + "_t"
        )
        assert functions == 0
    finally:
        await conn.close()


async def test_unique_indexes_from_before_get_the_key_table(
    node: NodeProcess, db: Database[dict[str, Any]]
) -> None:
    # Before FORM_VERSION 6 a unique index was a unique expression index, which took an
    # array as one value: [1, 2] and [2, 3] both went in.
    coll = fresh(db, "k")
    spec = catalog.IndexSpec("k_1", {"k": 1}, {"unique": True})
    spec.engine_name = catalog.engine_index_name(db.name, coll.name, "k_1")
    conn = await asyncpg.connect(node.engine_url)
    try:
        await register_codecs(conn)
        target = catalog.table(db.name, coll.name)
        for statement in keytables.drop_ddl(spec):
            await conn.execute(statement)
        await conn.execute(f"DROP INDEX {qualified(db.name, spec.engine_name)}")
        await conn.execute(
            f'CREATE UNIQUE INDEX "{spec.engine_name}" ON {target} '
            f"({catalog.index_expression('k', True)}, {catalog.order_expression('k')})"
        )
        coll.insert_many([{"_id": 1, "k": [1, 2]}, {"_id": 2, "k": [2, 3]}])
        form = "SELECT form FROM helios_documents.collections WHERE db = $1 AND name = $2"
        mark = "UPDATE helios_documents.collections SET form = 5 WHERE db = $1 AND name = $2"
        await conn.execute(mark, db.name, coll.name)

        async def upgrade() -> None:
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE helios_readwrite")  # as the node runs it
                await catalog.upgrade_forms(conn)

        await upgrade()  # the rows hold a duplicate key: the old index stays, logged
        assert await conn.fetchval(form, db.name, coll.name) == catalog.FORM_VERSION - 1
        coll.insert_one({"_id": 3, "k": [3, 4]})
        coll.delete_many({"_id": {"$in": [2, 3]}})
        await upgrade()
        assert await conn.fetchval(form, db.name, coll.name) == catalog.FORM_VERSION
    finally:
        await conn.close()
    refused(coll, {"_id": 4, "k": [5, 2]})
    coll.insert_one({"_id": 5, "k": [3, 4]})
    assert coll.count_documents({}) == 2


# The keys MongoDB's index key generation gives a document (its BtreeKeyGenerator's
# documented cases): paths, document, the keys (each the values in path order).
UNDEFINED = {"$undefined": True}
KEYS: list[tuple[list[str], dict[str, Any], list[list[Any]]]] = [
    (["a"], {"a": [[2]]}, [[[2]]]),
    (["a"], {"a": []}, [[UNDEFINED]]),
    (["a.b"], {"a": []}, [[None]]),
    (["a.b"], {"a": [{"b": [2]}]}, [[2]]),
    (["a.b"], {"a": [{"b": 1}, {"b": [1, 2, 3]}]}, [[1], [2], [3]]),
    (["a.b"], {"a": [{"foo": 41}, {"b": 1}]}, [[None], [1]]),
    (["a.b.c"], {"a": [1, 2, {"b": {"c": [3, 4]}}]}, [[None], [3], [4]]),
    (["a.b.c"], {"a": {"b": [{"c": 1}, {"c": 2}]}}, [[1], [2]]),
    (["a.b", "d"], {"a": [{"b": 1}, {"b": 2}], "d": 99}, [[1, 99], [2, 99]]),
    (["a.b", "a.c"], {"a": [{"b": 1}, {"c": 2}]}, [[None, 2], [1, None]]),
    (["a", "a.b"], {"a": []}, [[UNDEFINED, None]]),
    (["a", "a.b"], {"a": [{"b": 1}]}, [[{"b": 1}, 1]]),
    (["a", "a.b"], {"a": [{"b": []}]}, [[{"b": []}, UNDEFINED]]),
    (
        ["a.b.c.d", "a.g", "a.b.f", "a.b.c", "a.b.e"],
        {"a": [1, {"b": [2, {"c": [3, {"d": 1}], "e": 4}, 5, {"f": 6}], "g": 7}]},
        [
            [None, None, None, None, None],
            [None, 7, None, None, None],
            [None, 7, None, 3, 4],
            [None, 7, 6, None, None],
            [1, 7, None, {"d": 1}, 4],
        ],
    ),
    (["a.0"], {"a": [1]}, [[1]]),
    (["a.0"], {"a": [[1]]}, [[[1]]]),
    (["a.0"], {"a": [[]]}, [[UNDEFINED]]),
    (["a.0"], {"a": {"0": 1}}, [[1]]),
    (["a.0.0"], {"a": [[1]]}, [[1]]),
    (["a.0.0"], {"a": [[]]}, [[None]]),
    (["a.0.0"], {"a": [[[]]]}, [[UNDEFINED]]),
    (["a.0.b"], {"a": [{"b": [[1]]}]}, [[[1]]]),
    (["a.0.b"], {"a": [[{"b": [1]}]]}, [[1]]),
    (["a.0.b"], {"a": [[{"b": []}]]}, [[UNDEFINED]]),
    (["a.2"], {"a": [{"2": 5}]}, [[5]]),
]
SPARSE_KEYS: list[tuple[list[str], dict[str, Any], list[list[Any]]]] = [
    (["a.b"], {"a": [1, {"b": 1}]}, [[1]]),
    (["a.b"], {"a": []}, []),
    (["a.b"], {"a": [{"c": 1}]}, []),
    (["z", "a.b"], {"a": []}, []),
    (["a.b", "a"], {"a": []}, [[None, UNDEFINED]]),
]
PARALLEL: list[tuple[list[str], dict[str, Any]]] = [
    (["a", "b"], {"a": [], "b": []}),
    (["b.a", "a"], {"b": {"a": [1]}, "a": [1, 2]}),
    (["a.b", "a.c"], {"a": [{"b": [1], "c": [2]}]}),
    (["a.b.c", "a.b.d"], {"a": [{"b": [{"c": [1, 2], "d": []}]}]}),
]


async def test_keys_are_mongodbs(node: NodeProcess, db: Database[dict[str, Any]]) -> None:
    fresh(db, "k")  # the catalog and its functions are there from the first write on
    sql = (
        "SELECT key::text FROM helios_documents.index_keys("
        "$1::text::jsonb, $2::bytea, $3::text[], $4::boolean)"
    )

    def keys(found: list[Any]) -> list[str]:
        return sorted(orjson.dumps(k, option=orjson.OPT_SORT_KEYS).decode() for k in found)

    conn = await asyncpg.connect(node.engine_url)
    try:
        for sparse, cases in ((False, KEYS), (True, SPARSE_KEYS)):
            for paths, document, expected in cases:
                rows = await conn.fetch(
                    sql, orjson.dumps(document).decode(), bson.encode(document), paths, sparse
                )
                got = [orjson.loads(r[0]) for r in rows]
                assert keys(got) == keys(expected), (paths, document)
        for paths, document in PARALLEL:
            with pytest.raises(asyncpg.PostgresError) as failure:
                await conn.fetch(
                    sql, orjson.dumps(document).decode(), bson.encode(document), paths, False
                )
            assert failure.value.sqlstate == keytables.PARALLEL_ARRAYS, (paths, document)
    finally:
        await conn.close()


def test_renamed_collections_keep_their_unique_indexes(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "k")
    coll.insert_one({"_id": 1, "k": [1, 2]})
    moved = db[coll.name + "_moved"]
    coll.rename(moved.name)
    refused(moved, {"_id": 2, "k": [2]})
    # the old name is free again, with an index of the same name
    again = db[coll.name]
    again.create_index("k", unique=True)
    again.insert_one({"_id": 2, "k": [2]})
    refused(again, {"_id": 3, "k": 2})
    # and across databases
    other = db.client[db.name + "_x"]
    try:
        db.client.admin.command(
            "renameCollection", f"{db.name}.{moved.name}", to=f"{other.name}.{moved.name}"
        )
        refused(other[moved.name], {"_id": 3, "k": 1})
        db[moved.name].create_index("k", unique=True)
        db[moved.name].insert_one({"_id": 3, "k": 1})
    finally:
        db.client.drop_database(other.name)


def test_transactions_writing_one_key(db: Database[dict[str, Any]]) -> None:
    coll = fresh(db, "k")
    coll.insert_one({"_id": 0})  # the collection exists before the transactions
    with db.client.start_session() as first, db.client.start_session() as second:
        first.start_transaction()
        second.start_transaction()
        coll.insert_one({"_id": 1, "k": [1, 2]}, session=first)
        # the key is the first's, not yet committed: the second waits for it, then
        # gives up as MongoDB answers a transaction that meets another's write
        with pytest.raises(OperationFailure) as conflict:
            coll.insert_one({"_id": 2, "k": [2, 3]}, session=second)
        assert conflict.value.code == 112
        second.abort_transaction()
        first.commit_transaction()
    refused(coll, {"_id": 3, "k": 2})
    assert sorted(d["_id"] for d in coll.find()) == [0, 1]


def test_field_names_stay_data_in_the_key_table_trigger(db: Database[dict[str, Any]]) -> None:
    # The trigger's body is dollar-quoted SQL holding the key paths: a field name with
    # a dollar quote and SQL in it is a name like any other, not SQL.
    coll = db.sneaky_names
    field = "a$fn$'); DROP TABLE sneaky_names; --$k0$"
    coll.create_index(field, unique=True)
    coll.insert_one({field: 1})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({field: [1, 2]})
    assert coll.count_documents({}) == 1
    assert "sneaky_names" in db.list_collection_names()
