"""Transaction pooling: FunctionCall ('F'), libpq's fastpath (PQfn).

libpq's large-object API (lo_open, loread, lowrite ..., which psql's ``\\lo_import`` and
``\\lo_export`` use) calls functions with FunctionCall messages. The engine answers each
with FunctionCallResponse (or an error) and one ReadyForQuery, as it answers a Query: the
transaction port counts it so, and gives the engine connection back at the end of the
transaction, not before.
"""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from pathlib import Path

from tests.integration.postgres.conftest import libpq_conninfo
from tests.integration.postgres.rawclient import RawClient, message
from tests.integration.postgres.test_transaction_pooling import (
    POOL_SIZE,
    _beside_full_pool,
    _pid,
    _replies,
)
from tests.nodeproc import NodeProcess


def _function_call(oid: int, *args: bytes) -> bytes:
    """FunctionCall: the function's oid, no format codes (all text), the arguments, a
    text result."""
    body = struct.pack("!ihh", oid, 0, len(args))
    body += b"".join(struct.pack("!i", len(arg)) + arg for arg in args)
    return message(b"F", body + struct.pack("!h", 0))


def _oid(client: RawClient, signature: str) -> int:
    """The oid of the function of ``signature`` (name and argument types)."""
    client.send(message(b"Q", f"SELECT '{signature}'::regprocedure::oid\0".encode()))
    reply = _replies(client, 1)
    assert [k for k, _ in reply] == [b"T", b"D", b"C", b"Z"], reply
    return int(reply[1][1][6:])


def test_txn_a_function_call_is_answered_by_one_ready_for_query(
    node: NodeProcess, rw_key: str
) -> None:
    """FunctionCalls outside a transaction block and inside one: each is answered by its
    FunctionCallResponse and one ReadyForQuery; the engine connection goes back to the
    pool after the one outside, and at COMMIT after the ones inside (every other
    connection of the pool busy, the next client to need one takes it)."""
    app = f"fn_{uuid.uuid4().hex[:8]}"
    port = node.ports["postgres_txn"]
    with _beside_full_pool(port, rw_key, app, 2, busy=POOL_SIZE - 1) as (_, (client, other)):
        add = _function_call(_oid(client, "int4pl(integer, integer)"), b"2", b"3")
        pid = _pid(client)
        client.send(add)
        reply = _replies(client, 1)
        assert reply == [(b"V", struct.pack("!i", 1) + b"5"), (b"Z", b"I")]
        assert _pid(other) == pid  # given back after the call
        pid = _pid(client)
        client.send(message(b"Q", b"BEGIN\0"))
        assert [k for k, _ in _replies(client, 1)] == [b"C", b"Z"]
        client.send(add + add)  # two at once: two ReadyForQuery
        assert _replies(client, 2) == [(b"V", struct.pack("!i", 1) + b"5"), (b"Z", b"T")] * 2
        assert _pid(client) == pid
        client.send(message(b"Q", b"COMMIT\0"))
        assert _replies(client, 1)[-1] == (b"Z", b"I")
        assert _pid(other) == pid  # given back at the end of the transaction


def test_txn_psql_large_object_import_and_export(
    node: NodeProcess, rw_key: str, psql: str, tmp_path: Path
) -> None:
    """psql's ``\\lo_import`` and ``\\lo_export`` inside BEGIN ... COMMIT through the
    transaction port: the file comes back intact, and the engine connection goes back to
    the pool when the transaction ends."""
    app = f"lo_{uuid.uuid4().hex[:8]}"
    source, target = tmp_path / "source.bin", tmp_path / "target.bin"
    source.write_bytes(os.urandom(300_000))  # many 8 kB lowrite calls
    script = (
        "BEGIN;\n"
        f"\\lo_import {source}\n"
        f"\\lo_export :LASTOID {target}\n"
        "SELECT lo_unlink(:LASTOID);\n"
        "COMMIT;\n"
        "SELECT 'pid', pg_backend_pid();\n"
    )
    port = node.ports["postgres_txn"]
    with _beside_full_pool(port, rw_key, app, 1, busy=POOL_SIZE - 1) as (_, (other,)):
        result = subprocess.run(
            [psql, libpq_conninfo(port), "-X", "-At", "-v", "ON_ERROR_STOP=1"],
            input=script,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": rw_key, "PGAPPNAME": app},
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert target.read_bytes() == source.read_bytes()
        pid = result.stdout.split("pid|")[1].split()[0]
        # psql's connection was given back at COMMIT, then parked and returned when psql
        # left; the pool is full otherwise, so the next client gets that one.
        assert _pid(other) == pid.encode()
