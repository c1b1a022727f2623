"""Instructions per select-only transaction of the transaction port's two callbacks.

    .venv/bin/python bench/pgwire_callgrind.py [--modes simple,prepared] [--small N1]
                                               [--large N2]

Runs the real ``TxnClient.data_received`` (the client's Query, or its Bind/Execute/Sync
of a named statement) and ``_ServerSide.data_received`` (the engine's reply: for
simple, RowDescription, one DataRow, CommandComplete, ReadyForQuery; for prepared,
BindComplete first) in one process with fake transports (writes go nowhere; no socket,
no event loop callbacks), the reply a fresh bytes object per transaction as a read
makes it. Each mode runs twice under ``valgrind --tool=callgrind``, N1 and N2
transactions, and prints (I2 - I1) / (N2 - N1), the instructions of one transaction
with start-up, imports and setup left out (user space only: the kernel's socket work is
not in it). docs/postgres.md's tenth to twelfth sessions cite figures measured so.

Needs valgrind, which ``scripts/test-deps`` does not install (``apt-get install
valgrind``). A mode takes about a minute. To compare with older code, check it out
beside this one (``git worktree add /tmp/old REV``) and give ``--tree /tmp/old``: this
file drives that tree's ``src/`` (with its ``.venv`` if it has one). The figures depend
on the Python build, so compare runs made on one machine.

``--run MODE N`` is the process valgrind runs (not for use by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUERIES = 1000  # distinct queries, parameters 1..99999 as pgbench -S draws them


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


class _Transport:
    """Stands in for both sockets: writes go nowhere, flow control does nothing."""

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class _Engine:
    """A ServerConn's engine connection, as far as the reply path looks at it."""

    writer = type("Writer", (), {"transport": _Transport()})()
    pid = 1
    secret = b"x"


async def _run(transactions: int, mode: str) -> None:
    from heliosdb.interfaces.postgres import pooling
    from heliosdb.interfaces.postgres.codec import CancelKey

    pool = pooling.EnginePool(None, None, {}, 20)  # type: ignore[arg-type]
    client = pooling.TxnClient(
        None,  # type: ignore[arg-type]
        CancelKey(1, b"k"),
        pool,
        _Transport(),  # type: ignore[arg-type]
        10.0,
        lambda *a: None,
    )
    client.counted = False
    server = pooling.ServerConn(pool, _Engine())  # type: ignore[arg-type]
    side = pooling._ServerSide(server)
    pool.members.append(server)
    server.client = server.owner = client
    client.server = server
    columns = struct.pack("!h", 1) + b"abalance\0" + struct.pack("!ihihih", 0, 0, 23, 4, -1, 0)
    reply = (
        _message(b"T", columns)
        + _message(b"D", struct.pack("!hi", 1, 1) + b"0")
        + _message(b"C", b"SELECT 1\0")
        + _message(b"Z", b"I")
    )
    numbers = [b"%d" % (1 + i % 99999) for i in range(QUERIES)]
    if mode == "simple":
        sql = b"SELECT abalance FROM pgbench_accounts WHERE aid = %s;\0"
        queries = [_message(b"Q", sql % n) for n in numbers]
    else:
        client.statements[b"P_1"] = ("hdb_1", b"", b"hdb_1")
        server.prepared.add("hdb_1")
        queries = [
            _message(b"B", b"\0P_1\0" + struct.pack("!hhi", 0, 1, len(n)) + n + b"\0\0")
            + pooling._BOUND_TAIL
            for n in numbers
        ]
        reply = _message(b"2", b"") + reply
    template = bytearray(reply)
    for i in range(transactions):
        client.data_received(queries[i % QUERIES])
        side.data_received(bytes(template))  # a fresh object, as a read makes
        assert server.pending == 0, server.pending
        server.client = client  # parked: the next Query takes it back, as its fast path does


def _instructions(tree: Path, mode: str, transactions: int) -> int:
    """Instructions callgrind counts for one run of ``transactions``."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        python = tree / ".venv" / "bin" / "python"
        if not python.exists():
            python = Path(sys.executable)
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             str(python), str(Path(__file__).resolve()), "--run", mode, str(transactions)],
            cwd=tree, check=True, capture_output=True,
            env={**os.environ, "PYTHONPATH": str(tree / "src")},
        )  # fmt: skip
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if found is None:
            raise SystemExit(f"no instruction total in {out}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="simple,prepared")
    parser.add_argument("--small", type=int, default=4000, help="transactions of the first run")
    parser.add_argument("--large", type=int, default=20000, help="transactions of the second")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure")
    parser.add_argument("--run", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.run:
        asyncio.run(_run(int(options.run[1]), options.run[0]))
        return
    tree = options.tree.resolve()
    for mode in options.modes.split(","):
        small = _instructions(tree, mode, options.small)
        large = _instructions(tree, mode, options.large)
        per = (large - small) / (options.large - options.small)
        print(f"{mode}: {per:,.0f} instructions per transaction ({tree})", flush=True)


if __name__ == "__main__":
    main()
