"""`heliosdb config show`: the effective configuration, layered and with secrets masked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

CONFIG = """
http:
  port: 9999
tls:
  enabled: true
  cert_file: /certs/server.crt
  key_file: /certs/server.key
  client_auth: require
  client_ca_file: /certs/ca.crt
authentication:
  oauth2:
    enabled: true
    provider: azure
    client_id: "YOUR_CLIENT_ID"
    client_secret: "very-secret-value"
    tenant_id: "YOUR_TENANT_ID"
    scopes: [openid, profile, email]
engine:
  url: postgresql://helios:engine-password@db.internal:5432/heliosdb
"""


def show(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heliosdb", "config", "show", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_config_show_reads_yaml_and_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "heliosdb.yaml"
    config.write_text(CONFIG)
    result = show("--config", str(config))
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["http"]["port"] == 9999
    assert shown["tls"]["client_auth"] == "require"
    assert shown["authentication"]["oauth2"]["provider"] == "azure"
    assert shown["authentication"]["oauth2"]["client_secret"] == "***"
    assert shown["engine"]["url"] == "***"
    assert "very-secret-value" not in result.stdout
    assert "engine-password" not in result.stdout


def test_config_show_env_overrides_yaml_and_flags_override_env(tmp_path: Path) -> None:
    config = tmp_path / "heliosdb.yaml"
    config.write_text("http:\n  port: 9999\nlog_level: debug\n")
    env = {"PATH": "/usr/bin:/bin", "HELIOSDB_HTTP__PORT": "7777", "HELIOSDB_LOG_LEVEL": "warning"}
    by_env = yaml.safe_load(show("--config", str(config), env=env).stdout)
    assert by_env["http"]["port"] == 7777 and by_env["log_level"] == "warning"
    by_flag = yaml.safe_load(show("--config", str(config), "--http-port", "6666", env=env).stdout)
    assert by_flag["http"]["port"] == 6666


def test_config_show_rejects_unknown_and_mistyped_settings(tmp_path: Path) -> None:
    config = tmp_path / "heliosdb.yaml"
    config.write_text("http:\n  port: not-a-number\n")
    result = show("--config", str(config))
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    config.write_text("no_such_setting: 1\n")
    assert show("--config", str(config)).returncode == 2
    assert show("--config", str(tmp_path / "missing.yaml")).returncode == 2
