"""The PostgreSQL listener: the gateway's shared state and its metrics.

    Gateway
      sessions        live relayed sessions, by id
      cancel keys     (pid, secret) announced to clients -> session; a key this node does
                      not hold is published to every node (services/cancels.py)
      limiter         failed logins per source address
      totals          counters of ended sessions (live ones are read at scrape time)

The relay keeps plain integer counters on each session (or, spliced, the kernel keeps
them for the client socket); the metrics collector sums them when Prometheus scrapes,
so relaying costs no metric call per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from heliosdb.engine import Access
from heliosdb.interfaces._tcp import TcpListener
from heliosdb.interfaces.postgres.auth import FailureLimiter
from heliosdb.interfaces.postgres.codec import CancelKey, encode_error
from heliosdb.interfaces.postgres.connection import Connection
from heliosdb.interfaces.postgres.errors import IDLE_TIMEOUT, TOO_MANY_CONNECTIONS
from heliosdb.interfaces.postgres.pooling import EnginePool, TxnClient
from heliosdb.interfaces.postgres.relay import Session
from heliosdb.observability.metrics import OPEN_CONNECTIONS, REGISTRY
from heliosdb.security.principals import Principal
from heliosdb.security.scram import server_end_point
from heliosdb.services.container import Services
from heliosdb.services.pgclients import GatewayClients, Refusal, node_identity

log = logging.getLogger("heliosdb.interfaces.postgres")

# CancelRequests with a key this node does not hold cost a row and a NOTIFY each: at
# most this many per source address per minute are passed on to the other nodes.
FORWARDED_CANCELS_PER_MINUTE = 120


class Gateway:
    def __init__(self, services: Services, pool_mode: str, name: str = "postgres") -> None:
        self.services = services
        self.engine = services.engine
        self.settings = services.settings.postgres
        self.pool_mode = pool_mode
        self.database = services.settings.engine.database
        self.limiter = FailureLimiter(self.settings.auth_failures_per_minute)
        self.forward_limiter = FailureLimiter(FORWARDED_CANCELS_PER_MINUTE)
        self.tls_context = _tls_context(services)
        self.channel_binding = _channel_binding(services) if self.tls_context else None
        self.sessions: dict[int, Session | TxnClient] = {}
        self.by_key: dict[tuple[int, bytes], Session | TxnClient] = {}
        self.pools: dict[tuple[Access, tuple[tuple[str, str], ...]], EnginePool] = {}
        self.per_principal: Counter[str] = Counter()
        # Several processes serve this port (workers > 1): client limits are counted in
        # the engine (services/pgclients.py); one process counts them in per_principal.
        self.shared: GatewayClients | None = None
        if services.settings.workers > 1:
            node = f"{node_identity(services.settings.data_dir)}:{name}"
            self.shared = GatewayClients(self.engine, node)
        self.connecting = 0
        self.totals = {"bytes_in": 0, "bytes_out": 0, "round_trips": 0, "sessions": 0}
        self._background: set[asyncio.Task[None]] = set()

    def client_count(self) -> int:
        return len(self.sessions) + self.connecting

    async def admit(self, principal: Principal) -> bytes | None:
        """None if ``principal`` may open one more session (then ``leave`` must follow),
        else the FATAL reply that refuses it."""
        settings = self.settings
        if self.shared is None:
            if self.per_principal[principal.id] < settings.max_connections_per_principal:
                return None
            refusal: Refusal | None = Refusal.PRINCIPAL_FULL
        else:
            refusal = await self.shared.admit(
                principal.id, settings.max_connections, settings.max_connections_per_principal
            )
            if refusal is None:
                return None
        if refusal is Refusal.NODE_FULL:
            return encode_error(TOO_MANY_CONNECTIONS, "sorry, too many clients already")
        return encode_error(TOO_MANY_CONNECTIONS, f'too many connections for "{principal.name}"')

    def leave(self, principal: Principal) -> None:
        """An admitted client is gone (its session ended, or never started)."""
        if self.shared is not None:
            self._spawn(self.shared.leave(principal.id))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        OPEN_CONNECTIONS.labels("postgres").inc()
        self.connecting += 1
        connection = Connection(self, reader, writer)
        try:
            await connection.run()
        finally:
            if not connection.relayed:
                self.connecting -= 1
                if connection.admitted is not None:
                    self.leave(connection.admitted)
            OPEN_CONNECTIONS.labels("postgres").dec()

    def pool_for(self, access: Access, parameters: dict[str, str]) -> EnginePool:
        """The transaction-mode pool for this role and these startup parameters."""
        wanted = {k: v for k, v in parameters.items() if k not in ("user", "database")}
        key = (access, tuple(sorted(wanted.items())))
        pool = self.pools.get(key)
        if pool is None:
            pool = EnginePool(
                self.engine, access, wanted, self.settings.pool_size,
                self.settings.max_message_bytes, self.settings.lanes,
            )  # fmt: skip
            self.pools[key] = pool
        return pool

    def session_started(self, session: Session | TxnClient) -> None:
        self.connecting -= 1
        self.sessions[session.id] = session
        self.by_key[(session.key.pid, session.key.secret)] = session
        self.per_principal[session.principal.id] += 1

    def session_ended(self, session: Session | TxnClient, abrupt: bool) -> None:
        self.sessions.pop(session.id, None)
        self.by_key.pop((session.key.pid, session.key.secret), None)
        self.per_principal[session.principal.id] -= 1
        if self.per_principal[session.principal.id] <= 0:
            del self.per_principal[session.principal.id]
        traffic = session.traffic()
        self.totals["bytes_in"] += traffic.bytes_in
        self.totals["bytes_out"] += traffic.bytes_out
        self.totals["round_trips"] += traffic.round_trips
        self.totals["sessions"] += 1
        self.leave(session.principal)
        if abrupt:
            self._spawn(session.cancel_running())

    async def cancel(self, key: CancelKey, address: str) -> None:
        """A CancelRequest from ``address``: cancel our session with this key, or ask the
        other nodes sharing the engine (behind a load balancer the cancel connection may
        land on any node). A wrong key cancels nothing anywhere, and says nothing."""
        if await self.cancel_local(key.pid, key.secret):
            return
        if self.forward_limiter.blocked(address):
            return
        self.forward_limiter.record(address)
        try:
            await self.services.cancels.publish(key.pid, key.secret)
        except Exception:
            log.warning("could not pass a cancel request on to the other nodes", exc_info=True)

    async def cancel_local(self, pid: int, secret: bytes) -> bool:
        session = self.by_key.get((pid, secret))
        if session is None or not hmac.compare_digest(session.key.secret, secret):
            return False
        await session.cancel_running()
        return True

    async def cancel_published(self, pid: int, secret: bytes) -> None:
        await self.cancel_local(pid, secret)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def sweep_idle(self) -> None:
        """Close client connections idle for ``idle_timeout`` seconds: nothing sent either
        way, and the engine spoke last (so no statement of theirs is running).

        Relaying keeps no clock: the sweep compares each session's byte counters with
        what it saw last time, so idle tracking costs nothing per message.
        """
        timeout = self.settings.idle_timeout
        interval = min(max(timeout / 4, 0.05), 5.0)
        seen: dict[int, tuple[int, int, float]] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for session in list(self.sessions.values()):
                counters = (session.bytes_in, session.bytes_out)
                last = seen.get(session.id)
                if last is None or last[:2] != counters or session.awaiting:
                    seen[session.id] = (*counters, now)
                elif now - last[2] >= timeout:
                    session.expire(
                        encode_error(
                            IDLE_TIMEOUT, "terminating connection due to idle-session timeout"
                        )
                    )
            for gone in seen.keys() - self.sessions.keys():
                del seen[gone]

    def terminate_all(self) -> None:
        for session in list(self.sessions.values()):
            session.terminate()
        for pool in self.pools.values():
            pool.close()


def _tls_context(services: Services) -> ssl.SSLContext | None:
    tls = services.settings.tls
    if not tls.enabled or tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.client_auth != "none" and tls.client_ca_file is not None:
        # Client certificates chained to this CA log in as the HeliosDB user they name.
        context.load_verify_locations(cafile=str(tls.client_ca_file))
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.client_auth == "require" else ssl.CERT_OPTIONAL
        )
    return context


def _channel_binding(services: Services) -> bytes | None:
    """tls-server-end-point data of the node's certificate (the first in the file)."""
    cert_file = services.settings.tls.cert_file
    if cert_file is None:
        return None
    pem = cert_file.read_text()
    end = pem.find("-----END CERTIFICATE-----")
    if end < 0:
        return None
    return server_end_point(ssl.PEM_cert_to_DER_cert(pem[: end + 25]))


class _Collector(Collector):
    def __init__(self) -> None:
        self.gateways: list[Gateway] = []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        by_principal: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        connecting = 0
        for gateway in self.gateways:
            connecting += gateway.connecting
            totals.update(gateway.totals)
            for session in gateway.sessions.values():
                by_principal[session.principal.name] += 1
                counts = session.traffic()
                totals["bytes_in"] += counts.bytes_in
                totals["bytes_out"] += counts.bytes_out
                totals["round_trips"] += counts.round_trips
        states = GaugeMetricFamily(
            "heliosdb_pg_connections",
            "PostgreSQL client connections, by state (startup, active).",
            labels=["state"],
        )
        states.add_metric(["startup"], connecting)
        states.add_metric(["active"], sum(by_principal.values()))
        yield states
        principals = GaugeMetricFamily(
            "heliosdb_pg_principal_connections",
            "Relayed PostgreSQL sessions, by principal name.",
            labels=["principal"],
        )
        for name, count in by_principal.items():
            principals.add_metric([name], count)
        yield principals
        traffic = CounterMetricFamily(
            "heliosdb_pg_bytes", "Bytes relayed, by direction.", labels=["direction"]
        )
        traffic.add_metric(["in"], totals["bytes_in"])
        traffic.add_metric(["out"], totals["bytes_out"])
        yield traffic
        yield CounterMetricFamily(
            "heliosdb_pg_round_trips",
            "Client writes relayed to the engine (queries, or pipelined batches of them).",
            value=totals["round_trips"],
        )
        yield CounterMetricFamily(
            "heliosdb_pg_sessions", "Relayed sessions that ended.", value=totals["sessions"]
        )
        waits = CounterMetricFamily(
            "heliosdb_pg_pool_waits",
            "Transaction-mode clients that waited for an engine connection, by engine role.",
            labels=["role"],
        )
        by_role: Counter[str] = Counter()
        for gateway in self.gateways:
            for pool in gateway.pools.values():
                by_role[pool.access.value] += pool.waits
        for role, count in by_role.items():
            waits.add_metric([role], count)
        yield waits
        laned = CounterMetricFamily(
            "heliosdb_pg_lane_queries",
            "Transaction-mode queries sent down a lane (postgres.lanes), by engine role.",
            labels=["role"],
        )
        by_role.clear()
        for gateway in self.gateways:
            for pool in gateway.pools.values():
                if pool.lanes is not None:
                    by_role[pool.access.value] += pool.lanes.sent
        for role, count in by_role.items():
            laned.add_metric([role], count)
        yield laned


_COLLECTOR = _Collector()
REGISTRY.register(_COLLECTOR)


def postgres_listeners(services: Services, *, primary: bool = True) -> list[PostgresListener]:
    """The main listener, plus the transaction-pooling one when its port is set.

    ``primary``: in the node process (not a worker), which resets the node's shared
    client counts before its workers start."""
    settings = services.settings.postgres
    listeners = [PostgresListener(services, "postgres", settings.port, settings.pool_mode, primary)]
    if settings.transaction_port is not None:
        listeners.append(
            PostgresListener(
                services, "postgres_txn", settings.transaction_port, "transaction", primary
            )
        )
    return listeners


class PostgresListener(TcpListener):
    def __init__(
        self, services: Services, name: str, port: int, pool_mode: str, primary: bool = True
    ) -> None:
        self.gateway = Gateway(services, pool_mode, name)
        self.primary = primary
        self._sweeper: asyncio.Task[None] | None = None
        super().__init__(
            name,
            "postgresql",
            services.settings.host,
            port,
            self.gateway.handle,
            reuse_port=services.settings.workers > 1,  # the node's workers serve it too
        )

    async def start(self) -> None:
        if self.primary and self.gateway.shared is not None:
            await self.gateway.shared.reset()
        await super().start()
        _COLLECTOR.gateways.append(self.gateway)
        try:
            await self.gateway.services.cancels.subscribe(self.gateway.cancel_published)
        except Exception:  # noqa: BLE001 - local cancels work without it
            log.warning("cancel requests of other nodes will not reach %s", self.name)
        if self.gateway.settings.idle_timeout > 0:
            self._sweeper = asyncio.create_task(self.gateway.sweep_idle())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.gateway.services.cancels.unsubscribe(self.gateway.cancel_published)
        if self.server is not None:
            self.server.close()
        self.gateway.terminate_all()
        await super().stop()
        with contextlib.suppress(ValueError):
            _COLLECTOR.gateways.remove(self.gateway)
