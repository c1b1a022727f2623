"""Engine leases (engine/pools.py ``_Lease``): the fast take and give-back paths.

An in-process Engine attached to the session node's embedded engine, as a REST worker
process attaches: the pools are real asyncpg pools on the node's PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from heliosdb.engine import pools
from heliosdb.engine.datadir import DataDir
from heliosdb.engine.pools import Engine, _idle_check
from heliosdb.engine.roles import Access
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.settings import EngineSettings
from tests.nodeproc import NodeProcess


@pytest.fixture(scope="module")
async def engine(node: NodeProcess) -> AsyncIterator[Engine]:
    engine = Engine(EngineSettings(), DataDir(node.data_dir))
    await engine.start(attach=True)
    yield engine
    await engine.stop()


def _holders(engine: Engine, access: Access) -> list[object]:
    return list(engine.pool(access)._holders)  # type: ignore[attr-defined]


async def test_kept_session_goes_back_with_one_idle_timer(engine: Engine) -> None:
    async with engine.connection(Access.READ_ONLY, owner="a") as conn:
        assert await conn.fetchval("SELECT 1") == 1
        holder = conn._holder  # type: ignore[attr-defined]  # set on the lease by engine/pools.py
        conn.keep_session("a")
    timer = holder._inactive_callback
    assert timer is not None and not timer.cancelled()
    # Taken and given back again (the queue is FIFO: drain it to get the same holder):
    # the timer stays, no new one per lease.
    for _ in range(len(_holders(engine, Access.READ_ONLY)) + 1):
        async with engine.connection(Access.READ_ONLY, owner="a") as conn:
            await conn.fetchval("SELECT 1")
            conn.keep_session("a")
    assert holder._inactive_callback is timer and not timer.cancelled()


async def test_idle_check_closes_only_connections_idle_long_enough(engine: Engine) -> None:
    pool = engine.pool(Access.READ_ONLY)
    async with (
        engine.connection(Access.READ_ONLY, owner="a") as one,
        engine.connection(Access.READ_ONLY, owner="a") as two,
        engine.connection(Access.READ_ONLY, owner="a") as three,
    ):
        for conn in (one, two, three):
            await conn.fetchval("SELECT 1")
            conn.keep_session("a")
        holder = three._holder  # type: ignore[attr-defined]
    assert pool.get_size() >= 3 > pool.get_min_size()
    raw = holder._con
    # Used just now: the check looks again later and leaves the connection open.
    holder._inactive_callback.cancel()
    _idle_check(holder)
    assert holder._con is raw and not raw.is_closed()
    assert holder._inactive_callback is not None
    # Idle past the lifetime: closed as asyncpg's own timer would.
    holder._inactive_callback.cancel()
    raw.idle_since -= holder._max_inactive_time + 1
    _idle_check(holder)
    assert raw.is_closed()
    # The pool still serves (a closed holder reconnects on its next lease).
    for _ in range(len(_holders(engine, Access.READ_ONLY)) + 1):
        async with engine.connection(Access.READ_ONLY) as conn:
            assert await conn.fetchval("SELECT 2") == 2


async def test_session_kept_for_its_owner_only(engine: Engine) -> None:
    size = engine.pool(Access.READ_ONLY).get_max_size()
    for _ in range(size + 1):
        async with engine.connection(Access.READ_ONLY, owner="a") as conn:
            await conn.execute("SET application_name = 'lease-test'")
            conn.keep_session("a")
    for _ in range(size + 1):
        async with engine.connection(Access.READ_ONLY, owner="b") as conn:
            assert await conn.fetchval("SHOW application_name") == "heliosdb"


async def test_open_transaction_rolled_back_on_release(engine: Engine) -> None:
    size = engine.pool(Access.READ_WRITE).get_max_size()
    async with engine.connection(Access.READ_WRITE, owner="a") as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMP TABLE lease_probe (x int)")
        conn.keep_session("a")
    for _ in range(size + 1):
        async with engine.connection(Access.READ_WRITE, owner="a") as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.lease_probe')") is None


async def test_engine_errors_on_a_leased_connection_leave_the_pool_usable(
    engine: Engine,
) -> None:
    with pytest.raises(HeliosError):
        async with engine.connection(Access.READ_ONLY, owner="a") as conn:
            try:
                await conn.fetchval("SELECT 1/0")
            except asyncpg.PostgresError as exc:
                raise from_engine(exc) from None
    async with engine.connection(Access.READ_ONLY, owner="a") as conn:
        assert await conn.fetchval("SELECT 3") == 3


async def test_run_prepared_reprepares_after_ddl_and_maps_bad_values(engine: Engine) -> None:
    table = "lease_run_prepared"
    sql = f"SELECT * FROM {table} WHERE id = $1"
    async with engine.connection(Access.READ_WRITE) as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, a text)")
        try:
            await conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
            records, stmt = await conn.run_prepared(sql, lambda s: [1])
            assert [tuple(r) for r in records] == [(1, "x")]
            assert [a.name for a in stmt.get_attributes()] == ["id", "a"]
            assert [p.name for p in stmt.get_parameters()] == ["int4"]
            assert stmt.get_statusmsg() == "SELECT 1"
            # The cached statement's result type changes under it: prepared afresh, once.
            await conn.execute(f"ALTER TABLE {table} ADD COLUMN b int DEFAULT 7")
            records, stmt = await conn.run_prepared(sql, lambda s: [1])
            assert [tuple(r) for r in records] == [(1, "x", 7)]
            assert [a.name for a in stmt.get_attributes()] == ["id", "a", "b"]
            # Uncached: the same answers.
            records, stmt = await conn.run_prepared(sql, lambda s: [1], cache=False)
            assert [tuple(r) for r in records] == [(1, "x", 7)]
            assert stmt.get_statusmsg() == "SELECT 1"
            # A value the codec refuses: asyncpg's DataError (from_engine maps it).
            with pytest.raises(asyncpg.DataError):
                await conn.run_prepared(sql, lambda s: ["one"], what="an id")
            assert [tuple(r) for r in (await conn.run_prepared(sql, lambda s: [1]))[0]] == [
                (1, "x", 7)
            ]
            # Engine errors propagate as asyncpg's.
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.run_prepared("SELECT * FROM lease_no_such_table", lambda s: [])
            # The server's statement_timeout cancels a statement (a session-local one here).
            await conn.execute("SET statement_timeout = 200")
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.run_prepared("SELECT pg_sleep($1)", lambda s: [5.0])
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")


async def test_a_closed_pool_lends_nothing(node: NodeProcess) -> None:
    engine = Engine(EngineSettings(), DataDir(node.data_dir))
    await engine.start(attach=True)
    async with engine.connection(Access.READ_ONLY) as conn:
        await conn.fetchval("SELECT 1")  # one free connection waits in the queue
    pool = engine.pool(Access.READ_ONLY)
    lease = engine.connection(Access.READ_ONLY)
    await engine.stop()
    with pytest.raises(asyncpg.InterfaceError):
        async with lease:
            pass
    assert pool.get_size() == 0


async def _hold_all(
    engine: Engine, access: Access, release: asyncio.Event
) -> list[asyncio.Task[None]]:
    """Tasks that lease every connection of ``access``'s pool until ``release`` is set."""
    size = engine.pool(access).get_max_size()
    leased = asyncio.Semaphore(0)

    async def hold() -> None:
        async with engine.connection(access) as conn:
            await conn.fetchval("SELECT 1")
            leased.release()
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(size)]
    for _ in range(size):
        await leased.acquire()
    return tasks


async def test_waiting_leases_get_released_connections_in_order(engine: Engine) -> None:
    release = asyncio.Event()
    holders = await _hold_all(engine, Access.READ_ONLY, release)
    order: list[int] = []

    async def wait(n: int) -> None:
        async with engine.connection(Access.READ_ONLY) as conn:
            order.append(n)
            assert await conn.fetchval("SELECT $1::int", n) == n

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0.05)
    assert order == []  # every connection is leased: they wait
    waiters[1].cancel()  # a waiter that goes away takes no connection with it
    release.set()
    await asyncio.gather(*holders)
    await asyncio.gather(waiters[0], waiters[2])
    assert order == [0, 2]
    assert engine.pool(Access.READ_ONLY).get_idle_size() == engine.pool(Access.READ_ONLY).get_size()


async def test_a_lease_waiting_past_the_limit_is_refused(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pools, "ACQUIRE_TIMEOUT_SECONDS", 0.2)
    release = asyncio.Event()
    holders = await _hold_all(engine, Access.READ_ONLY, release)
    try:
        with pytest.raises(HeliosError) as refused:
            async with engine.connection(Access.READ_ONLY):
                pass
        assert refused.value.code is ErrorCode.RESOURCE_EXHAUSTED
        # One waiting after the refusal still gets the next connection given back.
        monkeypatch.setattr(pools, "ACQUIRE_TIMEOUT_SECONDS", 30.0)
        late = asyncio.create_task(_fetch_one(engine))
        await asyncio.sleep(0.05)
        release.set()
        assert await late == 1
    finally:
        release.set()
        await asyncio.gather(*holders)


async def _fetch_one(engine: Engine) -> int:
    async with engine.connection(Access.READ_ONLY) as conn:
        value: int = await conn.fetchval("SELECT 1")
        return value
