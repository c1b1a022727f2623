"""Vector search through HeliosDB against raw pgvector on the same engine, in one run.

    .venv/bin/python bench/vectors.py [--count 100000] [--dim 128] [--queries 200]
                                      [--concurrency 8] [--ef-construction N]
                                      [--ef-search default|N [N ...]]

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
- gRPC ``VectorSearch`` (grpc.aio, same concurrency);
- raw pgvector: asyncpg on the engine's socket, ``ORDER BY embedding <=> $1 LIMIT 10``
  on ``--concurrency`` connections, ``hnsw.ef_search`` set once per session (and
  ``hnsw.iterative_scan = relaxed_order`` for the filtered case);
- exact: the same statement with index scans off (ground truth for the engine's view).

Recall@10 is against numpy brute force. It prints QPS, recall, each path's QPS as a
ratio to raw pgvector, and the node's CPU time per search (REST and gRPC), which the
machine's other load does not distort. Absolute QPS on a shared machine mean little.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.nodeproc, when run as a script

import asyncpg  # noqa: E402
import grpc  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from bench.common import cpu_seconds, free_port_flags  # noqa: E402

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
    options: dict[str, Any] = {"name": INDEX, "dimension": args.dim, "metric": "cosine",
                               "m": args.m, "ef_construction": args.ef_construction}  # fmt: skip
    if args.ef_search[0] is not None:
        options["ef_search"] = args.ef_search[0]
    created = await api.post("/vectors/indexes", json=options)
    created.raise_for_status()
    started = time.perf_counter()
    batches = [range(s, min(s + args.batch, len(data))) for s in range(0, len(data), args.batch)]

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


def node_cpu(node: NodeProcess) -> float:
    """CPU seconds (user + system) the node has used so far."""
    assert node.process is not None
    return cpu_seconds(node.process.pid)


def run_wrk(node: NodeProcess, bodies: Path, args: argparse.Namespace) -> tuple[float, float]:
    """REST searches from wrk for ``--rest-seconds``: (requests per second, node CPU µs each)."""
    assert node.admin_key is not None
    env = {**os.environ, "HELIOSDB_KEY": node.admin_key, "BENCH_BODIES": str(bodies)}
    command = [
        "wrk", "-t2", f"-c{args.concurrency}", f"-d{args.rest_seconds}s", "--timeout", "30s",
        "-s", str(WRK_SCRIPT), node.http_url,
    ]  # fmt: skip
    before = node_cpu(node)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    cpu = node_cpu(node) - before
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
    return requests / (values["duration_us"] / 1e6), cpu / requests * 1e6


async def set_index_ef_search(data_dir: Path, ef_search: int | None) -> None:
    """The index's default ef_search, changed in its catalog row as an administrator would;
    then the node's index cache (a few seconds) is waited out."""
    password = (data_dir / "engine.password").read_text().strip()
    conn = await asyncpg.connect(
        host=str(data_dir / "run"), user="heliosdb", password=password, database="heliosdb"
    )
    try:
        await conn.execute(
            "UPDATE helios.vector_indexes SET ef_search = $1 WHERE name = $2", ef_search, INDEX
        )
    finally:
        await conn.close()
    await asyncio.sleep(INDEX_CACHE_SECONDS + 0.5)


async def bench(node: NodeProcess, data_dir: Path, args: argparse.Namespace) -> None:
    data = generate(args.count, args.dim, seed=42)
    queries = generate(args.queries, args.dim, seed=4242)
    allowed = np.arange(args.count) % 10 == 3
    expected = {"none": truth(data, queries, None), "10%": truth(data, queries, allowed)}
    headers = {"Authorization": f"Bearer {node.admin_key}"}
    limits = httpx.Limits(max_connections=args.concurrency)
    rows: list[tuple[str, str, str, float, float, float | None]] = []
    async with httpx.AsyncClient(
        base_url=node.api, headers=headers, timeout=600, limits=limits
    ) as api:
        seconds = await load(api, data, args)
        print(f"loaded {args.count} x {args.dim} in {seconds:.1f} s", file=sys.stderr)
        password = (data_dir / "engine.password").read_text().strip()
        raw = [
            await asyncpg.connect(host=str(data_dir / "run"), user="heliosdb",
                                  password=password, database="heliosdb")
            for _ in range(args.concurrency)
        ]  # fmt: skip
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{node.ports['grpc']}")
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        metadata = [("authorization", f"Bearer {node.admin_key}")]
        try:
            for ef_search in args.ef_search:
                if ef_search != args.ef_search[0]:
                    await set_index_ef_search(data_dir, ef_search)
                for label, text in (("none", None), ("10%", FILTER)):
                    rows += await bench_case(
                        node, args, api, stub, metadata, raw, queries, expected[label],
                        label, text, ef_search,
                    )  # fmt: skip
        finally:
            await channel.close()
            for conn in raw:
                await conn.close()
    print(
        f"\nvector search, {args.count} x {args.dim} cosine, HNSW m={args.m} "
        f"ef_construction={args.ef_construction}, top {K}, {args.queries} queries, "
        f"concurrency {args.concurrency}; REST from wrk ({args.rest_seconds} s per round), "
        "gRPC from grpc.aio; node CPU per search from the node process's utime + stime"
    )
    header = (
        f"{'ef':>12}  {'filter':<8}{'path':<8}{'QPS':>9}{'recall@10':>11}{'vs raw':>9}"
        f"{'node µs':>10}"
    )
    print(header)
    print("-" * len(header))
    raw_qps = {(ef, label): qps for ef, label, name, qps, _, _ in rows if name == "raw"}
    for ef, label, name, qps, score, cpu in rows:
        print(
            f"{ef:>12}  {label:<8}{name:<8}{qps:>9.0f}{score:>11.3f}"
            f"{qps / raw_qps[ef, label]:>8.2f}x{'' if cpu is None else f'{cpu:>10.0f}'}"
        )


async def bench_case(
    node: NodeProcess,
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
) -> list[tuple[str, str, str, float, float, float | None]]:
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

    async def via_grpc(slot: int, vector: list[float]) -> list[int]:
        request = pb.VectorSearchRequest(index_name=INDEX, vector=vector, top_k=K)
        if text:
            request.filter = text
        answer = await stub.VectorSearch(request, metadata=metadata)
        return [int(m.id) for m in answer.results]

    where = " WHERE metadata @> '{\"category\": 3}'" if text else ""
    sql = (
        f"SELECT id FROM helios_vectors.{INDEX}{where} "  # noqa: S608
        "ORDER BY embedding <=> $1::vector LIMIT 10"
    )
    iterative = "relaxed_order" if text else "off"
    for conn in raw:
        await conn.execute(
            f"SET hnsw.ef_search = {int(ef_search)}; SET hnsw.iterative_scan = {iterative}"
        )

    async def direct(slot: int, vector: list[float], sql: str = sql) -> list[int]:
        records = await raw[slot].fetch(sql, _text(vector))
        return [int(r["id"]) for r in records]

    exact_sql = sql.replace("$1::vector LIMIT", "$1::vector) + 0 LIMIT").replace(
        "ORDER BY embedding", "ORDER BY (embedding"
    )

    async def brute(slot: int, vector: list[float]) -> list[int]:
        return await direct(slot, vector, exact_sql)

    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as handle:
        for query in queries:
            handle.write(orjson.dumps(body(query.tolist())) + b"\n")
    bodies = Path(handle.name)
    try:
        await timed(queries[:20], args.concurrency, direct)  # warm the caches
        await timed(queries[:20], args.concurrency, via_grpc)
        # REST recall from the same searches wrk times (one untimed pass with httpx).
        _, rest_found = await timed(queries, args.concurrency, rest)
        figures: dict[str, list[Any]] = {
            "raw": [0.0, 0.0, None],
            "rest": [0.0, recall(rest_found, expected), 0.0],
            "grpc": [0.0, 0.0, 0.0],
        }
        for _ in range(args.rounds):  # alternate, so load changes hit every side
            qps, found = await timed(queries, args.concurrency, direct)
            figures["raw"][0] += qps / args.rounds
            figures["raw"][1] = recall(found, expected)
            qps, cpu = await asyncio.to_thread(run_wrk, node, bodies, args)
            figures["rest"][0] += qps / args.rounds
            figures["rest"][2] += cpu / args.rounds
            before = node_cpu(node)
            qps, found = await timed(queries, args.concurrency, via_grpc)
            figures["grpc"][2] += (node_cpu(node) - before) / len(queries) * 1e6 / args.rounds
            figures["grpc"][0] += qps / args.rounds
            figures["grpc"][1] = recall(found, expected)
    finally:
        bodies.unlink()
    exact_queries = queries[: max(10, args.queries // 10)]
    qps, found = await timed(exact_queries, args.concurrency, brute)
    figures["exact"] = [qps, recall(found, expected[: len(exact_queries)]), None]
    print(
        f"ef_search {ef_label}, filter {label}: REST search paths {sorted(paths)}, "
        f"ef_search (value, source) {sorted(beams)}",
        file=sys.stderr,
    )
    return [(ef_label, label, name, qps, score, cpu) for name, (qps, score, cpu) in figures.items()]


def _ef_setting(text: str) -> int | None:
    return None if text == "default" else int(text)


def _text(vector: list[float]) -> str:
    return "[" + ",".join(repr(v) for v in vector) + "]"


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
    parser.add_argument("--rest-seconds", type=int, default=5, help="wrk run per round")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.stderr.write("bench/vectors.py needs wrk (scripts/test-deps installs it)\n")
        return 1
    with tempfile.TemporaryDirectory(prefix="hdb-bench-vectors-") as tmp:
        data_dir = Path(tmp) / "data"
        # Loading inserts into a growing HNSW graph: give a batch more than the usual 30 s.
        flags = [*free_port_flags(), "--log-level", "warning", "--query-timeout", "600"]
        node = NodeProcess(data_dir, extra_args=flags)
        node.start()
        try:
            asyncio.run(bench(node, data_dir, args))
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
