"""Looking underneath a node: whether the engine still runs a statement a test started
(after a cancel, a disconnect or a refused result)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.nodeproc import NodeProcess


async def until_engine_lets_go(node: NodeProcess, marker: str) -> None:
    """Until no engine backend runs a statement marked ``marker`` (no assumption on how
    fast the engine reacts to the cancel)."""
    conn = await asyncpg.connect(node.engine_url)
    try:
        for _ in range(300):
            running = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND state = 'active' AND query LIKE '%' || $1 || '%'",
                marker,
            )
            if running == 0:
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    pytest.fail(f"a statement marked {marker} still runs on the engine")
