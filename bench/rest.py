"""REST ``POST /api/v1/query`` against the engine itself, measured in the same run.

    .venv/bin/python bench/rest.py [--seconds 10] [--connections 32] [--threads 2] [--workers N]

Starts a real node (embedded engine, temp data directory, ``--workers`` REST processes:
one per core unless told), fills ``bench_items`` with
``--rows`` rows, then for each case (point select by random id, single-row insert):

- REST: wrk with ``bench/wrk/query.lua`` (random ids, JSON bodies) on ``--connections``
  HTTP connections;
- direct: asyncpg on the node's engine over its Unix socket, one prepared statement per
  connection, the same number of connections, each looping as fast as it can.

It prints requests per second, p50 and p99 latency of each, and REST / direct.
Absolute numbers on a shared machine mean little; the ratio is the figure.
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
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    POINT_SELECT_SQL,
    Figure,
    combine,
    cpu_seconds,
    free_port_flags,
    run_direct,
    run_point_selects,
)

from tests.nodeproc import NodeProcess  # noqa: E402

WRK_SCRIPT = ROOT / "bench" / "wrk" / "query.lua"
SELECT_SQL = POINT_SELECT_SQL
INSERT_SQL = "INSERT INTO bench_inserts (name, value) VALUES ($1, $2)"
SETUP_SQL = """
DROP TABLE IF EXISTS bench_items, bench_inserts;
CREATE TABLE bench_items (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    value double precision NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO bench_items (id, name, value)
    SELECT g, 'item-' || g, g * 1.5 FROM generate_series(1, {rows}) AS g;
CREATE TABLE bench_inserts (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    value double precision NOT NULL
);
ANALYZE bench_items;
"""
_RESULT = re.compile(r"^RESULT (.*)$", re.M)


def run_wrk(node: NodeProcess, case: str, args: argparse.Namespace, seconds: int) -> Figure:
    assert node.admin_key is not None
    env = {
        **os.environ,
        "HELIOSDB_KEY": node.admin_key,
        "BENCH_CASE": case,
        "BENCH_ROWS": str(args.rows),
    }
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout", "10s",
        "-s", str(WRK_SCRIPT),
        node.http_url,
    ]  # fmt: skip
    assert node.process is not None
    cpu_before = cpu_seconds(node.process.pid)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(node.process.pid) - cpu_before
    for line in out.splitlines():
        if line.startswith("FAILURE "):
            sys.stderr.write(f"{case}: {line}\n")
    match = _RESULT.search(out)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    fields = dict(pair.split("=") for pair in match.group(1).split())
    values = {k: int(v) for k, v in fields.items()}
    return Figure(
        rps=values["requests"] / (values["duration_us"] / 1e6),
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        errors=values["non2xx"] + values["socket_errors"],
        node_us=cpu / max(1, values["requests"]) * 1e6,
    )


async def run_engine(data_dir: Path, case: str, args: argparse.Namespace, seconds: float) -> Figure:
    """The same statements straight on the engine (bench/common.py run_direct)."""
    if case == "insert":
        return await run_direct(
            data_dir,
            INSERT_SQL,
            lambda rng, n: (f"item-{n}", rng.randint(1, 1_000_000) + 0.5),
            connections=args.connections,
            seconds=seconds,
        )
    return await run_point_selects(
        data_dir, args.rows, connections=args.connections, seconds=seconds
    )


def wait_settled(node: NodeProcess, limit: float = 60.0) -> None:
    """Wait until the node is about idle again: change capture digests the setup's rows in
    the background, work that is not the measured requests' (it would be counted in the
    node's CPU per request of the first rounds)."""
    assert node.process is not None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(node.process.pid)
        time.sleep(0.5)
        if cpu_seconds(node.process.pid) - before < 0.05:  # under a tenth of a core
            return


def check_rest(node: NodeProcess, rows: int) -> None:
    """One request of each case by hand, so a broken route fails loudly, not as a fast 4xx."""
    headers = {"Authorization": f"Bearer {node.admin_key}"}
    with httpx.Client(base_url=node.api, headers=headers, timeout=60) as client:
        for statement in SETUP_SQL.format(rows=rows).split(";"):
            if statement.strip():
                client.post("/query", json={"sql": statement}).raise_for_status()
        got = client.post("/query", json={"sql": SELECT_SQL, "params": [rows // 2]})
        got.raise_for_status()
        assert got.json()["rows"][0][0] == rows // 2, got.text
        got = client.post("/query", json={"sql": INSERT_SQL, "params": ["check", 1.5]})
        got.raise_for_status()
        assert got.json()["affected_rows"] == 1, got.text


def print_table(
    results: dict[str, tuple[Figure, Figure]], args: argparse.Namespace, load: tuple[float, float]
) -> None:
    print(
        f"\nPOST /api/v1/query vs asyncpg on the engine: {args.connections} connections, "
        f"{args.seconds:g} s per side in {args.rounds} alternating rounds, wrk -t{args.threads}, "
        f"{args.rows} rows, {os.cpu_count()} CPUs, node with --workers {args.workers}"
    )
    print(
        f"load average (1 min) of the machine before and after: {load[0]:.2f} / {load[1]:.2f}"
        " (other work on the machine weighs on both sides, on REST's longer chain more)"
    )
    header = (
        f"{'case':<14}{'REST req/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'direct q/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'REST/direct':>13}"
    )
    print(header)
    print("-" * len(header))
    for case, (rest, direct) in results.items():
        print(
            f"{case:<14}{rest.rps:>12.0f}{rest.p50_ms:>9.2f}{rest.p99_ms:>9.2f}"
            f"{direct.rps:>12.0f}{direct.p50_ms:>9.2f}{direct.p99_ms:>9.2f}"
            f"{rest.rps / direct.rps:>12.2f}x"
        )
        if rest.errors or direct.errors:
            print(f"  errors: REST {rest.errors}, direct {direct.errors}")
    print("\nCPU time per request: the node's (REST) and the asyncpg client's (direct)")
    for case, (rest, direct) in results.items():
        print(
            f"{case:<14}REST node {rest.node_us:>6.0f} us   "
            f"direct client {direct.client_us:>6.0f} us"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per case")
    parser.add_argument("--rows", type=int, default=10_000, help="rows in bench_items")
    parser.add_argument("--cases", default="point-select,insert", help="comma-separated cases")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="the node's REST worker processes (default: one per core, as docs advise)",
    )
    parser.add_argument("--node-arg", action="append", default=[], help="extra `serve` flag")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.stderr.write("bench/rest.py needs wrk (scripts/test-deps installs it)\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="hdb-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        extra = [*free_port_flags(), "--log-level", "warning", "--workers", str(args.workers)]
        extra += args.node_arg
        node = NodeProcess(data_dir, extra_args=extra)
        node.start()
        try:
            check_rest(node, args.rows)
            wait_settled(node)
            load_before = os.getloadavg()[0]
            results: dict[str, tuple[Figure, Figure]] = {}
            for case in args.cases.split(","):
                kind = "insert" if case == "insert" else "select"
                run_wrk(node, kind, args, 1)  # warm every pooled connection's statement cache
                # Alternate short rounds so that a change in the machine's load (other
                # work on a shared machine) weighs on both sides alike.
                slice_seconds = max(1, round(args.seconds / args.rounds))  # wrk takes whole seconds
                rests, directs = [], []
                for _ in range(args.rounds):
                    rests.append(run_wrk(node, kind, args, slice_seconds))
                    directs.append(asyncio.run(run_engine(data_dir, kind, args, slice_seconds)))
                rest, direct = combine(rests), combine(directs)
                results[case] = (rest, direct)
                print(
                    f"{case}: REST {rest.rps:.0f} req/s, direct {direct.rps:.0f} q/s",
                    file=sys.stderr,
                )
            print_table(results, args, (load_before, os.getloadavg()[0]))
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
