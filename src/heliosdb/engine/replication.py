"""A logical replication stream: the engine pushes a slot's decoded changes as they commit.

    START_REPLICATION SLOT <slot> LOGICAL <lsn> (<plugin options>)
        engine (walsender) --CopyData 'w' (XLogData: one plugin message each)--> node
        engine --CopyData 'k' (keepalive)--> node --CopyData 'r' (standby status)--> engine

The walsender decodes each WAL record once, as it is flushed, and sends at once: no
polling, and no re-decoding from the slot's restart point on every look (what
``pg_logical_slot_peek_binary_changes`` does). The slot only moves when :meth:`confirm`
reports a flush position, so a consumer confirms what it has durably handled.

asyncpg does not speak the replication sub-protocol (CopyBoth), so this uses libpq
through psycopg's ``pq`` layer, non-blocking, on the event loop: connection setup,
authentication and TLS are libpq's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import struct
import time
from collections import deque

from psycopg import OperationalError, pq

from heliosdb.errors import ErrorCode, HeliosError

_EPOCH_2000_US = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
_XLOG_DATA = 0x77  # 'w'
_KEEPALIVE = 0x6B  # 'k'
_STATUS = struct.Struct("!cQQQqB")  # 'r', written, flushed, applied, clock, reply requested
_XLOG_HEADER = 25  # 'w', WAL start, WAL end, send time
_COMMIT = 0x43  # 'C': pgoutput's last message of a transaction
# Messages _on_readable takes before it wakes the reader even without a Commit (a big
# transaction is decoded as it arrives, in bounded memory).
_HOLD_MESSAGES = 128
# A confirmation is sent at most this often (the newest one allowed then; a quiet stream
# sends the last one from wait()'s timeout): one status per transaction was one more
# socket write on the node and one more wakeup of the walsender for each of them.
_CONFIRM_EVERY_SECONDS = 0.1


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _clock() -> int:
    return int(time.time() * 1_000_000) - _EPOCH_2000_US


def _wake(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class ReplicationError(HeliosError):
    """The stream could not start or ended (UNAVAILABLE): the caller reconnects.

    ``refused``: the engine did not accept a replication connection at all (pg_hba.conf,
    a role without REPLICATION): trying again will not help."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message)
        self.refused = refused


class ReplicationStream:
    """One walsender session streaming one logical slot (not safe for concurrent use)."""

    def __init__(self, pgconn: pq.abc.PGconn) -> None:
        self._pgconn = pgconn
        self._fd = pgconn.socket
        self.received = 0  # the end of the WAL the engine has sent (or said it has)
        self.confirmed = 0  # the newest position the slot may move to
        self.sent = 0  # the newest one told to the engine (lags by at most ~0.1 s)
        self._sent_at = 0.0
        # While streaming, the socket stays watched between waits as long as nothing
        # arrives outside one (see _on_readable): adding and removing the reader around
        # every wait was two epoll_ctl calls per wakeup.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[bool] | None = None
        self._arrived = False  # a transaction's end taken by _on_readable since wait()
        self._held: deque[bytes] = deque()  # messages _on_readable took, for read_nowait
        self._error: OperationalError | ReplicationError | None = None

    @classmethod
    async def open(
        cls, conninfo: str, slot: str, start_lsn: int, options: dict[str, str]
    ) -> ReplicationStream:
        """Connect (``conninfo`` must say ``replication=database``) and start streaming
        ``slot`` from ``start_lsn`` (the engine starts at the slot's confirmed position
        if that is later)."""
        pgconn = await asyncio.to_thread(pq.PGconn.connect, conninfo.encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = pgconn.get_error_message().strip()
            pgconn.finish()
            raise ReplicationError(f"replication connection failed: {message}", refused=True)
        stream = cls(pgconn)
        try:
            await stream._start(slot, start_lsn, options)
        except BaseException:
            stream.close()
            raise
        return stream

    async def _start(self, slot: str, start_lsn: int, options: dict[str, str]) -> None:
        pgconn = self._pgconn
        pgconn.nonblocking = 1
        # The replication grammar takes no parameters: the slot name and option values
        # are HeliosDB's own (slot_name(), the publication), quoted as the grammar says.
        listed = ", ".join(f'"{k}" {_literal(v)}' for k, v in options.items())
        command = f'START_REPLICATION SLOT "{slot}" LOGICAL {format_lsn(start_lsn)} ({listed})'
        pgconn.send_query(command.encode())  # raises psycopg.OperationalError
        await self._flush()
        while True:
            pgconn.consume_input()
            if pgconn.is_busy():
                await self._readable()
                continue
            result = pgconn.get_result()
            if result is None:
                raise self._failure("START_REPLICATION returned nothing")
            if result.status == pq.ExecStatus.COPY_BOTH:
                return
            message = (result.error_message or b"").decode(errors="replace").strip()
            raise ReplicationError(f"START_REPLICATION failed: {message}")

    def read_nowait(self) -> bytes | None:
        """The next plugin message already received, or None when none is waiting.

        Keepalives are answered here (with the confirmed position) when the engine asks.
        """
        if self._held:
            return self._held.popleft()
        return self._next()

    def _next(self) -> bytes | None:
        pgconn = self._pgconn
        while True:
            size, data = pgconn.get_copy_data(1)
            if size == 0:
                return None
            if size < 0:
                raise self._failure("the replication stream ended")
            kind = data[0]
            if kind == _XLOG_DATA:
                end = int.from_bytes(data[9:17], "big")
                if end > self.received:
                    self.received = end
                return bytes(data[_XLOG_HEADER:])
            if kind == _KEEPALIVE:
                end = int.from_bytes(data[1:9], "big")
                if end > self.received:
                    self.received = end
                if data[17]:
                    self._send_status()

    async def wait(self, timeout: float) -> bool:
        """Until more data has arrived from the engine (True; it may also have arrived
        while the caller was busy), or ``timeout`` seconds have passed (False: then a
        confirmation held back is sent)."""
        if not self._arrived and self._error is None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
                self._loop.add_reader(self._fd, self._on_readable)
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, _wake, waiter, False)
            try:
                await waiter
            finally:
                self._waiter = None
                timer.cancel()
        if self._error is not None:
            raise self._error  # the stream ended
        if not self._arrived:
            self.send_confirmation()
            return False
        self._arrived = False
        return True

    async def settle(self, seconds: float) -> int:
        """Let what the engine sends in the next ``seconds`` wait in the socket, then take
        it at once: the number of plugin messages that arrived, held for
        :meth:`read_nowait` (in order; at most ``_HOLD_MESSAGES``, more stay in the
        socket), at once when a transaction's end has arrived already. For a reader that
        will wait that long anyway (a batch being gathered):
        :meth:`wait` would wake it at every transaction's end, each wakeup costing the
        node far more than the messages it reads."""
        self._unwatch()
        self._on_readable()
        if not self._arrived:
            await asyncio.sleep(seconds)
            self._on_readable()
        # else a transaction's end is waiting already (the reader is behind): no sleep.
        if self._error is not None:
            raise self._error  # the stream ended
        self._arrived = False  # the caller reads all of it before it waits again
        return len(self._held)

    def _on_readable(self) -> None:
        # Read the socket at once (a socket left readable would wake the loop on every
        # iteration) and take the messages it completes. The reader is woken only for
        # the end of a transaction (or a good many messages): the walsender sends each
        # message with a write of its own, so a transaction's Begin, rows and Commit
        # often arrived in separate reads and woke it two or three times; and the
        # keepalive it sends each time it has caught up past WAL that published
        # nothing (the leader's own writes, among others) is answered here, waking
        # nobody.
        held = self._held
        try:
            self._pgconn.consume_input()
            while len(held) < _HOLD_MESSAGES and (data := self._next()) is not None:
                held.append(data)
            if not held or (held[-1][0] != _COMMIT and len(held) < _HOLD_MESSAGES):
                return  # keepalives, or a transaction still arriving
            self._arrived = True
        except (OperationalError, ReplicationError) as exc:
            self._error = exc
            self._unwatch()
        if self._waiter is not None:
            _wake(self._waiter, True)
        else:
            # Nobody waits (the leader is writing a batch): what comes next can wait in
            # the socket until the next wait() rather than wake the loop once for each
            # message the engine sends meanwhile.
            self._unwatch()

    def _unwatch(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None

    def confirm(self, flushed: int) -> None:
        """Everything before ``flushed`` is durably handled: the slot may move past it
        (told to the engine now, or within ``_CONFIRM_EVERY_SECONDS``)."""
        if flushed > self.confirmed:
            self.confirmed = flushed
            if time.monotonic() - self._sent_at >= _CONFIRM_EVERY_SECONDS:
                self._send_status()

    def send_confirmation(self) -> None:
        """Tell the engine the newest confirmed position now, if it has not heard it."""
        if self.confirmed > self.sent:
            self._send_status()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._unwatch()
        with contextlib.suppress(Exception):
            self._pgconn.finish()

    def _send_status(self) -> None:
        status = _STATUS.pack(
            b"r", max(self.received, self.confirmed), self.confirmed, self.confirmed, _clock(), 0
        )
        if self._pgconn.put_copy_data(status) != 1:
            raise self._failure("could not send the standby status")
        # A status is small: the socket takes it whole unless the engine has stopped
        # reading, and then the next flush (or the engine's timeout) tells.
        if self._pgconn.flush() < 0:
            raise self._failure("could not send the standby status")
        self.sent = self.confirmed
        self._sent_at = time.monotonic()

    async def _flush(self) -> None:
        while self._pgconn.flush() == 1:
            await self._ready(writable=True)

    async def _readable(self) -> None:
        await self._ready(writable=False)

    async def _ready(self, *, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bool] = loop.create_future()
        (loop.add_writer if writable else loop.add_reader)(self._fd, _wake, ready, True)
        try:
            await ready
        finally:
            (loop.remove_writer if writable else loop.remove_reader)(self._fd)

    def _failure(self, what: str) -> ReplicationError:
        detail = self._pgconn.get_error_message().strip()
        return ReplicationError(f"{what}: {detail}" if detail else what)
