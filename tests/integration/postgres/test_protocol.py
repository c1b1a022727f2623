"""The startup phase byte by byte, cancel paths, and a fuzz that must not bring the node down."""

from __future__ import annotations

import socket
import struct
import threading
import time

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.postgres.rawclient import (
    GSSENC_REQUEST,
    SSL_REQUEST,
    RawClient,
    error_fields,
    message,
    startup_packet,
)
from tests.nodeproc import NodeProcess

LOGIN = {"user": "apikey", "database": "heliosdb"}


def _fatal(client: RawClient) -> dict[str, str]:
    kind, body = client.read()
    assert kind == b"E", (kind, body)
    fields = error_fields(body)
    assert fields["S"] == "FATAL"
    assert client.read() == (b"", b"")  # and the connection is closed
    return fields


def test_ssl_request_answered_n_then_plain_login(pg_port: int, rw_key: str) -> None:
    with RawClient(pg_port) as client:
        client.send(SSL_REQUEST)
        assert client.read_byte() == b"N"
        messages = client.login(rw_key)
        assert messages[-1] == (b"Z", b"I")


def test_gssenc_then_ssl_then_startup(pg_port: int, rw_key: str) -> None:
    with RawClient(pg_port) as client:
        client.send(GSSENC_REQUEST)
        assert client.read_byte() == b"N"
        client.send(SSL_REQUEST)
        assert client.read_byte() == b"N"
        assert client.login(rw_key)[-1] == (b"Z", b"I")


def test_ssl_request_with_trailing_bytes_closes(pg_port: int) -> None:
    with RawClient(pg_port) as client:
        client.send(SSL_REQUEST + startup_packet(LOGIN))
        time.sleep(0.1)
        assert client.file.read() in (b"", b"N")


def test_startup_reports_parameters_and_key_protocol_3_0(pg_port: int, rw_key: str) -> None:
    with RawClient(pg_port) as client:
        messages = client.login(rw_key)
    status = dict(body.split(b"\0")[:2] for kind, body in messages if kind == b"S")
    assert status[b"server_version"].startswith(b"18")
    assert status[b"session_authorization"] == b"apikey"
    for name in (b"client_encoding", b"DateStyle", b"TimeZone", b"integer_datetimes",
                 b"standard_conforming_strings", b"is_superuser", b"search_path"):  # fmt: skip
        assert name in status
    assert status[b"is_superuser"] == b"off"
    keys = [body for kind, body in messages if kind == b"K"]
    assert len(keys) == 1 and len(keys[0]) == 8


def test_protocol_3_2_gets_a_long_cancel_key(pg_port: int, rw_key: str) -> None:
    with RawClient(pg_port) as client:
        client.send(startup_packet(LOGIN, version=196610))
        kind, _ = client.read()
        assert kind == b"R"  # no NegotiateProtocolVersion: 3.2 is supported
    with RawClient(pg_port) as client:
        messages = client.login(rw_key, version=196610)
    keys = [body for kind, body in messages if kind == b"K"]
    assert len(keys[0]) == 4 + 32


@pytest.mark.parametrize(
    ("version", "options", "expected_version"),
    [
        (0x0003270F, ["_pq_.test_protocol_negotiation"], 196610),  # 3.9999 "grease"
        (196609, [], 196608),  # 3.1 is reserved: the newest below it is 3.0
        (196608, ["_pq_.something"], 196608),
    ],
)
def test_negotiate_protocol_version(
    pg_port: int, rw_key: str, version: int, options: list[str], expected_version: int
) -> None:
    with RawClient(pg_port) as client:
        client.send(startup_packet({**LOGIN, **dict.fromkeys(options, "x")}, version=version))
        kind, body = client.read()
        assert kind == b"v"
        newest, count = struct.unpack_from("!ii", body)
        assert (newest, count) == (expected_version, len(options))
        assert body[8:].split(b"\0")[: len(options)] == [o.encode() for o in options]
        kind, body = client.read()
        assert kind == b"R" and struct.unpack_from("!i", body)[0] == 10


@pytest.mark.parametrize(
    ("packet", "sqlstate"),
    [
        (startup_packet(LOGIN, version=(4 << 16)), "0A000"),
        (startup_packet({"database": "heliosdb"}), "28000"),
        (startup_packet({**LOGIN, "replication": "database"}), "0A000"),
        (startup_packet({**LOGIN, "database": "postgres"}), "3D000"),
        (struct.pack("!i", 20000) + b"\0" * 100, "08P01"),
        (struct.pack("!ii", 6, 196608), "08P01"),
        (struct.pack("!i", 12) + struct.pack("!i", 196608) + b"user", "08P01"),
        (struct.pack("!i", 13) + struct.pack("!i", 196608) + b"user\0", "08P01"),
        (startup_packet({**LOGIN, "x": "\udcff"[:0] + "ok"})[:-1] + b"\xff\0", "08P01"),
    ],
    ids=[
        "major-4",
        "no-user",
        "replication",
        "other-db",
        "too-long",
        "too-short",
        "no-terminator",
        "odd-fields",
        "bad-utf8",
    ],
)
def test_bad_startup_packet_fatal(pg_port: int, packet: bytes, sqlstate: str) -> None:
    with RawClient(pg_port) as client:
        client.send(packet)
        assert _fatal(client)["C"] == sqlstate


def test_wrong_message_during_auth_fatal_08p01(pg_port: int) -> None:
    with RawClient(pg_port) as client:
        client.send(startup_packet(LOGIN))
        assert client.read()[0] == b"R"
        client.send(message(b"Q", b"SELECT 1\0"))
        assert _fatal(client)["C"] == "08P01"


def test_wrong_sasl_mechanism_fatal(pg_port: int) -> None:
    with RawClient(pg_port) as client:
        client.send(startup_packet(LOGIN))
        assert client.read()[0] == b"R"
        client.send(message(b"p", b"SCRAM-SHA-1\0" + struct.pack("!i", 3) + b"n,,"))
        assert _fatal(client)["C"] == "08P01"


def _active(conn: psycopg.Connection[tuple[object, ...]], text: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s", (text,)
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_client_disconnect_mid_query_cancels_on_engine(
    pg_port: int, rw_dsn: str, rw_key: str
) -> None:
    text = "SELECT pg_sleep(120) /* gateway-disconnect */"
    with psycopg.connect(rw_dsn, autocommit=True) as observer:
        client = RawClient(pg_port)
        client.login(rw_key)
        client.send(message(b"Q", text.encode() + b"\0"))
        for _ in range(200):
            if _active(observer, text):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the query never started")
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset, no Terminate
        for _ in range(200):
            if not _active(observer, text):
                return
            time.sleep(0.05)
        raise AssertionError("the engine is still running the abandoned query")


def test_cancel_with_wrong_key_cancels_nothing(pg_port: int, rw_dsn: str) -> None:
    with psycopg.connect(rw_dsn) as conn:
        pid = conn.info.backend_pid

        def wrong_cancels() -> None:
            time.sleep(0.3)
            for secret in (b"\0\0\0\0", b"\1\2\3\4", b"x" * 32):
                with RawClient(pg_port) as client:
                    body = struct.pack("!ii", 80877102, pid) + secret
                    client.send(struct.pack("!i", len(body) + 4) + body)
                    assert client.file.read() == b""  # no reply, just closed

        thread = threading.Thread(target=wrong_cancels)
        thread.start()
        assert conn.execute("SELECT pg_sleep(1.5), 'survived'").fetchone() == ("", "survived")
        thread.join()


# The fuzz: whatever arrives before login, the node answers or closes, and stays up.

_first_packets = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda code, body: struct.pack("!ii", len(body) + 8, code) + body,
        st.sampled_from([80877103, 80877104, 80877102, 196608, 196610, 0x0003270F, 0]),
        st.binary(max_size=64),
    ),
    st.builds(
        lambda params, tail: startup_packet(params)[:-1] + tail,
        st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=12), max_size=4),
        st.binary(max_size=8),
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=_first_packets, rest=st.lists(st.binary(max_size=48), max_size=3))
def test_fuzz_startup_bytes(pg_port: int, first: bytes, rest: list[bytes]) -> None:
    with RawClient(pg_port, timeout=20) as client:
        try:
            client.send(first + b"".join(rest))
            client.sock.shutdown(socket.SHUT_WR)  # EOF: the node must not wait for more
            client.file.read()  # until the node closes
        except ConnectionResetError:
            pass


@settings(max_examples=40, deadline=None)
@given(answer=st.binary(max_size=80))
def test_fuzz_auth_answers(pg_port: int, answer: bytes) -> None:
    with RawClient(pg_port, timeout=20) as client:
        client.send(startup_packet(LOGIN))
        assert client.read()[0] == b"R"
        try:
            client.send(message(b"p", answer))
            client.sock.shutdown(socket.SHUT_WR)
            client.file.read()
        except ConnectionResetError:
            pass


def test_node_up_after_fuzz(node: NodeProcess, rw_dsn: str) -> None:
    health = httpx.get(f"{node.api}/health").json()
    assert health["listeners"]["postgres"]["state"] == "serving" if "listeners" in health else True
    with psycopg.connect(rw_dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert node.process is not None and node.process.poll() is None
