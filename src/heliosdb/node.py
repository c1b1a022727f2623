"""The composition root: engine -> services -> interfaces, started and stopped together.

This is the only module that knows every interface.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from heliosdb.capture_process import CaptureProcess
from heliosdb.engine import Engine
from heliosdb.engine.datadir import DataDir, DataDirInUse, write_secret
from heliosdb.interfaces._tcp import raise_file_limit
from heliosdb.interfaces.grpc.server import GrpcListener
from heliosdb.interfaces.http.app import build_app
from heliosdb.interfaces.http.server import HttpListener
from heliosdb.interfaces.mongodb.server import MongoListener
from heliosdb.interfaces.postgres.server import postgres_listeners
from heliosdb.interfaces.redis.listener import RedisListener
from heliosdb.interfaces.websocket.server import WebSocketListener
from heliosdb.observability.metrics import watch_pools
from heliosdb.security.apikeys import KeyKind
from heliosdb.services.container import Services
from heliosdb.settings import Settings
from heliosdb.workers import Workers, read_worker_settings, serve_until_stopped

log = logging.getLogger("heliosdb.node")
T = TypeVar("T")


class Listener(Protocol):
    name: str
    state: str

    @property
    def scheme(self) -> str: ...

    @property
    def address(self) -> tuple[str, int]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def announce(line: str) -> None:
    """What the operator reads on stdout: one line per listener, the first admin key."""
    sys.stdout.write(f"heliosdb: {line}\n")
    sys.stdout.flush()


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = DataDir(settings.data_dir)
        self.engine = Engine(settings.engine, self.data_dir)
        self.services: Services | None = None
        self.listeners: list[Listener] = []
        self.workers: Workers | None = None
        self.capture: CaptureProcess | None = None
        self._stopping = asyncio.Event()

    def listener_states(self) -> dict[str, Any]:
        return {
            listener.name: {
                "state": listener.state,
                "address": "{}:{}".format(*listener.address)
                if listener.state != "stopped"
                else None,
            }
            for listener in self.listeners
        }

    async def start(self) -> None:
        self.data_dir.lock()
        raise_file_limit(self.settings)  # before any child process: they inherit it
        await self.engine.start()
        services = Services.build(self.settings, self.engine)
        self.services = services
        watch_pools(self.engine.pool_stats)
        await services.keys.start()
        await services.changes.start()
        if services.changes.available and self.settings.changes.capture_process:
            # The capture leader in a process of its own (capture_process.py).
            self.capture = CaptureProcess(self.settings)
            self.capture.start()
        await services.async_queries.start()
        await self._bootstrap_admin_key(services)
        app = build_app(services, self.listener_states)
        self.listeners = [
            HttpListener(app, self.settings),
            *postgres_listeners(services),
            GrpcListener(services, self.settings),
            WebSocketListener(services, self.settings),
            RedisListener(services),
            MongoListener(services, self.settings),
        ]
        for listener in self.listeners:
            await listener.start()
            host, port = listener.address
            announce(f"{listener.name} listening on {listener.scheme}://{host}:{port}")
        if self.settings.workers > 1:
            ports = {listener.name: listener.address[1] for listener in self.listeners}
            self.workers = Workers(self.settings, ports, self.listener_states())
            await self.workers.start()
            announce(f"http, websocket and redis served by {self.settings.workers} processes")
        if self.capture is not None:
            await self.capture.started()
        # Everything built so far lives as long as the node: move it out of the cyclic
        # GC's sight, so collections scan only what requests allocate (a full collection
        # of the startup heap took tens of milliseconds: a latency spike on every one).
        gc.freeze()
        announce("ready")

    async def _bootstrap_admin_key(self, services: Services) -> None:
        if await services.keys.has_admin():
            return
        created = await services.keys.create("admin", KeyKind.SECRET, is_admin=True)
        write_secret(self.data_dir.admin_key_file, created.key)
        announce(
            f"admin key (shown once; also saved to {self.data_dir.admin_key_file}): {created.key}"
        )

    async def stop(self) -> None:
        if self.workers is not None:
            await self.workers.stop()
        for listener in reversed(self.listeners):
            try:
                await listener.stop()
            except Exception:
                log.exception("listener %s did not stop cleanly", listener.name)
        if self.capture is not None:
            await self.capture.stop()
        if self.services is not None:
            await self.services.async_queries.stop()
            await self.services.changes.stop()
            await self.services.keys.stop()
        await self.engine.stop()
        self.data_dir.unlock()
        log.info("node stopped")

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            await self._stopping.wait()
            log.info("stop requested; draining")
        finally:
            await self.stop()


class WorkerNode:
    """One worker process of a node (workers.py): the REST, WebSocket, Redis and PostgreSQL
    APIs on the node's ports, over the engine the node runs, until the node stops it or
    goes away."""

    def __init__(self, settings: Settings, listeners: dict[str, Any], process: int = 1) -> None:
        self.settings = settings
        self.listeners = listeners
        self.process = process  # 1..workers-1; the node itself is 0
        self.engine = Engine(settings.engine, DataDir(settings.data_dir))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        services: Services | None = None
        listeners: list[Listener] = []
        try:
            await self.engine.start(attach=True)
            services = Services.build(self.settings, self.engine)
            watch_pools(self.engine.pool_stats)
            await services.keys.start()
            await services.changes.start()
            await services.async_queries.start()
            app = build_app(services, lambda: self.listeners)
            served: tuple[Listener, ...] = (
                HttpListener(app, self.settings),
                WebSocketListener(services, self.settings),
                RedisListener(services),
                *postgres_listeners(services, primary=False),
            )
            if self.settings.grpc.front and not self.settings.tls.enabled:
                # gRPC's front routes a call naming a transaction to the process holding it.
                served += (GrpcListener(services, self.settings, self.process),)
            for listener in served:
                await listener.start()
                listeners.append(listener)
            await serve_until_stopped(stopping)
        finally:
            for listener in reversed(listeners):
                await listener.stop()
            if services is not None:
                await services.async_queries.stop()
                await services.changes.stop()
                await services.keys.stop()
            await self.engine.stop()


def worker_node() -> WorkerNode:
    settings, listeners, process = read_worker_settings()
    return WorkerNode(settings, listeners, process)


async def with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Run ``work`` against the node's engine, whether or not the node is running.

    A running node holds the data directory; then we share its engine and leave it up.
    """
    data_dir = DataDir(settings.data_dir)
    try:
        data_dir.lock()
        owner = True
    except DataDirInUse:
        owner = False
    settings.engine.pool_size = settings.engine.readonly_pool_size = 1
    settings.engine.system_pool_size = 1
    engine = Engine(settings.engine, data_dir)
    try:
        await engine.start()
        return await work(Services.build(settings, engine))
    finally:
        await engine.stop(stop_embedded=owner)
        if owner:
            data_dir.unlock()
