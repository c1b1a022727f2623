"""What the tests of ``query.max_result_bytes`` share, through REST, gRPC and WebSocket.

A node beside the session's caps results at :data:`MAX_BYTES` bytes of rows (as the
engine sends them: a row of one text column of ``n`` characters takes ``n + 11``); the
tests read its peak memory and look underneath for engine backends still running a
statement after the node refused its result.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodeproc import NodeProcess

MAX_BYTES = 4 * 1024 * 1024
ROW_BYTES = 11  # a DataRow of one text column: kind, length, column count, value length
WIDE = 1_000_000  # characters of a wide row: 100 of them are 24 times the cap
MEMORY_BOUND = 40 * 1024 * 1024  # the node's peak may grow by this much (the cap, buffers)


def wide(rows: int, width: int = WIDE, marker: str = "wide") -> str:
    """A statement of ``rows`` rows of ``width`` characters (a comment marks it in
    ``pg_stat_activity``)."""
    return f"SELECT repeat('x', {width}) FROM generate_series(1, {rows}) -- {marker}"


def capped_node(node: NodeProcess, tmp: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node capping results at MAX_BYTES, for a module fixture to ``yield from``."""
    data: Path = tmp.mktemp("resultbytes") / "data"
    yield from node.running_beside(data, {"HELIOSDB_QUERY__MAX_RESULT_BYTES": str(MAX_BYTES)})


def peak_memory(node: NodeProcess) -> int:
    """The most resident memory the node's process has had (VmHWM), in bytes."""
    assert node.process is not None
    for line in Path(f"/proc/{node.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
