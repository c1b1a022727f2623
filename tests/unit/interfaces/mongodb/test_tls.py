"""TLS on the MongoDB port: the listener's context from settings, and the shared TCP
listener serving TLS from the first byte (what mongodb://...?tls=true expects)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from heliosdb.interfaces._tcp import TcpListener
from heliosdb.interfaces.mongodb.server import tls_context
from heliosdb.settings import Settings


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, crt = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


def test_no_context_without_tls() -> None:
    assert tls_context(Settings()) is None


async def test_listener_serves_tls(cert: tuple[Path, Path]) -> None:
    crt, key = cert
    settings = Settings(tls={"enabled": True, "cert_file": crt, "key_file": key})
    context = tls_context(settings)
    assert context is not None and context.verify_mode == ssl.CERT_NONE

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()

    listener = TcpListener("t", "t", "127.0.0.1", 0, echo, ssl_context=context)
    await listener.start()
    try:
        client = ssl.create_default_context(cafile=str(crt))
        client.check_hostname = False
        reader, writer = await asyncio.open_connection(*listener.address, ssl=client)
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.close()
    finally:
        await listener.stop()
