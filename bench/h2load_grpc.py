"""Unary gRPC calls from h2load (nghttp2's HTTP/2 load generator, written in C).

A Python gRPC client spends about as much CPU per call as the node answering it, on the
same cores, so it measures itself as much as the node. h2load costs a few tens of µs per
call, but it sends one fixed body: the request here is one prebuilt gRPC message (a
length-prefixed protobuf) POSTed with ``content-type: application/grpc``, ``te: trailers``
and the admin key. h2load sees only HTTP statuses and a failed gRPC call is an HTTP 200
too, so every run is checked against the node's own count of calls of that method that
ended OK (``/metrics``): the two must agree exactly (``H2Run.mismatch``). Callers check
the answers' contents with a real gRPC client before and after.

Used by bench/grpc_query.py (ExecuteQuery) and bench/vectors.py (VectorSearch).
"""

from __future__ import annotations

import re
import resource
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, engine_cpu_seconds

from tests.nodeproc import NodeProcess

SERVICE = "heliosdb.v1.HeliosDB"


def write_frame(path: Path, message: Any) -> Path:
    """``message`` as the one gRPC request frame h2load sends (``-d path``)."""
    payload = message.SerializeToString()
    path.write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
    return path


def ok_calls(node: NodeProcess, method: str) -> int:
    """Calls of ``method`` the node has answered with status OK, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.ports['http']}/api/v1/metrics") as reply:
        text = reply.read().decode()
    match = re.search(
        rf'^heliosdb_requests_total\{{interface="grpc",route="{method}",status="OK"\}} (\S+)$',
        text,
        re.MULTILINE,
    )
    return int(float(match.group(1))) if match else 0


def command(
    node: NodeProcess, method: str, body: Path, concurrency: int, connections: int
) -> list[str]:
    assert node.admin_key is not None
    connections = min(connections, concurrency)
    return [
        "h2load", "-t", "1", "-c", str(connections),
        "-m", str(max(1, concurrency // connections)), "-d", str(body),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-H", f"authorization: Bearer {node.admin_key}",
        f"http://127.0.0.1:{node.ports['grpc']}/{SERVICE}/{method}",
    ]  # fmt: skip


@dataclass
class H2Run:
    """One h2load run: ``calls`` calls per request body, every one started waited for."""

    succeeded: int
    failed: int  # started but not answered with HTTP 200
    mismatch: int  # the node's count of OK calls differs from h2load's answered calls (by
    # more than the calls in flight at the end of a timed run, which h2load drops)
    seconds: float  # h2load's own "finished in"; with several bodies, the calls over the
    # sum of each h2load's rate (they overlap, but start some ms apart)
    node_cpu: float  # seconds, the node's processes
    client_cpu: float  # seconds, h2load
    engine_cpu: float  # seconds, the node's embedded engine (0.0 unless ``engine``)
    latencies: list[float] = field(default_factory=list)  # seconds, one per call answered


_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def run(
    node: NodeProcess,
    method: str,
    bodies: Sequence[Path],
    calls: int,
    *,
    concurrency: int,
    connections: int,
    engine: Path | None = None,
    seconds: float | None = None,
) -> H2Run:
    """``calls`` calls of ``method`` with the request in each of ``bodies`` (or with
    ``seconds``, as many as fit in that time: every client busy to the end): one h2load
    (``concurrency`` calls in flight over ``connections`` connections) per body, all at
    once; with ``engine`` (the node's data directory) also the engine's CPU. Every CPU
    figure covers the calls only, not the /metrics reads that check them."""
    assert node.process is not None
    logs = [body.with_suffix(".log") for body in bodies]
    amount = ["-n", str(calls)] if seconds is None else ["-D", f"{seconds:g}"]
    argvs = [
        [*command(node, method, body, concurrency, connections), *amount,
         "--log-file", str(log)]
        for body, log in zip(bodies, logs, strict=True)
    ]  # fmt: skip
    ok_before = ok_calls(node, method)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    engine_before = engine_cpu_seconds(engine) if engine is not None else 0.0
    before = cpu_seconds(node.process.pid)
    began = time.perf_counter()
    processes = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for a in argvs]  # fmt: skip
    outs = [(p.communicate(), p.returncode) for p in processes]
    elapsed = time.perf_counter() - began
    node_cpu = cpu_seconds(node.process.pid) - before
    engine_cpu = engine_cpu_seconds(engine) - engine_before if engine is not None else 0.0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    ok = ok_calls(node, method) - ok_before
    succeeded = failed = 0
    rate = 0.0
    for (stdout, stderr), code in outs:
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", stdout)
        if code != 0 or done is None:
            raise SystemExit(f"h2load failed:\n{stdout}\n{stderr}")
        succeeded += int(done.group(2))
        failed += int(done.group(1)) - int(done.group(2))
        duration = re.search(r"finished in ([\d.]+)(s|ms|us),", stdout)
        took = float(duration.group(1)) * _UNITS[duration.group(2)] if duration else elapsed
        rate += int(done.group(2)) / took
    latencies = []
    for log in logs:
        latencies += [
            int(line.split("\t")[2]) / 1e6
            for line in log.read_text().splitlines()
            if line.count("\t") == 2 and line.split("\t")[1] == "200"
        ]
        log.unlink()
    # A timed run stops with calls in flight: the node may finish them, h2load drops them.
    dropped = 0 if seconds is None else len(bodies) * max(concurrency, connections)
    mismatch = max(0, abs(ok - succeeded) - dropped) if ok >= succeeded else succeeded - ok
    if mismatch:
        print(f"!! h2load counted {succeeded} {method} calls, the node answered {ok} with OK")
    return H2Run(
        succeeded=succeeded,
        failed=failed,
        mismatch=mismatch,
        seconds=succeeded / rate if rate else elapsed,
        node_cpu=node_cpu,
        client_cpu=client_cpu,
        engine_cpu=engine_cpu,
        latencies=latencies,
    )
