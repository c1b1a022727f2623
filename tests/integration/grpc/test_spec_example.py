"""The API reference's Python example, run as written against a local TLS node.

Only the address (and the placeholder API key) change: the example's
``grpc.ssl_channel_credentials()`` trusts the system roots, so the node's self-signed
certificate is offered through ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``, the standard gRPC
way to add a root without touching code. This test starts its own node, with TLS on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from heliosdb.v1 import heliosdb_pb2 as pb
from heliosdb.v1 import heliosdb_pb2_grpc
from tests.integration.grpc.conftest import bearer
from tests.nodeproc import NodeProcess

SPEC_EXAMPLE = """\
import grpc
from heliosdb.v1 import heliosdb_pb2, heliosdb_pb2_grpc

# Create channel with TLS
credentials = grpc.ssl_channel_credentials()
channel = grpc.secure_channel('grpc.heliosdb.io:50051', credentials)
stub = heliosdb_pb2_grpc.HeliosDBStub(channel)

# Execute query
request = heliosdb_pb2.QueryRequest(
    sql="SELECT * FROM users WHERE age > $1",
    params=[heliosdb_pb2.Value(int_value=21)]
)
response = stub.ExecuteQuery(request, metadata=[('authorization', 'Bearer YOUR_API_KEY')])

for row in response.rows:
    print(row)
"""


def make_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed (scripts/test-deps installs it)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = make_certificate(directory)
    process = NodeProcess(
        directory / "data",
        extra_args=["--environment", "test"],
        env={
            "HELIOSDB_TLS__ENABLED": "true",
            "HELIOSDB_TLS__CERT_FILE": str(cert),
            "HELIOSDB_TLS__KEY_FILE": str(key),
        },
    ).start()
    yield process, cert
    process.stop()


def test_spec_python_example_runs_against_local_tls_node(
    tls_node: tuple[NodeProcess, Path],
) -> None:
    node, cert = tls_node
    assert node.admin_key is not None
    target = f"localhost:{node.ports['grpc']}"
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(target, credentials) as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        for sql in (
            "CREATE TABLE users (id serial PRIMARY KEY, name text, age int)",
            "INSERT INTO users (name, age) VALUES ('ann', 34), ('bob', 17), ('cy', 22)",
        ):
            stub.ExecuteQuery(pb.QueryRequest(sql=sql), metadata=bearer(node.admin_key))
    script = SPEC_EXAMPLE.replace("grpc.heliosdb.io:50051", target).replace(
        "YOUR_API_KEY", node.admin_key
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(cert)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    printed = completed.stdout
    assert printed.count("values {") == 6  # two rows of three columns
    assert 'string_value: "ann"' in printed and 'string_value: "cy"' in printed
    assert "bob" not in printed


def test_tls_node_refuses_plaintext(tls_node: tuple[NodeProcess, Path]) -> None:
    node, _ = tls_node
    with grpc.insecure_channel(f"127.0.0.1:{node.ports['grpc']}") as channel:
        stub = heliosdb_pb2_grpc.HeliosDBStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.HealthCheck(pb.Empty(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
