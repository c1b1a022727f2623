"""The embedded engine runs with fixed glibc malloc thresholds (engine/embedded.py
MALLOC_TUNABLES): a backend keeps its freed heap instead of faulting it in again on
every statement."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.nodeproc import NodeProcess


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw if entry)
    return {name: value for name, _, value in pairs}


async def test_engine_backends_malloc_thresholds(node: NodeProcess) -> None:
    postmaster = int((node.data_dir / "engine" / "postmaster.pid").read_text().split()[0])
    conn = await asyncpg.connect(node.engine_url)
    try:
        backend = conn.get_server_pid()
        for pid in (postmaster, backend):  # a backend inherits the postmaster's
            tunables = _environment(pid).get("GLIBC_TUNABLES", "")
            assert "glibc.malloc.trim_threshold=33554432" in tunables, tunables
    finally:
        await conn.close()
