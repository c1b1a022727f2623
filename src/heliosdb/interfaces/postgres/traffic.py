"""Traffic counters the kernel keeps for a client's TCP socket (Linux ``TCP_INFO``).

A spliced session (relay.py) runs no Python code per chunk, so nothing in the gateway
counts its bytes. The kernel does: ``TCP_INFO`` reports the payload bytes received from
the client, the payload bytes the client acknowledged, and the segments that carried
data from the client (a client write of a query is one segment unless it is larger than
a segment). They are read when metrics are collected and once when the session ends.

``parse_tcp_info`` is sans-IO; ``SocketTraffic`` holds a duplicate of the socket's file
descriptor, so the counters stay readable after the transport closed its own, until
``close``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from typing import NamedTuple

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received are __u64 at
# 120 and 128 (Linux 4.1), tcpi_data_segs_in __u32 at 152 (Linux 4.6).
_BYTES = struct.Struct("=QQ")
_BYTES_AT = 120
_SEGMENTS = struct.Struct("=I")
_SEGMENTS_AT = 152
TCP_INFO_BYTES = _SEGMENTS_AT + _SEGMENTS.size


class Traffic(NamedTuple):
    bytes_in: int  # from the client
    bytes_out: int  # to the client
    round_trips: int  # client writes (data segments) relayed


def parse_tcp_info(raw: bytes) -> Traffic | None:
    """The counters in a ``TCP_INFO`` answer, or None if the kernel's is too short."""
    if len(raw) < TCP_INFO_BYTES:
        return None
    acked, received = _BYTES.unpack_from(raw, _BYTES_AT)
    (segments,) = _SEGMENTS.unpack_from(raw, _SEGMENTS_AT)
    return Traffic(received, acked, segments)


class SocketTraffic:
    """Counters of one TCP socket, through a duplicate descriptor of it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._last = Traffic(0, 0, 0)

    @classmethod
    def of_plain(cls, transport: asyncio.BaseTransport) -> SocketTraffic | None:
        """For a client transport without TLS (whose kernel counters would count TLS
        records, not the protocol's bytes); None otherwise, as ``of``."""
        if transport.get_extra_info("sslcontext") is not None:
            return None
        return cls.of(transport.get_extra_info("socket"))

    @classmethod
    def of(cls, transport_socket: object) -> SocketTraffic | None:
        """For a transport's socket (``get_extra_info("socket")``): None if it is not TCP
        or the kernel does not report these counters (then the relay counts itself)."""
        fileno = getattr(transport_socket, "fileno", None)
        family = getattr(transport_socket, "family", None)
        if fileno is None or family not in (socket.AF_INET, socket.AF_INET6):
            return None
        try:
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fileno=os.dup(fileno()))
        except OSError:
            return None
        traffic = cls(sock)
        if traffic.read() is None:
            traffic.close()
            return None
        return traffic

    def read(self) -> Traffic | None:
        """The counters now (the last ones read, once closed); None if unreadable."""
        if self._sock.fileno() < 0:
            return self._last
        try:
            raw = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except OSError:
            return None
        counts = parse_tcp_info(raw)
        if counts is not None:
            self._last = counts
        return counts

    @property
    def last(self) -> Traffic:
        return self._last

    def close(self) -> None:
        """Read the final counters and let the socket go."""
        if self._sock.fileno() >= 0:
            self.read()
            self._sock.close()


def traffic_of(
    kernel: SocketTraffic | None, bytes_in: int, bytes_out: int, round_trips: int
) -> Traffic:
    """A relay's traffic so far: the kernel's counters when it has them, else its own."""
    if kernel is not None:
        return kernel.read() or kernel.last
    return Traffic(bytes_in, bytes_out, round_trips)
