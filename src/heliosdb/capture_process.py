"""The node's change-capture process: the capture leader away from the clients' event loop.

The capture leader (services/changes/capture.py) wakes for every committed transaction:
the replication stream's message, then the result of the events' INSERT, each a cold
wakeup of a few hundred microseconds of CPU on a crowded machine. In the node's own
process that work ran on the loop that serves the MongoDB port (which stays in the
node's process) and every other listener, so with one client each captured write's
capture ran while the client's next request waited. With ``changes.capture_process``
(the default) the node starts ``heliosdb capture`` instead: a child process attached to
the running engine (as a worker is) that runs only the leader, on the other core. It
competes for the capture lock like any node's leader, so failover and hand-over between
nodes are unchanged; it is started again a second after it dies (its lock session dies
with it, and the next leader resumes from the stored progress), and stops when the node
stops or dies (its stdin closes, workers.ChildProcess). Every process's hub, the node's
included, then reads the change log as a second node's does (NOTIFY, then the events in
it or a read of ``helios.change_events``), and only while it has subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import orjson

from heliosdb.engine import Engine
from heliosdb.engine.datadir import DataDir
from heliosdb.services.changes.capture import CaptureLeader, slot_name
from heliosdb.settings import Settings, revealed
from heliosdb.workers import ChildProcess, read_message, serve_until_stopped

COMMAND = "capture"  # `heliosdb capture`, internal
STOP_GRACE_SECONDS = 5.0


class CaptureProcess:
    """In the node: starts, watches and stops its capture process."""

    def __init__(self, settings: Settings) -> None:
        message = orjson.dumps({"settings": revealed(settings)}) + b"\n"
        self.child = ChildProcess("capture process", COMMAND, message, STOP_GRACE_SECONDS)
        self._starting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the process; the node goes on starting its listeners meanwhile (the
        process takes about a second to import and attach) and then awaits
        :meth:`started`."""
        self._starting = asyncio.create_task(self.child.start(), name="capture process")

    async def started(self) -> None:
        if self._starting is not None:
            await self._starting

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
        await self.child.stop()


def capture_settings() -> Settings:
    """In the capture process: the node's settings, as it wrote them on stdin."""
    settings, _ = read_message()
    # The leader works on connections of its own (engine.dedicated, the replication
    # stream); the pools are opened only because Engine.start opens them.
    settings.engine.pool_size = settings.engine.readonly_pool_size = 1
    settings.engine.system_pool_size = 1
    return settings


async def run_capture(settings: Settings) -> None:
    """The capture process: lead change capture (when this process holds the capture
    lock) until the node stops it (SIGTERM) or goes away (stdin closes)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    engine = Engine(settings.engine, DataDir(settings.data_dir))
    leading: asyncio.Task[None] | None = None
    try:
        await engine.start(attach=True)
        leader = CaptureLeader(engine, settings.changes, slot_name(settings.engine.database))
        leading = asyncio.create_task(leader.run(), name="change capture")
        await serve_until_stopped(stopping)
    finally:
        if leading is not None:
            leading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await leading
        await engine.stop()
