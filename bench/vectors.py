"""Vector search through HeliosDB against raw pgvector on the same engine, in one run.

    .venv/bin/python bench/vectors.py [--count 100000] [--dim 128] [--queries 200]
                                      [--concurrency 8] [--ef-construction N]
                                      [--ef-search default|N [N ...]]
                                      [--workers N] [--data-dir DIR]

Starts a real node, creates a cosine index and loads ``--count`` vectors generated with
a fixed seed (clusters in 16 latent dimensions projected to ``--dim``; metadata
``category`` = i % 10) through ``/vectors/upsert`` (HNSW ``--m``, and
``--ef-construction`` or the service's default). Then, for each ``--ef-search`` (the
index's setting, changed in its catalog row between values; ``default``, the default,
leaves it unset, so each search's beam follows top_k as ``default_ef_search`` says, and
raw pgvector runs with that same beam), unfiltered and with
``category = 3`` (10% of rows), it runs the same query vectors through:

- REST ``POST /api/v1/vectors/search``: wrk (``bench/wrk/vectors.lua``, a C load
  generator, ``--concurrency`` connections) for queries per second, because a Python
  HTTP client spends more CPU per request than the node does and would measure itself;
  recall from one pass of the same searches with httpx;
- gRPC ``VectorSearch`` from h2load (bench/h2load_grpc.py, a C HTTP/2 load generator)
  for queries per second and the node's CPU per search: the grpc.aio Python client
  spends 0.8-0.9 ms of CPU per search on the same cores, more than the node does. h2load
  sends one fixed request, so one h2load process per query vector runs for the first
  ``--probes`` (8) query vectors, all at once, with ``--concurrency / --probes``
  connections each, for ``--rest-seconds`` (``-D``: every connection busy to the end);
  its ratio is to raw pgvector running the very same searches the same way (``raw/p``:
  as many connections per vector, each searching for it over and over for as long);
  every run is checked against the node's count of OK calls (which may exceed h2load's
  by the calls in flight when h2load stopped);
- gRPC ``VectorSearch`` from grpc.aio (the real Python client, same concurrency): the
  recall of the gRPC path (both gRPC rows show it), and its QPS for reference;
- raw pgvector: asyncpg on the engine's socket, the statement HeliosDB runs
  (``SELECT id, embedding <=> $1 AS distance ... [WHERE metadata @> $2] ORDER BY distance
  LIMIT 10``, prepared once per connection) on ``--concurrency`` connections, with the
  same ``hnsw.ef_search`` and ``hnsw.iterative_scan`` (``relaxed_order`` for the
  filtered case) set once per session;
- exact: the same statement with index scans off (ground truth for the engine's view).

Recall@10 is against numpy brute force. It prints QPS, recall, each path's QPS as a
ratio to raw pgvector (gRPC from h2load: to ``raw/p``), the node's CPU time per search
(REST and gRPC) and the engine's (its backends' CPU, every side): CPU figures the
machine's other load does not distort.
Absolute QPS on a shared machine mean little.

``--workers N`` runs the node with N processes serving REST and gRPC. ``--data-dir``
keeps the node's data there and reuses an index already loaded with ``--count`` vectors
(the 100,000-vector HNSW build takes many minutes on a busy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.nodeproc, when run as a script

import asyncpg  # noqa: E402
import grpc  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from bench import h2load_grpc  # noqa: E402
from bench.common import (  # noqa: E402
    connect_engine,
    cpu_seconds,
    engine_cpu_seconds,
    free_port_flags,
)

from heliosdb.services.vectors import (  # noqa: E402
    DEFAULTS,
    INDEX_CACHE_SECONDS,
    default_ef_search,
)
from heliosdb.v1 import heliosdb_pb2 as pb  # noqa: E402
from heliosdb.v1 import heliosdb_pb2_grpc  # noqa: E402
from tests.nodeproc import NodeProcess  # noqa: E402

INDEX = "bench_vectors"
WRK_SCRIPT = ROOT / "bench" / "wrk" / "vectors.lua"
FILTER = "category = 3"
K = 10


def generate(count: int, dim: int, seed: int, latent: int = 16) -> np.ndarray:
    """Embedding-like data: clusters in a ``latent``-dimensional space, projected to ``dim``.

    Real embeddings have a low intrinsic dimension; i.i.d. Gaussian noise in 128
    dimensions has none, and no approximate index finds its neighbours well. The
    projection is fixed (its own seed) so data and queries share it.
    """
    projection = np.random.default_rng(0).normal(size=(latent, dim))
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, latent)) * 2
    points = centres[rng.integers(0, 100, size=count)] + rng.normal(size=(count, latent))
    noise = 0.05 * rng.normal(size=(count, dim))
    return (points @ projection + noise).astype(np.float32)


def truth(data: np.ndarray, queries: np.ndarray, allowed: np.ndarray | None) -> list[set[int]]:
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    out = []
    for query in queries:
        distance = 1 - unit @ (query / np.linalg.norm(query))
        if allowed is not None:
            distance = np.where(allowed, distance, np.inf)
        out.append({int(i) for i in np.argsort(distance)[:K]})
    return out


async def timed(
    queries: np.ndarray,
    concurrency: int,
    search: Callable[[int, list[float]], Awaitable[list[int]]],
) -> tuple[float, list[list[int]]]:
    """Queries per second of ``search`` over ``queries`` on ``concurrency`` workers, each
    taking the next query as it finishes one."""
    results: list[list[int]] = [[] for _ in queries]
    position = 0

    async def worker(slot: int) -> None:
        nonlocal position
        while position < len(queries):
            i = position
            position += 1
            results[i] = await search(slot, queries[i].tolist())

    started = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in range(concurrency)))
    return len(queries) / (time.perf_counter() - started), results


def recall(found: list[list[int]], expected: list[set[int]]) -> float:
    return sum(len(set(f) & e) for f, e in zip(found, expected, strict=True)) / (K * len(found))


async def load(api: httpx.AsyncClient, data: np.ndarray, args: argparse.Namespace) -> float:
    batches = [range(s, min(s + args.batch, len(data))) for s in range(0, len(data), args.batch)]
    existing = await api.get(f"/vectors/indexes/{INDEX}")
    if existing.status_code == 200:
        count = existing.json()["count"]
        print(f"reusing {INDEX} ({count} of {len(data)} vectors)", file=sys.stderr)
        await set_index_ef_search(args.data_dir, args.ef_search[0])
        # Batches go two at a time, in order: every batch before the last two is whole.
        # The upsert is idempotent, so loading goes on from there.
        batches = batches[max(0, count // args.batch - 2) :] if count < len(data) else []
    else:
        await create_index(api, args)
    started = time.perf_counter()

    async def send(batch: range) -> None:
        body = {
            "index_name": INDEX,
            "vectors": [
                {"id": str(i), "vector": data[i].tolist(), "metadata": {"category": i % 10}}
                for i in batch
            ],
        }
        response = await api.post("/vectors/upsert", json=body)
        response.raise_for_status()

    for start in range(0, len(batches), 2):  # two batches in flight: one per core
        await asyncio.gather(*(send(b) for b in batches[start : start + 2]))
    return time.perf_counter() - started


async def create_index(api: httpx.AsyncClient, args: argparse.Namespace) -> None:
    options: dict[str, Any] = {"name": INDEX, "dimension": args.dim, "metric": "cosine",
                               "m": args.m, "ef_construction": args.ef_construction}  # fmt: skip
    if args.ef_search[0] is not None:
        options["ef_search"] = args.ef_search[0]
    created = await api.post("/vectors/indexes", json=options)
    created.raise_for_status()


def node_cpu(node: NodeProcess) -> float:
    """CPU seconds (user + system) the node and its worker processes have used so far."""
    assert node.process is not None
    return cpu_seconds(node.process.pid)


def run_wrk(node: NodeProcess, bodies: Path, args: argparse.Namespace) -> tuple[float, int]:
    """REST searches from wrk for ``--rest-seconds``: (requests per second, requests)."""
    assert node.admin_key is not None
    env = {**os.environ, "HELIOSDB_KEY": node.admin_key, "BENCH_BODIES": str(bodies)}
    command = [
        "wrk", "-t2", f"-c{args.concurrency}", f"-d{args.rest_seconds}s", "--timeout", "30s",
        "-s", str(WRK_SCRIPT), node.http_url,
    ]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("FAILURE "):
            sys.stderr.write(f"REST: {line}\n")
    match = re.search(r"^RESULT (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    values = {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    if values["non2xx"] or values["socket_errors"]:
        sys.stderr.write(f"REST: {values['non2xx']} non-2xx, {values['socket_errors']} errors\n")
    requests = max(1, values["requests"])
    return requests / (values["duration_us"] / 1e6), requests


async def set_index_ef_search(data_dir: Path, ef_search: int | None) -> None:
    """The index's default ef_search, changed in its catalog row as an administrator would;
    then the node's index cache (a few seconds) is waited out."""
    conn = await connect_engine(data_dir)
    try:
        status = await conn.execute(
            "UPDATE helios.vector_indexes SET ef_search = $1 WHERE name = $2 "
            "AND ef_search IS DISTINCT FROM $1",
            ef_search, INDEX,
        )  # fmt: skip
    finally:
        await conn.close()
    if status != "UPDATE 0":
        await asyncio.sleep(INDEX_CACHE_SECONDS + 0.5)


@dataclass
class Side:
    """One path's figures for one case, summed over the rounds."""

    qps: float = 0.0
    recall: float = 0.0
    searches: int = 0
    node_cpu: float = 0.0  # seconds
    engine_cpu: float = 0.0  # seconds
    seconds: float = 0.0  # wall time the searches took
    client_cpu: float | None = None  # seconds (this process), None: not measured here

    def add(self, qps: float, searches: int, node: float, engine: float, rounds: int) -> None:
        self.seconds += searches / qps
        self.qps += qps / rounds  # the mean over the rounds
        self.searches += searches
        self.node_cpu += node
        self.engine_cpu += engine

    def per_search(self, seconds: float | None) -> float | None:
        if seconds is None or not self.searches:
            return None  # not measured (exact search: QPS and recall only)
        return seconds / self.searches * 1e6


Row = tuple[str, str, str, Side]
IDLE_SECONDS = 5.0


async def idle_cpu(node: NodeProcess, data_dir: Path) -> tuple[float, float]:
    """CPU seconds per second the node and the engine use with no search running (the
    node's background work: change capture, sweepers), over ``IDLE_SECONDS``."""
    node_before, engine_before = node_cpu(node), engine_cpu_seconds(data_dir)
    await asyncio.sleep(IDLE_SECONDS)
    return (
        (node_cpu(node) - node_before) / IDLE_SECONDS,
        (engine_cpu_seconds(data_dir) - engine_before) / IDLE_SECONDS,
    )


async def bench(node: NodeProcess, data_dir: Path, args: argparse.Namespace) -> None:
    data = generate(args.count, args.dim, seed=42)
    queries = generate(args.queries, args.dim, seed=4242)
    allowed = np.arange(args.count) % 10 == 3
    expected = {"none": truth(data, queries, None), "10%": truth(data, queries, allowed)}
    headers = {"Authorization": f"Bearer {node.admin_key}"}
    limits = httpx.Limits(max_connections=args.concurrency)
    rows: list[Row] = []
    async with httpx.AsyncClient(
        base_url=node.api, headers=headers, timeout=600, limits=limits
    ) as api:
        seconds = await load(api, data, args)
        print(f"loaded {args.count} x {args.dim} in {seconds:.1f} s", file=sys.stderr)
        await asyncio.sleep(3)  # let the load's aftermath settle, then the idle rates
        idle = await idle_cpu(node, data_dir)
        raw = [await connect_engine(data_dir) for _ in range(args.concurrency)]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.ports['grpc']}")
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        metadata = [("authorization", f"Bearer {node.admin_key}")]
        try:
            for ef_search in args.ef_search:
                if ef_search != args.ef_search[0]:
                    await set_index_ef_search(data_dir, ef_search)
                for label, text in (("none", None), ("10%", FILTER)):
                    rows += await bench_case(
                        node, data_dir, args, api, stub, metadata, raw, queries,
                        expected[label], label, text, ef_search,
                    )  # fmt: skip
        finally:
            await channel.close()
            for conn in raw:
                await conn.close()
    print(
        f"\nvector search, {args.count} x {args.dim} cosine, HNSW m={args.m} "
        f"ef_construction={args.ef_construction}, top {K}, {args.queries} queries, "
        f"concurrency {args.concurrency}, node --workers {args.workers}; REST from wrk "
        f"({args.rest_seconds} s per round), gRPC from h2load ({args.rest_seconds} s per "
        f"round, one h2load per query vector for {args.probes} vectors at once; recall from "
        f"grpc.aio) and from grpc.aio, raw from asyncpg (raw/p: the searches h2load made, "
        f"the same way); {args.rounds} rounds; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end.\n"
        "CPU per search (µs): node = the node's processes, node net = less its idle "
        f"rate ({idle[0] * 1000:.0f} ms/s), engine = its backends (idle "
        f"{idle[1] * 1000:.0f} ms/s), client = the load generator (this script; h2load "
        "for gRPC)"
    )
    header = (
        f"{'ef':>12}  {'filter':<8}{'path':<9}{'QPS':>8}{'recall@10':>11}{'vs raw':>8}"
        f"{'node µs':>9}{'node net':>10}{'engine µs':>11}{'client µs':>11}"
    )
    print(header)
    print("-" * len(header))
    raw_qps = {(ef, label, name): side.qps for ef, label, name, side in rows}

    def cell(value: float | None, width: int) -> str:
        return " " * width if value is None else f"{value:>{width}.0f}"

    for ef, label, name, side in rows:
        node_us = net_us = None
        peer = "raw/p" if name == "grpc" else "raw"
        if name in ("rest", "grpc", "grpc.aio"):
            node_us = side.per_search(side.node_cpu)
            net_us = side.per_search(side.node_cpu - idle[0] * side.seconds)
        found = " " * 11 if name == "raw/p" else f"{side.recall:>11.3f}"  # same as raw's
        print(
            f"{ef:>12}  {label:<8}{name:<9}{side.qps:>8.0f}{found}"
            f"{side.qps / raw_qps[ef, label, peer]:>7.2f}x{cell(node_us, 9)}{cell(net_us, 10)}"
            f"{cell(side.per_search(side.engine_cpu), 11)}"
            f"{cell(side.per_search(side.client_cpu), 11)}"
        )


async def bench_case(
    node: NodeProcess,
    data_dir: Path,
    args: argparse.Namespace,
    api: httpx.AsyncClient,
    stub: heliosdb_pb2_grpc.HeliosDBStub,
    metadata: list[tuple[str, str]],
    raw: list[asyncpg.Connection],
    queries: np.ndarray,
    expected: list[set[int]],
    label: str,
    text: str | None,
    ef_setting: int | None,
) -> list[Row]:
    """One filter at one ef_search: raw, REST, gRPC and exact, as rows of the table."""
    paths: set[str] = set()
    beams: set[tuple[int, str]] = set()
    ef_search = default_ef_search(K) if ef_setting is None else ef_setting
    ef_label = f"default={ef_search}" if ef_setting is None else str(ef_search)

    async def rest(slot: int, vector: list[float]) -> list[int]:
        answer = (await api.post("/vectors/search", json=body(vector))).json()
        paths.add(answer["metrics"]["search_path"])
        beams.add((answer["metrics"]["ef_search"], answer["metrics"]["ef_search_source"]))
        return [int(r["id"]) for r in answer["results"]]

    def body(vector: list[float]) -> dict[str, Any]:
        out: dict[str, Any] = {"index_name": INDEX, "vector": vector, "top_k": K}
        if text:
            out["filter"] = text
        return out

    def request_of(vector: list[float]) -> pb.VectorSearchRequest:
        request = pb.VectorSearchRequest(index_name=INDEX, vector=vector, top_k=K)
        if text:
            request.filter = text
        return request

    async def via_grpc(slot: int, vector: list[float]) -> list[int]:
        answer = await stub.VectorSearch(request_of(vector), metadata=metadata)
        return [int(m.id) for m in answer.results]

    # The statement HeliosDB runs (services/vectors.py), less the settings it carries:
    # raw pgvector sets them once per session instead.
    where = " WHERE metadata @> $2::jsonb" if text else ""
    arguments: tuple[Any, ...] = ({"category": 3},) if text else ()
    sql = (
        f"SELECT id, embedding <=> $1::vector AS distance FROM helios_vectors.{INDEX}"  # noqa: S608
        f"{where} ORDER BY distance LIMIT {K}"
    )
    exact_sql = sql.replace("ORDER BY distance", "ORDER BY (embedding <=> $1::vector) + 0")
    iterative = "relaxed_order" if text else "off"
    for conn in raw:
        await conn.set_type_codec(
            "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
            schema="pg_catalog",
        )  # fmt: skip
        await conn.execute(
            f"SET hnsw.ef_search = {int(ef_search)}; SET hnsw.iterative_scan = {iterative}"
        )
    statements = [await conn.prepare(sql) for conn in raw]
    exact_statements = [await conn.prepare(exact_sql) for conn in raw]

    async def direct(slot: int, vector: list[float]) -> list[int]:
        records = await statements[slot].fetch(_text(vector), *arguments)
        return [int(r["id"]) for r in records]

    async def brute(slot: int, vector: list[float]) -> list[int]:
        records = await exact_statements[slot].fetch(_text(vector), *arguments)
        return [int(r["id"]) for r in records]

    async def measured(
        side: Side, search: Callable[[int, list[float]], Awaitable[list[int]]]
    ) -> list[list[int]]:
        node_before, engine_before = node_cpu(node), engine_cpu_seconds(data_dir)
        client_before = time.process_time()
        qps, found = await timed(queries, args.concurrency, search)
        side.add(qps, len(queries), node_cpu(node) - node_before,
                 engine_cpu_seconds(data_dir) - engine_before, args.rounds)  # fmt: skip
        side.client_cpu = (side.client_cpu or 0.0) + time.process_time() - client_before
        return found

    async def raw_as_h2load(seconds: float) -> None:
        """Raw pgvector doing what h2load just did: ``per_probe`` connections per probe
        vector, each searching for it again and again for ``seconds``."""
        side = figures["raw/p"]
        engine_before, client_before = engine_cpu_seconds(data_dir), time.process_time()
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker(slot: int) -> None:
            nonlocal done
            vector = probes[slot // per_probe].tolist()
            while time.perf_counter() < deadline:
                await direct(slot, vector)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in range(len(probes) * per_probe)))
        side.add(done / (time.perf_counter() - started), done, 0.0,
                 engine_cpu_seconds(data_dir) - engine_before, args.rounds)  # fmt: skip
        side.client_cpu = (side.client_cpu or 0.0) + time.process_time() - client_before

    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as handle:
        for query in queries:
            handle.write(orjson.dumps(body(query.tolist())) + b"\n")
    bodies = Path(handle.name)
    probes = queries[: args.probes]
    per_probe = max(1, args.concurrency // len(probes))  # connections per probe vector
    frames = [
        h2load_grpc.write_frame(bodies.with_suffix(f".{i}.grpc"), request_of(probe.tolist()))
        for i, probe in enumerate(probes)
    ]
    figures = {"raw": Side(), "rest": Side(), "grpc": Side(), "raw/p": Side(),
               "grpc.aio": Side()}  # fmt: skip

    def run_h2load(seconds: float, side: Side | None) -> None:
        """One h2load per probe vector, all at once, each with ``per_probe`` connections
        searching for ``seconds``, counted in ``side`` (None: a warm-up)."""
        run = h2load_grpc.run(node, "VectorSearch", frames, 0, concurrency=per_probe,
                              connections=per_probe, engine=data_dir, seconds=seconds)  # fmt: skip
        if side is None:
            return
        if args.verbose:
            sys.stderr.write(
                f"h2load {label}: {run.succeeded} in {run.seconds:.2f} s, p50 "
                f"{sorted(run.latencies)[len(run.latencies) // 2] * 1000:.0f} ms, node "
                f"{run.node_cpu / run.succeeded * 1e6:.0f} µs, engine "
                f"{run.engine_cpu / run.succeeded * 1e6:.0f} µs per search\n"
            )
        if run.failed or run.mismatch:
            sys.stderr.write(f"gRPC (h2load): {run.failed} failed, {run.mismatch} not OK\n")
        side.add(run.succeeded / run.seconds, run.succeeded, run.node_cpu, run.engine_cpu,
                 args.rounds)  # fmt: skip
        side.client_cpu = (side.client_cpu or 0.0) + run.client_cpu

    try:
        await timed(queries[:20], args.concurrency, direct)  # warm the caches
        await timed(queries[:20], args.concurrency, via_grpc)
        await asyncio.to_thread(run_h2load, 1, None)
        # REST recall from the same searches wrk times (one untimed pass with httpx).
        _, rest_found = await timed(queries, args.concurrency, rest)
        figures["rest"].recall = recall(rest_found, expected)
        for _ in range(args.rounds):  # alternate, so load changes hit every side
            found = await measured(figures["raw"], direct)
            figures["raw"].recall = recall(found, expected)
            node_before, engine_before = node_cpu(node), engine_cpu_seconds(data_dir)
            qps, requests = await asyncio.to_thread(run_wrk, node, bodies, args)
            engine_used = engine_cpu_seconds(data_dir) - engine_before
            figures["rest"].add(qps, requests, node_cpu(node) - node_before, engine_used,
                                args.rounds)  # fmt: skip
            # h2load's searches, then the same on the engine: each probe vector ``calls``
            # times, probe after probe.
            await asyncio.to_thread(run_h2load, args.rest_seconds, figures["grpc"])
            await raw_as_h2load(args.rest_seconds)
            found = await measured(figures["grpc.aio"], via_grpc)
            figures["grpc.aio"].recall = figures["grpc"].recall = recall(found, expected)
    finally:
        bodies.unlink()
        for frame in frames:
            frame.unlink()
    exact_queries = queries[: max(10, args.queries // 10)]
    qps, found = await timed(exact_queries, args.concurrency, brute)
    figures["exact"] = Side(qps=qps, recall=recall(found, expected[: len(exact_queries)]))
    print(
        f"ef_search {ef_label}, filter {label}: REST search paths {sorted(paths)}, "
        f"ef_search (value, source) {sorted(beams)}",
        file=sys.stderr,
    )
    return [(ef_label, label, name, side) for name, side in figures.items()]


def _ef_setting(text: str) -> int | None:
    return None if text == "default" else int(text)


def _text(vector: list[float]) -> str:
    return orjson.dumps(vector).decode()  # pgvector's text form, as HeliosDB sends it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=DEFAULTS["ef_construction"])
    parser.add_argument(
        "--ef-search", type=_ef_setting, nargs="+", default=[None],
        help="one or more of 'default' (unset: follows top_k) or a number: the index is "
        "created with the first, then changed to each next",
    )  # fmt: skip
    parser.add_argument(
        "--rest-seconds", type=int, default=5,
        help="REST (wrk) and gRPC (h2load) run per round, each",
    )  # fmt: skip
    parser.add_argument(
        "--probes", type=int, default=8,
        help="query vectors h2load sends: one h2load process per vector (it sends one fixed "
        "request), all at once, with --concurrency / --probes connections each",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="the node's processes")
    parser.add_argument("--verbose", action="store_true", help="each h2load run's figures")
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help="keep the node's data here and reuse an index already loaded (default: a "
        "temporary directory)",
    )  # fmt: skip
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            sys.stderr.write(f"bench/vectors.py needs {tool} (apt-get install {package})\n")
            return 1
    with tempfile.TemporaryDirectory(prefix="hdb-bench-vectors-") as tmp:
        args.data_dir = args.data_dir or Path(tmp) / "data"
        # Loading inserts into a growing HNSW graph: give a batch more than the usual 30 s.
        flags = [*free_port_flags(), "--log-level", "warning", "--query-timeout", "600",
                 "--workers", str(args.workers)]  # fmt: skip
        node = NodeProcess(args.data_dir, extra_args=flags)
        node.start()
        try:
            asyncio.run(bench(node, args.data_dir, args))
        except BaseException:
            sys.stderr.write("node output (last lines):\n" + "".join(node.output[-30:]))
            raise
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
