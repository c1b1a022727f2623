"""Transaction pooling: Queries and Parses sent inside an extended batch that fails.

After an error in an extended message (Parse, Bind, Execute ...) the engine skips every
message up to the batch's Sync, a simple Query sent before that Sync too: the Query gets
no ReadyForQuery. The transaction port must expect exactly the ReadyForQuery the engine
sends, or the engine connection is never given back; the client sees what the engine
sends (as through the session port, which relays the engine's bytes).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.postgres.rawclient import RawClient, message
from tests.integration.postgres.test_transaction_pooling import (
    POOL_SIZE,
    SYNC,
    _beside_full_pool,
    _bind_execute,
    _parse,
    _pid,
    _replies,
)
from tests.nodeproc import NodeProcess


def _query(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


FAILING = _parse("SELECT 1/0") + _bind_execute()  # ParseComplete, then the Bind fails (1/0 folded)

BATCHES = {
    "a Query after the error": FAILING + _query("SELECT 2") + SYNC,
    "Queries and a Flush after the error": FAILING
    + _query("SELECT 2")
    + message(b"H", b"")
    + _query("SELECT 3; SELECT 4")
    + SYNC,
    "a Query before the error and one after": _query("SELECT 1")
    + FAILING
    + _query("SELECT 2")
    + SYNC,
    "extended messages after the Query": FAILING
    + _query("SELECT 2")
    + _parse("SELECT 3")
    + _bind_execute()
    + SYNC,
    # No skip: a Query's own error ends with its ReadyForQuery, the batch goes on.
    "the Query fails": _parse("SELECT 1")
    + _bind_execute()
    + _query("SELECT 1/0")
    + _parse("SELECT 2")
    + _bind_execute()
    + SYNC,
    "the Query fails, then an extended message": _parse("SELECT 1")
    + _bind_execute()
    + _query("SELECT 1/0")
    + FAILING
    + _query("SELECT 3")
    + SYNC,
    "two batches, the first failing": FAILING
    + _query("SELECT 2")
    + SYNC
    + _parse("SELECT 3")
    + _bind_execute()
    + SYNC
    + _query("SELECT 4"),
}


def _answer(client: RawClient, data: bytes, readies: int) -> list[tuple[bytes, bytes]]:
    client.send(data)
    return _replies(client, readies)


def _kinds(replies: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [kind for kind, _ in replies]


def _engine_answer(node: NodeProcess, key: str, data: bytes) -> list[tuple[bytes, bytes]]:
    """What the engine answers ``data`` (the session port relays its bytes), read up to a
    ReadyForQuery followed by none within a Query of our own."""
    with RawClient(node.ports["postgres"]) as engine:
        engine.login(key)
        engine.send(data + _query("SELECT 'end'"))
        replies: list[tuple[bytes, bytes]] = []
        while not (replies and replies[-1][0] == b"Z" and replies[-3][1].endswith(b"end")):
            kind, body = engine.read()
            assert kind, replies
            replies.append((kind, body))
        return replies[:-4]  # without our Query's T, D, C, Z


@contextlib.contextmanager
def _last_connection(port: int, key: str) -> Iterator[tuple[RawClient, RawClient]]:
    """Two logged-in clients of a pool of their own whose other connections are all busy
    (``_full_pool``): the first to need one takes the last connection, and the other
    gets one only when it is given back (or waits ``postgres.pool_timeout``, then 53300)."""
    app = f"failed_{uuid.uuid4().hex[:8]}"
    with _beside_full_pool(port, key, app, 2, busy=POOL_SIZE - 1) as (_, (client, other)):
        yield client, other


@pytest.mark.parametrize("batch", list(BATCHES))
def test_txn_a_failed_batch_answers_as_the_engine_and_gives_the_connection_back(
    node: NodeProcess, rw_key: str, batch: str
) -> None:
    """The batch sent in one write: the client gets the engine's messages, and after them
    its engine connection goes back to the pool (every other connection of the pool busy,
    the next client to need one takes it); the client's next statements work."""
    data = BATCHES[batch]
    expected = _engine_answer(node, rw_key, data)
    readies = _kinds(expected).count(b"Z")
    with _last_connection(node.ports["postgres_txn"], rw_key) as (client, other):
        for _ in range(2):
            pid = _pid(client)
            assert _answer(client, data, readies) == expected
            assert _pid(other) == pid  # given back: the only free connection
            assert _answer(client, _query("SELECT 5"), 1)[1][1].endswith(b"5")


def test_txn_a_batch_answered_before_its_query_fails_as_the_engine_says(
    node: NodeProcess, rw_key: str
) -> None:
    """The extended messages flushed and answered before the Query comes (so their replies
    and the Query's arrive apart): the Query's own error skips nothing."""
    port = node.ports["postgres_txn"]
    with RawClient(port) as client:
        client.login(rw_key)
        client.send(_parse("SELECT 1") + _bind_execute() + message(b"H", b""))
        assert [client.read()[0] for _ in range(4)] == [b"1", b"2", b"D", b"C"]
        replies = _answer(client, _query("SELECT 1/0") + _parse("SELECT 2") + _bind_execute()
                          + SYNC, 2)  # fmt: skip
        assert _kinds(replies) == [b"E", b"Z", b"1", b"2", b"D", b"C", b"Z"]
        assert _answer(client, _query("SELECT 5"), 1)[1][1].endswith(b"5")


def test_txn_named_statements_skipped_after_an_error_are_not_taken_as_prepared(
    node: NodeProcess, rw_key: str
) -> None:
    """A named Parse skipped by the engine after an error (behind a Query) is not taken as
    prepared: the next Bind of it prepares it first and runs (the engine alone would
    answer that the client's statement does not exist). A statement prepared before the
    batch still runs."""
    port = node.ports["postgres_txn"]
    with RawClient(port) as client:
        client.login(rw_key)
        named = message(b"P", b"s_kept\0SELECT 7\0\0\0") + SYNC
        assert _kinds(_answer(client, named, 1)) == [b"1", b"Z"]
        batch = (
            FAILING
            + _query("SELECT 2")
            + message(b"P", b"s_skipped\0SELECT 8\0\0\0")
            + _bind_execute("s_kept")
            + message(b"D", b"Ss_skipped\0")
            + SYNC
        )
        assert _kinds(_answer(client, batch, 1)) == [b"1", b"E", b"Z"]  # 1/0 fails at Bind
        for name, value in ((b"s_skipped", b"8"), (b"s_kept", b"7")):
            bound = _answer(client, _bind_execute(name.decode()) + SYNC, 1)
            assert _kinds(bound) == [b"2", b"D", b"C", b"Z"], bound
            assert bound[1][1].endswith(value)


def test_txn_a_close_skipped_after_an_error_leaves_the_statement(
    node: NodeProcess, rw_key: str
) -> None:
    """The Close of a named statement skipped by the engine after an error (in a batch
    alone, or behind a Query): the statement is still there, as the engine says; the next
    Bind of it runs. A Close the engine did make closes it."""
    for behind in (b"", _query("SELECT 2")):
        with RawClient(node.ports["postgres_txn"]) as client:
            client.login(rw_key)
            parse = message(b"P", b"s_closed\0SELECT 9\0\0\0") + SYNC
            assert _kinds(_answer(client, parse, 1)) == [b"1", b"Z"]
            close = message(b"C", b"Ss_closed\0")
            assert _kinds(_answer(client, FAILING + behind + close + SYNC, 1)) == [
                b"1", b"E", b"Z",
            ]  # fmt: skip
            bound = _answer(client, _bind_execute("s_closed") + SYNC, 1)
            assert _kinds(bound) == [b"2", b"D", b"C", b"Z"], bound
            assert _kinds(_answer(client, close + SYNC, 1)) == [b"3", b"Z"]
            gone = _answer(client, _bind_execute("s_closed") + SYNC, 1)
            assert _kinds(gone) == [b"E", b"Z"] and b"26000" in gone[0][1]


def test_txn_a_query_run_inside_a_batch_leaves_its_engine_state_with_the_client(
    node: NodeProcess, rw_key: str
) -> None:
    """A Query run inside an extended batch (no error): the engine can end such a batch in
    a state its next statement fails on, once (XX000 "unexpected state STARTED", whatever
    runs next). The client sees that as the engine says it, and no other client is given
    the connection (the client is pinned: with every other connection of the pool busy,
    another client waits for one, in vain)."""
    data = _parse("SELECT 3") + _bind_execute() + _query("SELECT 4") + SYNC
    with RawClient(node.ports["postgres"]) as engine:
        engine.login(rw_key)
        expected = _answer(engine, data, 2)
        after = _answer(engine, _query("SELECT 5"), 1)
        assert _kinds(after) == [b"E", b"Z"], after  # what the engine does
    with _last_connection(node.ports["postgres_txn"], rw_key) as (client, other):
        assert _answer(client, data, 2) == expected
        other.send(_query("SELECT 6"))
        refused = other.read()
        assert refused[0] == b"E" and b"53300" in refused[1], refused
        assert _kinds(_answer(client, _query("SELECT 5"), 1)) == _kinds(after)
        assert _answer(client, _query("SELECT 7"), 1)[1][1].endswith(b"7")
