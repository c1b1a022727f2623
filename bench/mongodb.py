"""MongoDB wire protocol against the engine itself, measured in the same run.

    .venv/bin/python bench/mongodb.py [--docs 20000] [--ops 1000] [--groups 10] [--rounds 3]
                                      [--connections 1] [--client pymongo|lean]

Starts a real node (embedded engine, temp data directory) and, for each case, runs the
same work on each side, ``--connections`` clients at once, each one operation at a time
(with one connection the figure is latency per operation; with several, throughput as
an application with a connection pool drives it):

- MongoDB: through the node's MongoDB port (API key, SCRAM-SHA-256), with ``--client``
  pymongo (the real driver: one MongoClient, a thread per connection) or lean (the
  least a driver must do per command, in asyncio: encode the command as BSON with a
  session id, frame it as OP_MSG with the documents as a document sequence, read the
  reply and decode all of it as pymongo does; like asyncpg on the direct side, it
  keeps the client from being the measure when the node is what is measured);
- direct: asyncpg on the node's engine over its Unix socket (a task per connection),
  one prepared statement per case and connection, on a table of the shape a
  collection has (``_id jsonb PRIMARY KEY, bson bytea, doc jsonb``: the exact BSON
  beside its JSONB query form, see docs/mongodb.md) holding the same documents, with
  the statement that gives the same result. The client encodes and decodes BSON as
  pymongo does.

Cases: insert_many (batches of 1000), find by _id, find by an indexed field,
update_one ($inc), and a $group aggregation over the whole collection. The direct
update leaves the same bytes as HeliosDB's: one UPDATE of both forms through
``helios_documents.bson_update`` (the engine function HeliosDB's own top-level
``$set``/``$inc`` uses; by hand it would be a read-modify-write of the BSON). Both
tables are under change capture, as every user table is; before each case the
benchmark waits until the node is idle (capture of the last case done).

Every case but insert_many runs ``--rounds`` times on each side and the best round of
each side counts (the machine is shared: other work only ever makes a round slower).
Prints operations per second of each side, MongoDB / direct, and the CPU per operation
of the node process, of the engine (all its processes) and of the client (this
process) during that round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import bson
import orjson
import pymongo
from bson.binary import Binary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import connect_engine, cpu_seconds, engine_cpu_seconds  # noqa: E402

from heliosdb.security.scram import ClientExchange  # noqa: E402
from heliosdb.services.documents import inplace  # noqa: E402
from tests.nodeproc import NodeProcess  # noqa: E402

BATCH = 1000
DIRECT_SETUP = """
DROP TABLE IF EXISTS bench_mongo_direct;
CREATE TABLE bench_mongo_direct (_id jsonb PRIMARY KEY, bson bytea NOT NULL, doc jsonb NOT NULL);
CREATE INDEX ON bench_mongo_direct ((doc -> 'k'));
"""
CASES = ("insert_many (docs)", "find by _id", "find by indexed field", "update_one", "$group")
PIPELINE = [{"$group": {"_id": "$g", "total": {"$sum": "$n"}}}]
INCREMENT = {"$inc": {"n": 1}}


def document(i: int) -> dict[str, Any]:
    return {"_id": f"d{i}", "k": f"key-{i}", "n": i, "g": i % 50, "name": f"item {i}",
            "tags": ["a", "b"], "price": i * 1.5}  # fmt: skip


def shares(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    """``items`` dealt out to ``parts`` clients."""
    return [items[i::parts] for i in range(parts)]


class Meter:
    """Wall time and the CPU of the node, the engine and the client over one case."""

    def __init__(self, node_pid: int, data_dir: Path, rounds: int) -> None:
        self.rounds = rounds
        self.node_pid = node_pid
        self.data_dir = data_dir
        self.rows: dict[tuple[str, str], tuple[float, float, float, float]] = {}

    def _cpu(self) -> tuple[float, float, float]:
        return (
            cpu_seconds(self.node_pid),
            engine_cpu_seconds(self.data_dir),
            time.process_time(),
        )

    def settle(self, limit: float = 30.0) -> None:
        """Wait until the node is idle: change capture of the previous case (every write
        becomes an event, decoded by the node) must not be billed to the next one."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = cpu_seconds(self.node_pid)
            time.sleep(0.5)
            if cpu_seconds(self.node_pid) - before < 0.05:
                return

    def start(self) -> tuple[float, ...]:
        self.settle()
        return (time.perf_counter(), *self._cpu())

    def stop(self, side: str, case: str, count: int, began: tuple[float, ...]) -> None:
        now = self._cpu()
        elapsed = time.perf_counter() - began[0]
        rate = count / elapsed
        node_us, engine_us, client_us = (
            (b - a) / count * 1e6 for a, b in zip(began[1:], now, strict=True)
        )
        best = self.rows.get((side, case))
        if best is None or rate > best[0]:
            self.rows[(side, case)] = (rate, node_us, engine_us, client_us)
        print(
            f"  {side:<8}{case:<22}{rate:>10.0f} ops/s  node {node_us:>6.0f}"
            f"  engine {engine_us:>6.0f}  client {client_us:>6.0f} us/op",
            flush=True,
        )

    def rounds_of(self, case: str) -> int:
        return 1 if case == CASES[0] else self.rounds


async def run_case(
    meter: Meter,
    side: str,
    clients: Sequence[Any],
    case: str,
    count: int,
    work: Callable[[Any, Any], Awaitable[None]],
    items: Sequence[Any],
) -> None:
    """``work(client, share)`` on every client at once, ``items`` dealt out among them."""
    for _ in range(meter.rounds_of(case)):
        began = meter.start()
        parts = shares(items, len(clients))
        await asyncio.gather(*(work(c, p) for c, p in zip(clients, parts, strict=True)))
        meter.stop(side, case, count, began)


class LeanClient:
    """One MongoDB connection doing the least a driver does per command (see above)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.request_id = 0
        self.lsid = {"id": Binary(secrets.token_bytes(16), 4)}

    @classmethod
    async def connect(cls, port: int, key: str) -> LeanClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        exchange = ClientExchange(key)
        exchange._client_first_bare = exchange._client_first_bare.replace("n=,", "n=apikey,")
        first = await client.command(
            "admin",
            {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": exchange.first()},
        )
        final = await client.command(
            "admin",
            {
                "saslContinue": 1,
                "conversationId": first["conversationId"],
                "payload": exchange.final(first["payload"]),
            },
        )
        exchange.verify(final["payload"])
        return client

    async def command(
        self, db: str, body: dict[str, Any], sequence: tuple[str, list[bytes]] | None = None
    ) -> dict[str, Any]:
        self.request_id += 1
        parts = [b"\x00", bson.encode({**body, "lsid": self.lsid, "$db": db})]
        if sequence is not None:
            name, docs = sequence
            section = name.encode() + b"\x00" + b"".join(docs)
            parts += [b"\x01", struct.pack("<i", 4 + len(section)), section]
        payload = b"".join(parts)
        self.writer.write(struct.pack("<iiiiI", 20 + len(payload), self.request_id, 0, 2013, 0))
        self.writer.write(payload)
        (length,) = struct.unpack("<i", await self.reader.readexactly(4))
        data = await self.reader.readexactly(length - 4)
        reply: dict[str, Any] = bson.decode(data[17:])
        if not reply.get("ok") or reply.get("writeErrors"):
            raise RuntimeError(f"command failed: {reply}")
        return reply

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def run_lean(
    meter: Meter, port: int, key: str, docs: int, ids: list[int], groups: int, connections: int
) -> None:
    clients = [await LeanClient.connect(port, key) for _ in range(connections)]
    first = clients[0]
    with contextlib.suppress(RuntimeError):  # the collection may not exist yet
        await first.command("bench", {"drop": "items"})

    def timed(case: str, count: int, work: Callable[[LeanClient, Any], Awaitable[None]],
              items: Sequence[Any]) -> Awaitable[None]:  # fmt: skip
        return run_case(meter, "mongodb", clients, case, count, work, items)

    async def insert(client: LeanClient, starts: Sequence[int]) -> None:
        for start in starts:
            batch = [bson.encode(document(i)) for i in range(start, min(start + BATCH, docs))]
            await client.command(
                "bench", {"insert": "items", "ordered": True}, ("documents", batch)
            )

    async def find(client: LeanClient, filters: Sequence[dict[str, Any]]) -> None:
        for query in filters:
            reply = await client.command(
                "bench", {"find": "items", "filter": query, "limit": 1, "singleBatch": True}
            )
            assert reply["cursor"]["firstBatch"]

    async def update(client: LeanClient, keys: Sequence[int]) -> None:
        for i in keys:
            statement = bson.encode({"q": {"_id": f"d{i}"}, "u": INCREMENT})
            await client.command(
                "bench", {"update": "items", "ordered": True}, ("updates", [statement])
            )

    async def group(client: LeanClient, runs: Sequence[int]) -> None:
        for _ in runs:
            reply = await client.command(
                "bench", {"aggregate": "items", "pipeline": PIPELINE, "cursor": {}}
            )
            assert reply["cursor"]["id"] == 0

    await timed(CASES[0], docs, insert, range(0, docs, BATCH))
    await first.command(
        "bench", {"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k_1"}]}
    )
    await timed(CASES[1], len(ids), find, [{"_id": f"d{i}"} for i in ids])
    await timed(CASES[2], len(ids), find, [{"k": f"key-{i}"} for i in ids])
    await timed(CASES[3], len(ids), update, ids)
    await timed(CASES[4], groups, group, range(groups))
    for client in clients:
        await client.close()


def run_pymongo(
    meter: Meter, port: int, key: str, docs: int, ids: list[int], groups: int, connections: int
) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        f"mongodb://apikey:{key}@127.0.0.1:{port}/?authSource=admin", maxPoolSize=connections
    )
    coll = client.bench.items
    coll.drop()
    pool = ThreadPoolExecutor(connections)

    def timed(case: str, count: int, work: Callable[[Any], Any], items: Sequence[Any]) -> None:
        for _ in range(meter.rounds_of(case)):
            began = meter.start()
            list(pool.map(work, shares(items, connections)))
            meter.stop("mongodb", case, count, began)

    def insert(starts: Sequence[int]) -> None:
        for start in starts:
            coll.insert_many([document(i) for i in range(start, min(start + BATCH, docs))])

    timed(CASES[0], docs, insert, range(0, docs, BATCH))
    coll.create_index("k")
    timed(CASES[1], len(ids), lambda part: [coll.find_one({"_id": f"d{i}"}) for i in part], ids)
    timed(CASES[2], len(ids), lambda part: [coll.find_one({"k": f"key-{i}"}) for i in part], ids)
    timed(
        CASES[3],
        len(ids),
        lambda part: [coll.update_one({"_id": f"d{i}"}, INCREMENT) for i in part],
        ids,
    )
    timed(
        CASES[4], groups, lambda part: [list(coll.aggregate(PIPELINE)) for _ in part], range(groups)
    )
    pool.shutdown()
    client.close()


class DirectClient:
    """One engine connection with the direct side's prepared statements."""

    INSERT = (
        "INSERT INTO bench_mongo_direct (_id, bson, doc) "
        "SELECT * FROM unnest($1::text[]::jsonb[], $2::bytea[], $3::text[]::jsonb[])"
    )
    BY_ID = "SELECT bson FROM bench_mongo_direct WHERE _id = $1::text::jsonb"
    BY_KEY = "SELECT bson FROM bench_mongo_direct WHERE doc -> 'k' = to_jsonb($1::text) LIMIT 1"
    UPDATE = (
        "UPDATE bench_mongo_direct SET (bson, doc) = (SELECT f.nb, f.nd FROM "
        "helios_documents.bson_update(bson, doc, $2::text, $3::text[], $4::bytea[], "
        "$5::bytea[], $6::text[]::jsonb[]) AS f) WHERE _id = $1::text::jsonb"
    )
    GROUP = (
        "SELECT doc -> 'g' AS g, sum((doc ->> 'n')::numeric) AS total "
        "FROM bench_mongo_direct GROUP BY 1"
    )

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: dict[str, Any] = {}

    @classmethod
    async def connect(cls, data_dir: Path) -> DirectClient:
        return cls(await connect_engine(data_dir))

    async def prepare(self) -> None:
        for name in ("INSERT", "BY_ID", "BY_KEY", "UPDATE", "GROUP"):
            self.statements[name] = await self.conn.prepare(getattr(self, name))


async def run_direct(
    meter: Meter, data_dir: Path, docs: int, ids: list[int], groups: int, connections: int
) -> None:
    clients = [await DirectClient.connect(data_dir) for _ in range(connections)]
    await clients[0].conn.execute(DIRECT_SETUP)
    for client in clients:
        await client.prepare()
    plan = inplace.plan(INCREMENT)
    assert plan is not None
    update_args = (plan.ops, plan.keys, plan.keys_z, plan.elements, plan.values)

    def timed(case: str, count: int, work: Callable[[DirectClient, Any], Awaitable[None]],
              items: Sequence[Any]) -> Awaitable[None]:  # fmt: skip
        return run_case(meter, "direct", clients, case, count, work, items)

    async def insert(client: DirectClient, starts: Sequence[int]) -> None:
        for start in starts:
            batch = [document(i) for i in range(start, min(start + BATCH, docs))]
            await client.statements["INSERT"].fetch(
                [orjson.dumps(d["_id"]).decode() for d in batch],
                [bson.encode(d) for d in batch],
                [orjson.dumps(d).decode() for d in batch],
            )

    async def by_id(client: DirectClient, keys: Sequence[str]) -> None:
        for key in keys:
            bson.decode(await client.statements["BY_ID"].fetchval(key))

    async def by_key(client: DirectClient, keys: Sequence[str]) -> None:
        for key in keys:
            bson.decode(await client.statements["BY_KEY"].fetchval(key))

    async def update(client: DirectClient, keys: Sequence[int]) -> None:
        for i in keys:
            await client.statements["UPDATE"].fetch(orjson.dumps(f"d{i}").decode(), *update_args)

    async def group(client: DirectClient, runs: Sequence[int]) -> None:
        for _ in runs:
            rows = await client.statements["GROUP"].fetch()
            [{"_id": orjson.loads(r["g"]), "total": int(r["total"])} for r in rows]

    await timed(CASES[0], docs, insert, range(0, docs, BATCH))
    await clients[0].conn.execute("ANALYZE bench_mongo_direct")
    await timed(CASES[1], len(ids), by_id, [f'"d{i}"' for i in ids])
    await timed(CASES[2], len(ids), by_key, [f"key-{i}" for i in ids])
    await timed(CASES[3], len(ids), update, ids)
    await timed(CASES[4], groups, group, range(groups))
    await clients[0].conn.execute("DROP TABLE bench_mongo_direct")
    for client in clients:
        await client.conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--ops", type=int, default=1_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of each case but insert; the best counts"
    )
    parser.add_argument("--connections", type=int, default=1, help="clients at once on each side")
    parser.add_argument(
        "--client", choices=("pymongo", "lean"), default="pymongo", help="the MongoDB client"
    )
    args = parser.parse_args()
    connections = max(1, args.connections)
    temp = Path(tempfile.mkdtemp(prefix="heliosdb-bench-mongo-"))
    data = temp / "data"
    node = NodeProcess(data, env={**os.environ, "HELIOSDB_REDIS__PORT": "0"})
    node.start()
    ids = [random.randrange(args.docs) for _ in range(args.ops)]
    try:
        assert node.admin_key is not None and node.process is not None
        meter = Meter(node.process.pid, data, max(1, args.rounds))
        port = node.ports["mongodb"]
        print(
            f"MongoDB port {port}: {args.docs} docs, {args.ops} ops, "
            f"{connections} connection(s) per side, client {args.client}"
        )
        print(f"load average {os.getloadavg()[0]:.1f}")
        if args.client == "lean":
            asyncio.run(
                run_lean(meter, port, node.admin_key, args.docs, ids, args.groups, connections)
            )
        else:
            run_pymongo(meter, port, node.admin_key, args.docs, ids, args.groups, connections)
        asyncio.run(run_direct(meter, data, args.docs, ids, args.groups, connections))
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        node.stop()
        shutil.rmtree(temp, ignore_errors=True)
    print(
        f"\n{'case':<24}{'mongodb/s':>11}{'direct/s':>10}{'ratio':>7}"
        "   node us/op    engine us/op   client us/op"
    )
    for case in CASES:
        mongo, direct = meter.rows[("mongodb", case)], meter.rows[("direct", case)]
        print(
            f"{case:<24}{mongo[0]:>11.0f}{direct[0]:>10.0f}{mongo[0] / direct[0]:>7.2f}"
            f"   {mongo[1]:>5.0f}/{direct[1]:<6.0f}  {mongo[2]:>6.0f}/{direct[2]:<6.0f}"
            f"   {mongo[3]:>5.0f}/{direct[3]:<5.0f}"
        )


if __name__ == "__main__":
    main()
