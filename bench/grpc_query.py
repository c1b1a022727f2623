"""gRPC ``ExecuteQuery`` point selects against the same statement run directly on the engine.

    .venv/bin/python bench/grpc_query.py [--seconds 10] [--concurrency 32] [--client h2load]
        [--workers 2]

Starts a real node (embedded engine, temp data directory), fills ``bench_items`` with
``--rows`` rows, then alternates short rounds of:

- gRPC, ``--client h2load`` (the default when it is installed: ``apt-get install
  nghttp2-client``): nghttp2's HTTP/2 load generator, written in C, so the load
  generator takes little of the CPU the node and the engine need. It POSTs one fixed
  request body (a length-prefixed ``QueryRequest``; h2load cannot vary a body, so every
  call selects the same id) to ``/heliosdb.v1.HeliosDB/ExecuteQuery`` with
  ``content-type: application/grpc``, ``te: trailers`` and the admin key, ``--concurrency``
  calls in flight over ``--connections`` connections. h2load only sees HTTP statuses, and
  a failed gRPC call is an HTTP 200 too, so the run is checked twice: the node's own count
  of ExecuteQuery calls that ended OK (``/metrics``) must have grown by exactly the number
  of calls h2load counted, and a few calls made before and after with the real grpcio
  client must return the right rows.
- gRPC, ``--client python``: ``--processes`` grpc.aio client processes (one channel each)
  keeping ``--concurrency`` calls in flight in all, each with a random id. The Python
  client costs about as much CPU per call as the node, on the same cores.
- direct: asyncpg on the node's engine over its Unix socket, ``--concurrency``
  connections, one prepared statement each, random ids, looping as fast as they can.

It prints calls per second, p50 and p99 latency of each, gRPC / direct (target: at
least 0.5x), and the CPU time per call of the node and of the load generator. Absolute
numbers on a shared machine mean little; the ratio and the CPU per call are the figures.

With ``--stream-rows N`` it then streams ``generate_series(1, N)`` through
``ExecuteQueryStream`` and prints rows per second and the node's resident memory before,
at its peak and after: a server-side cursor keeps it flat whatever N is.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.nodeproc, when run as a script

import grpc  # noqa: E402
from bench import h2load_grpc  # noqa: E402
from bench.common import (  # noqa: E402
    POINT_SELECT_SQL,
    Figure,
    combine,
    cpu_seconds,
    figure,
    free_port_flags,
    run_point_selects,
)

from heliosdb.v1 import heliosdb_pb2 as pb  # noqa: E402
from heliosdb.v1 import heliosdb_pb2_grpc  # noqa: E402
from tests.nodeproc import NodeProcess  # noqa: E402

SELECT_SQL = POINT_SELECT_SQL
SETUP_SQL = [
    "DROP TABLE IF EXISTS bench_items",
    "CREATE TABLE bench_items (id bigint PRIMARY KEY, name text NOT NULL, "
    "value double precision NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    "INSERT INTO bench_items (id, name, value) "
    "SELECT g, 'item-' || g, g * 1.5 FROM generate_series(1, {rows}) AS g",
    "ANALYZE bench_items",
]


async def _grpc_client(
    target: str, key: str, concurrency: int, seconds: float, rows: int, seed: int
) -> tuple[list[float], int, float, float]:
    metadata = (("authorization", f"Bearer {key}"),)
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        deadline = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            nonlocal errors
            rng = random.Random(seed * 1000 + n)
            while True:
                started = time.perf_counter()
                if started >= deadline:
                    return
                request = pb.QueryRequest(
                    sql=SELECT_SQL, params=[pb.Value(int_value=rng.randint(1, rows))]
                )
                try:
                    response = await stub.ExecuteQuery(request, metadata=metadata)
                    if len(response.rows) != 1:
                        errors += 1
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return latencies, errors, time.perf_counter() - began, time.process_time() - cpu


def _grpc_process(
    args: tuple[str, str, int, float, int, int],
) -> tuple[list[float], int, float, float]:
    return asyncio.run(_grpc_client(*args))


def run_grpc(node: NodeProcess, args: argparse.Namespace, seconds: float) -> Figure:
    assert node.admin_key is not None
    target = f"127.0.0.1:{node.ports['grpc']}"
    share = max(1, args.concurrency // args.processes)
    jobs = [(target, node.admin_key, share, seconds, args.rows, i) for i in range(args.processes)]
    context = multiprocessing.get_context("spawn")
    assert node.process is not None
    with context.Pool(args.processes) as pool:
        pool.map(_grpc_process, [(target, node.admin_key, 1, 0.2, args.rows, 0)] * args.processes)
        before = cpu_seconds(node.process.pid)
        results = pool.map(_grpc_process, jobs)
        node_cpu = cpu_seconds(node.process.pid) - before
    latencies = [x for lat, _, _, _ in results for x in lat]
    elapsed = max(e for _, _, e, _ in results)
    out = figure(latencies, elapsed, sum(err for _, err, _, _ in results))
    out.node_us = node_cpu / max(1, len(latencies)) * 1e6
    out.client_us = sum(c for _, _, _, c in results) / max(1, len(latencies)) * 1e6
    return out


def run_h2load(
    node: NodeProcess, args: argparse.Namespace, seconds: float, body: Path, rate: float
) -> Figure:
    """``rate * seconds`` calls (h2load -n: every call it starts, it waits for, so its
    count and the node's can be compared exactly; bench/h2load_grpc.py)."""
    calls = max(args.concurrency * 10, round(rate * seconds))
    done = h2load_grpc.run(node, "ExecuteQuery", [body], calls, concurrency=args.concurrency,
                           connections=args.connections)  # fmt: skip
    result = figure(done.latencies, done.seconds, 0)
    result.errors = done.failed + done.mismatch
    result.node_us = done.node_cpu / max(1, done.succeeded) * 1e6
    result.client_us = done.client_cpu / max(1, done.succeeded) * 1e6
    return result


def check_with_grpcio(node: NodeProcess, rows: int, calls: int = 20) -> None:
    """A few calls through the real grpcio client, each checked row by row."""
    assert node.admin_key is not None
    metadata = (("authorization", f"Bearer {node.admin_key}"),)
    rng = random.Random(7)
    with grpc.insecure_channel(f"127.0.0.1:{node.ports['grpc']}") as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        for _ in range(calls):
            wanted = rng.randint(1, rows)
            reply = stub.ExecuteQuery(
                pb.QueryRequest(sql=SELECT_SQL, params=[pb.Value(int_value=wanted)]),
                metadata=metadata,
            )
            row = reply.rows[0].values
            assert len(reply.rows) == 1 and row[0].int_value == wanted, reply
            assert row[1].string_value == f"item-{wanted}", reply


async def run_engine(data_dir: Path, args: argparse.Namespace, seconds: float) -> Figure:
    """The same statement straight on the engine (bench/common.py)."""
    return await run_point_selects(
        data_dir, args.rows, connections=args.concurrency, seconds=seconds
    )


def setup(node: NodeProcess, rows: int) -> None:
    assert node.admin_key is not None
    metadata = (("authorization", f"Bearer {node.admin_key}"),)
    with grpc.insecure_channel(f"127.0.0.1:{node.ports['grpc']}") as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        for sql in SETUP_SQL:
            stub.ExecuteQuery(pb.QueryRequest(sql=sql.format(rows=rows)), metadata=metadata)
        check = stub.ExecuteQuery(
            pb.QueryRequest(sql=SELECT_SQL, params=[pb.Value(int_value=rows // 2)]),
            metadata=metadata,
        )
        assert check.rows[0].values[0].int_value == rows // 2


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def request_body(path: Path, rows: int) -> Path:
    """The one request h2load sends: a gRPC length-prefixed ``QueryRequest``."""
    return h2load_grpc.write_frame(
        path, pb.QueryRequest(sql=SELECT_SQL, params=[pb.Value(int_value=rows // 3)])
    )


def settle(node: NodeProcess, limit: float = 60.0) -> None:
    """Wait until the node is idle: change capture of the rows just loaded costs CPU that
    would otherwise be counted against the first calls."""
    assert node.process is not None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(node.process.pid)
        time.sleep(1)
        if cpu_seconds(node.process.pid) - before < 0.05:
            return


def run_stream(node: NodeProcess, rows: int) -> None:
    assert node.admin_key is not None and node.process is not None
    pid = node.process.pid
    metadata = (("authorization", f"Bearer {node.admin_key}"),)
    before = peak = rss_mb(pid)
    seen = 0
    node_before, client_before = cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    with grpc.insecure_channel(f"127.0.0.1:{node.ports['grpc']}") as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        request = pb.QueryRequest(
            sql="SELECT g, 'row ' || g AS label FROM (SELECT generate_series(1, $1) AS g) s",
            params=[pb.Value(int_value=rows)],
        )
        for _ in stub.ExecuteQueryStream(request, metadata=metadata):
            seen += 1
            if seen % 50_000 == 0:
                peak = max(peak, rss_mb(pid))
    elapsed = time.perf_counter() - started
    node_us = (cpu_seconds(pid) - node_before) / max(1, seen) * 1e6
    client_us = (time.process_time() - client_before) / max(1, seen) * 1e6
    print(
        f"\nExecuteQueryStream: {seen} rows in {elapsed:.1f} s ({seen / elapsed:.0f} rows/s); "
        f"node RSS {before:.0f} MB before, {peak:.0f} MB peak, {rss_mb(pid):.0f} MB after; "
        f"CPU per row: node {node_us:.1f} µs, client {client_us:.1f} µs"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="total per side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument(
        "--client",
        choices=("h2load", "python"),
        default="h2load" if shutil.which("h2load") else "python",
        help="load generator: h2load (apt-get install nghttp2-client) or grpc.aio processes",
    )
    parser.add_argument("--connections", type=int, default=4, help="h2load connections")
    parser.add_argument("--processes", type=int, default=2, help="grpc.aio client processes")
    parser.add_argument(
        "--workers", type=int, default=1, help="node processes serving gRPC (--workers)"
    )
    parser.add_argument("--rows", type=int, default=10_000, help="rows in bench_items")
    parser.add_argument("--stream-rows", type=int, default=0, help="also stream N rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hdb-bench-grpc-") as tmp:
        data_dir = Path(tmp) / "data"
        node = NodeProcess(
            data_dir,
            extra_args=[
                *free_port_flags(), "--log-level", "warning", "--workers", str(args.workers)
            ],
        )  # fmt: skip
        node.start()
        try:
            setup(node, args.rows)
            settle(node)
            body = request_body(Path(tmp) / "request.bin", args.rows)

            rate = 500.0  # calls per second, until the first round measures it

            def run_via(seconds: float) -> Figure:
                nonlocal rate
                if args.client == "h2load":
                    result = run_h2load(node, args, seconds, body, rate)
                    rate = result.rps
                    return result
                return run_grpc(node, args, seconds)

            check_with_grpcio(node, args.rows)
            run_via(1)  # warm every pooled connection's statement cache
            slice_seconds = args.seconds / args.rounds
            grpcs, directs = [], []
            for _ in range(args.rounds):
                grpcs.append(run_via(slice_seconds))
                directs.append(asyncio.run(run_engine(data_dir, args, slice_seconds)))
            check_with_grpcio(node, args.rows)
            via, direct = combine(grpcs), combine(directs)
            if args.stream_rows:
                run_stream(node, args.stream_rows)
        finally:
            node.stop()
    client = (
        f"h2load, {min(args.connections, args.concurrency)} connections, one fixed id"
        if args.client == "h2load"
        else f"{args.processes} grpc.aio client processes, random ids"
    )
    print(
        f"\ngRPC ExecuteQuery point select vs asyncpg on the engine: {args.concurrency} in "
        f"flight ({client}), node processes {args.workers}, {args.seconds:g} s per side in "
        f"{args.rounds} alternating "
        f"rounds, {args.rows} rows, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    header = (
        f"{'gRPC calls/s':>13}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'direct q/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'gRPC/direct':>13}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{via.rps:>13.0f}{via.p50_ms:>9.2f}{via.p99_ms:>9.2f}"
        f"{direct.rps:>12.0f}{direct.p50_ms:>9.2f}{direct.p99_ms:>9.2f}"
        f"{via.rps / direct.rps:>12.2f}x"
    )
    print(
        f"CPU per gRPC call: node {via.node_us:.0f} µs, {args.client} client "
        f"{via.client_us:.0f} µs; per direct statement: asyncpg client {direct.client_us:.0f} µs "
        "(all share the machine's cores with the engine)"
    )
    if via.errors or direct.errors:
        print(f"errors: gRPC {via.errors}, direct {direct.errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
