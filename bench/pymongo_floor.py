"""What pymongo itself costs per operation, against a stub mongod and against the node.

    .venv/bin/python bench/pymongo_floor.py [--ops 3000] [--rounds 3] [--stub-delays-ms 0,0.5,2]

Runs pymongo's ``find_one`` by ``_id`` and ``update_one`` ``$inc`` (bench/mongodb.py's
documents and calls) on one thread, one MongoClient, against two servers in turn:

- **stub**: a process that answers at once with what a standalone mongod 7.0 sends (the
  hello of docs/mongodb.md "Handshake", ``{cursor: {firstBatch, id: 0, ns}, ok: 1.0}``,
  ``{n, nModified, ok: 1.0}``), each reply in one write, with no database behind it;
- **node**: a real node (API key, SCRAM-SHA-256), holding the same documents;
- with ``--stub-delays-ms``, more stubs that sleep that long before each reply (no work,
  the same bytes): how pymongo's CPU per operation grows with the server's latency
  alone.

For each round it prints pymongo's CPU per operation (user and system time of the
thread that runs it, ``getrusage(RUSAGE_THREAD)``; it still grows with the load and
with the server's latency: cold caches after each wait) and wall time;
for the node also the node's CPU per operation. pymongo's CPU against the stub is
its floor on this machine: no server can make ``find_one`` cheaper for it, so with one
sequential client the MongoDB side of bench/mongodb.py cannot beat
``direct time / (pymongo floor + engine time)``. The difference between the two
targets is what the node's answers make pymongo do beyond a mongod's (none, so far:
see docs/benchmarks.md, MongoDB, "Eighth session: pymongo").
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import pymongo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds  # noqa: E402
from bench.mongodb import INCREMENT, document  # noqa: E402

from tests.nodeproc import NodeProcess  # noqa: E402

DOCS = 2000


def _stub_reply(body: dict[str, Any], connection_id: int) -> dict[str, Any]:
    """A standalone mongod 7.0's reply to the commands pymongo sends here."""
    name = next(iter(body))
    if name in ("hello", "isMaster", "ismaster"):
        reply: dict[str, Any] = {"isWritablePrimary" if name == "hello" else "ismaster": True}
        if body.get("helloOk"):
            reply["helloOk"] = True
        return reply | {
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": dt.datetime.now(dt.UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": connection_id,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
            "ok": 1.0,
        }
    if name == "find":
        found = [document(int(body["filter"]["_id"][1:]))]
        return {
            "cursor": {"firstBatch": found, "id": bson.Int64(0), "ns": "bench.items"},
            "ok": 1.0,
        }
    if name == "update":
        return {"n": 1, "nModified": 1, "ok": 1.0}
    return {"ok": 1.0}


def _stub_connection(sock: socket.socket, connection_id: int, delay: float) -> None:
    stream = sock.makefile("rb")
    with sock, stream:
        while head := stream.read(16):
            length, request_id, _, op_code = struct.unpack("<iiii", head)
            data = stream.read(length - 16)
            if op_code == 2004:  # the legacy OP_QUERY handshake: flags, "admin.$cmd", skip, n
                start = data.index(b"\x00", 4) + 9
                reply = bson.encode(_stub_reply(bson.decode(data[start:]), connection_id))
                payload = struct.pack("<iqii", 8, 0, 0, 1) + reply
                code = 1
            else:  # OP_MSG: flags, the body section (then update_one's "updates" sequence)
                size = int.from_bytes(data[5:9], "little")
                reply = bson.encode(_stub_reply(bson.decode(data[5 : 5 + size]), connection_id))
                payload = b"\x00\x00\x00\x00\x00" + reply
                code = 2013
            if delay and code == 2013:
                time.sleep(delay)
            sock.sendall(struct.pack("<iiii", 16 + len(payload), 0, request_id, code) + payload)


def serve_stub(listener: socket.socket, delay: float) -> None:
    """The stub's process: a thread per connection, as a mongod."""
    for connection_id in range(1, 1_000_000):
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=_stub_connection, args=(sock, connection_id, delay), daemon=True
        ).start()


def start_stub(delay_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    """A stub process answering after ``delay_ms``, and its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        stub = subprocess.Popen(
            [sys.executable, __file__, "--serve-stub", str(listener.fileno()), str(delay_ms)],
            pass_fds=[listener.fileno()],
        )
        return stub, listener.getsockname()[1]


def thread_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime, usage.ru_stime


def measure(
    name: str, client: pymongo.MongoClient[dict[str, Any]], ops: int, node_pid: int | None
) -> None:
    coll = client.bench.items
    keys = [f"d{i % DOCS}" for i in range(ops)]
    cases: dict[str, Callable[[str], Any]] = {
        "find_one": lambda key: coll.find_one({"_id": key}),
        "update_one": lambda key: coll.update_one({"_id": key}, INCREMENT),
    }
    for case, call in cases.items():
        node_before = cpu_seconds(node_pid) if node_pid else 0.0
        user, system = thread_cpu()
        began = time.perf_counter()
        for key in keys:
            call(key)
        wall = time.perf_counter() - began
        user_after, system_after = thread_cpu()
        node = (
            f"  node {(cpu_seconds(node_pid) - node_before) / ops * 1e6:>4.0f}" if node_pid else ""
        )
        print(
            f"  {name:<14}{case:<11} pymongo {(user_after - user) / ops * 1e6:>4.0f} user"
            f" + {(system_after - system) / ops * 1e6:>3.0f} sys us/op,"
            f" wall {wall / ops * 1e6:>5.0f} us/op{node}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--stub-delays-ms",
        default="",
        help="also stubs that sleep this long before each reply (comma-separated)",
    )
    parser.add_argument("--serve-stub", nargs=2, help=argparse.SUPPRESS)  # listener fd, delay
    args = parser.parse_args()
    if args.serve_stub is not None:
        fd, delay_ms = args.serve_stub
        serve_stub(socket.socket(fileno=int(fd)), float(delay_ms) / 1000)
        return
    delays = [0.0] + [float(d) for d in args.stub_delays_ms.split(",") if d]
    stubs = [start_stub(delay) for delay in delays]
    temp = Path(tempfile.mkdtemp(prefix="heliosdb-bench-pymongo-"))
    node = NodeProcess(temp / "data", env={**os.environ, "HELIOSDB_REDIS__PORT": "0"})
    try:
        node.start()
        assert node.admin_key is not None and node.process is not None
        port = node.ports["mongodb"]
        uri = f"mongodb://apikey:{node.admin_key}@127.0.0.1:{port}/?authSource=admin"
        targets: list[tuple[str, pymongo.MongoClient[dict[str, Any]], int | None]] = [
            (
                f"stub +{delay:g} ms" if delay else "stub",
                pymongo.MongoClient(f"mongodb://127.0.0.1:{stub_port}/", maxPoolSize=1),
                None,
            )
            for delay, (_, stub_port) in zip(delays, stubs, strict=True)
        ]
        targets.append(("node", pymongo.MongoClient(uri, maxPoolSize=1), node.process.pid))
        coll = targets[-1][1].bench.items
        coll.drop()
        coll.insert_many([document(i) for i in range(DOCS)])
        print(f"{args.ops} operations a round, load average {os.getloadavg()[0]:.1f}")
        for _ in range(args.rounds):
            for name, client, pid in targets:
                measure(name, client, args.ops, pid)
        print(f"load average {os.getloadavg()[0]:.1f}")
        for _, client, _ in targets:
            client.close()
    finally:
        for stub, _ in stubs:
            stub.kill()
            stub.wait()
        node.stop()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
