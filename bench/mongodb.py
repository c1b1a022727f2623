"""MongoDB wire protocol against the engine itself, measured in the same run.

    .venv/bin/python bench/mongodb.py [--docs 20000] [--ops 1000] [--groups 10] [--rounds 3]
                                      [--connections 1] [--client pymongo|lean] [--cases find]

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

The target (issue 5: each case at least 0.5x of the direct side) is read with 16
connections and the lean client (``--client lean --connections 16 --ops 2000``): the
node as a server under the concurrency the PostgreSQL gateway's benchmark also uses.
One connection measures a hop's latency, which bounds it (docs/benchmarks.md).

Both sides create their table (the collection, with ``create``) and the index on ``k``
before the timed inserts, so insert_many measures writes into an existing, indexed table
on each side (implicit creation by the first insert would bill DDL, and with many
connections a race of creators, to one side only).

Cases: insert_many (batches of 1000), find by _id, find by an indexed field,
update_one ($inc), and a $group aggregation over the whole collection. The direct
update leaves the same bytes as HeliosDB's: one UPDATE of both forms through
``helios_documents.bson_update`` (the engine function HeliosDB's own top-level
``$set``/``$inc`` uses; by hand it would be a read-modify-write of the BSON). Both
tables are under change capture, as every user table is; before each case the
benchmark waits until the node is idle (capture of the last case done).

Every case but insert_many runs ``--rounds`` times on each side and the best round of
each side counts (the machine is shared: other work only ever makes a round slower);
the sides take turns round by round, so a change in the machine's load falls on both.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
INDEX = {"key": {"k": 1}, "name": "k_1"}


def document(i: int) -> dict[str, Any]:
    return {"_id": f"d{i}", "k": f"key-{i}", "n": i, "g": i % 50, "name": f"item {i}",
            "tags": ["a", "b"], "price": i * 1.5}  # fmt: skip


def shares(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    """``items`` dealt out to ``parts`` clients."""
    return [items[i::parts] for i in range(parts)]


class Meter:
    """Wall time and the CPU of the node, the engine and the client over one case."""

    def __init__(self, node_pid: int, data_dir: Path) -> None:
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


class _Replies(asyncio.Protocol):
    """The lean client's socket: whole reply messages as they arrive, one waiter at a time
    (no StreamReader, no ``readexactly`` coroutines per reply: asyncpg's protocol on the
    direct side does as little)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiter: asyncio.Future[bytes] | None = None
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if len(buffer) >= 4:
            (length,) = struct.unpack_from("<i", buffer)
            if len(buffer) >= length:
                self._buffer = buffer[length:]
                waiter, self._waiter = self._waiter, None
                if waiter is not None and not waiter.done():
                    waiter.set_result(buffer[:length] if len(buffer) > length else buffer)
                return
        self._buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("the node closed the connection")
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._lost)

    def send(self, data: bytes) -> asyncio.Future[bytes]:
        """Write one request; the future gets its whole reply message."""
        if self._lost is not None or self.transport is None:
            raise ConnectionResetError("the connection is closed")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return waiter


class LeanClient:
    """One MongoDB connection doing the least a driver does per command (see above)."""

    def __init__(self, replies: _Replies) -> None:
        self.replies = replies
        self.request_id = 0
        self.lsid = {"id": Binary(secrets.token_bytes(16), 4)}

    @classmethod
    async def connect(cls, port: int, key: str) -> LeanClient:
        loop = asyncio.get_running_loop()
        _, replies = await loop.create_connection(_Replies, "127.0.0.1", port)
        client = cls(replies)
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
        # one write, as the drivers send a message (two would often reach the node as two
        # segments: two wake-ups and reads there, and a second system call here)
        head = struct.pack("<iiiiI", 20 + len(payload), self.request_id, 0, 2013, 0)
        data = await self.replies.send(head + payload)
        reply: dict[str, Any] = bson.decode(data[21:])
        if not reply.get("ok") or reply.get("writeErrors"):
            raise RuntimeError(f"command failed: {reply}")
        return reply

    async def close(self) -> None:
        transport = self.replies.transport
        if transport is not None:
            transport.close()


class Side:
    """One side of the comparison: ``run(case)`` does one round of a case, each of its
    clients working through its share of the items, all at once."""

    name = ""

    def __init__(self, loop: asyncio.AbstractEventLoop, clients: list[Any]) -> None:
        self.loop = loop
        self.clients = clients
        self.work: dict[str, tuple[Callable[[Any, Any], Any], Sequence[Any]]] = {}

    def run(self, case: str) -> None:
        work, items = self.work[case]
        parts = shares(items, len(self.clients))

        async def together() -> None:
            await asyncio.gather(*(work(c, p) for c, p in zip(self.clients, parts, strict=True)))

        self.loop.run_until_complete(together())

    def after_insert(self) -> None:
        """Bring the statistics up to date."""

    def close(self) -> None:
        """Close the clients."""


class LeanSide(Side):
    name = "mongodb"

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, key: str, work: Work) -> None:
        clients = [loop.run_until_complete(LeanClient.connect(port, key)) for _ in work.clients]
        super().__init__(loop, clients)
        with contextlib.suppress(RuntimeError):  # the collection may not exist yet
            loop.run_until_complete(clients[0].command("bench", {"drop": "items"}))
        # as the direct side's table: created, with its index, before the timed inserts
        loop.run_until_complete(clients[0].command("bench", {"create": "items"}))
        loop.run_until_complete(
            clients[0].command("bench", {"createIndexes": "items", "indexes": [INDEX]})
        )
        docs = work.docs

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

        self.work = {
            CASES[0]: (insert, range(0, docs, BATCH)),
            CASES[1]: (find, [{"_id": f"d{i}"} for i in work.ids]),
            CASES[2]: (find, [{"k": f"key-{i}"} for i in work.ids]),
            CASES[3]: (update, work.ids),
            CASES[4]: (group, range(work.groups)),
        }

    def close(self) -> None:
        for client in self.clients:
            self.loop.run_until_complete(client.close())


class PymongoSide(Side):
    """pymongo's own client: one MongoClient, a thread per connection."""

    name = "mongodb"

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, key: str, work: Work) -> None:
        super().__init__(loop, list(work.clients))
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            f"mongodb://apikey:{key}@127.0.0.1:{port}/?authSource=admin",
            maxPoolSize=len(work.clients),
        )
        self.pool = ThreadPoolExecutor(len(work.clients))
        coll = self.coll = self.client.bench.items
        coll.drop()
        # as the direct side's table: created, with its index, before the timed inserts
        self.client.bench.create_collection("items")
        coll.create_index("k")
        docs = work.docs

        def insert(starts: Sequence[int]) -> None:
            for start in starts:
                coll.insert_many([document(i) for i in range(start, min(start + BATCH, docs))])

        self.calls: dict[str, tuple[Callable[[Any], Any], Sequence[Any]]] = {
            CASES[0]: (insert, range(0, docs, BATCH)),
            CASES[1]: (lambda part: [coll.find_one({"_id": f"d{i}"}) for i in part], work.ids),
            CASES[2]: (lambda part: [coll.find_one({"k": f"key-{i}"}) for i in part], work.ids),
            CASES[3]: (lambda part: [coll.update_one({"_id": f"d{i}"}, INCREMENT) for i in part],
                       work.ids),
            CASES[4]: (lambda part: [list(coll.aggregate(PIPELINE)) for _ in part],
                       range(work.groups)),
        }  # fmt: skip

    def run(self, case: str) -> None:
        call, items = self.calls[case]
        list(self.pool.map(call, shares(items, len(self.clients))))

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()


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
        "helios_documents.bson_update(bson, doc, $2::text, $3::bytea, $4::text::jsonb) AS f) "
        "WHERE _id = $1::text::jsonb"
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


class DirectSide(Side):
    name = "direct"

    def __init__(self, loop: asyncio.AbstractEventLoop, data_dir: Path, work: Work) -> None:
        clients = [loop.run_until_complete(DirectClient.connect(data_dir)) for _ in work.clients]
        super().__init__(loop, clients)
        loop.run_until_complete(clients[0].conn.execute(DIRECT_SETUP))
        for client in clients:
            loop.run_until_complete(client.prepare())
        plan = inplace.plan(INCREMENT)
        assert plan is not None
        update_args = (plan.ops, plan.elements, plan.values)
        docs = work.docs

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
                await client.statements["UPDATE"].fetch(
                    orjson.dumps(f"d{i}").decode(), *update_args
                )

        async def group(client: DirectClient, runs: Sequence[int]) -> None:
            for _ in runs:
                rows = await client.statements["GROUP"].fetch()
                [{"_id": orjson.loads(r["g"]), "total": int(r["total"])} for r in rows]

        self.work = {
            CASES[0]: (insert, range(0, docs, BATCH)),
            CASES[1]: (by_id, [f'"d{i}"' for i in work.ids]),
            CASES[2]: (by_key, [f"key-{i}" for i in work.ids]),
            CASES[3]: (update, work.ids),
            CASES[4]: (group, range(work.groups)),
        }

    def after_insert(self) -> None:
        self.loop.run_until_complete(self.clients[0].conn.execute("ANALYZE bench_mongo_direct"))

    def close(self) -> None:
        self.loop.run_until_complete(self.clients[0].conn.execute("DROP TABLE bench_mongo_direct"))
        for client in self.clients:
            self.loop.run_until_complete(client.conn.close())


@dataclass(frozen=True)
class Work:
    docs: int
    ids: list[int]
    groups: int
    clients: range  # one per connection

    def count(self, case: str) -> int:
        return {CASES[0]: self.docs, CASES[4]: self.groups}.get(case, len(self.ids))


def compare(
    meter: Meter, sides: list[Side], work: Work, rounds: int, cases: Sequence[str] = CASES
) -> None:
    """Each case on each side in turn, round by round (so a change in the machine's load
    falls on both sides alike); insert_many once per side."""
    for case in cases:
        for _ in range(1 if case == CASES[0] else rounds):
            for side in sides:
                began = meter.start()
                side.run(case)
                meter.stop(side.name, case, work.count(case), began)
        if case == CASES[0]:
            for side in sides:
                side.after_insert()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--ops", type=int, default=1_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of each case but insert; the best counts"
    )
    parser.add_argument("--connections", type=int, default=1, help="clients at once per side")
    parser.add_argument(
        "--client", choices=("pymongo", "lean"), default="pymongo", help="the MongoDB client"
    )
    parser.add_argument(
        "--cases",
        default="",
        help="run only the cases whose name holds this text (insert_many always runs)",
    )
    args = parser.parse_args()
    cases = [c for c in CASES if c == CASES[0] or args.cases in c]
    work = Work(
        args.docs,
        [random.randrange(args.docs) for _ in range(args.ops)],
        args.groups,
        range(max(1, args.connections)),
    )
    temp = Path(tempfile.mkdtemp(prefix="heliosdb-bench-mongo-"))
    data = temp / "data"
    node = NodeProcess(data, env={**os.environ, "HELIOSDB_REDIS__PORT": "0"})
    node.start()
    loop = asyncio.new_event_loop()
    try:
        assert node.admin_key is not None and node.process is not None
        meter = Meter(node.process.pid, data)
        port = node.ports["mongodb"]
        print(
            f"MongoDB port {port}: {args.docs} docs, {args.ops} ops, "
            f"{len(work.clients)} connection(s) per side, client {args.client}"
        )
        print(f"load average {os.getloadavg()[0]:.1f}")
        kind = LeanSide if args.client == "lean" else PymongoSide
        sides: list[Side] = [kind(loop, port, node.admin_key, work), DirectSide(loop, data, work)]
        compare(meter, sides, work, max(1, args.rounds), cases)
        for side in sides:
            side.close()
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        loop.close()
        node.stop()
        shutil.rmtree(temp, ignore_errors=True)
    print(
        f"\n{'case':<24}{'mongodb/s':>11}{'direct/s':>10}{'ratio':>7}"
        "   node us/op    engine us/op   client us/op"
    )
    for case in cases:
        mongo, direct = meter.rows[("mongodb", case)], meter.rows[("direct", case)]
        print(
            f"{case:<24}{mongo[0]:>11.0f}{direct[0]:>10.0f}{mongo[0] / direct[0]:>7.2f}"
            f"   {mongo[1]:>5.0f}/{direct[1]:<6.0f}  {mongo[2]:>6.0f}/{direct[2]:<6.0f}"
            f"   {mongo[3]:>5.0f}/{direct[3]:<5.0f}"
        )


if __name__ == "__main__":
    main()
