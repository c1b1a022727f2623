"""A collection's table dropped through SQL (REST /query) takes the collection with it:
MongoDB no longer lists it, its unique indexes' key tables go, and the next insert
creates it again. A view on it stays, as MongoDB keeps a view on a missing collection.
A table renamed through SQL leaves the old name free for MongoDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pymongo.database import Database

from tests.integration.mongodb.conftest import connect, found
from tests.nodeproc import NodeProcess


async def _sql(api: httpx.AsyncClient, sql: str, *params: Any) -> list[list[Any]]:
    response = await api.post("/query", json={"sql": sql, "params": list(params)})
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json().get("rows") or []
    return rows


async def _key_tables(api: httpx.AsyncClient, db: str, coll: str) -> list[str]:
    """The key tables of the collection's indexes that exist in the engine."""
    rows = await _sql(
        api,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'helios_documents' AND c.relname IN (SELECT engine_name FROM "
        "helios_documents.indexes WHERE db = $1 AND collection = $2)",
        db,
        coll,
    )
    return [r[0] for r in rows]


async def test_drop_table_forgets_the_collection(
    db: Database[dict[str, Any]], admin_api: httpx.AsyncClient
) -> None:
    db.create_collection("gone")
    db.gone.create_index("sku", unique=True)
    db.gone.insert_many([{"_id": 1, "sku": "a"}, {"_id": 2, "sku": "b"}])
    engine_names = await _sql(
        admin_api,
        "SELECT engine_name FROM helios_documents.indexes WHERE db = $1 AND collection = 'gone'",
        db.name,
    )
    assert len(engine_names) == 1
    assert await _key_tables(admin_api, db.name, "gone") == [engine_names[0][0]]

    await _sql(admin_api, f'DROP TABLE "{db.name}"."gone"')

    assert "gone" not in db.list_collection_names()
    assert list(db.gone.find()) == []
    assert db.gone.count_documents({}) == 0
    orphans = await _sql(
        admin_api,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'helios_documents' AND c.relname = $1",
        engine_names[0][0],
    )
    assert orphans == [[0]]

    # the next insert creates it again, with the _id index only
    db.gone.insert_one({"_id": 1, "sku": "a"})
    db.gone.insert_one({"_id": 2, "sku": "a"})  # no unique index left behind
    assert "gone" in db.list_collection_names()
    assert list(db.gone.index_information()) == ["_id_"]
    assert [d["_id"] for d in db.gone.find().sort("_id", 1)] == [1, 2]


async def test_drop_table_then_create_index_and_view(
    db: Database[dict[str, Any]], admin_api: httpx.AsyncClient
) -> None:
    db.again.insert_one({"_id": 1})
    await _sql(admin_api, f'DROP TABLE "{db.name}"."again"')
    db.again.create_index("k")  # creates the collection again
    assert "again" in db.list_collection_names()
    db.again.insert_one({"_id": 1, "k": 2})
    assert list(db.again.find({"k": 2})) == [{"_id": 1, "k": 2}]

    db.named.insert_one({"_id": 1})
    await _sql(admin_api, f'DROP TABLE "{db.name}"."named"')
    db.create_collection("named", viewOn="again", pipeline=[])  # the name is free
    assert list(db.named.find()) == [{"_id": 1, "k": 2}]


async def test_drop_schema_cascade_keeps_the_views(
    db: Database[dict[str, Any]], admin_api: httpx.AsyncClient
) -> None:
    client = db.client
    other = client[db.name + "_s"]
    try:
        other.one.insert_one({"_id": 1, "x": 1})
        other.two.create_index("u", unique=True)
        other.create_collection("v", viewOn="one", pipeline=[{"$match": {"x": 1}}])
        assert await _key_tables(admin_api, other.name, "two") != []

        await _sql(admin_api, f'DROP SCHEMA "{other.name}" CASCADE')

        assert other.list_collection_names() == ["v"]
        assert list(other.v.find()) == []
        assert await _key_tables(admin_api, other.name, "two") == []
        other.one.insert_one({"_id": 2, "x": 1})
        assert list(other.v.find()) == [{"_id": 2, "x": 1}]
        assert sorted(other.list_collection_names()) == ["one", "v"]
    finally:
        client.drop_database(other.name)


async def test_rename_table_frees_the_name(
    db: Database[dict[str, Any]], admin_api: httpx.AsyncClient
) -> None:
    db.before.create_index("u", unique=True)
    db.before.insert_one({"_id": 1, "u": 1})
    await _sql(admin_api, f'ALTER TABLE "{db.name}"."before" RENAME TO "after"')

    # the old name reads as empty and the next write creates it again
    assert list(db.before.find()) == []
    db.before.insert_one({"_id": 1, "u": 1})
    assert list(db.before.find()) == [{"_id": 1, "u": 1}]
    assert list(db.before.index_information()) == ["_id_"]
    # the renamed table is an SQL table with the rows it had
    rows = await _sql(admin_api, f'SELECT doc FROM "{db.name}"."after"')
    assert rows == [[{"_id": 1, "u": 1}]]
    # and its rows still take writes (the old unique index's triggers went with it)
    await _sql(admin_api, f'UPDATE "{db.name}"."after" SET _id = \'2\'::jsonb')


async def test_node_start_forgets_tables_dropped_before(
    db: Database[dict[str, Any]], admin_api: httpx.AsyncClient, node: NodeProcess, tmp_path: Path
) -> None:
    """A data directory from before the event trigger: a table dropped then stays in the
    catalog; the next node start forgets it and makes the event trigger again."""
    db.old.create_index("u", unique=True)
    engine = await asyncpg.connect(node.engine_url)
    try:
        await engine.execute("DROP EVENT TRIGGER helios_documents_drops")
        await _sql(admin_api, f'DROP TABLE "{db.name}"."old"')
        assert await _key_tables(admin_api, db.name, "old") != []
        second = node.beside(tmp_path / "second")
        try:
            with connect(second.ports["mongodb"], found(second.admin_key)) as other:
                assert "old" not in other[db.name].list_collection_names()
        finally:
            second.stop()
        assert await _key_tables(admin_api, db.name, "old") == []
        assert (
            await engine.fetchval(
                "SELECT evtenabled::text FROM pg_event_trigger "
                "WHERE evtname = 'helios_documents_drops'"
            )
            == "O"
        )
    finally:
        await engine.close()
