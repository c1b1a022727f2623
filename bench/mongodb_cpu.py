"""Node CPU per MongoDB find (or update_one), which load on the machine distorts far less
than finds per second, optionally for two code trees side by side.

    .venv/bin/python bench/mongodb_cpu.py [--connections 4] [--finds 2000] [--rounds 4]
                                          [--cases id,k] [--old-src DIR] [--new-src DIR]

Starts a node (embedded engine, temp data directory), inserts 5,000 documents of
bench/mongodb.py's shape with an index on ``k``, then runs slices of finds (``find_one``
by ``_id`` and by the indexed field, ``--connections`` lean clients at once, each one
find at a time; case ``up``: update_one ``$inc`` by ``_id``, as bench/mongodb.py sends it)
and prints the CPU microseconds per find (utime + stime from /proc) of the node process
and of its engine (postmaster and backends) for each slice, then the median and minimum
per case. With ``--old-src DIR``
(a ``src`` tree, for example from ``git archive <commit> src | tar -x -C /tmp/old``) a
second node runs that code and the two take turns slice by slice, so a change in the
machine's load falls on both. ``--new-src DIR`` runs the "new" node from a tree too
(for example one change applied to a commit's tree, when the checkout holds other work
in progress). The process CPU clock counts in 10 ms ticks: 2,000 finds a slice
measure in steps of 5 us per find, ``--finds 10000`` in steps of 1 us.
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
from pathlib import Path

import bson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, engine_cpu_seconds  # noqa: E402
from bench.mongodb import BATCH, LeanClient, document  # noqa: E402

from tests.nodeproc import NodeProcess  # noqa: E402

DOCS = 5_000


async def load(port: int, key: str, connections: int) -> list[LeanClient]:
    clients = [await LeanClient.connect(port, key) for _ in range(connections)]
    first = clients[0]
    for start in range(0, DOCS, BATCH):
        batch = [bson.encode(document(i)) for i in range(start, min(start + BATCH, DOCS))]
        await first.command("bench", {"insert": "items", "ordered": True}, ("documents", batch))
    index = {"key": {"k": 1}, "name": "k_1"}
    await first.command("bench", {"createIndexes": "items", "indexes": [index]})
    return clients


async def finds(clients: list[LeanClient], filters: list[dict[str, str]]) -> None:
    async def one(client: LeanClient, part: list[dict[str, str]]) -> None:
        for query in part:
            body = {"find": "items", "filter": query, "limit": 1, "singleBatch": True}
            reply = await client.command("bench", body)
            assert reply["cursor"]["firstBatch"]

    count = len(clients)
    await asyncio.gather(*(one(c, filters[i::count]) for i, c in enumerate(clients)))


async def updates(clients: list[LeanClient], ids: list[int]) -> None:
    """update_one ($inc by _id) as bench/mongodb.py sends it."""

    async def one(client: LeanClient, part: list[int]) -> None:
        for i in part:
            statement = bson.encode({"q": {"_id": f"d{i}"}, "u": {"$inc": {"n": 1}}})
            body = {"update": "items", "ordered": True}
            await client.command("bench", body, ("updates", [statement]))

    count = len(clients)
    await asyncio.gather(*(one(c, ids[i::count]) for i, c in enumerate(clients)))


async def measure(nodes: dict[str, NodeProcess], args: argparse.Namespace) -> None:
    clients = {
        name: await load(node.ports["mongodb"], node.admin_key or "", args.connections)
        for name, node in nodes.items()
    }
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for case in args.cases.split(","):
            for name, node in nodes.items():
                assert node.process is not None
                field = "_id" if case == "id" else "k"
                prefix = "d" if case == "id" else "key-"
                filters = [{field: f"{prefix}{random.randrange(DOCS)}"} for _ in range(args.finds)]
                await asyncio.sleep(0.3)
                before = cpu_seconds(node.process.pid)
                engine_before = engine_cpu_seconds(node.data_dir)
                started = time.perf_counter()
                if case == "up":
                    await updates(clients[name], [random.randrange(DOCS) for _ in filters])
                else:
                    await finds(clients[name], filters)
                elapsed = time.perf_counter() - started
                us = (cpu_seconds(node.process.pid) - before) / args.finds * 1e6
                engine = (engine_cpu_seconds(node.data_dir) - engine_before) / args.finds * 1e6
                figures.setdefault((name, case), []).append((us, engine))
                print(
                    f"{name:4} {case:3} x{args.connections}: {args.finds / elapsed:7.0f} finds/s"
                    f"  node {us:6.1f}  engine {engine:6.1f} us/find"
                    f"  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    for (name, case), values in sorted(figures.items(), key=lambda x: (x[0][1], x[0][0])):
        node_us = sorted(v[0] for v in values)
        engine_us = sorted(v[1] for v in values)
        middle = len(values) // 2
        print(
            f"{name:4} {case:3} x{args.connections}: node median {node_us[middle]:6.1f}"
            f"  min {node_us[0]:6.1f}, engine median {engine_us[middle]:6.1f}"
            f"  min {engine_us[0]:6.1f} us/find over {len(values)} slices"
        )
    for group in clients.values():
        for client in group:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--finds", type=int, default=2_000, help="finds per slice")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--cases", default="id,k", help="id (by _id), k (by indexed field), up (update_one $inc)"
    )
    parser.add_argument("--old-src", type=Path, help="a src tree to run as a second node")
    parser.add_argument("--new-src", type=Path, help="a src tree for the first node")
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="heliosdb-bench-mongocpu-"))
    env = {**os.environ, "HELIOSDB_REDIS__PORT": "0"}
    nodes: dict[str, NodeProcess] = {}
    if args.old_src is not None:
        nodes["old"] = NodeProcess(temp / "old", env={**env, "PYTHONPATH": str(args.old_src)})
    new_env = env if args.new_src is None else {**env, "PYTHONPATH": str(args.new_src)}
    nodes["new"] = NodeProcess(temp / "new", env=new_env)
    try:
        for node in nodes.values():
            node.start()
        print(f"load average {os.getloadavg()[0]:.1f}")
        asyncio.run(measure(nodes, args))
    finally:
        for node in nodes.values():
            node.stop()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
