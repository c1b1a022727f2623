"""The shared server TLS context (security/tls.py) built from tls.* settings."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from heliosdb.security.tls import server_context
from heliosdb.settings import Settings


def test_no_context_without_tls() -> None:
    assert server_context(Settings().tls) is None


def test_context_from_settings(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, crt = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = Settings(tls={"enabled": True, "cert_file": crt, "key_file": key}).tls
    context = server_context(tls)
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    tls = Settings(
        tls={
            "enabled": True, "cert_file": crt, "key_file": key,
            "client_auth": "require", "client_ca_file": crt,
        }
    ).tls  # fmt: skip
    required = server_context(tls)
    assert required is not None and required.verify_mode == ssl.CERT_REQUIRED
