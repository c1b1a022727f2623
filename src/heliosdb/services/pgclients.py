"""PostgreSQL client connections of one node, counted in the engine.

A node with ``workers > 1`` serves the wire protocol from several processes (workers.py),
so no process alone knows how many clients a principal has. Each process records its own
count per principal in ``helios.pg_gateway_clients`` (node, pid, principal -> clients).
A new client is admitted in one transaction that first locks the node's row in
``helios.pg_gateway_nodes`` (so two processes cannot both take the last slot; client
roles cannot read or lock these tables), then adds up the rows of the node's processes
that are still alive, and records the client if both limits allow it. Rows of a process
that died (a worker killed and started again) are dropped on the way; the node drops all
of its rows when it starts. A node with one process keeps the counts in memory instead.
"""

from __future__ import annotations

import logging
import os
import socket
from enum import Enum
from pathlib import Path

from heliosdb.engine import Access, Engine

log = logging.getLogger("heliosdb.services.pgclients")

_LOCK_NODE = (
    "INSERT INTO helios.pg_gateway_nodes (node) VALUES ($1) "
    "ON CONFLICT (node) DO UPDATE SET node = EXCLUDED.node"
)
_ROWS = "SELECT pid, principal, clients FROM helios.pg_gateway_clients WHERE node = $1"
_DROP_PROCESSES = "DELETE FROM helios.pg_gateway_clients WHERE node = $1 AND pid = ANY($2)"
_ADD = (
    "INSERT INTO helios.pg_gateway_clients (node, pid, principal, clients) "
    "VALUES ($1, $2, $3, 1) ON CONFLICT (node, pid, principal) "
    "DO UPDATE SET clients = pg_gateway_clients.clients + 1"
)
_REMOVE = (
    "UPDATE helios.pg_gateway_clients SET clients = clients - 1 "
    "WHERE node = $1 AND pid = $2 AND principal = $3 AND clients > 0"
)
_RESET = "DELETE FROM helios.pg_gateway_clients WHERE node = $1"


class Refusal(Enum):
    NODE_FULL = "node"
    PRINCIPAL_FULL = "principal"


def node_identity(data_dir: Path) -> str:
    """What the processes of one node share and other nodes on the engine do not."""
    return f"{socket.gethostname()}:{Path(data_dir).resolve()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GatewayClients:
    """This process's side of the node's client counts."""

    def __init__(self, engine: Engine, node: str) -> None:
        self.engine = engine
        self.node = node
        self.pid = os.getpid()

    async def reset(self) -> None:
        """Forget every count of this node (the node process, at start: a previous run's
        processes are gone, and their pids may be reused)."""
        async with self.engine.connection(Access.SYSTEM) as conn:
            await conn.execute(_RESET, self.node)

    async def admit(
        self, principal: str, max_clients: int, max_per_principal: int
    ) -> Refusal | None:
        """Record one more client of ``principal`` here, or say which limit refuses it."""
        async with self.engine.connection(Access.SYSTEM) as conn, conn.transaction():
            await conn.execute(_LOCK_NODE, self.node)
            total = mine = 0
            dead: set[int] = set()
            for row in await conn.fetch(_ROWS, self.node):
                pid = row["pid"]
                if pid != self.pid and (pid in dead or not _alive(pid)):
                    dead.add(pid)
                    continue
                total += row["clients"]
                if row["principal"] == principal:
                    mine += row["clients"]
            if dead:
                await conn.execute(_DROP_PROCESSES, self.node, sorted(dead))
            if total >= max_clients:
                return Refusal.NODE_FULL
            if mine >= max_per_principal:
                return Refusal.PRINCIPAL_FULL
            await conn.execute(_ADD, self.node, self.pid, principal)
        return None

    async def leave(self, principal: str) -> None:
        """One client of ``principal`` here has gone."""
        try:
            async with self.engine.connection(Access.SYSTEM) as conn:
                await conn.execute(_REMOVE, self.node, self.pid, principal)
        except Exception:
            log.warning("could not record the end of a PostgreSQL client", exc_info=True)
