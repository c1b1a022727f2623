"""CPU time per Redis command of a node and of its engine, which load on the machine does not
distort the way it distorts requests per second.

    .venv/bin/python bench/redis_cpu.py [--requests N] [--clients C] [--pipeline P]
                                        [--tests set,get,...] [--env NAME=VALUE ...]
                                        [--keyspace K] [--no-peer]

Starts a node (embedded engine, temp data directory, redis.durability everysec), warms it
up, then runs redis-benchmark once per test and prints requests per second, the node
process's CPU microseconds per command (utime + stime from /proc) and the engine's (every
process of the embedded PostgreSQL, including change capture's decoding), then the same
for a redis-server (Debian package; appendonly yes, appendfsync everysec) run the same way.
Keys are drawn from K random ones (redis-benchmark -r K; default 100000); ``--keyspace 0``
uses the one literal key redis-benchmark uses without -r, as bench/redis.sh does.
"group" is the coalescer's mean batch size (commands per engine batch, from INFO stats).
With ``--env HELIOSDB_WORKERS=2`` the node figure adds up its worker processes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import engine_cpu_seconds

from tests.nodeproc import NodeProcess

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def node_cpu_seconds(pid: int) -> float:
    """The node process and its worker processes (--workers), not the engine."""
    total = cpu_seconds(pid)
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{child}/stat") as f:
                parent = f.read().rsplit(")", 1)[1].split()[1]
            if parent != str(pid):
                continue
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"postgres" in f.read():
                    continue
            total += cpu_seconds(child)
        except OSError:
            continue
    return total


def coalesced(port: int, auth: list[str]) -> tuple[int, int]:
    """The coalescer's (batches, commands) so far, from INFO stats (one worker's)."""
    output = subprocess.run(
        ["redis-cli", "-p", str(port), *auth, "--no-auth-warning", "INFO", "stats"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    fields = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    return int(fields.get("helios_coalesced_batches", 0)), int(
        fields.get("helios_coalesced_commands", 0)
    )


def measure(port: int, auth: list[str], options: argparse.Namespace, test: str) -> str:
    """Run one redis-benchmark test; its requests per second."""
    command = ["redis-benchmark", "-p", str(port), *auth, "-c", str(options.clients), "-q"]
    command += ["-t", test, "-n", str(options.requests), "-P", str(options.pipeline)]
    if options.keyspace:
        command += ["-r", str(options.keyspace)]
    command += ["--csv"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    lines = [line for line in output.splitlines() if line.startswith('"')][1:]
    return lines[0].split(",")[1].strip('"') if lines else "-"


def helios_cpu(
    options: argparse.Namespace, work: Path
) -> dict[str, tuple[str, float, float, float]]:
    """Per test: requests per second, node and engine CPU microseconds per command, group."""
    env = {"HELIOSDB_REDIS__DURABILITY": "everysec"}
    env.update(item.split("=", 1) for item in options.env)
    node = NodeProcess(
        work / "data",
        extra_args=["--environment", "test", "--log-level", "warning"],
        env=env,
    ).start()
    try:
        assert node.process is not None and node.admin_key is not None
        port, auth = node.ports["redis"], ["-a", node.admin_key]
        warm = ["redis-benchmark", "-p", str(port), *auth, "-c", str(options.clients), "-q"]
        subprocess.run([*warm, "-t", options.tests, "-n", "3000"], capture_output=True, check=True)
        figures = {}
        for test in options.tests.split(","):
            groups_before = coalesced(port, auth)
            node_before = node_cpu_seconds(node.process.pid)
            engine_before = engine_cpu_seconds(work / "data")
            rps = measure(port, auth, options, test)
            node_us = node_cpu_seconds(node.process.pid) - node_before
            engine_us = engine_cpu_seconds(work / "data") - engine_before
            groups_after = coalesced(port, auth)
            batches = groups_after[0] - groups_before[0]
            group = (groups_after[1] - groups_before[1]) / batches if batches else 0.0
            n = options.requests / 1e6
            figures[test] = (rps, node_us / n, engine_us / n, group)
        return figures
    finally:
        node.stop()


def redis_server_cpu(options: argparse.Namespace, work: Path) -> dict[str, tuple[str, float]]:
    """Per test: redis-server's requests per second and CPU microseconds per command."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    (work / "redis").mkdir()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work / "redis"),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            ping = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True)
            if ping.stdout.strip() == b"PONG":
                break
            time.sleep(0.1)
        figures = {}
        for test in options.tests.split(","):
            before = cpu_seconds(process.pid)
            rps = measure(port, [], options, test)
            figures[test] = (rps, (cpu_seconds(process.pid) - before) / (options.requests / 1e6))
        return figures
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--tests", default="set,get")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the node (repeatable)"
    )
    parser.add_argument(
        "--keyspace", type=int, default=100000, help="random keys (0: one key, as redis.sh)"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip redis-server")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="heliosdb-redis-cpu."))
    try:
        helios = helios_cpu(options, work)
        peer = {} if options.no_peer else redis_server_cpu(options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(
        f"{'test':8} {'P':>3} {'req/s':>10} {'node us':>8} {'engine us':>10} {'group':>6} "
        f"{'redis req/s':>12} {'redis us':>9}"
    )
    for test, (rps, node_us, engine_us, group) in helios.items():
        peer_rps, peer_us = peer.get(test, ("-", 0.0))
        print(
            f"{test.upper():8} {options.pipeline:>3} {rps:>10} {node_us:>8.1f} "
            f"{engine_us:>10.1f} {group:>6.1f} {peer_rps:>12} {peer_us:>9.1f}"
        )


if __name__ == "__main__":
    main()
