"""engine/pipeline.py's protocol side, fed engine bytes by hand (sans engine)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import asyncpg
import pytest

from heliosdb.engine.pipeline import (
    DECODERS,
    Pipeline,
    Pipelines,
    Prepared,
    Skipped,
    Unfit,
    decode_rows,
)
from heliosdb.engine.roles import Access
from heliosdb.engine.rowcap import TooManyBytes, TooManyRows
from tests.unit.recording import RecordingTransport


def _msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _row(*values: bytes | None) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        body += b"\xff\xff\xff\xff" if value is None else struct.pack("!i", len(value)) + value
    return _msg(b"D", body)


def _pipeline(timeout: float = 30.0) -> tuple[Pipeline, RecordingTransport]:
    pipeline = Pipeline(asyncio.get_running_loop(), timeout)
    transport = RecordingTransport()
    pipeline.connection_made(transport)
    return pipeline, transport


async def test_answers_come_back_in_order_whatever_the_reads() -> None:
    pipeline, transport = _pipeline()
    prepared = Prepared(b"s1", (20,), ("n:20",))
    first = pipeline.run(prepared, [struct.pack("!q", 1)])
    second = pipeline.run(prepared, [None])
    third = pipeline.run(prepared, [struct.pack("!q", 3)])
    await asyncio.sleep(0)
    assert len(transport.writes) == 1  # the three statements in one write
    error = _msg(b"E", b"SERROR\0C22012\0Mdivision by zero\0\0")
    stream = (
        _msg(b"2")
        + _row(struct.pack("!q", 1))
        + _msg(b"C", b"SELECT 1\0")
        + _msg(b"Z", b"I")
        + _msg(b"2")
        + _msg(b"C", b"SELECT 0\0")
        + _msg(b"Z", b"I")
        + error
        + _msg(b"Z", b"I")
    )
    for i in range(0, len(stream), 3):  # split anywhere
        pipeline.data_received(stream[i : i + 3])
    rows, tag = await first
    assert decode_rows(rows, [DECODERS[20]]) == [[1]] and tag == b"SELECT 1"
    assert await second == ([], b"SELECT 0")
    with pytest.raises(asyncpg.DivisionByZeroError, match="division by zero"):
        await third


async def test_a_statement_past_the_timeout_fails_all_and_drops_the_connection() -> None:
    pipeline, transport = _pipeline(timeout=0.05)
    cancelled: list[bool] = []
    pipeline.on_timeout = lambda: cancelled.append(True)
    prepared = Prepared(b"s1", (), ())
    futures = [pipeline.run(prepared, []) for _ in range(3)]
    for future in futures:
        with pytest.raises(TimeoutError):
            await future
    assert transport.aborted and cancelled == [True] and pipeline.closed
    with pytest.raises(Unfit):
        pipeline.run(prepared, [])  # nothing is sent on a closed pipeline


async def test_a_result_past_its_cap_fails_and_drops_the_connection() -> None:
    """No Execute row limit (it would keep the engine from planning parallel workers):
    rows are counted at the end of each read. A statement answered whole past its cap
    fails alone; one still running past it drops the connection, so no cancel request
    can reach the statement queued behind it (nothing of that one ran)."""
    pipeline, transport = _pipeline()
    prepared = Prepared(b"s1", (20,), ("n:20",))
    at_cap, whole, capped, behind = (
        pipeline.run(prepared, [struct.pack("!q", n)], cap=2) for n in (2, 3, 10**8, 1)
    )
    await asyncio.sleep(0)
    assert transport.writes[0].count(b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00") == 4
    one = _row(struct.pack("!q", 1))
    end = _msg(b"C", b"SELECT 2\0") + _msg(b"Z", b"I")
    pipeline.data_received(_msg(b"2") + one + one + end + _msg(b"2") + one + one + one + end)
    assert await at_cap == ([one[5:], one[5:]], b"SELECT 2")
    with pytest.raises(TooManyRows):
        await whole
    pipeline.data_received(_msg(b"2") + one + one)
    assert not transport.aborted
    pipeline.data_received(one[:3])
    assert not transport.aborted  # (a row counts once it is whole)
    pipeline.data_received(one[3:])
    with pytest.raises(TooManyRows):
        await capped
    with pytest.raises(Unfit):
        await behind
    assert transport.aborted and pipeline.closed


async def test_a_result_past_its_byte_cap_fails_at_the_header_of_the_row_past_it() -> None:
    """DataRow bytes are counted as rows are (two 15-byte rows fit in 30): a row whose header
    says it would take the result past the cap fails the statement and drops the
    connection before its bytes arrive."""
    pipeline, transport = _pipeline()
    prepared = Prepared(b"s1", (25,), ("t:25",))
    at_cap, whole, huge, behind = (
        pipeline.run(prepared, [b"x"], cap=100, max_bytes=30) for _ in range(4)
    )
    await asyncio.sleep(0)
    one = _row(b"1234")  # 15 bytes
    end = _msg(b"C", b"SELECT 2\0") + _msg(b"Z", b"I")
    pipeline.data_received(_msg(b"2") + one + one + end + _msg(b"2") + one + one + one + end)
    assert await at_cap == ([one[5:], one[5:]], b"SELECT 2")
    with pytest.raises(TooManyBytes):
        await whole
    pipeline.data_received(_msg(b"2") + one)
    assert not transport.aborted
    pipeline.data_received(b"D" + struct.pack("!ihi", 10**9, 1, 10**9 - 10) + b"x" * 100)
    with pytest.raises(TooManyBytes):
        await huge
    with pytest.raises(Unfit):
        await behind
    assert transport.aborted and pipeline.closed


async def test_a_long_row_is_gathered_in_its_chunks_and_joined_once() -> None:
    """A row arriving over many reads: before, each read was appended to the buffer
    (a copy of all so far: a 100 MB row cost 9.5 s of CPU); now its chunks are kept as
    they come and joined when it is whole."""
    pipeline, _ = _pipeline()
    prepared = Prepared(b"s1", (25,), ("t:25",))
    future = pipeline.run(prepared, [b"x"])
    await asyncio.sleep(0)
    long = b"w" * 1_000_000
    stream = (_msg(b"2") + _row(b"a") + _row(long) + _row(b"b") + _msg(b"C", b"SELECT 3\0")) + _msg(
        b"Z", b"I"
    )
    reads = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    for n, read in enumerate(reads[:500]):  # the row's header came in the first
        pipeline.data_received(read)
        assert pipeline._buffer == b"" and len(pipeline._gathered) == n + 1
    for read in reads[500:]:
        pipeline.data_received(read)
    rows, tag = await future
    assert decode_rows(rows, [DECODERS[25]]) == [["a"], [long.decode()], ["b"]]
    assert tag == b"SELECT 3" and not pipeline._gathered and not pipeline._missing


async def test_a_closed_pipeline_retires_its_sibling_after_what_it_holds() -> None:
    """One of an owner's pipelines closed (capped, lost, timed out): new ones open on the
    next request, and the other finishes the statements it holds before it closes."""
    settings = type("S", (), {"query_timeout": 30.0})()
    pipelines = Pipelines(type("E", (), {"settings": settings})(), {})  # type: ignore[arg-type]
    key = (Access.READ_WRITE, "p1")
    (closed, _), (busy, transport) = _pipeline(), _pipeline()
    pipelines._open[key] = [closed, busy]
    future = busy.run(Prepared(b"s1", (), ()), [])
    closed.close()
    pipelines._opening.add(key)  # (no engine here to open new ones)
    assert pipelines.pick(*key) is None and key not in pipelines._open
    assert busy.retiring and not transport.aborted
    busy.data_received(_msg(b"2") + _msg(b"C", b"SELECT 0\0") + _msg(b"Z", b"I"))
    assert await future == ([], b"SELECT 0")
    assert busy.closed and transport.aborted


async def test_a_lost_connection_fails_what_is_queued() -> None:
    pipeline, _ = _pipeline()
    future = pipeline.run(Prepared(b"s1", (), ()), [])
    pipeline.connection_lost(None)
    with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
        await future


async def test_a_fatal_error_with_nothing_pending_then_the_close_fails_what_comes() -> None:
    pipeline, _ = _pipeline()
    fatal = _msg(b"E", b"SFATAL\0C57P01\0Mterminating connection\0\0")
    pipeline.data_received(fatal)  # idle: nothing to answer, no exception out of the callback
    pipeline.connection_lost(None)
    assert pipeline.closed
    with pytest.raises(Unfit):
        pipeline.run(Prepared(b"s1", (), ()), [])


def test_decoders_give_what_asyncpg_gives() -> None:
    row = _row(
        b"\x01",
        struct.pack("!h", -2),
        struct.pack("!i", 7),
        "é".encode(),
        struct.pack("!f", 1.5),
        struct.pack("!d", float("nan")),
        struct.pack("!q", 0x7FFFFFFFFFFFFFFF),
        struct.pack("!q", -0x8000000000000000),
        struct.pack("!q", 1),
        None,
    )[5:]
    decoders = [DECODERS[oid] for oid in (16, 21, 23, 25, 700, 701, 1184, 1184, 1184, 20)]
    (values,) = decode_rows([row], decoders)
    assert values[:5] == [True, -2, 7, "é", 1.5]
    assert values[5] != values[5]  # NaN
    assert str(values[6]) == "9999-12-31 23:59:59.999999"  # asyncpg: naive, for infinity
    assert str(values[7]) == "0001-01-01 00:00:00"
    assert values[8].isoformat() == "2000-01-01T00:00:00.000001+00:00"
    assert values[9] is None


async def test_a_new_owner_takes_the_place_of_the_least_recently_used_idle_one() -> None:
    settings = type("S", (), {"query_timeout": 30.0})()
    pipelines = Pipelines(type("E", (), {"settings": settings})(), {})  # type: ignore[arg-type]
    keys = [(Access.READ_WRITE, f"p{i}") for i in range(Pipelines.MAX_OWNERS)]
    for key in keys:
        pipelines._open[key] = [_pipeline()[0]]
    for key in keys:
        assert pipelines.pick(*key) is not None  # marks each used, in this order
    busy = pipelines._open[keys[0]][0]
    busy.run(Prepared(b"s1", (), ()), [])  # the least recently used, but not idle
    assert pipelines._room()
    assert keys[0] in pipelines._open and keys[1] not in pipelines._open
    transport = pipelines._open[keys[2]][0].transport
    for key in keys[2:]:
        for pipeline in pipelines._open[key]:
            pipeline.run(Prepared(b"s1", (), ()), [])
    full, _ = _pipeline()
    full.run(Prepared(b"s1", (), ()), [])
    pipelines._open[(Access.READ_ONLY, "p1")] = [full]
    assert not pipelines._room()  # every owner busy: the newcomer takes the pool path
    pipelines.close()
    assert isinstance(transport, RecordingTransport) and transport.aborted
    assert transport.writes[-1] == b"X\x00\x00\x00\x04"  # Terminate before closing


async def test_run_then_answers_from_the_read_callback_as_run_does() -> None:
    """run_then's callback gets what run's future gives, in the same order with run's
    statements, synchronously from data_received; a failed connection calls it too."""
    pipeline, transport = _pipeline()
    prepared = Prepared(b"s1", (20,), ("n:20",))
    got: list[tuple[Any, BaseException | None]] = []
    pipeline.run_then(prepared, [struct.pack("!q", 1)], lambda r, e: got.append((r, e)))
    future = pipeline.run(prepared, [None])
    pipeline.run_then(prepared, [None], lambda r, e: got.append((r, e)))
    pipeline.run_then(prepared, [None], lambda r, e: got.append((r, e)))
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    error = _msg(b"E", b"SERROR\0C22012\0Mdivision by zero\0\0")
    pipeline.data_received(
        _msg(b"2") + _row(struct.pack("!q", 1)) + _msg(b"C", b"SELECT 1\0") + _msg(b"Z", b"I")
    )
    assert len(got) == 1 and got[0][1] is None
    rows, tag = got[0][0]
    assert decode_rows(rows, [DECODERS[20]]) == [[1]] and tag == b"SELECT 1"
    pipeline.data_received(_msg(b"2") + _msg(b"C", b"SELECT 0\0") + _msg(b"Z", b"I"))
    assert await future == ([], b"SELECT 0")
    pipeline.data_received(error + _msg(b"Z", b"I"))
    assert got[1][0] is None and isinstance(got[1][1], asyncpg.DivisionByZeroError)
    pipeline.connection_lost(None)
    assert got[2][0] is None
    assert isinstance(got[2][1], asyncpg.exceptions.ConnectionDoesNotExistError)


async def test_before_flush_hooks_add_to_the_steps_write() -> None:
    """A hook runs when the step's statements are written and what it queues goes in
    the same write; a hook that asks for another runs at the next flush."""
    pipeline, transport = _pipeline()
    prepared = Prepared(b"s1", (), ())
    pipeline.run_then(prepared, [], lambda r, e: None)
    order: list[str] = []

    def hook() -> None:
        order.append("hook")
        pipeline.run_then(prepared, [], lambda r, e: None)
        pipeline.before_flush(lambda: order.append("again"))

    pipeline.before_flush(hook)
    await asyncio.sleep(0)
    assert order == ["hook"] and len(transport.writes) == 1
    assert transport.writes[0].count(b"S\x00\x00\x00\x04") == 2 and pipeline.in_flight == 2
    await asyncio.sleep(0)
    assert order == ["hook", "again"] and len(transport.writes) == 1


async def test_run_then_at_once_writes_now_unless_the_step_has_statements_waiting() -> None:
    """``at_once`` writes in the caller's own step when nothing is queued before it; after
    a queued statement it waits for the step's write, so the wire keeps the answers'
    order."""
    pipeline, transport = _pipeline()
    prepared = Prepared(b"s1", (20,), ("n:20",))
    got: list[int] = []
    pipeline.run_then(prepared, [struct.pack("!q", 1)], lambda r, e: got.append(1), at_once=True)
    assert len(transport.writes) == 1 and pipeline.in_flight == 1
    pipeline.run_then(prepared, [struct.pack("!q", 2)], lambda r, e: got.append(2))
    pipeline.run_then(prepared, [struct.pack("!q", 3)], lambda r, e: got.append(3), at_once=True)
    assert len(transport.writes) == 1  # 3 waits behind 2, which waits for the step's end
    await asyncio.sleep(0)
    assert len(transport.writes) == 2 and transport.writes[1].count(b"S\x00\x00\x00\x04") == 2
    done = _msg(b"2") + _msg(b"C", b"SELECT 0\0") + _msg(b"Z", b"I")
    pipeline.data_received(done * 3)
    assert got == [1, 2, 3]


@pytest.mark.parametrize("one_write", [False, True])
async def test_one_write_keeps_a_steps_statements_on_one_pipeline(one_write: bool) -> None:
    """With ``one_write`` the statements of one loop step go to the pipeline already
    waiting for its write (one write, one backend woken); without, each goes to the least
    busy one."""
    settings = type("S", (), {"query_timeout": 30.0})()
    engine: Any = type("E", (), {"settings": settings})()
    pipelines = Pipelines(engine, {}, one_write=one_write)
    key = (Access.READ_WRITE, "p")
    pipelines._open[key] = [_pipeline(35.0)[0], _pipeline(35.0)[0]]  # as pipelines.timeout
    prepared = Prepared(b"s1", (), ())
    picked = []
    for _ in range(4):
        pipeline = pipelines.pick(*key)
        assert pipeline is not None
        pipeline.run_then(prepared, [], lambda r, e: None)
        picked.append(pipeline)
    first, second = pipelines._open[key]
    assert picked == ([first] * 4 if one_write else [first, second, first, second])
    await asyncio.sleep(0)  # the step's writes went out: the least busy is picked again
    assert not first.writing and pipelines.pick(*key) is (second if one_write else first)
    pipelines.close()


async def test_share_sync_runs_a_steps_statements_under_one_sync() -> None:
    """With ``share_sync`` the step's run_then statements go out with one Sync, the last
    one's; each is answered at its CommandComplete (the last at ReadyForQuery), in order,
    and a statement with its own Sync queued after them ends their group first."""
    pipeline = Pipeline(asyncio.get_running_loop(), 30.0, share_sync=True)
    transport = RecordingTransport()
    pipeline.connection_made(transport)
    prepared = Prepared(b"s1", (20,), ("n:20",))
    got: list[Any] = []
    for n in (1, 2, 3):
        value = [struct.pack("!q", n)]
        pipeline.run_then(prepared, value, lambda r, e: got.append((r, e)))
    await asyncio.sleep(0)
    assert len(transport.writes) == 1
    sync = b"S\x00\x00\x00\x04"
    assert transport.writes[0].count(sync) == 1 and transport.writes[0].endswith(sync)
    answer = _msg(b"2") + _row(struct.pack("!q", 7)) + _msg(b"C", b"SELECT 1\0")
    pipeline.data_received(answer)
    assert len(got) == 1 and got[0][0] == ([struct.pack("!h", 1) + _row_body(7)], b"SELECT 1")
    pipeline.data_received(answer * 2)
    assert len(got) == 2  # the last waits for its ReadyForQuery
    pipeline.data_received(_msg(b"Z", b"I"))
    assert len(got) == 3 and all(e is None for _, e in got) and pipeline.in_flight == 0
    # a statement of its own Sync after two of a group: Sync, then its own message
    pipeline.run_then(prepared, [None], lambda r, e: None)
    pipeline.run_then(prepared, [None], lambda r, e: None)
    pipeline.warm()
    await asyncio.sleep(0)
    assert transport.writes[1].count(sync) == 1 and transport.writes[1].index(sync) < (
        transport.writes[1].index(b"Q")
    )


async def test_share_sync_an_error_skips_the_rest_of_its_group() -> None:
    pipeline = Pipeline(asyncio.get_running_loop(), 30.0, share_sync=True)
    pipeline.connection_made(RecordingTransport())
    prepared = Prepared(b"s1", (), ())
    got: list[Any] = []
    for _ in range(4):
        pipeline.run_then(prepared, [], lambda r, e: got.append((r, e)))
    await asyncio.sleep(0)
    error = _msg(b"E", b"SERROR\0C22012\0Mdivision by zero\0\0")
    pipeline.data_received(_msg(b"2") + _msg(b"C", b"SELECT 0\0") + _msg(b"2") + error)
    assert got[0] == (([], b"SELECT 0"), None)
    assert got[1][0] is None and isinstance(got[1][1], asyncpg.DivisionByZeroError)
    pipeline.data_received(_msg(b"Z", b"E"))  # the third and the last were skipped
    assert [type(e) for _, e in got[2:]] == [Skipped, Skipped] and pipeline.in_flight == 0
    # the next group starts afresh; an error in its last statement is that one's own
    pipeline.run_then(prepared, [], lambda r, e: got.append((r, e)))
    pipeline.run_then(prepared, [], lambda r, e: got.append((r, e)))
    await asyncio.sleep(0)
    pipeline.data_received(_msg(b"2") + _msg(b"C", b"SELECT 0\0") + _msg(b"2") + error)
    pipeline.data_received(_msg(b"Z", b"I"))
    assert got[4] == (([], b"SELECT 0"), None)
    assert isinstance(got[5][1], asyncpg.DivisionByZeroError)


async def test_share_sync_at_once_keeps_its_own_sync() -> None:
    pipeline = Pipeline(asyncio.get_running_loop(), 30.0, share_sync=True)
    transport = RecordingTransport()
    pipeline.connection_made(transport)
    prepared = Prepared(b"s1", (), ())
    pipeline.run_then(prepared, [], lambda r, e: None, at_once=True)
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"S\x00\x00\x00\x04")


def _row_body(n: int) -> bytes:
    return struct.pack("!i", 8) + struct.pack("!q", n)
