"""The transaction pooler's scan of engine replies, fed in every possible chunking."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heliosdb.interfaces.postgres.pooling import _ServerSide


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


class _Client:
    def __init__(self) -> None:
        self.received = bytearray()
        self.parked = 0
        self.counted = True
        self.bytes_out = 0
        self.awaiting = True
        self.transport = SimpleNamespace(write=self.received.extend)
        self.pool = SimpleNamespace(waiters=deque())  # nobody waits: a park keeps it
        self.conn: Any = None

    def park(self) -> None:
        if self.conn is not None:
            self.conn.client = None  # as TxnClient.park does (counted by the connection)
        else:
            self.parked += 1


class _Conn:
    """A stand-in ServerConn. Letting go of its client (``client = None``, as a park
    does, in TxnClient.park or inlined in the reply's fast path) counts a park."""

    def __init__(self, client: _Client | None, **state: Any) -> None:
        self._client = client
        self.__dict__.update(state)

    @property
    def client(self) -> _Client | None:
        return self._client

    @client.setter
    def client(self, value: _Client | None) -> None:
        if value is None and self._client is not None:
            self._client.parked += 1
        self._client = value


def _conn(client: _Client, expect: list[tuple[bool, str | None]], pending: int) -> Any:
    conn = _Conn(
        client, pending=pending, prepared=set(), inflight=set(), answered=0,
        expect=deque((drop, name, 1) for drop, name in expect),  # void after the first Ready
        carry=b"", skip=0, closed=False, pinned=False, unsynced=False,
        copy_syncs=0, general=bool(expect), reply=b"", give_back=False, owed=0,
        batch=deque(), ended=0, failed=False, closing=deque(),
    )  # fmt: skip
    if client is not None:
        client.conn = conn
    return conn


# An injected Parse (dropped ParseComplete), the client's own Parse, a big DataRow, then
# ReadyForQuery idle: the reply the client sees lacks exactly the first ParseComplete.
REPLY = [
    _msg(b"1"),
    _msg(b"1"),
    _msg(b"2"),
    _msg(b"T", b"\0\x01" + b"x" * 20),
    _msg(b"D", b"\0\x01" + b"y" * 3000),
    _msg(b"C", b"SELECT 1\0"),
    _msg(b"Z", b"I"),
]
STREAM = b"".join(REPLY)
EXPECTED = b"".join(REPLY[1:])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 6, 7, 64, 4096, len(STREAM)])
def test_scan_drops_injected_parse_complete_in_any_chunking(size: int) -> None:
    client = _Client()
    conn = _conn(client, [(True, "hdb_1"), (False, "hdb_2")], pending=1)
    side = _ServerSide(conn)
    for start in range(0, len(STREAM), size):
        side.data_received(STREAM[start : start + size])
    assert bytes(client.received) == EXPECTED
    assert client.parked == 1
    assert conn.prepared == {"hdb_1", "hdb_2"}
    assert conn.pending == 0 and not conn.expect


def test_scan_keeps_connection_inside_a_transaction_and_for_unanswered_syncs() -> None:
    client = _Client()
    conn = _conn(client, [], pending=1)
    _ServerSide(conn).data_received(_msg(b"C", b"BEGIN\0") + _msg(b"Z", b"T"))
    assert client.parked == 0  # transaction open
    conn.pending = 2
    _ServerSide(conn).data_received(_msg(b"C", b"COMMIT\0") + _msg(b"Z", b"I"))
    assert client.parked == 0  # one more Sync still to be answered
    _ServerSide(conn).data_received(_msg(b"Z", b"I"))
    assert client.parked == 1


def test_scan_of_an_idle_connection_forwards_nothing() -> None:
    conn = _conn(None, [], pending=0)  # type: ignore[arg-type]
    _ServerSide(conn).data_received(_msg(b"N", b"Snotice\0\0"))
    assert conn.carry == b"" and conn.skip == 0


def test_scan_never_releases_a_pinned_connection() -> None:
    client = _Client()
    conn = _conn(client, [], pending=1)
    conn.pinned = True
    _ServerSide(conn).data_received(_msg(b"C", b"SET\0") + _msg(b"Z", b"I"))
    assert client.parked == 0


@pytest.mark.parametrize(
    ("query", "pins"),
    [
        (b"SET TimeZone = 'UTC'", True),
        (b"BEGIN; set search_path = x", True),
        (b"LISTEN ch", True),
        (b"CREATE TEMP TABLE t (a int)", True),
        (b"SELECT pg_advisory_lock(1)", True),
        (b"SELECT pg_try_advisory_lock_shared(1)", True),
        (b"select Pg_AdVisory_Lock(1)", True),
        (b"DECLARE c CURSOR WITH HOLD FOR SELECT 1", True),
        (b"SET LOCAL TimeZone = 'UTC'", False),
        (b"UPDATE t SET a = 1", False),
        (b"SELECT pg_advisory_xact_lock(1)", False),
        (b"SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;", False),
    ],
)
def test_session_state_statements_pin(query: bytes, pins: bool) -> None:
    from heliosdb.interfaces.postgres.pooling import _SESSION_STATE

    assert bool(_SESSION_STATE.search(query)) is pins


# A plain reply (no Parse to account for): the scan's fast path takes whole chunks that
# end in their only ReadyForQuery; anything else goes the general way. Both must agree.
PLAIN = [
    _msg(b"T", b"\0\x01" + b"x" * 20),
    _msg(b"D", b"\0\x01" + b"y" * 300),
    _msg(b"C", b"SELECT 1\0"),
    _msg(b"Z", b"I"),
]
PLAIN_STREAM = b"".join(PLAIN)


@pytest.mark.parametrize("size", [1, 4, 5, 6, 7, 33, 64, len(PLAIN_STREAM) - 1, len(PLAIN_STREAM)])
def test_plain_reply_in_any_chunking_is_forwarded_whole_and_releases_once(size: int) -> None:
    client = _Client()
    conn = _conn(client, [], pending=1)
    side = _ServerSide(conn)
    for start in range(0, len(PLAIN_STREAM), size):
        side.data_received(PLAIN_STREAM[start : start + size])
    assert bytes(client.received) == PLAIN_STREAM
    assert client.parked == 1
    assert conn.pending == 0 and conn.carry == b"" and conn.skip == 0


def test_two_pipelined_replies_in_one_chunk_release_after_the_second() -> None:
    client = _Client()
    conn = _conn(client, [], pending=2)
    _ServerSide(conn).data_received(PLAIN_STREAM + PLAIN_STREAM)
    assert bytes(client.received) == PLAIN_STREAM * 2
    assert client.parked == 1 and conn.pending == 0


def test_ready_for_query_inside_a_transaction_does_not_release_on_the_fast_path() -> None:
    client = _Client()
    conn = _conn(client, [], pending=1)
    _ServerSide(conn).data_received(_msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"T"))
    assert client.parked == 0 and conn.pending == 0


def test_a_message_after_ready_for_query_is_not_lost() -> None:
    """A notification right behind the ReadyForQuery: released at the ReadyForQuery, the
    rest belongs to no client (the connection is idle in the pool)."""
    client = _Client()
    conn = _conn(client, [], pending=1)
    tail = _msg(b"A", b"\0\0\0\x01ch\0payload\0")
    _ServerSide(conn).data_received(PLAIN_STREAM + tail)
    assert bytes(client.received) == PLAIN_STREAM
    assert client.parked == 1


@pytest.mark.parametrize(
    "query",
    [
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
        b"SELECT 1",
        b"  set TimeZone = 'UTC'",
        b"SELECT 1; SELECT 2",
        b"SELECT pg_advisory_lock(1)",
        b"SELECT PG_ADVISORY_LOCK(1)",
        b"select pg_aDvIsOrY_lock(1)",
        b"SELECT pg_try_advisory_lock(1)",
        b"LISTEN ch;",
        b"discard all",
        b"BEGIN",
        b";",
        b"",
    ],
)
def test_plain_query_agrees_with_plain_statement(query: bytes) -> None:
    from heliosdb.interfaces.postgres.pooling import _plain_statement

    text = query + b"\0"
    message = _msg(b"Q", text)
    assert _plain_statement(message, 5) is _plain_statement(text)


@pytest.mark.parametrize(
    "query",
    [
        b"SELECT pg_advisory_lock(1)",
        b"select pg_aDvIsOrY_lock(1)",
        b"SELECT pg_try_advisory_lock(2)",
    ],
)
def test_session_advisory_locks_in_any_spelling_are_not_plain(query: bytes) -> None:
    from heliosdb.interfaces.postgres.pooling import _plain_statement

    assert _plain_statement(query + b"\0") is False


# Query texts whose digits matter to nothing _plain_statement looks at: semicolons,
# advisory locks in any spelling, first words (SET ... vs SELECT ...), word boundaries.
_QUERY_PARTS = st.lists(
    st.sampled_from(
        [b"SELECT ", b"select", b"SET ", b"set", b" ", b"\t", b"1", b"42", b"0", b";", b"_",
         b"pg_advisory_lock(", b"pg_Advisory_LOCK", b"advisory", b"lock", b"LISTEN ",
         b"x", b"aid = ", b")", b"'", b"9a", b"a9", b"BEGIN", b"END"]
    ),
    max_size=12,
).map(b"".join)  # fmt: skip


@given(_QUERY_PARTS, st.integers(min_value=0, max_value=9))
def test_a_remembered_query_shape_answers_as_plain_statement(query: bytes, digit: int) -> None:
    """The Query fast path's plainness, remembered by the text with its digits made 0,
    answers what the three searches answer, for the query itself and for one that
    differs only in its digits, checked right after it (the remembered answer)."""
    from heliosdb.interfaces.postgres.pooling import _plain_query, _plain_statement

    other = query.translate(bytes.maketrans(b"0123456789", str(digit).encode() * 10))
    for text in (query, other, query):
        message = _msg(b"Q", text + b"\0")
        assert _plain_query(message) is _plain_statement(message, 5)


def test_remembered_query_shapes_are_bounded() -> None:
    from heliosdb.interfaces.postgres import pooling

    for n in range(pooling._PLAIN_SHAPES + 10):
        assert pooling._plain_query(_msg(b"Q", b"SELECT '" + str(n).encode("ascii").translate(
            bytes.maketrans(b"0123456789", b"abcdefghij")) + b"'\0"))  # fmt: skip
    assert 0 < len(pooling._plain_shapes) <= pooling._PLAIN_SHAPES
    long = _msg(b"Q", b"SELECT " + b"x" * pooling._PLAIN_SHAPE_BYTES + b"\0")
    assert pooling._plain_query(long) is True
    assert long.translate(pooling._ZERO_DIGITS) not in pooling._plain_shapes


async def test_the_query_fast_path_pins_a_query_shaped_like_a_remembered_one() -> None:
    """A SET seen before with other digits is remembered as not plain: the next one goes
    through the full check and pins its connection, as the first did."""
    for value in (b"1000", b"2000"):
        client, conn = _txn_client()
        client.data_received(_msg(b"Q", b"SET statement_timeout = " + value + b"\0"))
        assert conn.pinned and conn.pending == 1
    client, conn = _txn_client()
    client.data_received(_msg(b"Q", b"SELECT 2000\0"))
    assert not conn.pinned


class _Transport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: object) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _txn_client() -> tuple[Any, Any]:
    """A transaction-mode client and its engine connection, over recording transports
    (call inside a running event loop)."""
    from heliosdb.engine import Access
    from heliosdb.interfaces.postgres.codec import CancelKey
    from heliosdb.interfaces.postgres.pooling import EnginePool, ServerConn, TxnClient
    from heliosdb.security.principals import Principal, PrincipalKind

    pool = EnginePool.__new__(EnginePool)
    pool.idle, pool.waiters, pool.size, pool.max_size = [], deque(), 1, 20
    pool.max_message, pool.lanes = 64 << 20, None
    conn = ServerConn.__new__(ServerConn)
    pool.members = [conn]
    conn.__dict__.update(
        pool=pool, transport=_Transport(), client=None, owner=None, pending=0, prepared=set(),
        inflight=set(), expect=deque(), unnamed_owner=None, carry=b"", skip=0, closed=False,
        counted=True, pinned=False, unsynced=False, copy_syncs=0, general=False, reply=b"",
        give_back=False, answered=0, owed=0, batch=deque(), ended=0, failed=False, closing=deque(),
    )  # fmt: skip
    pool.idle.append(conn)
    kind = next(iter(PrincipalKind))
    principal = Principal(id="p", name="p", kind=kind, access=Access.READ_ONLY)
    client = TxnClient(principal, CancelKey(1, b"k"), pool, _Transport(), 1.0, lambda *_: None)  # type: ignore[arg-type]
    return client, conn


BIND = _msg(b"B", b"\0P_1\0\0\0\0\x01\0\0\0\x011\0\0")
PREPARE = _msg(b"P", b"P_1\0SELECT $1\0\0\0") + _msg(b"S")
EXECUTE = BIND + _msg(b"D", b"P\0") + _msg(b"E", b"\0\0\0\0\0") + _msg(b"S")


@pytest.mark.parametrize("size", [1, 2, 5, 6, 9, 17, len(EXECUTE) - 1, len(EXECUTE)])
async def test_client_messages_in_any_chunking_reach_the_engine_renamed(size: int) -> None:
    client, conn = _txn_client()
    client.data_received(PREPARE)
    renamed = next(iter(client.statements.values()))[0].encode()
    assert conn.transport.written.startswith(b"P") and renamed in conn.transport.written
    conn.transport.written.clear()
    for start in range(0, len(EXECUTE), size):
        client.data_received(EXECUTE[start : start + size])
    rebound = _msg(b"B", b"\0" + renamed + b"\0\0\0\0\x01\0\0\0\x011\0\0")
    assert bytes(conn.transport.written) == rebound + EXECUTE[len(BIND) :]
    assert conn.pending == 2 and not client.buffer


BIG_BIND = _msg(b"B", b"\0P_1\0\0\0\0\x01" + struct.pack("!i", 600_000) + b"v" * 600_000 + b"\0\0")


@pytest.mark.parametrize("size", [7, 4096, 65536, 300_000, len(BIG_BIND) + 20])
async def test_a_long_bind_passes_on_renamed_in_any_chunking(size: int) -> None:
    """A Bind longer than the port holds before passing it on: its first bytes carry the
    statement's engine-side name (and the length that name makes), the rest goes on as
    it comes, and the messages after it are read as before."""
    client, conn = _txn_client()
    client.data_received(PREPARE)
    renamed = next(iter(client.statements.values()))[0].encode()
    conn.transport.written.clear()
    stream = BIG_BIND + EXECUTE[len(BIND) :]
    for start in range(0, len(stream), size):
        client.data_received(stream[start : start + size])
    rebound = _msg(b"B", b"\0" + renamed + BIG_BIND[9:])
    assert bytes(conn.transport.written) == rebound + EXECUTE[len(BIND) :]
    assert conn.pending == 2 and conn.unsynced is False and client.passing == 0


async def test_long_copy_data_keeps_the_connection_until_whole() -> None:
    """CopyData passed on as it comes counts one more ReadyForQuery owed until it is
    whole: one that comes meanwhile (of a Query before it) does not park the connection."""
    client, conn = _txn_client()
    data = _msg(b"d", b"x" * 600_000)
    client.data_received(_msg(b"Q", b"SELECT 1\0") + data[:100_000])
    assert conn.pending == 2 and client.passing == len(data) - 100_000
    _ServerSide(conn).data_received(_msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"I"))
    assert conn.client is client and conn.pending == 1
    client.data_received(data[100_000:] + _msg(b"Q", b"SELECT 2\0"))
    assert conn.pending == 1 and client.passing == 0
    assert bytes(conn.transport.written).endswith(data + _msg(b"Q", b"SELECT 2\0"))


@pytest.mark.parametrize("size", [1, 5, 6, 7, 40, len(PLAIN_STREAM), 4096])
def test_replies_owed_after_the_last_sync_keep_the_connection(size: int) -> None:
    """The client sent Parse/Bind/Execute after its last Sync: the ReadyForQuery of that
    Sync does not release, and the later replies reach the same client."""
    client = _Client()
    conn = _conn(client, [], pending=1)
    conn.unsynced = True
    later = b"".join(PLAIN[:3])  # the unsynced batch's rows, before its own Sync
    stream = PLAIN_STREAM + later
    side = _ServerSide(conn)
    for start in range(0, len(stream), size):
        side.data_received(stream[start : start + size])
    assert bytes(client.received) == stream and client.parked == 0
    conn.pending, conn.unsynced = 1, False  # the client's Sync went to this connection
    side.data_received(_msg(b"Z", b"I"))
    assert client.parked == 1


@pytest.mark.parametrize("cut", [1, 3, 5, 6, 9])
def test_a_partial_message_after_the_releasing_ready_keeps_the_framing(cut: int) -> None:
    client = _Client()
    conn = _conn(client, [], pending=1)
    notice = _msg(b"N", b"SNOTICE\0Mhello\0\0")
    side = _ServerSide(conn)
    side.data_received(PLAIN_STREAM + notice[:cut])
    assert bytes(client.received) == PLAIN_STREAM and client.parked == 1
    side.data_received(notice[cut:])
    assert conn.carry == b"" and conn.skip == 0
    # The next client's reply is read from its first byte.
    second = _Client()
    conn.client, second.conn, conn.pending = second, conn, 1
    side.data_received(PLAIN_STREAM)
    assert bytes(second.received) == PLAIN_STREAM and second.parked == 1


async def test_client_batches_mark_the_connection_unsynced_until_their_sync() -> None:
    client, conn = _txn_client()
    client.data_received(_msg(b"P", b"\0SELECT 1\0\0\0") + _msg(b"S"))
    assert conn.pending == 1 and not conn.unsynced
    client.data_received(_msg(b"P", b"\0SELECT 2\0\0\0") + BIND)
    assert conn.unsynced
    client.data_received(_msg(b"H"))
    assert conn.unsynced and conn.pending == 1
    client.data_received(_msg(b"S"))
    assert conn.pending == 2 and not conn.unsynced
    client.data_received(_msg(b"H"))
    assert not conn.unsynced
    client.data_received(_msg(b"Q", b"SELECT 3\0"))
    assert conn.pending == 3 and not conn.unsynced


def test_usual_first_words_are_never_notable() -> None:
    from heliosdb.interfaces.postgres.pooling import _NOTABLE_START, _USUAL_STARTS

    for word in _USUAL_STARTS:
        assert _NOTABLE_START.match(word + b" x") is None
        assert _NOTABLE_START.match(word + b"\0") is None


@pytest.mark.parametrize("size", [3, 6, 11, 4096])
def test_ready_for_query_bytes_inside_a_row_are_not_a_ready_for_query(size: int) -> None:
    """A binary column holding exactly a ReadyForQuery's bytes: forwarded as data, and the
    connection is released only at the real ReadyForQuery."""
    client = _Client()
    conn = _conn(client, [], pending=1)
    fake = _msg(b"Z", b"I")
    row = _msg(b"D", b"\0\x01" + struct.pack("!i", len(fake)) + fake)
    stream = row + row + _msg(b"C", b"SELECT 2\0") + _msg(b"Z", b"I")
    side = _ServerSide(conn)
    for start in range(0, len(stream) - 6, size):
        side.data_received(stream[start : min(start + size, len(stream) - 6)])
    assert client.parked == 0 and conn.pending == 1
    side.data_received(stream[-6:])
    assert bytes(client.received) == stream and client.parked == 1 and conn.pending == 0


async def test_messages_during_a_borrow_wait_for_its_connection() -> None:
    """A client whose first messages wait for a connection being opened: an idle one that
    appears meanwhile is not taken as a second connection; the messages stay in order."""
    client, conn = _txn_client()
    client.pool.idle.clear()
    client.acquiring = True  # a borrow is under way
    query = _msg(b"Q", b"SELECT 1\0")
    client.pool.idle.append(conn)  # another client's connection comes back meanwhile
    client.data_received(query)
    client.data_received(PREPARE)
    assert client.server is None and conn.client is None and not conn.transport.written
    assert bytes(client.buffer) == query + PREPARE
    assert client.pool.idle == [conn]


async def test_syncs_sent_during_an_extended_copy_in_expect_no_ready_for_query() -> None:
    """libpq sends Sync after Execute and again after CopyDone; the engine ignores the
    first (it arrives in COPY FROM STDIN) and answers only the second."""
    client, conn = _txn_client()
    copy = (
        _msg(b"P", b"\0COPY t FROM STDIN\0\0\0")
        + _msg(b"B", b"\0\0" + b"\0\0" * 3)
        + _msg(b"E", b"\0\0\0\0\0")
    )
    client.data_received(copy + _msg(b"S"))
    assert conn.pending == 1
    client.data_received(_msg(b"d", b"1\n") + _msg(b"c") + _msg(b"S"))
    assert conn.pending == 1  # one ReadyForQuery to come
    client.data_received(_msg(b"Q", b"COPY t FROM STDIN\0"))  # a simple-query COPY
    client.data_received(_msg(b"d", b"2\n") + _msg(b"c"))
    assert conn.pending == 2


@given(st.text(alphabet="aAdDvViIsSoOrRyY_lLcCkK x;", max_size=40))
def test_advisory_lock_search_matches_a_caseless_search(text: str) -> None:
    """The underscore-anchored search finds exactly what an IGNORECASE one finds."""
    import re

    from heliosdb.interfaces.postgres.pooling import _ADVISORY_LOCK

    for candidate in (text, "pg_" + text, text + "advisory_lock", "SELECT pg_" + text + "(1)"):
        data = candidate.encode()
        expected = re.search(rb"advisory_lock", data, re.IGNORECASE) is not None
        assert (_ADVISORY_LOCK(data) is not None) is expected


QUERY = _msg(b"Q", b"SELECT 1\0")


async def test_a_parked_connection_is_resumed_by_its_client_and_taken_only_from_a_full_pool() -> (
    None
):
    """Affinity: at ReadyForQuery 'I' the connection stays attached to its client (parked,
    serving no one); the client's next Query resumes it. Another client takes it only when
    the pool is full, and the owner then no longer holds it."""
    client, conn = _txn_client()
    side = _ServerSide(conn)
    client.data_received(QUERY)
    side.data_received(PLAIN_STREAM)
    assert client.server is conn and conn.owner is client and conn.client is None
    assert client.pool.idle == []  # not given back: still the client's
    client.data_received(QUERY)
    assert (conn.client, conn.pending) == (client, 1)  # resumed
    side.data_received(PLAIN_STREAM)
    other, _ = _txn_client()
    other.pool = client.pool
    assert client.pool.take_idle() is None  # room in the pool: open a new one instead
    client.pool.size = client.pool.max_size
    other.data_received(QUERY)
    assert other.server is conn and conn.client is other and conn.owner is other
    assert client.server is None
    assert bytes(conn.transport.written) == QUERY * 3


async def test_a_pinned_or_busy_connection_is_never_taken() -> None:
    client, conn = _txn_client()
    client.pool.size = client.pool.max_size
    client.data_received(QUERY)  # busy: its reply is owed
    assert client.pool.take_idle() is None
    _ServerSide(conn).data_received(PLAIN_STREAM)
    client.data_received(_msg(b"Q", b"SET TimeZone = 'UTC'\0"))
    _ServerSide(conn).data_received(PLAIN_STREAM)
    assert conn.pinned and conn.client is client
    assert client.pool.take_idle() is None


async def test_parking_with_a_client_waiting_hands_the_connection_over() -> None:
    client, conn = _txn_client()
    client.data_received(QUERY)
    waiter = asyncio.get_running_loop().create_future()
    client.pool.waiters.append(waiter)
    _ServerSide(conn).data_received(PLAIN_STREAM)
    assert waiter.result() is conn and client.server is None and conn.owner is None


async def test_parking_a_connection_holding_too_many_statements_closes_it() -> None:
    from heliosdb.interfaces.postgres.pooling import MAX_PREPARED_PER_CONNECTION

    client, conn = _txn_client()
    client.data_received(QUERY)
    for i in range(MAX_PREPARED_PER_CONNECTION + 1):  # Parses the client sent before
        conn.expect_parse(False, f"hdb_{i}")
    reply = _msg(b"1") * (MAX_PREPARED_PER_CONNECTION + 1) + PLAIN_STREAM
    _ServerSide(conn).data_received(reply)
    assert client.transport.written == reply  # the reply first, whole
    assert client.server is None and conn.owner is None and conn.transport.closed


async def test_a_connection_back_under_the_statement_limit_stays_with_its_client() -> None:
    from heliosdb.interfaces.postgres.pooling import MAX_PREPARED_PER_CONNECTION

    client, conn = _txn_client()
    side = _ServerSide(conn)
    over = MAX_PREPARED_PER_CONNECTION + 1
    client.data_received(_msg(b"Q", b"BEGIN\0"))
    side.data_received(_msg(b"C", b"BEGIN\0") + _msg(b"Z", b"T"))
    parses = b"".join(_msg(b"P", b"s%d\0SELECT 1\0\0\0" % i) for i in range(over))
    client.data_received(parses + _msg(b"S"))
    side.data_received(_msg(b"1") * over + _msg(b"Z", b"T"))
    assert len(conn.prepared) == over
    client.data_received(_msg(b"C", b"Ss0\0") + _msg(b"S"))  # Close one of them
    side.data_received(_msg(b"3") + _msg(b"Z", b"T"))
    client.data_received(_msg(b"Q", b"COMMIT\0"))
    side.data_received(_msg(b"C", b"COMMIT\0") + _msg(b"Z", b"I"))
    assert client.server is conn and conn.client is None  # parked, still its own


async def test_a_parked_connection_that_closes_leaves_its_client_connected() -> None:
    client, conn = _txn_client()
    client.data_received(QUERY)
    side = _ServerSide(conn)
    side.data_received(PLAIN_STREAM)
    client.transport.close = lambda: pytest.fail("client closed")
    side.connection_lost(None)
    assert client.server is None and conn.owner is None and conn not in client.pool.members


async def test_a_client_leaving_gives_its_parked_connection_back() -> None:
    client, conn = _txn_client()
    client.data_received(QUERY)
    _ServerSide(conn).data_received(PLAIN_STREAM)
    client.connection_lost(None)
    assert client.pool.idle == [conn] and conn.owner is None and not conn.closed


def test_one_owed_reply_holding_ready_for_query_bytes_arrives_whole_and_parks_once() -> None:
    """The fast path does not search for ReadyForQuery bytes before the last message when
    exactly one is owed: rows holding those bytes change nothing."""
    client = _Client()
    conn = _conn(client, [], pending=1)
    fake = _msg(b"Z", b"I")
    row = _msg(b"D", b"\0\x01" + struct.pack("!i", len(fake)) + fake)
    stream = _msg(b"T", b"\0\x01" + b"x" * 20) + row + _msg(b"C", b"SELECT 1\0") + fake
    _ServerSide(conn).data_received(stream)
    assert bytes(client.received) == stream and client.parked == 1 and conn.pending == 0


@pytest.mark.parametrize("cut", range(1, len(PLAIN)))
def test_a_reply_cut_at_a_message_boundary_is_forwarded_whole_and_parks_once(cut: int) -> None:
    """Whole messages without the ReadyForQuery (rows of a longer reply), then the rest:
    both chunks take the fast path's two walks, as a general scan would."""
    client = _Client()
    conn = _conn(client, [], pending=1)
    side = _ServerSide(conn)
    side.data_received(b"".join(PLAIN[:cut]))
    assert client.parked == 0 and conn.pending == 1
    side.data_received(b"".join(PLAIN[cut:]))
    assert bytes(client.received) == PLAIN_STREAM and client.parked == 1
    assert conn.pending == 0 and conn.carry == b"" and conn.skip == 0


async def test_a_connection_its_slow_client_paused_reads_again_for_the_next() -> None:
    """A client that does not read its replies pauses its engine connection's reading; the
    connection reads again for whoever takes it next (else that client would wait forever)."""
    client, conn = _txn_client()
    client.pool.size = client.pool.max_size
    client.data_received(QUERY)
    client.pause_writing()  # the client's write buffer is full
    _ServerSide(conn).data_received(PLAIN_STREAM)
    assert not conn.transport.reading and conn.client is None  # parked, still paused
    other, _ = _txn_client()
    other.pool = client.pool
    other.data_received(QUERY)
    assert other.server is conn and conn.transport.reading
    client.resume_writing()  # its connection is gone: nothing to resume
    _ServerSide(conn).data_received(PLAIN_STREAM)
    other.connection_lost(None)  # leaves it parked: back to the pool, reading
    assert client.pool.idle == [conn] and conn.transport.reading


# The chunk libpq sends for a prepared statement (pgbench -M prepared): Bind to the
# unnamed portal, Describe it, Execute, Sync.
def _bind(statement: bytes, portal: bytes = b"", value: bytes = b"1") -> bytes:
    params = b"\0\0\0\x01" + struct.pack("!i", len(value)) + value
    return _msg(b"B", portal + b"\0" + statement + b"\0\0\0" + params + b"\0\0")


DESCRIBE_EXECUTE_SYNC = _msg(b"D", b"P\0") + _msg(b"E", b"\0\0\0\0\0") + _msg(b"S")
UNNAMED_PARSE = _msg(b"P", b"\0SELECT $1\0\0\0") + _msg(b"S")
BOUND_CHUNKS = {
    "usual": _bind(b"P_1") + DESCRIBE_EXECUTE_SYNC,
    "the tail in the value": _bind(b"P_1", value=DESCRIBE_EXECUTE_SYNC) + DESCRIBE_EXECUTE_SYNC,
    "named portal": _bind(b"P_1", portal=b"c1")
    + _msg(b"D", b"Pc1\0")
    + _msg(b"E", b"c1\0\0\0\0\0")
    + _msg(b"S"),
    "unnamed statement": _bind(b"") + DESCRIBE_EXECUTE_SYNC,
    "unknown statement": _bind(b"P_9") + DESCRIBE_EXECUTE_SYNC,
    "row limit": _bind(b"P_1") + _msg(b"D", b"P\0") + _msg(b"E", b"\0\0\0\0\x0a") + _msg(b"S"),
    "no Describe": _bind(b"P_1") + _msg(b"E", b"\0\0\0\0\0") + _msg(b"S"),
    "a Flush after": _bind(b"P_1") + DESCRIBE_EXECUTE_SYNC + _msg(b"H"),
    "cut short": (_bind(b"P_1") + DESCRIBE_EXECUTE_SYNC)[:-1],
    "Bind alone": _bind(b"P_1"),
}


FAST_VALUES = {"usual": b"1", "the tail in the value": DESCRIBE_EXECUTE_SYNC}


async def _bound_client(state: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """A client that prepared P_1 (engine-side names from the same counter every time) and
    an unnamed statement; ``state``: P_1 answered, or still in flight, or the client's
    parked connection taken by another (it must borrow again)."""
    import itertools

    from heliosdb.interfaces.postgres import pooling

    monkeypatch.setattr(pooling, "_statement_names", itertools.count(100))
    client, conn = _txn_client()
    client.data_received(PREPARE + UNNAMED_PARSE)
    if state != "in flight":
        _ServerSide(conn).data_received(
            _msg(b"1") + _msg(b"Z", b"I") + _msg(b"1") + _msg(b"Z", b"I")
        )
        assert conn.client is None and conn.pending == 0  # parked
    if state == "taken":
        conn.pool.steal()
        conn.pool.idle.append(conn)
    conn.transport.written.clear()
    return client, conn


def _state(client: Any, conn: Any) -> tuple[Any, ...]:
    return (
        bytes(conn.transport.written), bytes(client.buffer), client.server is conn,
        conn.client is client, conn.owner is client, conn.pending, conn.unsynced,
        conn.copy_syncs, list(conn.expect), set(conn.inflight), set(conn.prepared),
        conn.unnamed_owner == (client.id, client.unnamed_seq),
    )  # fmt: skip


@pytest.mark.parametrize("state", ["prepared", "in flight", "taken"])
@pytest.mark.parametrize("chunk", list(BOUND_CHUNKS))
async def test_bind_fast_path_leaves_what_the_general_path_leaves(
    chunk: str, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Bind chunk through data_received (which may take the Bind fast path) sends the
    engine the same bytes and leaves the connection as the general loop (pump) does."""
    data = BOUND_CHUNKS[chunk]
    fast, fast_conn = await _bound_client(state, monkeypatch)
    general, general_conn = await _bound_client(state, monkeypatch)
    pumped: list[bytes | None] = []
    original_pump = fast.pump

    def pump(chunk: bytes | None = None) -> None:
        pumped.append(chunk)
        original_pump(chunk)

    fast.pump = pump
    fast.data_received(data)
    general.pump(data)
    assert _state(fast, fast_conn) == _state(general, general_conn)
    took_fast_path = not pumped
    assert took_fast_path == (chunk in FAST_VALUES and state == "prepared")
    if took_fast_path:  # the statement's engine-side name went out, the rest unchanged
        renamed = fast.statements[b"P_1"][2]
        expected = _bind(renamed, value=FAST_VALUES[chunk]) + DESCRIBE_EXECUTE_SYNC
        assert bytes(fast_conn.transport.written) == expected


# What a client may send (statements P_1 and P_2, the unnamed one) and what the engine
# may answer, as far as statement bookkeeping goes: a ParseComplete, or a ReadyForQuery
# inside a transaction (the connection stays with the client).
_CLIENT_STEPS = {
    "parse P_1": PREPARE,
    "parse P_2": _msg(b"P", b"P_2\0SELECT 2\0\0\0") + _msg(b"S"),
    "parse unnamed": UNNAMED_PARSE,
    "bind P_1": _bind(b"P_1") + DESCRIBE_EXECUTE_SYNC,
    "bind P_2": _bind(b"P_2") + DESCRIBE_EXECUTE_SYNC,
    "bind unnamed": _bind(b"") + DESCRIBE_EXECUTE_SYNC,
    "describe P_2": _msg(b"D", b"SP_2\0") + _msg(b"S"),
    "close P_1": _msg(b"C", b"SP_1\0") + _msg(b"S"),
    "query": _msg(b"Q", b"SELECT 1\0"),
}
_ENGINE_STEPS = {"parse complete": _msg(b"1"), "ready in a transaction": _msg(b"Z", b"T")}


@given(st.lists(st.sampled_from(sorted(_CLIENT_STEPS) + sorted(_ENGINE_STEPS)), max_size=12))
def test_every_statement_in_flight_has_its_parse_complete_expected(steps: list[str]) -> None:
    """The reply's fast path (taken only when no ParseComplete is expected) does not look
    at the statements in flight: each of them has its entry in ``expect`` until its
    ParseComplete or a ReadyForQuery takes both away."""

    async def run() -> None:
        client, conn = _txn_client()
        for step in steps:
            if step in _CLIENT_STEPS:
                client.data_received(_CLIENT_STEPS[step])
            else:
                _ServerSide(conn).data_received(_ENGINE_STEPS[step])
            assert conn.inflight <= {entry[1] for entry in conn.expect}

    asyncio.run(run())


def _kinds(data: bytes) -> list[bytes]:
    kinds, pos = [], 0
    while pos < len(data):
        kinds.append(data[pos : pos + 1])
        pos += 1 + struct.unpack_from("!i", data, pos + 1)[0]
    return kinds


def _fresh(data: bytes) -> bytes:
    """A new bytes object of ``data`` (as each read makes): no hash cached on it."""
    return bytes(bytearray(data))


def test_a_reply_seen_before_is_known_without_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole reply the fast path walked once (whole messages, one ReadyForQuery and that
    one last) is remembered: the same bytes again are forwarded and park without a walk
    over their message lengths."""
    from heliosdb.interfaces.postgres import pooling

    reply = _msg(b"T", b"\0\x01seen\0") + _msg(b"D", b"\0\x01\0\0\0\x010") + PLAIN[2] + PLAIN[3]
    first = _Client()
    _ServerSide(_conn(first, [], pending=1)).data_received(_fresh(reply))
    assert first.parked == 1

    def walk(*_: object) -> tuple[int]:
        raise AssertionError("walked a reply seen before")

    monkeypatch.setattr(pooling, "_length", walk)
    client = _Client()
    conn = _conn(client, [], pending=1)
    _ServerSide(conn).data_received(_fresh(reply))
    assert bytes(client.received) == reply and client.parked == 1 and conn.pending == 0


def test_remembered_replies_are_bounded() -> None:
    from heliosdb.interfaces.postgres import pooling

    for n in range(pooling._PLAIN_REPLIES + 10):
        client = _Client()
        tag = b"SELECT %d\0" % n
        _ServerSide(_conn(client, [], pending=1)).data_received(_msg(b"C", tag) + _msg(b"Z", b"I"))
        assert client.parked == 1
    assert 0 < len(pooling._plain_replies) <= pooling._PLAIN_REPLIES
    long = _msg(b"D", b"x" * pooling._PLAIN_REPLY_BYTES) + _msg(b"Z", b"I")
    _ServerSide(_conn(_Client(), [], pending=1)).data_received(long)
    assert long not in pooling._plain_replies


# Engine messages before a reply's closing ReadyForQuery: bodies that may hold a
# ReadyForQuery's bytes (a row can hold anything), and ReadyForQuery itself (pipelines).
_BODIES = st.sampled_from(
    [b"", b"x", b"SELECT 1\0", b"Z\0\0\0\x05I", b"\0\x01\0\0\0\x06Z\0\0\0\x05T"]
)
_INNER = st.one_of(
    st.tuples(st.sampled_from([b"T", b"D", b"C", b"N", b"S", b"E", b"1", b"2", b"n"]), _BODIES),
    st.tuples(st.just(b"Z"), st.sampled_from([b"I", b"T"])),
)
_REPLIES = st.lists(
    st.tuples(st.lists(_INNER, max_size=4), st.sampled_from([b"I", b"T", b"E"])),
    min_size=1,
    max_size=3,
)


@given(
    _REPLIES,
    st.integers(min_value=1, max_value=3),
    st.booleans(),
    st.booleans(),
    st.integers(min_value=1, max_value=3),
)
def test_replies_seen_before_or_not_end_as_the_general_scan_ends_them(
    replies: list[tuple[list[tuple[bytes, bytes]], bytes]],
    extra: int,
    pinned: bool,
    unsynced: bool,
    times: int,
) -> None:
    """Each reply (its messages and a closing ReadyForQuery, maybe pipelined ones before)
    arriving in one chunk, again and again (remembered after the first time, or never when
    it holds ReadyForQuery bytes before its end), with more replies owed or not: the fast
    paths forward, count and park exactly as the general scan does with the same chunks."""
    chunks = [
        b"".join(_msg(kind, body) for kind, body in inner) + _msg(b"Z", status)
        for inner, status in replies
    ] * times
    owed = sum(_kinds(chunk).count(b"Z") for chunk in chunks) + extra - 1
    client = _Client()
    conn = _conn(client, [], pending=owed)
    conn.pinned, conn.unsynced = pinned, unsynced
    side = _ServerSide(conn)
    general = _conn(None, [], pending=owed)  # type: ignore[arg-type]
    general.pinned, general.unsynced = pinned, unsynced
    general_side = _ServerSide(general)
    for chunk in chunks:
        parked = client.parked
        side.data_received(_fresh(chunk))
        out, rest = general_side._scan(_fresh(chunk))
        assert out == chunk and bytes(client.received).endswith(chunk)
        assert client.parked - parked == (rest is not None), chunk
        assert conn.pending == general.pending
        if client.parked > parked:
            conn.client = client  # the client's next transaction resumes it
    assert not conn.carry and not conn.skip


async def test_a_query_shape_proves_the_chunk_one_whole_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Query of a shape remembered plain (the same text with other digits) is forwarded
    as it came without reading its length: the shape has the same length bytes."""
    from heliosdb.interfaces.postgres import pooling

    client, conn = _txn_client()
    client.data_received(_msg(b"Q", b"SELECT abalance FROM pgbench_accounts WHERE aid = 123456;\0"))

    def unpack(*_: object) -> tuple[int]:
        raise AssertionError("read the length of a Query of a remembered shape")

    monkeypatch.setattr(pooling, "_unpack", unpack)
    query = _msg(b"Q", b"SELECT abalance FROM pgbench_accounts WHERE aid = 987654;\0")
    conn.transport.written.clear()
    client.data_received(query)
    assert bytes(conn.transport.written) == query and conn.pending == 2


async def test_a_chunk_shaped_like_a_query_whose_length_byte_is_a_digit_waits_for_the_rest() -> (
    None
):
    """A Query whose length byte is an ASCII digit is not remembered by shape: a chunk of
    that shape whose length byte is another digit (one byte more, not all there yet) is
    buffered, not forwarded as if whole."""
    text = b"SELECT 1 FROM t0" + b" " * 32 + b"\0"
    first = _msg(b"Q", text)
    assert first[4] == 0x35  # "5": the length byte is a digit
    longer = b"Q\0\0\0\x36" + text.replace(b"0", b"7") + b"\0"  # same shape, one byte more
    client, conn = _txn_client()
    client.data_received(first)
    client.data_received(longer[:-1])
    assert bytes(conn.transport.written) == first and conn.pending == 1
    client.data_received(longer[-1:])
    assert bytes(conn.transport.written) == first + longer and conn.pending == 2


@given(
    st.lists(st.sampled_from(["reply", "row holding a reply", "row"]), min_size=1, max_size=6),
    st.sets(st.integers(min_value=1, max_value=200), max_size=6),
)
def test_a_reply_seen_before_inside_another_message_is_not_taken_for_one(
    pieces: list[str], cuts: set[int]
) -> None:
    """The connection's last reply compared whole (its fast path) only from a message
    boundary: the same bytes inside a row, arriving as a chunk of their own after the
    row's header, are forwarded as the row's and neither answer a Query nor park. The
    stream (every reply owed) in chunks cut there and anywhere else: forwarded, counted
    and parked exactly as the general scan does."""
    reply = _msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"I")
    parts = {"reply": reply, "row holding a reply": _msg(b"D", reply), "row": _msg(b"D", b"xy")}
    stream, edges = b"", set()
    for piece in pieces:
        if piece == "row holding a reply":  # a chunk of exactly the reply's bytes
            edges |= {len(stream) + 5, len(stream) + 5 + len(reply)}
        stream += parts[piece]
    stream += reply
    edges |= {cut for cut in cuts if cut < len(stream)}
    bounds = [0, *sorted(edges), len(stream)]
    owed = _kinds(stream).count(b"Z")
    client = _Client()
    conn = _conn(client, [], pending=owed + 2)
    side = _ServerSide(conn)
    for _ in range(2):  # the reply twice, whole: this connection's last, remembered
        side.data_received(_fresh(reply))
    assert conn.reply == reply and conn.pending == owed
    general = _conn(None, [], pending=owed)  # type: ignore[arg-type]
    general_side = _ServerSide(general)
    for start, end in itertools.pairwise(bounds):
        chunk = stream[start:end]
        side.data_received(_fresh(chunk))
        general_side._scan(_fresh(chunk))
        assert conn.pending == general.pending, (start, end)
        assert client.parked == (conn.pending == 0)
    assert bytes(client.received) == reply * 2 + stream
    assert conn.pending == 0 and client.parked == 1


_ERROR = _msg(b"E", b"SERROR\0C42601\0Msyntax error\0\0")


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=3), st.none() | st.integers(0, 3)),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_pipelined_batches_each_keep_their_own_parse_completes(
    batches: list[tuple[int, int | None]], whole: bool
) -> None:
    """Batches of named Parses, each ending in Sync, sent at once before any reply (a
    pipeline). The engine answers each batch in turn: a ParseComplete per Parse up to an
    error (it skips the rest of that batch), then ReadyForQuery. Each batch's ReadyForQuery
    voids only that batch's missing ParseCompletes: afterwards the connection knows exactly
    the statements the engine prepared, and nothing is left expected or in flight."""

    async def run() -> None:
        client, conn = _txn_client()
        sent, replies, prepared = b"", [], set()
        for number, (parses, error_at) in enumerate(batches):
            names = [b"b%dp%d" % (number, i) for i in range(parses)]
            sent += b"".join(_msg(b"P", name + b"\0SELECT 1\0\0\0") for name in names)
            sent += _msg(b"S")
            reply = b""
            for i, name in enumerate(names):
                if i == error_at:
                    reply += _ERROR
                    break
                reply += _msg(b"1")
                prepared.add(name)
            replies.append(reply + _msg(b"Z", b"I"))
        client.data_received(sent)
        side = _ServerSide(conn)
        for chunk in [b"".join(replies)] if whole else replies:
            side.data_received(chunk)
        assert conn.prepared == {client.statements[name][0] for name in prepared}
        assert not conn.expect and not conn.inflight and conn.pending == 0

    asyncio.run(run())


async def test_a_parse_pipelined_behind_a_query_is_known_prepared_after_its_reply() -> None:
    client, conn = _txn_client()
    side = _ServerSide(conn)
    client.data_received(_msg(b"Q", b"SELECT 1\0") + _msg(b"P", b"s1\0SELECT 2\0\0\0") + _msg(b"S"))
    side.data_received(_msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"I"))  # the Query's
    side.data_received(_msg(b"1") + _msg(b"Z", b"I"))  # the Parse's, then the Sync's
    conn.transport.written.clear()
    client.data_received(_bind(b"s1") + DESCRIBE_EXECUTE_SYNC)
    renamed = client.statements[b"s1"][0].encode()
    assert bytes(conn.transport.written) == _bind(renamed) + DESCRIBE_EXECUTE_SYNC  # no Parse


# Extended batches with simple Queries inside them, as a pipelining client may send them,
# and what the engine answers: after an error in an extended message it skips every
# message up to the batch's Sync (Queries too: no ReadyForQuery for them); a Query's own
# error skips nothing.
_BATCH_MESSAGES = {
    "parse": (_msg(b"P", b"\0SELECT 1\0\0\0"), _msg(b"1")),
    "failing parse": (_msg(b"P", b"\0SELEC 1\0\0\0"), _ERROR),
    "bind": (_bind(b""), _msg(b"2")),
    "describe": (_msg(b"D", b"P\0"), _msg(b"n")),
    "close portal": (_msg(b"C", b"P\0"), _msg(b"3")),
    "close statement": (_msg(b"C", b"Sx\0"), _msg(b"3")),
    "execute": (_msg(b"E", b"\0\0\0\0\0"), _msg(b"C", b"SELECT 1\0")),
    "failing execute": (_msg(b"E", b"\0\0\0\0\0"), _ERROR),
    "query": (_msg(b"Q", b"SELECT 1\0"), _msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"T")),
    "failing query": (_msg(b"Q", b"SELECT 1/0\0"), _ERROR + _msg(b"Z", b"I")),
    "flush": (_msg(b"H"), b""),
    "sync": (_msg(b"S"), _msg(b"Z", b"I")),
}


def _engine_answers(steps: list[str]) -> tuple[list[bytes], bool]:
    """The engine's reply to each message of ``steps``, in order; whether a Query ran
    inside a batch (its client is pinned)."""
    skipping, batch, ran, out = False, False, False, []
    for step in steps:
        if step == "sync":
            skipping = batch = False
        reply = b"" if skipping else _BATCH_MESSAGES[step][1]
        out.append(reply)
        skipping = skipping or step in ("failing execute", "failing parse")
        ran = ran or (step == "query" and batch and not skipping)
        batch = batch or step not in ("query", "failing query", "flush", "sync")
    return out, ran


@given(
    st.lists(st.sampled_from(sorted(_BATCH_MESSAGES)), max_size=14),
    st.lists(st.booleans(), min_size=15, max_size=15),
    st.integers(min_value=1, max_value=40),
)
def test_queries_in_a_failed_batch_are_owed_what_the_engine_sends(
    steps: list[str], answer_now: list[bool], cut: int
) -> None:
    """The client's messages one at a time (the engine's replies so far delivered between
    them where ``answer_now`` says, in chunks of ``cut`` bytes), ending with a Sync: the
    client gets every reply, and at the end the connection owes nothing, expects nothing
    and is parked, or pinned if a Query ran inside a batch."""
    steps = [*steps, "sync"]
    answers, pinned = _engine_answers(steps)

    async def run() -> None:
        client, conn = _txn_client()
        side, delivered = _ServerSide(conn), 0
        for i, step in enumerate(steps):
            client.data_received(_BATCH_MESSAGES[step][0])
            if answer_now[i] or i == len(steps) - 1:
                assert conn.client is client, (i, step)  # not parked before the last reply
                reply = b"".join(answers[delivered : i + 1])
                for start in range(0, len(reply), cut):
                    side.data_received(reply[start : start + cut])
                delivered = i + 1
        assert bytes(client.transport.written).endswith(b"".join(answers))
        assert conn.pending == 0 and not conn.batch and not conn.expect and not conn.unsynced
        assert not conn.closing and not conn.failed and conn.pinned == pinned
        assert (conn.client is None) != pinned and conn.owner is client  # parked

    asyncio.run(run())


@pytest.mark.parametrize("skipped", [True, False])
async def test_a_close_the_engine_skipped_leaves_the_statement_prepared(skipped: bool) -> None:
    """A statement's Close behind a failing Execute: when the engine skips it (error, then
    the Sync's ReadyForQuery) the client and the connection still have the statement, and
    the next Bind goes out without its Parse; when the engine closes it, it is gone."""
    client, conn = _txn_client()
    side = _ServerSide(conn)
    client.data_received(PREPARE)
    side.data_received(_msg(b"1") + _msg(b"Z", b"I"))
    renamed = client.statements[b"P_1"][0]
    client.data_received(_msg(b"E", b"\0\0\0\0\0") + _msg(b"C", b"SP_1\0") + _msg(b"S"))
    side.data_received(
        (_ERROR if skipped else _msg(b"C", b"SELECT 1\0") + _msg(b"3")) + _msg(b"Z", b"I")
    )
    assert (b"P_1" in client.statements) == skipped == (renamed in conn.prepared)
    assert not conn.closing and conn.pending == 0
