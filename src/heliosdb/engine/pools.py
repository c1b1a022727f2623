"""The engine as the rest of HeliosDB sees it: one pool per access level.

    Engine
      system      superuser connections for HeliosDB's own bookkeeping (keys, migrations)
      read_write  logged in as helios_readwrite: client statements of read-write principals
      read_only   logged in as helios_readonly: client statements of read-only principals

No client-supplied statement ever runs on the system pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.prepared_stmt import PreparedStatement

from heliosdb.engine.codecs import register_codecs
from heliosdb.engine.datadir import DataDir
from heliosdb.engine.embedded import SUPERUSER, EmbeddedEngine
from heliosdb.engine.migrations import migrate
from heliosdb.engine.quoting import quote_ident
from heliosdb.engine.roles import ROLE_FOR_ACCESS, Access, ensure_roles
from heliosdb.engine.rowcap import UNLIMITED, CappedReader
from heliosdb.engine.sqlstate import from_engine
from heliosdb.errors import ErrorCode, HeliosError
from heliosdb.settings import EngineSettings

if TYPE_CHECKING:
    from heliosdb.engine.replication import ReplicationStream

log = logging.getLogger("heliosdb.engine")
T = TypeVar("T")

STATEMENT_CACHE_SIZE = 512
ACQUIRE_TIMEOUT_SECONDS = 10.0
# The engine superuser's sessions resolve names in the catalog only: the read-write role
# may create schemas (one named like the superuser, "$user") and objects in public, and a
# function there that fits an unqualified call's argument types better than the
# catalog's (pg_advisory_xact_lock(integer) for pg_advisory_xact_lock(hashtext(...)))
# would otherwise run as the superuser. HeliosDB's own SQL qualifies everything else.
SUPERUSER_SEARCH_PATH = {"search_path": "pg_catalog, pg_temp"}


class Statement:
    """What run_prepared ran: a cached server-side statement's parameter and column types
    and the command status of its run (the part of asyncpg's PreparedStatement callers use;
    a PreparedStatement itself when run_prepared was told not to cache)."""

    __slots__ = ("_state", "status")

    def __init__(self, state: Any) -> None:
        self._state = state
        self.status: bytes | None = None

    def get_parameters(self) -> tuple[Any, ...]:
        parameters: tuple[Any, ...] = self._state._get_parameters()
        return parameters

    def get_attributes(self) -> tuple[Any, ...]:
        attributes: tuple[Any, ...] = self._state._get_attributes()
        return attributes

    def get_statusmsg(self) -> str | None:
        return None if self.status is None else self.status.decode()


class EngineConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection whose prepared statements come from asyncpg's statement cache.

    ``Connection.prepare()`` bypasses that cache and a PreparedStatement object dies with the
    pool acquisition that made it, so we ask ``_prepare(use_cache=True)`` (what asyncpg's own
    ``fetch()`` does): the server-side statement is reused, the wrapper is fresh each time.
    """

    async def prepared(self, sql: str) -> PreparedStatement:
        stmt: PreparedStatement = await self._prepare(sql, use_cache=True)  # type: ignore[attr-defined]
        return stmt

    async def run_prepared(
        self,
        sql: str,
        bind: Callable[[Statement], Sequence[Any]],
        *,
        cache: bool = True,
        what: str = "a parameter",
        cap: int = 0,
        max_bytes: int = 0,
    ) -> tuple[list[asyncpg.Record], Statement]:
        """Prepare ``sql`` (from the statement cache unless ``cache`` is false), bind the
        arguments ``bind(stmt)`` makes for its parameter types, and fetch.

        A cached statement the engine reports invalid (the schema changed under it) is
        prepared afresh, once. A value the codecs refuse for its type is the client's
        error (INVALID_ARGUMENT, naming ``what`` it was); engine errors propagate.

        A cached statement runs as ``Connection.fetch()`` runs it, straight from asyncpg's
        statement cache through ``bind_execute`` (command_timeout and the server's
        statement_timeout apply alike), without a PreparedStatement wrapper per call.

        ``cap``: a result of more rows raises TooManyRows, and ``max_bytes``: one of more
        DataRow bytes TooManyBytes; the rows past it are not read into memory and the
        engine is asked to cancel the statement (engine/rowcap.py); 0: no cap.
        """
        for attempt in (1, 2):
            prepared: PreparedStatement | None = None  # keeps an uncached statement alive
            if cache:
                state = self._stmt_cache.get((sql, self._protocol.get_record_class(), False))  # type: ignore[attr-defined]
                if state is None or state.closed:
                    state = await self._get_statement(sql, None, named=True)  # type: ignore[attr-defined]
            else:
                prepared = await self.prepare(sql)
                state = prepared._state  # type: ignore[attr-defined]
            stmt = Statement(state)
            args = bind(stmt)
            try:
                if cap or max_bytes:
                    records, stmt.status = await self._run_capped(
                        state, args, cap or UNLIMITED, max_bytes or UNLIMITED
                    )
                else:
                    records, stmt.status, _ = await self._protocol.bind_execute(  # type: ignore[attr-defined]
                        state, args, "", 0, True, None
                    )
            except asyncpg.InvalidCachedStatementError:
                self.forget(sql)
                if attempt == 2:
                    raise
                continue
            except asyncpg.exceptions.OutdatedSchemaCacheError:
                # What PreparedStatement does when a type changed under the cache.
                await self.reload_schema_state()
                state.mark_closed()
                raise
            except (asyncpg.DataError, ValueError, TypeError, OverflowError) as exc:
                if isinstance(exc, asyncpg.PostgresError):
                    raise
                raise HeliosError(
                    ErrorCode.INVALID_ARGUMENT, f"{what} does not fit its column type: {exc}"
                ) from None
            del prepared
            return records, stmt
        raise AssertionError("unreachable")

    async def _run_capped(
        self, state: Any, args: Sequence[Any], cap: int, max_bytes: int
    ) -> tuple[Any, Any]:
        """bind_execute with no row limit (so the engine may plan parallel workers, which
        it never does for an Execute with one), its DataRows counted as they arrive: past
        ``cap`` rows or ``max_bytes`` of them the rest are dropped before asyncpg's
        protocol sees them and the engine is asked to cancel the statement; TooManyRows
        (TooManyBytes) once it has answered. A row that passes ``max_bytes`` from the
        result's unwalked start (RowCap.torn) closes the connection instead."""
        protocol: Any = self._protocol  # type: ignore[attr-defined]
        transport: Any = self._transport  # type: ignore[attr-defined]
        cancel_sent: asyncio.Future[None] | None = None

        def stop() -> None:
            nonlocal cancel_sent
            cancel_sent = self._loop.create_future()  # type: ignore[attr-defined]
            self._cancel_current_command(cancel_sent)  # type: ignore[attr-defined]

        # (stop() must not refer to the reader: a cycle would outlive each statement)
        reader = CappedReader(protocol, cap, stop, max_bytes, transport)
        transport.set_protocol(reader)
        try:
            records, status, _ = await protocol.bind_execute(state, args, "", 0, True, None)
        except asyncpg.QueryCanceledError:
            if not reader.cap.over:
                raise
            raise reader.cap.refusal(aborted=protocol.is_in_transaction()) from None
        except asyncpg.exceptions.ConnectionDoesNotExistError:
            if not reader.cap.torn:
                raise
            raise reader.cap.refusal(lost=True) from None
        finally:
            transport.set_protocol(protocol)
            if cancel_sent is not None:
                # The connection is used again only once the engine has had the request
                # (a backend that has finished ignores a cancel that reaches it idle).
                await asyncio.shield(cancel_sent)
        if reader.cap.over:
            raise reader.cap.refusal()
        return records, status

    def describe(self, stmt: Statement, sql: str, describe: Callable[[Statement], T]) -> T:
        """``describe(stmt)``, worked out once for each server-side statement (its
        parameter and column types cannot change under it)."""
        state = stmt._state  # type: ignore[attr-defined]  # identifies the server statement
        described: dict[tuple[Any, str], tuple[Any, Any]] = self.__dict__.setdefault(
            "_described", {}
        )
        hit = described.get((describe, sql))
        if hit is not None and hit[0] is state:
            value: T = hit[1]
            return value
        value = describe(stmt)
        if len(described) > 2 * STATEMENT_CACHE_SIZE:
            described.clear()
        described[(describe, sql)] = (state, value)
        return value

    def forget(self, sql: str) -> None:
        """Drop cached statements after the engine reported one invalid (schema changed)."""
        self._drop_local_statement_cache()  # type: ignore[attr-defined]

    # Session reuse. Returning a connection to its pool normally costs a round trip that
    # resets the session (RESET ALL, UNLISTEN *, CLOSE ALL, advisory locks). A user that
    # knows its statement left the session as it found it calls keep_session(owner): the
    # reset is then skipped, and run instead when the connection is next taken by anyone
    # but ``owner`` (Engine.connection). An open transaction is always rolled back.
    session_owner: str | None = None
    idle_since = 0.0  # loop time its pool holder last took it back (_arm_idle_check)

    def get_reset_query(self) -> str:
        # asyncpg's reset leaves temporary tables, which another principal could read.
        reset: str = super().get_reset_query()
        return reset + "\nDISCARD TEMP;"

    def keep_session(self, owner: str) -> None:
        self.session_owner = owner

    async def claim_session(self, owner: str | None) -> None:
        if self.session_owner is not None and self.session_owner != owner:
            self.session_owner = None
            await self.execute(self.get_reset_query())
        self.session_owner = None


async def _reset_session(conn: asyncpg.Connection) -> None:
    """The pool's reset (after asyncpg's own rollback of an open transaction)."""
    if getattr(conn, "session_owner", None) is None:
        await conn.execute(conn.get_reset_query())


class _Waiting:
    """The leases of one pool waiting for a free connection, and the one timer that fails
    those waiting longer than ACQUIRE_TIMEOUT_SECONDS.

    A waiting lease waits in the pool queue's own line (what ``Queue.get()`` does, so a
    connection given back by any path wakes the first in line), without Pool.acquire's
    awaitable, ``_acquire``, ``_acquire_impl``, ``Queue.get`` and ``holder.acquire`` frames
    and without an ``asyncio.timeout`` scope (a timer armed and cancelled, the running
    loop and task looked up) per wait: the deadlines are kept in order here and one timer
    looks at the oldest.
    """

    __slots__ = ("deadlines", "timer")

    def __init__(self) -> None:
        self.deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    async def wait(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        """Return once ``queue`` holds a free connection; TimeoutError after
        ACQUIRE_TIMEOUT_SECONDS of waiting."""
        deadline = loop.time() + ACQUIRE_TIMEOUT_SECONDS
        deadlines = self.deadlines
        getters: deque[asyncio.Future[None]] = queue._getters  # type: ignore[attr-defined]
        holders: list[Any] = queue._queue  # type: ignore[attr-defined]
        while not holders:  # queue.empty()
            getter = loop.create_future()
            getters.append(getter)
            deadlines.append((deadline, getter))
            if self.timer is None:
                self.timer = loop.call_at(deadline, self._expire, loop)
            try:
                await getter
            except BaseException:
                # As Queue.get(): out of line, and a wake-up we cannot take goes on.
                getter.cancel()
                with contextlib.suppress(ValueError):
                    getters.remove(getter)
                if not queue.empty() and not getter.cancelled():
                    queue._wakeup_next(getters)  # type: ignore[attr-defined]
                raise
            finally:
                # Lines are served in order, so the served are at the front.
                while deadlines and deadlines[0][1].done():
                    deadlines.popleft()

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        deadlines = self.deadlines
        now = loop.time()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1].done()):
            getter = deadlines.popleft()[1]
            if not getter.done():
                getter.set_exception(TimeoutError())
        if deadlines:
            self.timer = loop.call_at(deadlines[0][0], self._expire, loop)


class _Lease:
    """``async with engine.connection(access) as conn``: a pooled connection, given back."""

    __slots__ = ("conn", "owner", "pool", "raw", "waiting")

    def __init__(self, pool: asyncpg.Pool, owner: str | None, waiting: _Waiting) -> None:
        self.pool = pool
        self.owner = owner
        self.waiting = waiting
        self.conn: Any = None
        # The leased connection itself, for use inside the ``async with`` block only: the
        # pool's proxy that the block gets forwards every attribute through __getattr__
        # (a failed lookup, an AttributeError and a second lookup per call).
        self.raw: EngineConnection = None  # type: ignore[assignment]

    async def __aenter__(self) -> EngineConnection:
        pool: Any = self.pool
        try:
            queue = pool._queue
            if not queue._queue and pool._initialized and not (pool._closing or pool._closed):
                await self.waiting.wait(pool._loop, queue)
            if queue._queue and pool._initialized and not (pool._closing or pool._closed):
                # A free connection is waiting: take it from the queue ourselves, without
                # Pool.acquire's awaitable, _acquire and _acquire_impl frames (what
                # _acquire_impl does once its Queue.get() has a holder).
                holder, live = _take(queue)
                raw = holder._con
                if live and holder._setup is None and holder._generation == pool._generation:
                    # holder.acquire() for a live connection of this generation, leaving
                    # its idle timer armed (_idle_check looks again when it fires).
                    proxy: Any = _PROXY_NEW(PoolConnectionProxy)
                    proxy._con = raw  # PoolConnectionProxy(holder, raw), its calls inlined
                    proxy._holder = holder
                    raw._proxy = holder._proxy = proxy  # a free connection has none
                    holder._in_use = pool._loop.create_future()
                    holder._timeout = None
                    self.conn = proxy
                else:
                    try:
                        self.conn = await holder.acquire()
                    except BaseException:
                        queue.put_nowait(holder)
                        pool._schedule_min_size_maintenance()
                        raise
                    holder._timeout = None
            else:
                # Not open (yet, or any more): Pool.acquire says why. asyncio.timeout, not
                # acquire(timeout=...), which runs the wait in a task.
                async with asyncio.timeout(ACQUIRE_TIMEOUT_SECONDS):
                    self.conn = await pool.acquire()
        except TimeoutError:
            raise HeliosError(
                ErrorCode.RESOURCE_EXHAUSTED, "all engine connections are busy; try again"
            ) from None
        except (OSError, asyncpg.PostgresError) as exc:
            raise from_engine(exc) from None
        conn: EngineConnection = self.conn  # a pool proxy that forwards to EngineConnection
        raw_conn: EngineConnection = self.conn._con
        if raw_conn.session_owner is not None and raw_conn.session_owner != self.owner:
            try:
                await raw_conn.claim_session(self.owner)
            except BaseException as exc:
                await self._release_slow()
                if isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
                    raise from_engine(exc) from None
                raise
        raw_conn.session_owner = None
        self.raw = raw_conn
        return conn

    async def _release_slow(self) -> None:
        """Pool.release(), after taking down our idle timer (holder.release() arms its own)."""
        if self.conn._con is not None:  # still ours (not detached by a close)
            self.conn._holder._maybe_cancel_inactive_callback()
        await self.pool.release(self.conn)

    async def __aexit__(self, *exc_info: object) -> None:
        conn = self.conn
        raw = conn._con
        if (
            raw is not None
            and raw.session_owner is not None
            and raw._top_xact is None
            and not raw._protocol.is_in_transaction()
        ):
            # Nothing to reset: give the connection back without Pool.release's shield(),
            # whose extra task and loop turns cost more than the statement's own round
            # trip. Nothing in this path waits, so no cancellation can cut it in half.
            holder = conn._holder
            if holder._pool is self.pool:
                if _clean(holder, raw):
                    # What holder.release() comes to for a clean, kept session, without
                    # its timeout scope and reset coroutines (nothing there to wait for),
                    # and without re-arming the idle timer each time (_arm_idle_check).
                    raw._pool_release_ctr += 1  # _on_release(), no listeners to warn of
                    holder._timeout = None
                    _give_back(holder, raw, self.pool._queue)
                    _arm_idle_check(holder, raw)
                    return
                raw._on_release()
                holder._maybe_cancel_inactive_callback()
                await holder.release(None)
                return
        await self._release_slow()


# The pool queue's operations for the lease paths above, inlined: asyncpg's queue is an
# unbounded LifoQueue (no putters, never full) that prefers live connections; each
# Queue method is several Python calls (empty, qsize, _get, is_connected, _wakeup_next).
_PROXY_NEW = object.__new__


def _take(queue: Any) -> tuple[Any, bool]:
    """``queue.get_nowait()`` on a queue that is not empty: the last live holder (asyncpg's
    ``_get``), else the last one; and whether it is live."""
    holders: list[Any] = queue._queue
    for i in range(len(holders) - 1, -1, -1):
        con = holders[i]._con
        if con is not None and not con.is_closed():
            return holders.pop(i), True
    return holders.pop(), False


def _give_back(holder: Any, raw: Any, queue: Any) -> None:
    """``holder._release()`` for a leased holder: its lease done, its proxy detached, and
    back in the queue (``put_nowait``), waking the first lease waiting in line."""
    in_use = holder._in_use
    if not in_use.done():
        in_use.set_result(None)
    holder._in_use = None
    proxy = holder._proxy
    if proxy is not None:
        proxy._con = None  # proxy._detach()
        raw._proxy = None
        holder._proxy = None
    queue._queue.append(holder)
    queue._unfinished_tasks += 1
    queue._finished.clear()
    getters = queue._getters
    while getters:
        getter = getters.popleft()
        if not getter.done():
            getter.set_result(None)
            break


def _arm_idle_check(holder: Any, raw: EngineConnection) -> None:
    """Note when ``holder`` went idle; one timer per holder checks it (asyncpg's own
    inactivity timer, re-armed and cancelled on every lease, costs a TimerHandle and heap
    work per statement)."""
    loop = holder._pool._loop
    raw.idle_since = loop.time()
    if holder._inactive_callback is None and holder._max_inactive_time:
        holder._inactive_callback = loop.call_later(holder._max_inactive_time, _idle_check, holder)


def _idle_check(holder: Any) -> None:
    """The idle timer fired: close the connection as asyncpg would if it has been idle for
    max_inactive_connection_lifetime, else look again when it will have been."""
    holder._inactive_callback = None
    raw = holder._con
    if raw is None or holder._in_use is not None:
        return  # gone, or leased: its release arms a timer again
    loop = holder._pool._loop
    left = getattr(raw, "idle_since", 0.0) + holder._max_inactive_time - loop.time()
    if left > 0:
        holder._inactive_callback = loop.call_later(left, _idle_check, holder)
        return
    holder._deactivate_inactive_connection()


def _clean(holder: Any, raw: Any) -> bool:
    """Whether a pool holder's connection may go back as it is: open, not cancelling,
    not due for replacement, no transaction or listeners for asyncpg's reset to undo."""
    protocol = raw._protocol
    return bool(
        not raw.is_closed()
        and protocol.queries_count < holder._max_queries
        and holder._generation == holder._pool._generation
        and not protocol._is_cancelling()
        and not protocol.is_in_transaction()
        and raw._top_xact is None
        and not raw._listeners
        and not raw._log_listeners
    )


@dataclass(frozen=True, slots=True)
class RoleLogin:
    host: str  # a directory holding the Unix socket when it starts with "/"
    port: int
    database: str
    user: str
    password: str = field(repr=False)


class Engine:
    def __init__(self, settings: EngineSettings, data_dir: DataDir) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.embedded: EmbeddedEngine | None = None
        self._pools: dict[Access, asyncpg.Pool] = {}
        self._waiting = {access: _Waiting() for access in Access}
        self._connect: dict[str, Any] = {}
        self._role_passwords: dict[Access, str] = {}
        self._attached = False
        self.closers: list[Callable[[], None]] = []

    @property
    def is_embedded(self) -> bool:
        return self.settings.url is None

    async def start(self, *, attach: bool = False) -> None:
        """Start (or adopt) the engine and open the pools.

        ``attach``: another process of this node runs the embedded engine and has set it
        up; only connect to it (a REST worker process, see workers.py). Stopping then
        never stops the engine.
        """
        self._attached = attach
        if self.settings.url is None:
            self.embedded = EmbeddedEngine(self.data_dir)
            if not attach:
                await asyncio.to_thread(self.embedded.start)
            base = self.embedded.dsn_parts()
            if not attach:
                await self._ensure_database(base)
            self._connect = {**base, "database": self.settings.database}
        else:
            url = self.settings.url.get_secret_value()
            parts = urlsplit(url)
            database = parts.path.lstrip("/") or self.settings.database
            self._connect = {"dsn": url, "database": database}
        admin = await asyncpg.connect(**self._connect, server_settings=SUPERUSER_SEARCH_PATH)
        try:
            if not attach:
                await migrate(admin)
                await self._ensure_extensions(admin)
            passwords = await ensure_roles(admin, self._connect["database"])
        finally:
            await admin.close()
        self._role_passwords = passwords
        server_settings = self.session_settings()
        sizes = {
            Access.SYSTEM: self.settings.system_pool_size,
            Access.READ_WRITE: self.settings.pool_size,
            Access.READ_ONLY: self.settings.readonly_pool_size,
        }
        for access, size in sizes.items():
            login = dict(self._connect)
            settings = server_settings
            if access is Access.SYSTEM:
                settings = {**server_settings, **SUPERUSER_SEARCH_PATH}
            else:
                login["user"] = ROLE_FOR_ACCESS[access]
                login["password"] = passwords[access]
            self._pools[access] = await asyncpg.create_pool(
                **login,
                min_size=min(2, size),
                max_size=size,
                connection_class=EngineConnection,
                init=register_codecs,
                server_settings=settings,
                command_timeout=self.settings.query_timeout + 5,
                statement_cache_size=STATEMENT_CACHE_SIZE,
                reset=_reset_session,
            )
        log.info("engine ready (%s)", "embedded" if self.is_embedded else "external")

    def session_settings(self) -> dict[str, str]:
        """The settings every client-statement session starts with (pools, pipelines)."""
        return {
            "application_name": "heliosdb",
            "statement_timeout": str(int(self.settings.query_timeout * 1000)),
            "IntervalStyle": "iso_8601",
            "TimeZone": "UTC",
        }

    async def _ensure_database(self, base: dict[str, Any]) -> None:
        conn = await asyncpg.connect(**base, database="postgres")
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.settings.database
            )
            if not exists:
                await conn.execute(f"CREATE DATABASE {quote_ident(self.settings.database)}")
        finally:
            await conn.close()

    async def _ensure_extensions(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        except asyncpg.PostgresError as exc:
            log.warning("pgvector is not available on this engine: %s", exc)

    async def stop(self, *, stop_embedded: bool = True) -> None:
        for close in self.closers:  # connections opened outside the pools (pipeline.py)
            close()
        for pool in self._pools.values():
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except (TimeoutError, asyncpg.PostgresError, OSError):
                pool.terminate()
        self._pools.clear()
        if self.embedded is not None and stop_embedded and not self._attached:
            await asyncio.to_thread(self.embedded.stop)

    def pool(self, access: Access) -> asyncpg.Pool:
        return self._pools[access]

    def connection(self, access: Access, *, owner: str | None = None) -> _Lease:
        """A pooled connection for ``access``, in a clean session.

        ``owner`` (a principal id) may find the session its own last statement left when
        it called ``conn.keep_session(owner)``; everyone else gets a reset session.
        """
        return _Lease(self._pools[access], owner, self._waiting[access])

    async def dedicated(self, application_name: str) -> asyncpg.Connection:
        """A superuser connection outside the pools, for long-lived HeliosDB work.

        Change capture holds one per node for LISTEN and, on the leader, one for logical
        decoding: work that must keep its session (advisory lock, LISTEN) and would
        otherwise pin a pooled connection forever. The caller closes it. No statement
        timeout; text output in ISO forms (services/changes/values.py relies on them).
        """
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                **self._connect,
                server_settings={
                    "application_name": application_name,
                    "TimeZone": "UTC",
                    "DateStyle": "ISO, MDY",
                    "IntervalStyle": "iso_8601",
                    "extra_float_digits": "1",
                    **SUPERUSER_SEARCH_PATH,
                },
                statement_cache_size=64,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise from_engine(exc) from None
        return conn

    async def replication_stream(
        self, slot: str, start_lsn: int, options: dict[str, str]
    ) -> ReplicationStream:
        """A superuser walsender session streaming the logical ``slot`` (change capture).

        Raises ReplicationError (UNAVAILABLE) when the engine refuses one (no replication
        line in pg_hba.conf, a role without REPLICATION, the slot in use elsewhere)."""
        # psycopg (libpq) only here: asyncpg has no replication protocol.
        from psycopg.conninfo import make_conninfo

        from heliosdb.engine.replication import ReplicationStream

        parts = dict(self._connect)
        dsn = str(parts.pop("dsn", ""))
        parts["dbname"] = parts.pop("database")
        conninfo = make_conninfo(
            dsn,
            **parts,
            replication="database",
            application_name="heliosdb-capture",
            connect_timeout=10,  # libpq's connect runs in a thread: never hang it forever
        )
        return await ReplicationStream.open(conninfo, slot, start_lsn, options)

    async def ping(self) -> bool:
        try:
            async with self.connection(Access.SYSTEM) as conn:
                return bool(await conn.fetchval("SELECT 1", timeout=2))
        except Exception:  # noqa: BLE001 - health reports, never raises
            return False

    def pool_stats(self) -> dict[str, dict[str, int]]:
        return {
            access.value: {
                "size": pool.get_size(),
                "idle": pool.get_idle_size(),
                "max": pool.get_max_size(),
            }
            for access, pool in self._pools.items()
        }

    def role_login(self, access: Access) -> RoleLogin:
        """Where and as whom to open a raw protocol connection for ``access`` (engine/relay.py)."""
        if access is Access.SYSTEM:
            raise ValueError("raw connections carry client traffic; never as the superuser")
        database = str(self._connect["database"])
        role, password = ROLE_FOR_ACCESS[access], self._role_passwords[access]
        if "dsn" not in self._connect:
            host, port = str(self._connect["host"]), int(self._connect["port"])
            return RoleLogin(host, port, database, role, password)
        parts = urlsplit(str(self._connect["dsn"]))
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        host = parts.hostname or query.get("host") or "localhost"
        return RoleLogin(host, parts.port or 5432, database, role, password)

    @property
    def superuser(self) -> str:
        return SUPERUSER
