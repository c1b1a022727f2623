"""MongoDB wire protocol against the engine itself, measured in the same run.

    .venv/bin/python bench/mongodb.py [--docs 20000] [--ops 1000] [--groups 10] [--rounds 3]

Starts a real node (embedded engine, temp data directory) and, for each case, runs the
same work twice, one client at a time (so the figure is latency per operation):

- MongoDB: pymongo through the node's MongoDB port (API key, SCRAM-SHA-256);
- direct: asyncpg on the node's engine over its Unix socket, one prepared statement
  per case, on a table of the shape a collection has (``_id jsonb PRIMARY KEY, bson
  bytea, doc jsonb``: the exact BSON beside its JSONB query form, see docs/mongodb.md)
  holding the same documents, with the SQL one would write by hand for the same result.
  The client encodes and decodes BSON as pymongo does.

Cases: insert_many (batches of 1000), find by _id, find by an indexed field,
update_one ($inc), and a $group aggregation over the whole collection. The direct
update is one ``jsonb_set`` of the query form (it does not rewrite the BSON, which
HeliosDB must). Both tables are under change capture, as every user table is; before
each case the benchmark waits until the node is idle (capture of the last case done).

Every case but insert_many runs ``--rounds`` times on each side and the best round of
each side counts (the machine is shared: other work only ever makes a round slower).
Prints operations per second of each side, MongoDB / direct, and the CPU per operation
of the node process and of the engine (all its processes) during that round.
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

import bson
import orjson
import pymongo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import connect_engine, cpu_seconds  # noqa: E402

from tests.nodeproc import NodeProcess  # noqa: E402

BATCH = 1000
DIRECT_SETUP = """
DROP TABLE IF EXISTS bench_mongo_direct;
CREATE TABLE bench_mongo_direct (_id jsonb PRIMARY KEY, bson bytea NOT NULL, doc jsonb NOT NULL);
CREATE INDEX ON bench_mongo_direct ((doc -> 'k'));
"""
CASES = ("insert_many (docs)", "find by _id", "find by indexed field", "update_one", "$group")


def document(i: int) -> dict[str, Any]:
    return {"_id": f"d{i}", "k": f"key-{i}", "n": i, "g": i % 50, "name": f"item {i}",
            "tags": ["a", "b"], "price": i * 1.5}  # fmt: skip


class Meter:
    """Wall time and the CPU of the node and of the engine over one case."""

    def __init__(self, node_pid: int, engine_pid: int, rounds: int) -> None:
        self.rounds = rounds
        self.node_pid = node_pid
        self.engine_pid = engine_pid
        self.rows: dict[tuple[str, str], tuple[float, float, float]] = {}

    def _cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.node_pid), cpu_seconds(self.engine_pid)

    def settle(self, limit: float = 30.0) -> None:
        """Wait until the node is idle: change capture of the previous case (every write
        becomes an event, decoded by the node) must not be billed to the next one."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = cpu_seconds(self.node_pid)
            time.sleep(0.5)
            if cpu_seconds(self.node_pid) - before < 0.05:
                return

    def start(self) -> tuple[float, float, float]:
        self.settle()
        return (time.perf_counter(), *self._cpu())

    def stop(self, side: str, case: str, count: int, began: tuple[float, float, float]) -> None:
        node, engine = self._cpu()
        elapsed = time.perf_counter() - began[0]
        rate = count / elapsed
        node_us = (node - began[1]) / count * 1e6
        engine_us = (engine - began[2]) / count * 1e6
        best = self.rows.get((side, case))
        if best is None or rate > best[0]:
            self.rows[(side, case)] = (rate, node_us, engine_us)
        print(
            f"  {side:<8}{case:<22}{rate:>10.0f} ops/s  node {node_us:>7.0f} us/op"
            f"  engine {engine_us:>7.0f} us/op",
            flush=True,
        )


def run_mongo(meter: Meter, port: int, key: str, docs: int, ops: int, groups: int) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        f"mongodb://apikey:{key}@127.0.0.1:{port}/?authSource=admin"
    )
    coll = client.bench.items
    coll.drop()
    ids = [random.randrange(docs) for _ in range(ops)]
    pipeline = [{"$group": {"_id": "$g", "total": {"$sum": "$n"}}}]

    def timed(case: str, count: int, work: Callable[[], Any]) -> None:
        for _ in range(1 if case == CASES[0] else meter.rounds):
            began = meter.start()
            work()
            meter.stop("mongodb", case, count, began)

    def insert() -> None:
        for start in range(0, docs, BATCH):
            coll.insert_many([document(i) for i in range(start, min(start + BATCH, docs))])

    timed(CASES[0], docs, insert)
    coll.create_index("k")
    timed(CASES[1], ops, lambda: [coll.find_one({"_id": f"d{i}"}) for i in ids])
    timed(CASES[2], ops, lambda: [coll.find_one({"k": f"key-{i}"}) for i in ids])
    timed(
        CASES[3], ops, lambda: [coll.update_one({"_id": f"d{i}"}, {"$inc": {"n": 1}}) for i in ids]
    )
    timed(CASES[4], groups, lambda: [list(coll.aggregate(pipeline)) for _ in range(groups)])
    client.close()


async def run_direct(meter: Meter, data_dir: Path, docs: int, ops: int, groups: int) -> None:
    conn = await connect_engine(data_dir)
    await conn.execute(DIRECT_SETUP)
    ids = [random.randrange(docs) for _ in range(ops)]
    insert = await conn.prepare(
        "INSERT INTO bench_mongo_direct (_id, bson, doc) "
        "SELECT * FROM unnest($1::text[]::jsonb[], $2::bytea[], $3::text[]::jsonb[])"
    )
    by_id = await conn.prepare("SELECT bson FROM bench_mongo_direct WHERE _id = $1::text::jsonb")
    by_key = await conn.prepare(
        "SELECT bson FROM bench_mongo_direct WHERE doc -> 'k' = to_jsonb($1::text) LIMIT 1"
    )
    update = await conn.prepare(
        "UPDATE bench_mongo_direct SET doc = jsonb_set(doc, '{n}', "
        "to_jsonb((doc ->> 'n')::bigint + 1)) WHERE _id = $1::text::jsonb"
    )
    group = await conn.prepare(
        "SELECT doc -> 'g' AS g, sum((doc ->> 'n')::numeric) AS total "
        "FROM bench_mongo_direct GROUP BY 1"
    )

    async def timed(case: str, count: int, work: Callable[[], Awaitable[None]]) -> None:
        for _ in range(1 if case == CASES[0] else meter.rounds):
            began = meter.start()
            await work()
            meter.stop("direct", case, count, began)

    async def do_insert() -> None:
        for start in range(0, docs, BATCH):
            batch = [document(i) for i in range(start, min(start + BATCH, docs))]
            await insert.fetch(
                [orjson.dumps(d["_id"]).decode() for d in batch],
                [bson.encode(d) for d in batch],
                [orjson.dumps(d).decode() for d in batch],
            )

    async def find(statement: Any, keys: list[str]) -> None:
        for key in keys:
            bson.decode(await statement.fetchval(key))

    async def do_update() -> None:
        for i in ids:
            await update.fetch(orjson.dumps(f"d{i}").decode())

    async def do_group() -> None:
        for _ in range(groups):
            [{"_id": orjson.loads(r["g"]), "total": int(r["total"])} for r in await group.fetch()]

    await timed(CASES[0], docs, do_insert)
    await conn.execute("ANALYZE bench_mongo_direct")
    await timed(CASES[1], ops, lambda: find(by_id, [f'"d{i}"' for i in ids]))
    await timed(CASES[2], ops, lambda: find(by_key, [f"key-{i}" for i in ids]))
    await timed(CASES[3], ops, do_update)
    await timed(CASES[4], groups, do_group)
    await conn.execute("DROP TABLE bench_mongo_direct")
    await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--ops", type=int, default=1_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of each case but insert; the best counts"
    )
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="heliosdb-bench-mongo-"))
    data = temp / "data"
    node = NodeProcess(data, env={**os.environ, "HELIOSDB_REDIS__PORT": "0"})
    node.start()
    try:
        assert node.admin_key is not None and node.process is not None
        engine_pid = int((data / "engine" / "postmaster.pid").read_text().split()[0])
        meter = Meter(node.process.pid, engine_pid, max(1, args.rounds))
        print(f"MongoDB port {node.ports['mongodb']}: {args.docs} docs, {args.ops} ops")
        print(f"load average {os.getloadavg()[0]:.1f}")
        run_mongo(meter, node.ports["mongodb"], node.admin_key, args.docs, args.ops, args.groups)
        asyncio.run(run_direct(meter, data, args.docs, args.ops, args.groups))
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        node.stop()
        shutil.rmtree(temp, ignore_errors=True)
    print(
        f"\n{'case':<24}{'mongodb/s':>11}{'direct/s':>10}{'ratio':>7}   node us/op   engine us/op"
    )
    for case in CASES:
        mongo, direct = meter.rows[("mongodb", case)], meter.rows[("direct", case)]
        print(
            f"{case:<24}{mongo[0]:>11.0f}{direct[0]:>10.0f}{mongo[0] / direct[0]:>7.2f}"
            f"   {mongo[1]:>5.0f}/{direct[1]:<5.0f}  {mongo[2]:>6.0f}/{direct[2]:<6.0f}"
        )


if __name__ == "__main__":
    main()
