"""Transaction pooling: replies the gateway has seen before (remembered whole, so that it
need not walk their message lengths again) end transactions exactly as new ones do."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from tests.integration.postgres.rawclient import RawClient, message
from tests.integration.postgres.test_transaction_pooling import (
    POOL_SIZE,
    _full_pool,
    _pid,
    _replies,
)
from tests.nodeproc import NodeProcess


@pytest.fixture(scope="module")
def txn_port(node: NodeProcess) -> int:
    return node.ports["postgres_txn"]


def test_txn_pipelined_replies_seen_before_keep_the_connection_until_the_last(
    txn_port: int, rw_key: str
) -> None:
    """Three Queries in one write, whose first two replies the gateway has seen before: the
    connection stays with the client until the third is answered, and only then goes to
    the client waiting for it (the pool is full), which sees none of those replies."""
    app = f"seen_{uuid.uuid4().hex[:8]}"
    slow = message(b"Q", b"SELECT pg_sleep(0.1)\0")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_full_pool(txn_port, rw_key, app, POOL_SIZE - 1))
        owner, waiter = (stack.enter_context(RawClient(txn_port)) for _ in range(2))
        owner.login(rw_key, application_name=app)
        waiter.login(rw_key, application_name=app)
        for _ in range(2):  # the pool's last connection; its reply seen, then seen again
            owner.send(slow)
            assert [k for k, _ in _replies(owner, 1)] == [b"T", b"D", b"C", b"Z"]
        owned = _pid(owner)
        owner.send(slow + slow + message(b"Q", b"SELECT 42\0"))
        waiter.send(message(b"Q", b"SELECT pg_backend_pid()\0"))  # waits for a connection
        replies = _replies(owner, 3)
        assert [k for k, _ in replies] == [b"T", b"D", b"C", b"Z"] * 3
        assert replies[-3][1][6:] == b"42"
        reply = _replies(waiter, 1)
        assert [k for k, _ in reply] == [b"T", b"D", b"C", b"Z"] and reply[1][1][6:] == owned
