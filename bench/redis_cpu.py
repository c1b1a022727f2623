"""CPU time per Redis command of a node and of its engine, which load on the machine does not
distort the way it distorts requests per second.

    .venv/bin/python bench/redis_cpu.py [--requests N] [--clients C] [--pipeline P]
                                        [--tests set,get,...]

Starts a node (embedded engine, temp data directory, redis.durability everysec), warms it
up, then runs redis-benchmark once per test and prints requests per second, the node
process's CPU microseconds per command (utime + stime from /proc) and the engine's (every
process of the embedded PostgreSQL, including change capture's decoding).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nodeproc import NodeProcess

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def engine_cpu_seconds(data_dir: Path) -> float:
    """The embedded PostgreSQL's postmaster (found by its data directory) and its children."""
    parents: dict[str, str] = {}
    postmaster = None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[pid] = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read()
        except OSError:
            continue
        if b"postgres" in command and str(data_dir).encode() in command:
            postmaster = pid
    total = 0.0
    for pid, parent in parents.items():
        if postmaster is not None and postmaster in (pid, parent):
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--tests", default="set,get")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="heliosdb-redis-cpu."))
    node = NodeProcess(
        work / "data",
        extra_args=["--environment", "test", "--log-level", "warning"],
        env={"HELIOSDB_REDIS__DURABILITY": "everysec"},
    ).start()
    try:
        assert node.process is not None and node.admin_key is not None
        base = ["redis-benchmark", "-p", str(node.ports["redis"]), "-a", node.admin_key]
        base += ["-c", str(options.clients), "-q"]
        subprocess.run([*base, "-t", options.tests, "-n", "3000"], capture_output=True, check=True)
        print(f"{'test':8} {'P':>3} {'req/s':>10} {'node us/cmd':>12} {'engine us/cmd':>14}")
        for test in options.tests.split(","):
            node_before = cpu_seconds(node.process.pid)
            engine_before = engine_cpu_seconds(work / "data")
            command = [*base, "-t", test, "-n", str(options.requests)]
            command += ["-P", str(options.pipeline), "-r", "100000", "--csv"]
            started = time.monotonic()
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            elapsed = time.monotonic() - started
            node_us = 1e6 * (cpu_seconds(node.process.pid) - node_before) / options.requests
            engine_us = 1e6 * (engine_cpu_seconds(work / "data") - engine_before) / options.requests
            lines = [line for line in output.splitlines() if line.startswith('"')][1:]
            rps = (
                lines[0].split(",")[1].strip('"') if lines else f"{options.requests / elapsed:.0f}"
            )
            figures = f"{rps:>10} {node_us:>12.1f} {engine_us:>14.1f}"
            print(f"{test.upper():8} {options.pipeline:>3} {figures}")
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
