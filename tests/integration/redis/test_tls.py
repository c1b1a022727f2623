"""TLS on the Redis port (rediss://): one extra node with a certificate, sharing the engine."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.nodeproc import NodeProcess


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it (ca.crt, server.crt/key)."""
    d: Path = tmp_path_factory.mktemp("redis-pki")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
        "-keyout", "ca.key", "-out", "ca.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d,
    )  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", "server.ext",
        "-out", "server.crt", cwd=d,
    )  # fmt: skip
    return d


@pytest.fixture(scope="module")
def tls_node(
    node: NodeProcess, pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    process = node.beside(
        tmp_path_factory.mktemp("redis-tls") / "data",
        {
            "HELIOSDB_TLS__ENABLED": "true",
            "HELIOSDB_TLS__CERT_FILE": str(pki / "server.crt"),
            "HELIOSDB_TLS__KEY_FILE": str(pki / "server.key"),
        },
    )
    yield process
    process.stop()


def test_tls_serves_plain_pipelined_and_batched_commands(
    tls_node: NodeProcess, pki: Path, rw_key: str
) -> None:
    client = redis.Redis(
        port=tls_node.ports["redis"],
        password=rw_key,
        ssl=True,
        ssl_ca_certs=str(pki / "ca.crt"),
        protocol=3,
        socket_timeout=30,
    )
    try:
        assert client.ping() is True
        assert client.set("tls:k", b"v" * 100_000) is True
        assert client.get("tls:k") == b"v" * 100_000
        with client.pipeline(transaction=False) as pipe:
            for i in range(50):
                pipe.incr("tls:n")
                pipe.set(f"tls:{i}", i)
                pipe.get(f"tls:{i}")
            results = pipe.execute()
        assert results[0::3] == list(range(1, 51))
        assert results[2::3] == [str(i).encode() for i in range(50)]
    finally:
        client.close()
    plain = redis.Redis(port=tls_node.ports["redis"], password=rw_key, socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()  # TLS from the first byte: a plain client gets no RESP reply
    plain.close()
