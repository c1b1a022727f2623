"""What the benchmarks share: figures, CPU accounting, free ports, the direct-engine side.

Each benchmark measures HeliosDB against the engine itself (or the real peer) in the
same run; the direct side here is the best a Python client does against the engine:
asyncpg on the node's own engine over its Unix socket, one prepared statement per
connection, every connection looping as fast as it can.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

POINT_SELECT_SQL = "SELECT * FROM bench_items WHERE id = $1"  # the tables bench/ fills


@dataclass
class Figure:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    node_us: float = 0.0  # the node's CPU (utime + stime, workers included) per request
    client_us: float = 0.0  # the load generator's CPU per request


def figure(latencies: list[float], elapsed: float, errors: int) -> Figure:
    latencies.sort()
    return Figure(
        rps=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        errors=errors,
    )


def combine(rounds: list[Figure]) -> Figure:
    """Throughput averaged over the rounds; latency percentiles as their median round's."""
    ordered = sorted(rounds, key=lambda f: f.p50_ms)
    return Figure(
        rps=sum(f.rps for f in rounds) / len(rounds),
        p50_ms=ordered[len(ordered) // 2].p50_ms,
        p99_ms=sorted(f.p99_ms for f in rounds)[len(rounds) // 2],
        errors=sum(f.errors for f in rounds),
        node_us=sum(f.node_us for f in rounds) / len(rounds),
        client_us=sum(f.client_us for f in rounds) / len(rounds),
    )


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU time a process and its live children (the node's worker
    processes, --workers; the engine's backends) have used so far, and with ``reaped``
    also the children it has already waited for."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid:
            total += sum(int(f) for f in fields[11 : 15 if reaped else 13])
        elif int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def engine_cpu_seconds(data_dir: Path) -> float:
    """CPU time the node's embedded engine has used so far: its postmaster, its live
    backends and the backends it has reaped."""
    postmaster = int((data_dir / "engine" / "postmaster.pid").read_text().split()[0])
    return cpu_seconds(postmaster, reaped=True)


def free_port_flags() -> list[str]:
    """``--<listener>-port 0`` for every listener the node has: a benchmark needs one or
    two, but must not collide with anything else on the machine."""
    usage = subprocess.run(
        [sys.executable, "-m", "heliosdb", "serve", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    flags = sorted(set(re.findall(r"(--[a-z]+-port)\b", usage)))
    return [arg for flag in flags for arg in (flag, "0")]


async def connect_engine(data_dir: Path) -> asyncpg.Connection:
    """A superuser connection to a node's embedded engine, over its Unix socket."""
    password = (data_dir / "engine.password").read_text().strip()
    connection: asyncpg.Connection = await asyncpg.connect(
        host=str(data_dir / "run"), user="heliosdb", password=password, database="heliosdb"
    )
    return connection


async def run_direct(
    data_dir: Path,
    sql: str,
    arguments: Callable[[random.Random, int], Sequence[Any]],
    *,
    connections: int,
    seconds: float,
) -> Figure:
    """``sql`` on ``connections`` engine connections for ``seconds``, each looping with
    ``arguments(rng, n)`` for its n-th call; client CPU per statement included."""
    conns = [await connect_engine(data_dir) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(conn: asyncpg.Connection, index: int) -> None:
        nonlocal errors
        stmt = await conn.prepare(sql)
        rng = random.Random(index)
        count = 0
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            count += 1
            try:
                await stmt.fetch(*arguments(rng, count))
            except asyncpg.PostgresError:
                errors += 1
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    cpu_before = time.process_time()
    try:
        await asyncio.gather(*(worker(c, i) for i, c in enumerate(conns)))
    finally:
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_before
        await asyncio.gather(*(c.close() for c in conns))
    result = figure(latencies, elapsed, errors)
    result.client_us = cpu / max(1, len(latencies)) * 1e6
    return result


async def run_point_selects(
    data_dir: Path, rows: int, *, connections: int, seconds: float
) -> Figure:
    """The point select of the REST and gRPC benchmarks, by random id, on the engine."""
    return await run_direct(
        data_dir,
        POINT_SELECT_SQL,
        lambda rng, n: (rng.randint(1, rows),),
        connections=connections,
        seconds=seconds,
    )
