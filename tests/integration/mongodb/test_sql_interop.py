"""A collection written through MongoDB is an engine table SQL can read (REST /query),
and an index created through MongoDB is a real engine index."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from bson import ObjectId
from pymongo.database import Database


async def test_collection_readable_through_sql(
    db: Database[dict[str, Any]], api: httpx.AsyncClient
) -> None:
    oid = ObjectId()
    db.people.insert_many(
        [
            {
                "_id": oid,
                "name": "ada",
                "age": 36,
                "joined": dt.datetime(2020, 1, 2, tzinfo=dt.UTC),
            },
            {"name": "alan", "age": 41, "tags": ["code"]},
        ]
    )
    sql = (
        f"SELECT doc->>'name' AS name, (doc->>'age')::int AS age FROM \"{db.name}\".people "
        "WHERE (doc->>'age')::int > $1 ORDER BY 2"
    )
    response = await api.post("/query", json={"sql": sql, "params": [30]})
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [["ada", 36], ["alan", 41]]
    by_id = await api.post(
        "/query",
        json={
            "sql": f"SELECT doc->'joined' AS joined FROM \"{db.name}\".people "
            "WHERE _id = jsonb_build_object('$oid', $1::text)",
            "params": [str(oid)],
        },
    )
    assert by_id.json()["rows"] == [[{"$date": 1577923200000}]]


async def test_mongodb_index_is_an_engine_index(
    db: Database[dict[str, Any]], api: httpx.AsyncClient
) -> None:
    db.items.create_index("sku", unique=True)
    response = await api.post(
        "/query",
        json={
            "sql": "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'items'",
            "params": [db.name],
        },
    )
    definitions = " ".join(r[0] for r in response.json()["rows"])
    assert "UNIQUE INDEX" in definitions and "'sku'" in definitions
