"""MongoDB wire protocol against the engine itself, measured in the same run.

    .venv/bin/python bench/mongodb.py [--docs 20000] [--ops 2000] [--groups 20]

Starts a real node (embedded engine, temp data directory) and, for each case, runs the
same work twice, one client at a time:

- MongoDB: pymongo through the node's MongoDB port (API key, SCRAM-SHA-256);
- direct: asyncpg on the node's engine over its Unix socket, on a table of the same
  shape (``id text PRIMARY KEY, doc jsonb``), with the SQL one would write by hand.

Cases: insert_many (batches of 1000), find by _id, find by an indexed field,
update_one ($inc), and a $group aggregation over the whole collection. It prints
operations per second of each and MongoDB / direct. Absolute numbers on a shared
machine mean little; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pymongo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.nodeproc import NodeProcess  # noqa: E402

BATCH = 1000
DIRECT_SETUP = """
DROP TABLE IF EXISTS bench_mongo_direct;
CREATE TABLE bench_mongo_direct (id text PRIMARY KEY, doc jsonb NOT NULL);
CREATE INDEX ON bench_mongo_direct ((doc -> 'k'));
"""


def document(i: int) -> dict[str, Any]:
    return {"_id": f"d{i}", "k": f"key-{i}", "n": i, "g": i % 50, "name": f"item {i}",
            "tags": ["a", "b"], "price": i * 1.5}  # fmt: skip


def timed(label: str, count: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    rate = count / (time.perf_counter() - started)
    print(f"  mongodb {label:<22} {rate:>10.0f} ops/s", flush=True)
    return rate


async def timed_async(label: str, count: int, work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    rate = count / (time.perf_counter() - started)
    print(f"  direct  {label:<22} {rate:>10.0f} ops/s", flush=True)
    return rate


def run_mongo(port: int, key: str, docs: int, ops: int, groups: int) -> dict[str, float]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        f"mongodb://apikey:{key}@127.0.0.1:{port}/?authSource=admin"
    )
    coll = client.bench.items
    coll.drop()
    ids = [random.randrange(docs) for _ in range(ops)]
    rates: dict[str, float] = {}

    def insert() -> None:
        for start in range(0, docs, BATCH):
            coll.insert_many([document(i) for i in range(start, min(start + BATCH, docs))])

    rates["insert_many (docs)"] = timed("insert_many (docs)", docs, insert)
    coll.create_index("k")
    rates["find by _id"] = timed(
        "find by _id", ops, lambda: [coll.find_one({"_id": f"d{i}"}) for i in ids]
    )
    rates["find by indexed field"] = timed(
        "find by indexed field", ops, lambda: [coll.find_one({"k": f"key-{i}"}) for i in ids]
    )
    rates["update_one"] = timed(
        "update_one",
        ops,
        lambda: [coll.update_one({"_id": f"d{i}"}, {"$inc": {"n": 1}}) for i in ids],
    )
    pipeline = [{"$group": {"_id": "$g", "total": {"$sum": "$n"}}}]
    rates["$group"] = timed(
        "$group", groups, lambda: [list(coll.aggregate(pipeline)) for _ in range(groups)]
    )
    client.close()
    return rates


async def run_direct(data_dir: Path, docs: int, ops: int, groups: int) -> dict[str, float]:
    password = (data_dir / "engine.password").read_text().strip()
    conn = await asyncpg.connect(
        host=str(data_dir / "run"), user="heliosdb", password=password, database="heliosdb"
    )
    await conn.execute(DIRECT_SETUP)
    ids = [random.randrange(docs) for _ in range(ops)]
    rates: dict[str, float] = {}
    insert = await conn.prepare(
        "INSERT INTO bench_mongo_direct (id, doc) "
        "SELECT * FROM unnest($1::text[], $2::text[]::jsonb[])"
    )
    by_id = await conn.prepare("SELECT doc::text FROM bench_mongo_direct WHERE id = $1")
    by_key = await conn.prepare(
        "SELECT doc::text FROM bench_mongo_direct WHERE doc -> 'k' = to_jsonb($1::text) LIMIT 1"
    )
    update = await conn.prepare(
        "UPDATE bench_mongo_direct SET doc = jsonb_set(doc, '{n}', "
        "to_jsonb((doc ->> 'n')::bigint + 1)) WHERE id = $1"
    )
    group = await conn.prepare(
        "SELECT doc -> 'g', sum((doc ->> 'n')::numeric) FROM bench_mongo_direct GROUP BY 1"
    )

    async def do_insert() -> None:
        for start in range(0, docs, BATCH):
            batch = [document(i) for i in range(start, min(start + BATCH, docs))]
            await insert.fetch([d["_id"] for d in batch], [orjson.dumps(d).decode() for d in batch])

    async def each(statement: Any, keys: list[str]) -> None:
        for key in keys:
            await statement.fetch(key)

    async def do_group() -> None:
        for _ in range(groups):
            await group.fetch()

    rates["insert_many (docs)"] = await timed_async("insert_many (docs)", docs, do_insert)
    await conn.execute("ANALYZE bench_mongo_direct")
    rates["find by _id"] = await timed_async(
        "find by _id", ops, lambda: each(by_id, [f"d{i}" for i in ids])
    )
    rates["find by indexed field"] = await timed_async(
        "find by indexed field", ops, lambda: each(by_key, [f"key-{i}" for i in ids])
    )
    rates["update_one"] = await timed_async(
        "update_one", ops, lambda: each(update, [f"d{i}" for i in ids])
    )
    rates["$group"] = await timed_async("$group", groups, do_group)
    await conn.execute("DROP TABLE bench_mongo_direct")
    await conn.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--ops", type=int, default=2_000)
    parser.add_argument("--groups", type=int, default=20)
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="heliosdb-bench-mongo-"))
    node = NodeProcess(temp / "data", env={**os.environ, "HELIOSDB_REDIS__PORT": "0"})
    node.start()
    try:
        assert node.admin_key is not None
        print(f"MongoDB port {node.ports['mongodb']}: {args.docs} docs, {args.ops} ops")
        mongo = run_mongo(node.ports["mongodb"], node.admin_key, args.docs, args.ops, args.groups)
        direct = asyncio.run(run_direct(temp / "data", args.docs, args.ops, args.groups))
    finally:
        node.stop()
        shutil.rmtree(temp, ignore_errors=True)
    print(f"\n{'case':<24}{'mongodb/s':>12}{'direct/s':>12}{'ratio':>8}")
    for case, rate in mongo.items():
        print(f"{case:<24}{rate:>12.0f}{direct[case]:>12.0f}{rate / direct[case]:>8.2f}")


if __name__ == "__main__":
    main()
