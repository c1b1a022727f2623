"""The node's worker processes: more than one core for the REST, WebSocket and Redis APIs
(and the PostgreSQL gateway, whose client limits are counted in the engine: docs/postgres.md;
and gRPC, whose transactions stay in the process that began them: the front of whichever
process a call reaches relays it there, interfaces/grpc/front.py).

One Python process runs on one core at most. The REST API keeps no state in a process
(keys, async queries and their cancellation live in the engine); a WebSocket session
lives on one connection and gets its events from the engine's change log like any
node's; Redis keys, WATCH versions, blocking-pop wake-ups and pub/sub messages all go
through the engine, as they do between nodes. So a node with ``workers: N`` runs these
three in N processes: the node itself and N-1 workers, each binding their ports with
SO_REUSEPORT so that the kernel spreads new connections across them. A worker is a
headless node sharing the engine (as a second node with ``--engine-url`` would) that
serves only those APIs (node.WorkerNode).

The node starts each worker as ``heliosdb worker`` and writes the effective
settings, secrets included, to its stdin: never argv or the environment, which other
users may read. The worker then waits for stdin to close, which happens when the node
stops it or dies (even by kill -9), so a worker never outlives its node. A worker that
dies is started again (workers.ChildProcess, which also runs the node's change-capture
process, capture_process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from heliosdb.settings import Settings, revealed

log = logging.getLogger("heliosdb.workers")

READY = b"ready\n"
START_TIMEOUT_SECONDS = 60.0
RESTART_DELAY_SECONDS = 1.0
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics(settings: Settings) -> None:
    """Before prometheus_client is imported: keep metric values in files every process
    of the node writes and /metrics adds up (prometheus_client's multiprocess mode)."""
    if settings.workers <= 1:
        return
    directory = Path(settings.data_dir).resolve() / "metrics"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # a previous run's, maybe killed
        stale.unlink()
    os.environ[METRICS_DIR_VARIABLE] = str(directory)


def worker_pid_gone(pid: int) -> None:
    """Drop a finished worker's live gauges (open connections) from the shared metrics."""
    if METRICS_DIR_VARIABLE in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def read_message() -> tuple[Settings, dict[str, Any]]:
    """In a child process: the settings, and the whole message, its node wrote on stdin."""
    message = orjson.loads(sys.stdin.buffer.readline())
    return Settings.model_validate(message["settings"]), message


def read_worker_settings() -> tuple[Settings, dict[str, Any], int]:
    """In a worker: the settings, listener table and worker number its node wrote on stdin."""
    settings, message = read_message()
    return settings, message["listeners"], message["process"]


async def stdin_closed() -> None:
    """Wait until the node closes our stdin (it stopped us, or it died)."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()

    class _Watch(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not closed.done():
                closed.set_result(None)

    transport, _ = await loop.connect_read_pipe(_Watch, sys.stdin)
    try:
        await closed
    finally:
        transport.close()


def announce_ready() -> None:
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()


async def serve_until_stopped(stopping: asyncio.Event) -> None:
    """In a child process that has started: say so to the node, then wait until the node
    stops it (``stopping``, set by its SIGTERM handler) or goes away (stdin closes)."""
    # Everything built so far lives as long as the process: out of the cyclic GC's sight.
    gc.freeze()
    announce_ready()
    orphaned = asyncio.create_task(stdin_closed())
    signalled = asyncio.create_task(stopping.wait())
    await asyncio.wait((orphaned, signalled), return_when=asyncio.FIRST_COMPLETED)
    orphaned.cancel()
    signalled.cancel()


class ChildProcess:
    """One child process of the node (a worker, the capture process): started with
    ``python -m heliosdb <command>`` and one line of settings on its stdin, awaited until
    it says it is ready, started again a second after it dies, asked to stop with
    SIGTERM. It stops by itself when its stdin closes (the node stopped or died)."""

    def __init__(self, name: str, command: str, message: bytes, grace: float) -> None:
        self.name = name
        self.command = command
        self.message = message
        self.grace = grace
        self.process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name=self.name)

    async def _spawn(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "heliosdb",
            self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(self.message)
        await process.stdin.drain()
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                line = await process.stdout.readline()
        except TimeoutError:
            line = b""
        if line != READY:
            process.kill()
            await process.wait()
            raise RuntimeError(f"{self.name} did not start (exit {process.returncode})")
        log.info("%s running (pid %d)", self.name, process.pid)

    async def _watch(self) -> None:
        while not self._stopping:
            process = self.process
            assert process is not None
            code = await process.wait()
            worker_pid_gone(process.pid)
            if self._stopping:
                return
            log.error("%s (pid %d) exited with %s; starting it again",
                      self.name, process.pid, code)  # fmt: skip
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            try:
                await self._spawn()
            except (RuntimeError, OSError):
                log.exception("%s could not be started again", self.name)

    def terminate(self) -> None:
        """Ask the process to drain and stop (SIGTERM); :meth:`stopped` waits for it."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    async def stopped(self) -> None:
        process = self.process
        if process is None:
            return
        try:
            async with asyncio.timeout(self.grace + 10):
                await process.wait()
        except TimeoutError:
            log.warning("%s (pid %d) did not stop in time; killing it", self.name, process.pid)
            process.kill()
            await process.wait()
        if process.stdin is not None:
            process.stdin.close()
        worker_pid_gone(process.pid)

    async def stop(self) -> None:
        self.terminate()
        await self.stopped()


class Workers:
    """Starts, watches and stops the node's N-1 worker processes."""

    def __init__(
        self, settings: Settings, ports: dict[str, int], listeners: dict[str, Any]
    ) -> None:
        worker_settings = settings.model_copy(deep=True)
        worker_settings.http.port = ports["http"]  # the ports the node bound (maybe 0 asked)
        worker_settings.websocket.port = ports["websocket"]
        worker_settings.redis.port = ports["redis"]
        if "grpc" in ports:
            worker_settings.grpc.port = ports["grpc"]
        worker_settings.postgres.port = ports["postgres"]
        if "postgres_txn" in ports:
            worker_settings.postgres.transaction_port = ports["postgres_txn"]
        message = {"settings": revealed(worker_settings), "listeners": listeners}
        grace = settings.http.shutdown_grace_seconds
        # Each worker learns its number (1..N-1): gRPC transaction ids carry it.
        self.children = [
            ChildProcess(
                f"worker {index}",
                "worker",
                orjson.dumps({**message, "process": index}) + b"\n",
                grace,
            )
            for index in range(1, settings.workers)
        ]

    async def start(self) -> None:
        await asyncio.gather(*(child.start() for child in self.children))

    async def stop(self) -> None:
        """Ask every worker to drain and stop (SIGTERM), as the node itself does."""
        for child in self.children:
            child.terminate()
        for child in self.children:
            await child.stopped()
