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
dies is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def read_worker_settings() -> tuple[Settings, dict[str, Any], int]:
    """In a worker: the settings, listener table and worker number its node wrote on stdin."""
    message = orjson.loads(sys.stdin.buffer.readline())
    return Settings.model_validate(message["settings"]), message["listeners"], message["process"]


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
        self.message = {"settings": revealed(worker_settings), "listeners": listeners}
        self.count = settings.workers - 1
        self.grace = settings.http.shutdown_grace_seconds
        self.processes: list[asyncio.subprocess.Process | None] = [None] * self.count
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(index) for index in range(self.count)))
        self._watchers = [
            asyncio.create_task(self._watch(index), name=f"worker {index + 1}")
            for index in range(self.count)
        ]

    async def _spawn(self, index: int) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "heliosdb",
            "worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.processes[index] = process
        assert process.stdin is not None and process.stdout is not None
        # Each worker learns its number (1..N-1): gRPC transaction ids carry it.
        process.stdin.write(orjson.dumps({**self.message, "process": index + 1}) + b"\n")
        await process.stdin.drain()
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                line = await process.stdout.readline()
        except TimeoutError:
            line = b""
        if line != READY:
            process.kill()
            await process.wait()
            raise RuntimeError(f"worker {index + 1} did not start (exit {process.returncode})")
        log.info("worker %d serving (pid %d)", index + 1, process.pid)

    async def _watch(self, index: int) -> None:
        while not self._stopping:
            process = self.processes[index]
            assert process is not None
            code = await process.wait()
            worker_pid_gone(process.pid)
            if self._stopping:
                return
            log.error("worker %d (pid %d) exited with %s; starting it again",
                      index + 1, process.pid, code)  # fmt: skip
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            try:
                await self._spawn(index)
            except (RuntimeError, OSError):
                log.exception("worker %d could not be started again", index + 1)

    async def stop(self) -> None:
        """Ask every worker to drain and stop (SIGTERM), as the node itself does."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        live = [p for p in self.processes if p is not None and p.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in live:
            try:
                async with asyncio.timeout(self.grace + 10):
                    await process.wait()
            except TimeoutError:
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                await process.wait()
            if process.stdin is not None:
                process.stdin.close()
            worker_pid_gone(process.pid)
