"""TLS on the PostgreSQL port: one extra node with a certificate (sharing the engine).

The test makes its own CA, a server certificate for 127.0.0.1, a client certificate
whose CN names a HeliosDB user, and a client certificate from another CA (openssl CLI).
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psycopg
import pytest

from heliosdb.security.scram import ClientExchange
from tests.integration.postgres.conftest import create_user, make_dsn
from tests.integration.postgres.rawclient import SSL_REQUEST, message, startup_packet
from tests.nodeproc import NodeProcess

PASSWORD = "tls-user-password"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # CN = the same user, signed by a CA the node does not trust
    other_key: Path
    wrong_cn_cert: Path  # trusted CA, CN = a user that does not exist
    wrong_cn_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def _signed(directory: Path, ca: str, name: str, cn: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.crt", cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.key").chmod(0o600)  # libpq refuses a key others can read


def _make_pki(directory: Path, user: str) -> Pki:
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    server = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    client = "extendedKeyUsage=clientAuth\n"
    _signed(directory, "ca", "server", "localhost", server)
    _signed(directory, "ca", "client", user, client)
    _signed(directory, "other-ca", "other", user, client)
    _signed(directory, "ca", "wrongcn", "nobody_with_this_name", client)
    d = directory
    return Pki(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key",
        d / "other.crt", d / "other.key", d / "wrongcn.crt", d / "wrongcn.key",
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_user(node: NodeProcess) -> str:
    return create_user(node, PASSWORD)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, tls_user: str) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"), tls_user)


@pytest.fixture(scope="module")
def tls_node(
    node: NodeProcess, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    data_dir: Path = tmp_path_factory.mktemp("tls") / "data"
    process = node.beside(
        data_dir,
        {
            "HELIOSDB_TLS__ENABLED": "true",
            "HELIOSDB_TLS__CERT_FILE": str(pki.server_cert),
            "HELIOSDB_TLS__KEY_FILE": str(pki.server_key),
            "HELIOSDB_TLS__CLIENT_AUTH": "optional",
            "HELIOSDB_TLS__CLIENT_CA_FILE": str(pki.ca),
        },
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def tls_port(tls_node: NodeProcess) -> int:
    return tls_node.ports["postgres"]


def _tls(dsn: str, pki: Pki, **params: str) -> str:
    options = {"sslmode": "verify-full", "sslrootcert": str(pki.ca), **params}
    return dsn + "?" + "&".join(f"{k}={v}" for k, v in options.items())


def test_tls_ssl_request_answered_s_then_scram_inside(tls_port: int, rw_key: str) -> None:
    with socket.create_connection(("127.0.0.1", tls_port), timeout=15) as raw:
        raw.sendall(SSL_REQUEST)
        assert raw.recv(1) == b"S"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(raw) as sock:
            file = sock.makefile("rb")

            def read() -> tuple[bytes, bytes]:
                kind = file.read(1)
                (length,) = struct.unpack("!i", file.read(4))
                return kind, file.read(length - 4)

            sock.sendall(startup_packet({"user": "apikey", "database": "heliosdb"}))
            kind, body = read()
            # Both mechanisms, PLUS first, under TLS.
            assert kind == b"R" and body == struct.pack("!i", 10) + (
                b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
            )
            exchange = ClientExchange(rw_key)
            first = exchange.first()
            sock.sendall(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
            kind, body = read()
            sock.sendall(message(b"p", exchange.final(body[4:])))
            kind, body = read()
            assert kind == b"R" and body[:4] == struct.pack("!i", 12)
            while kind != b"Z":
                kind, body = read()
            assert body == b"I"


def test_tls_plain_connection_still_served(tls_port: int, rw_key: str) -> None:
    # sslmode=disable: no SSLRequest, plain SCRAM (no PLUS offered), as libpq expects.
    dsn = make_dsn(tls_port, rw_key) + "?sslmode=disable"
    with psycopg.connect(dsn) as conn:
        assert not conn.pgconn.ssl_in_use


def test_tls_psycopg_sslmode_require(tls_port: int, rw_key: str) -> None:
    with psycopg.connect(make_dsn(tls_port, rw_key) + "?sslmode=require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user").fetchone() == ("helios_readwrite",)


def test_tls_transaction_port_passes_a_big_bound_value_on(
    tls_node: NodeProcess, rw_key: str
) -> None:
    """Over TLS, the transaction port passes a long Bind (a 3 MB bytea value, arriving in
    parts) on to the engine as it arrives, and reads the client's next messages again."""
    value = bytes(range(256)) * 12288
    dsn = make_dsn(tls_node.ports["postgres_txn"], rw_key) + "?sslmode=require"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT octet_length(%b)", (value,)).fetchone() == (len(value),)
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_tls_psql_sslmode_require(tls_port: int, rw_key: str, psql: str) -> None:
    result = subprocess.run(
        [psql, "-X", "-A", "-t", "-d",
         f"host=127.0.0.1 port={tls_port} user=apikey dbname=heliosdb sslmode=require",
         "-c", "SELECT 6 * 7", "-c", r"\conninfo"],
        env={**os.environ, "PGPASSWORD": rw_key},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "42"
    assert "SSL connection" in result.stdout


@pytest.mark.parametrize("login", ["api-key", "user"])
def test_tls_channel_binding_required(
    tls_port: int, pki: Pki, rw_key: str, tls_user: str, login: str
) -> None:
    # channel_binding=require fails unless SCRAM-SHA-256-PLUS ran to the end.
    user, password = ("apikey", rw_key) if login == "api-key" else (tls_user, PASSWORD)
    dsn = _tls(make_dsn(tls_port, password, user=user), pki, channel_binding="require")
    with psycopg.connect(dsn) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_tls_channel_binding_wrong_password(tls_port: int, pki: Pki) -> None:
    dsn = _tls(make_dsn(tls_port, "hdb_sk_wrong"), pki, channel_binding="require")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn)


async def test_tls_asyncpg_plain_scram_over_tls(tls_port: int, pki: Pki, rw_key: str) -> None:
    # asyncpg has no channel binding: it picks SCRAM-SHA-256 from the list.
    context = ssl.create_default_context(cafile=str(pki.ca))
    conn = await asyncpg.connect(make_dsn(tls_port, rw_key), ssl=context)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_tls_client_certificate_logs_in_without_password(
    tls_port: int, pki: Pki, tls_user: str
) -> None:
    dsn = _tls(
        f"postgresql://{tls_user}@127.0.0.1:{tls_port}/heliosdb",
        pki,
        sslcert=str(pki.client_cert),
        sslkey=str(pki.client_key),
        require_auth="none",  # libpq >= 16: fail if the server asks for any password
    )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("helios_readwrite",)
        assert conn.info.parameter_status("session_authorization") == tls_user


def test_tls_client_certificate_with_psql(
    tls_port: int, pki: Pki, tls_user: str, psql: str
) -> None:
    conninfo = (
        f"host=127.0.0.1 port={tls_port} user={tls_user} dbname=heliosdb sslmode=verify-full "
        f"sslrootcert={pki.ca} sslcert={pki.client_cert} sslkey={pki.client_key}"
    )
    result = subprocess.run(
        [psql, "-X", "-A", "-t", "-w", "-d", conninfo, "-c", "SELECT current_user"],
        env={k: v for k, v in os.environ.items() if k != "PGPASSWORD"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "helios_readwrite"


def test_tls_client_certificate_of_untrusted_ca_refused(
    tls_port: int, pki: Pki, tls_user: str
) -> None:
    dsn = _tls(
        f"postgresql://{tls_user}@127.0.0.1:{tls_port}/heliosdb",
        pki,
        sslcert=str(pki.other_cert),
        sslkey=str(pki.other_key),
    )
    # The handshake fails (under TLS 1.3 libpq may only see the connection close).
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=15)


def test_tls_client_certificate_for_another_user_refused(
    tls_port: int, pki: Pki, tls_user: str
) -> None:
    # A trusted certificate logs in only under the user its CN names.
    dsn = _tls(
        f"postgresql://{tls_user}@127.0.0.1:{tls_port}/heliosdb",
        pki,
        sslcert=str(pki.wrong_cn_cert),
        sslkey=str(pki.wrong_cn_key),
    )
    with pytest.raises(psycopg.OperationalError, match="certificate authentication failed"):
        psycopg.connect(dsn)


def test_tls_cancel_safe_over_tls(tls_port: int, pki: Pki, rw_key: str) -> None:
    # libpq >= 17 sends the CancelRequest over TLS when the session used TLS.
    with psycopg.connect(_tls(make_dsn(tls_port, rw_key), pki)) as conn:
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        timer.join()
