"""Realtime benchmark: commit-to-delivery latency of change events over the WebSocket API.

    .venv/bin/python bench/realtime.py                 # about 2 minutes
    .venv/bin/python bench/realtime.py --rates 1000 10000 --seconds 10 --subscribers 100
    .venv/bin/python bench/realtime.py --rates 1000 10000 --seconds 5 --lean-clients

Starts a real node (embedded engine, temporary data directory), opens ``--subscribers``
WebSocket connections that each subscribe to one table, then for each rate writes rows
straight into the engine (asyncpg, multi-row INSERTs every 10 ms, so the engine, not
HeliosDB, takes the writes) for ``--seconds``. Latency is the time from the engine's
commit timestamp (in each event) to the moment a subscriber has parsed the event, over
every (event, subscriber) pair. An event is lost if any subscriber does not receive it
(or its subscription ends, e.g. as a slow consumer) within 30 s after the writer stops.
The highest loss-free rate is the highest rate tried with nothing lost; with
``--search`` rates double from the last loss-free one until one loses events.

Also prints the engine's own insert rate for the same statements (the ratio's
denominator: how much of what the engine can commit reaches every subscriber), and the
node process's CPU time per delivery (load-independent). ``--lean-clients`` runs the
subscribers on a minimal WebSocket client, so that on a small machine the benchmark's
own parsing does not dominate the latency it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import os
import re
import shlex
import shutil
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import uvloop
import websockets
from websockets.typing import Subprotocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import cpu_seconds

from tests.nodeproc import NodeProcess

TICK = 0.01
# Linux's SO_TIMESTAMPNS (also the control message's type): the kernel's receive time of
# a read, as a timespec of two 64-bit integers; Python's socket module has no name for it.
_SO_TIMESTAMPNS = 35
_RECEIVE_BUFFER = 4 << 20  # at most net.core.rmem_max (Linux doubles it)
# What the lean client looks for in an event frame (the node's own encoding, see
# interfaces/websocket/codec.py; the benchmark's rows are {"id": n, "pad": "x"}).
_EVENT = b'{"type":"event",'
_ROW_IDS = re.compile(rb'"row":\{"id":(\d+)')
_STAMPS = re.compile(rb'"timestamp":"([^"]*)"')
_POSITIONS = re.compile(rb'"position":(\d+)')
# The table name is the benchmark's own; values are parameters.
_INSERT = (
    "INSERT INTO {table} (id, pad) SELECT g, 'x' FROM generate_series($1::bigint, $2::bigint) g"
)


class Subscriber:
    def __init__(self, url: str, key: str, table: str) -> None:
        self.url, self.key, self.table = url, key, table
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.errors: list[Any] = []
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.arrivals: dict[int, list[float]] | None = None  # --stages: lean clients only

    async def run(self) -> None:
        async with websockets.connect(
            self.url,
            subprotocols=[Subprotocol("heliosdb.v1")],
            max_size=None,
            max_queue=None,
        ) as ws:
            await ws.send(
                orjson.dumps(
                    {"id": "a", "action": "authenticate", "data": {"token": self.key}}
                ).decode()
            )
            await ws.recv()
            await ws.send(
                orjson.dumps(
                    {
                        "id": "s",
                        "action": "subscribe",
                        "data": {"table": self.table, "events": ["INSERT"]},
                    }
                ).decode()
            )
            await ws.recv()
            self.ready.set()
            commit_times: dict[str, float] = {}  # rows of one INSERT share a commit time
            while True:
                raw = await ws.recv(decode=False)  # bytes: orjson parses UTF-8 itself
                now = time.time()
                message = orjson.loads(raw)
                if message["type"] == "event":
                    data = message["data"]
                    stamp = data["timestamp"]
                    committed = commit_times.get(stamp)
                    if committed is None:
                        if len(commit_times) > 10_000:
                            commit_times.clear()
                        committed = dt.datetime.fromisoformat(stamp).timestamp()
                        commit_times[stamp] = committed
                    self.latencies.append(now - committed)
                    self.seen.add(data["row"]["id"])
                elif message["type"] == "error":
                    self.errors.append(message["error"])


class LeanSubscriber:
    """The same subscriber on a minimal WebSocket client (``--lean-clients``): a plain
    non-blocking socket, the handshake by hand, then server frames parsed straight from
    the bytes of each ``recvmsg``.

    The delivery time is the **kernel's receive timestamp** of the read (SO_TIMESTAMPNS:
    when the node's bytes reached this socket; for a read of several segments, the
    last one's), not the time this process got round to reading it: 100 subscribers
    in one process share a crowded 2-core machine with the node, and their reading
    backlog is the benchmark's, not the node's. An event frame is not parsed as JSON
    either: the row id and the commit timestamp are found by position in the node's
    encoding (about 1 µs per event instead of the ``websockets`` client's tens).
    Frames it sends are masked (with a zero key, which RFC 6455 allows), as a
    client's must be."""

    def __init__(self, url: str, key: str, table: str) -> None:
        self.url, self.key, self.table = url, key, table
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.errors: list[Any] = []
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self._buffer = bytearray()
        self._handshaken = False
        self._answers = 0
        self._commit_times: dict[bytes, float] = {}
        self._closed = asyncio.Event()
        self._sock: socket.socket | None = None
        # --stages: position -> [commit time, first arrival, last arrival], shared by all
        self.arrivals: dict[int, list[float]] | None = None

    async def run(self) -> None:
        host, port = self.url.split("//", 1)[1].split("/", 1)[0].split(":")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Room for seconds of events: when this process falls behind reading (it shares
        # the CPUs with the node), TCP flow control must not hold the node's writes back,
        # or the node's latency would include the benchmark's own backlog.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        self._sock = sock
        try:
            await loop.sock_connect(sock, (host, int(port)))
            loop.add_reader(sock.fileno(), self._readable)
            nonce = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: heliosdb.v1\r\n\r\n"
                ).encode()
            )
            await self._closed.wait()
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data, ancillary, _flags, _address = self._sock.recvmsg(1 << 18, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._closed.set()
            return
        if not data:
            self._closed.set()
            return
        received = None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                received = seconds + nanoseconds / 1e9
        self.data_received(data, received)

    def _send(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message)
        size = len(data)
        if size < 126:
            head = bytes((0x81, 0x80 | size))
        else:
            head = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
        assert self._sock is not None
        self._sock.sendall(head + b"\x00\x00\x00\x00" + data)

    def data_received(self, data: bytes, received: float | None = None) -> None:
        buffer = self._buffer
        buffer += data
        if not self._handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(bytes(buffer[:200]).decode(errors="replace"))
            del buffer[: end + 4]
            self._handshaken = True
            self._send({"id": "a", "action": "authenticate", "data": {"token": self.key}})
        offset, total = 0, len(buffer)
        now = received if received is not None else time.time()
        events_from = -1  # where this read's run of event frames starts
        while total - offset >= 2:
            opcode, size = buffer[offset] & 0x0F, buffer[offset + 1] & 0x7F
            start = offset + 2
            if size == 126:
                if total - start < 2:
                    break
                size = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif size == 127:
                if total - start < 8:
                    break
                size = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            if total - start < size:
                break
            if opcode == 1 and buffer.startswith(_EVENT, start):
                if events_from < 0:
                    events_from = offset
                offset = start + size
                continue
            if events_from >= 0:
                self._events(buffer, events_from, offset, now)
                events_from = -1
            if opcode == 1:
                self._message(orjson.loads(memoryview(buffer)[start : start + size]), now)
            elif opcode == 9:  # ping: answer pong with the same data, masked
                payload = bytes(buffer[start : start + size])
                assert self._sock is not None
                self._sock.sendall(bytes((0x8A, 0x80 | size)) + b"\x00" * 4 + payload)
            elif opcode == 8:
                self._closed.set()
            offset = start + size
        if events_from >= 0:
            self._events(buffer, events_from, offset, now)
        del buffer[:offset]

    def _events(self, buffer: bytearray, start: int, end: int, now: float) -> None:
        """A run of whole event frames: their row ids and commit times found by pattern
        in one pass each (C, not a Python step per event), the latencies added per
        distinct commit time (the rows of one INSERT share it)."""
        region = memoryview(buffer)[start:end]
        ids = _ROW_IDS.findall(region)
        stamps = _STAMPS.findall(region)
        self.seen.update(map(int, ids))
        for stamp in dict.fromkeys(stamps):
            committed = self._commit_times.get(stamp)
            if committed is None:
                if len(self._commit_times) > 10_000:
                    self._commit_times.clear()
                committed = dt.datetime.fromisoformat(stamp.decode()).timestamp()
                self._commit_times[stamp] = committed
            self.latencies.extend([now - committed] * stamps.count(stamp))
        if self.arrivals is not None:
            positions = _POSITIONS.findall(region)
            for stamp, position, row_id in zip(stamps, positions, ids, strict=True):
                times = self.arrivals.get(int(position))
                if times is None:
                    committed = self._commit_times[stamp]
                    self.arrivals[int(position)] = [committed, now, now, int(row_id)]
                else:
                    times[1], times[2] = min(times[1], now), max(times[2], now)

    def _message(self, message: dict[str, Any], now: float) -> None:
        kind = message["type"]
        if kind == "event":
            data = message["data"]
            stamp = data["timestamp"]
            committed = self._commit_times.get(stamp)
            if committed is None:
                if len(self._commit_times) > 10_000:
                    self._commit_times.clear()
                committed = dt.datetime.fromisoformat(stamp).timestamp()
                self._commit_times[stamp] = committed
            self.latencies.append(now - committed)
            self.seen.add(data["row"]["id"])
        elif kind == "response":
            self._answers += 1
            if self._answers == 1:
                subscribe = {"table": self.table, "events": ["INSERT"]}
                self._send({"id": "s", "action": "subscribe", "data": subscribe})
            else:
                self.ready.set()
        elif kind == "error":
            self.errors.append(message["error"])


async def write(
    dsn: str,
    table: str,
    rate: int,
    seconds: float,
    first_id: int,
    returned: list[float] | None = None,
) -> int:
    """Insert ``rate`` rows per second for ``seconds``; return how many were committed.
    ``returned`` gets the time each INSERT's commit returned (its WAL flushed)."""
    conn = await asyncpg.connect(dsn)
    per_tick = max(1, round(rate * TICK))
    next_id = first_id
    started = time.perf_counter()
    try:
        ticks = int(seconds / TICK)
        for tick in range(ticks):
            await conn.execute(
                _INSERT.format(table=table),
                next_id,
                next_id + per_tick - 1,
            )
            if returned is not None:
                returned.append(time.time())
            next_id += per_tick
            delay = started + (tick + 1) * TICK - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await conn.close()
    return next_id - first_id


async def engine_rate(dsn: str, table: str, seconds: float = 3.0) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, pad text)")
        count, started, next_id = 0, time.perf_counter(), 1
        while time.perf_counter() - started < seconds:
            await conn.execute(
                _INSERT.format(table=table),
                next_id,
                next_id + 99,
            )
            next_id += 100
            count += 100
        return count / (time.perf_counter() - started)
    finally:
        await conn.close()


def node_cpu_seconds(node: NodeProcess) -> float:
    """utime + stime of the node process and its worker processes (load on the machine
    does not inflate it)."""
    assert node.process is not None
    return cpu_seconds(node.process.pid)


def own_cpu_seconds() -> float:
    """This process's CPU: the writer and every subscriber."""
    times = os.times()
    return times.user + times.system


async def capture_cpu_seconds(dsn: str) -> float:
    """CPU time of the capture's engine sessions (the walsender decoding the WAL, the
    leader's session writing the events; other nodes' idle sessions cost nothing)."""
    conn = await asyncpg.connect(dsn)
    try:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'heliosdb-capture'"
        )
    finally:
        await conn.close()
    total = 0.0
    for row in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{row['pid']}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def print_stages(
    prefix: str, arrivals: dict[int, list[float]], returned: list[float], per_insert: int
) -> None:
    """Each stage's p50/p99 over the run's events (``--stages``; see
    services/changes/stagetimes.py): where the commit-to-delivery time goes."""
    leader: dict[int, tuple[float, ...]] = {}
    dispatched: dict[int, float] = {}
    flushed: dict[int, float] = {}
    for path in Path(prefix).parent.glob(Path(prefix).name + ".*"):
        hubs: list[tuple[int, float]] = []
        flushes: list[tuple[int, float]] = []
        for line in path.read_text().splitlines():
            kind, *fields = line.split()
            if kind == "leader":
                first, last = int(fields[0]), int(fields[1])
                times = tuple(float(x) for x in fields[2:])
                for position in range(first, last + 1):
                    leader[position] = times
            elif kind == "hub":
                hubs.append((int(fields[0]), float(fields[1])))
            elif kind == "flush":
                flushes.append((int(fields[0]), float(fields[2])))
        # per process: the first record at or past each position; across processes, the
        # latest (the slowest process decides when the last subscriber has it)
        for records, into in ((hubs, dispatched), (flushes, flushed)):
            records.sort()
            i = 0
            for position in sorted(arrivals):
                while i < len(records) and records[i][0] < position:
                    i += 1
                if i < len(records):
                    into[position] = max(into.get(position, 0.0), records[i][1])
    stages: dict[str, list[float]] = {
        name: []
        for name in (
            "commit -> writer's COMMIT returned",
            "commit -> leader has it (poll: reads WAL)",
            "decode, batch end (poll: -> peek sent)",
            "peek (poll only)",
            "write events (poll: + decode)",
            "written -> hub dispatched",
            "dispatched -> sockets written",
            "written -> last subscriber's arrival",
            "commit -> sockets written (the node's part)",
            "commit -> first arrival",
            "commit -> last arrival",
        )
    }
    names = list(stages)
    for position, (commit, first_at, last_at, row_id) in arrivals.items():
        round_times = leader.get(position)
        if round_times is None or position not in dispatched or position not in flushed:
            continue
        insert = int(row_id - 1) // per_insert
        if insert < len(returned):
            stages[names[0]].append(returned[insert] - commit)
        polled, sent, back, written = round_times
        marks = (
            commit,
            polled,
            sent,
            back,
            written,
            dispatched[position],
            flushed[position],
            last_at,
        )
        for name, a, b in zip(names[1:], marks, marks[1:], strict=False):
            stages[name].append(b - a)
        stages[names[-3]].append(flushed[position] - commit)
        stages[names[-2]].append(first_at - commit)
        stages[names[-1]].append(last_at - commit)
    print(f"stages over {len(stages[names[1]])} events (ms):")
    for name, values in stages.items():
        print(
            f"  {name:<42} p50 {percentile(values, 0.5) * 1000:8.2f}"
            f"  p99 {percentile(values, 0.99) * 1000:8.2f}"
            f"  max {max(values, default=float('nan')) * 1000:8.2f}"
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run_rate(
    node: NodeProcess, dsn: str, key: str, rate: int, args: argparse.Namespace
) -> dict[str, Any]:
    table = f"rt_{rate}_{int(time.time())}"
    async with httpx.AsyncClient(
        base_url=node.api, headers={"Authorization": f"Bearer {key}"}
    ) as api:
        response = await api.post(
            "/query", json={"sql": f"CREATE TABLE {table} (id bigint PRIMARY KEY, pad text)"}
        )
        response.raise_for_status()
    url = f"ws://127.0.0.1:{node.ports['websocket']}/ws"
    kind = LeanSubscriber if args.lean_clients else Subscriber
    subscribers = [kind(url, key, table) for _ in range(args.subscribers)]
    arrivals: dict[int, list[float]] = {}
    if args.stages:
        for sub in subscribers:
            sub.arrivals = arrivals
    for sub in subscribers:
        sub.task = asyncio.create_task(sub.run())
    await asyncio.gather(*(s.ready.wait() for s in subscribers))
    cpu_before = node_cpu_seconds(node)
    own_before = own_cpu_seconds()
    capture_before = await capture_cpu_seconds(dsn)
    returned: list[float] = []
    written = await write(dsn, table, rate, args.seconds, 1, returned)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(len(s.seen) >= written or s.errors for s in subscribers):
            break
        await asyncio.sleep(0.1)
    cpu = node_cpu_seconds(node) - cpu_before
    own = own_cpu_seconds() - own_before
    capture = await capture_cpu_seconds(dsn) - capture_before
    for sub in subscribers:
        assert sub.task is not None
        sub.task.cancel()
    await asyncio.gather(*(s.task for s in subscribers if s.task), return_exceptions=True)
    latencies = [x for s in subscribers for x in s.latencies]
    lost = sum(written - len(s.seen) for s in subscribers)
    if args.stages:
        print_stages(args.stages, arrivals, returned, max(1, round(rate * TICK)))
    return {
        "rate": rate,
        "written": written,
        "deliveries": len(latencies),
        "lost": lost,
        "slow_consumer_errors": sum(len(s.errors) for s in subscribers),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "node_cpu_s": round(cpu, 2),
        # capture, fan-out and sending, per (event, subscriber) pair delivered
        "cpu_us_per_delivery": round(cpu / max(1, len(latencies)) * 1e6, 2),
        # the benchmark process (writer + subscribers), per delivery
        "client_us_per_delivery": round(own / max(1, len(latencies)) * 1e6, 2),
        # the capture leader's engine session, per change (0 if it changed hands)
        "capture_us_per_change": round(max(0.0, capture) / max(1, written) * 1e6, 1),
    }


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="heliosdb-bench-realtime-"))
    env = {}
    if args.stages:
        args.stages = str(data_dir / "stages")
        env["HELIOSDB_CHANGES_STAGES"] = args.stages
    node = NodeProcess(
        data_dir / "data",
        extra_args=["--environment", "test", *shlex.split(args.node_args)],
        env=env,
    ).start()
    try:
        password = (node.data_dir / "engine.password").read_text().strip()
        dsn = f"postgresql://heliosdb:{quote(password)}@/heliosdb?host={node.data_dir / 'run'}"
        key = node.admin_key or ""
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        results = []
        rates = list(args.rates)
        best = 0
        i = 0
        while i < len(rates):
            result = await run_rate(node, dsn, key, rates[i], args)
            results.append(result)
            print(
                f"rate {result['rate']:>6}/s: written {result['written']:>7}, deliveries "
                f"{result['deliveries']:>9}, lost {result['lost']:>8}, slow-consumer ends "
                f"{result['slow_consumer_errors']:>3}, p50 {result['p50_ms']:>7} ms, "
                f"p99 {result['p99_ms']:>7} ms, node CPU {result['node_cpu_s']} s "
                f"({result['cpu_us_per_delivery']} µs per delivery); benchmark process "
                f"{result['client_us_per_delivery']} µs per delivery; capture engine "
                f"session {result['capture_us_per_change']} µs per change",
                flush=True,
            )
            if result["lost"] == 0 and not result["slow_consumer_errors"]:
                best = max(best, rates[i])
                if args.search and i == len(rates) - 1:
                    rates.append(rates[i] * 2)
            i += 1
        print(f"highest loss-free rate tried: {best}/s with {args.subscribers} subscribers")
        # Last, so its rows (captured too) do not queue ahead of the measured ones.
        base = await engine_rate(dsn, "rt_engine_baseline")
        print(f"engine alone: {base:,.0f} rows/s committed (100-row INSERTs, one connection)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        node.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument(
        "--search", action="store_true", help="double the rate until events are lost"
    )
    parser.add_argument(
        "--lean-clients",
        action="store_true",
        help="subscribers on a minimal WebSocket client instead of the websockets library",
    )
    parser.add_argument(
        "--stages",
        action="store_const",
        const="on",
        help="with --lean-clients: time each stage (commit, leader, hub, socket, client)",
    )
    parser.add_argument("--node-args", default="", help="extra `heliosdb serve` flags, one string")
    # uvloop, as the node uses: the subscribers' reads cost the benchmark less CPU.
    uvloop.run(main(parser.parse_args()))
