"""A real HeliosDB node in a subprocess, for tests and benchmarks.

The node runs exactly as a user starts it (``python -m heliosdb serve``) with port 0 for
every listener; we read the announced addresses and the admin key from its stdout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

_LISTENING = re.compile(r"^heliosdb: (\w+) listening on (\w+)://([^:]+):(\d+)$")
_ADMIN = re.compile(r"^heliosdb: admin key .*: (hdb_sk_\S+)$")
READY_TIMEOUT_SECONDS = 120.0


@dataclass
class NodeProcess:
    data_dir: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    admin_key: str | None = None
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def engine_url(self) -> str:
        """A superuser URL for the node's engine, for tests that look underneath HeliosDB
        or start a second node on the same engine (``--engine-url``, which such a second
        node gives back)."""
        if "--engine-url" in self.extra_args:
            return self.extra_args[self.extra_args.index("--engine-url") + 1]
        password = quote((self.data_dir / "engine.password").read_text().strip())
        return f"postgresql://heliosdb:{password}@/heliosdb?host={self.data_dir / 'run'}"

    def beside(
        self, data_dir: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> NodeProcess:
        """A second node, started with ``env`` and ``args``, on this node's engine (one
        engine per test session), serving this node's admin key (keys live in the
        engine); the caller stops it."""
        process = NodeProcess(
            data_dir,
            extra_args=["--engine-url", self.engine_url, "--environment", "test", *args],
            env=env or {},
        ).start()
        process.admin_key = process.admin_key or self.admin_key
        return process

    def running_beside(
        self, data_dir: Path, env: dict[str, str] | None = None
    ) -> Iterator[NodeProcess]:
        """``beside``, for a fixture to ``yield from``: the node, stopped after."""
        process = self.beside(data_dir, env)
        yield process
        process.stop()

    @property
    def api(self) -> str:
        return f"{self.http_url}/api/v1"

    def metric(self, sample: str) -> float | None:
        """The value of the node's Prometheus sample matching ``sample`` (a regular
        expression for its name and labels), or None if it has none."""
        text = httpx.get(f"{self.api}/metrics", timeout=30).text
        match = re.search(rf"^{sample} (\S+)$", text, re.M)
        return float(match.group(1)) if match else None

    def start(self) -> NodeProcess:
        command = [
            sys.executable, "-m", "heliosdb", "serve",
            "--data-dir", str(self.data_dir),
            "--http-port", "0",
            "--pg-port", "0",
            "--pg-txn-port", "0",
            "--grpc-port", "0",
            "--ws-port", "0",
            "--mongo-port", "0",
            "--redis-port", "0",
            "--log-level", "info",
            *self.extra_args,
        ]  # fmt: skip
        self.ports = {}
        self.output = []
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **self.env},
        )
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("node did not start:\n" + "".join(self.output[-50:]))
        if self.admin_key is None:
            key_file = self.data_dir / "admin.key"
            if key_file.exists():
                self.admin_key = key_file.read_text().strip()
        return self

    def _read(self, ready: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            text = line.rstrip("\n")
            if match := _LISTENING.match(text):
                self.ports[match.group(1)] = int(match.group(4))
            elif match := _ADMIN.match(text):
                self.admin_key = match.group(1)
            elif text == "heliosdb: ready":
                ready.set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        """kill -9: no drain, no engine shutdown."""
        self.stop(signal.SIGKILL)

    def worker_pids(self) -> set[int]:
        """The node's worker processes (``--workers``): its children running ``heliosdb
        worker``."""
        return self.child_pids("worker")

    def capture_pids(self) -> set[int]:
        """The node's change-capture process (``heliosdb capture``), while it runs."""
        return self.child_pids("capture")

    def child_pids(self, command: str) -> set[int]:
        """The node's children running ``heliosdb <command>``."""
        assert self.process is not None
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid and command.encode() in cmdline.split(b"\0"):
                pids.add(int(entry.name))
        return pids


def serving_pids(port: int) -> list[int]:
    """For each established connection on ``port``, the process holding its server side."""
    sockets = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # One per socket: a process may hold a socket under several descriptors (the
    # PostgreSQL gateway keeps a duplicate to read the kernel's traffic counters).
    return [int(m.group(1)) for m in re.finditer(r"^.*?pid=(\d+)", sockets, re.M)]


def resident_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class MemoryGrowth(threading.Thread):
    """Samples process ``pid``'s resident memory while it runs (``with``): ``growth`` is
    the most it has grown above what it was at the start."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.before = resident_bytes(pid)
        self.growth = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.growth = max(self.growth, resident_bytes(self.pid) - self.before)

    def __enter__(self) -> MemoryGrowth:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join()
